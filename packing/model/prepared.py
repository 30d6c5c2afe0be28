"""A prepared model folder and its manifest, read once: what the code passes around.

:class:`PreparedModel` pairs the folder ``packed-bert prepare`` wrote with its
:class:`~packing.model.manifest.Manifest`. Every function that takes a model folder accepts a
:data:`ModelLike` (a :class:`PreparedModel` or a folder path), opens it once with
:meth:`PreparedModel.open` and hands the object down, so one call chain reads
``manifest.json`` once. It is a path too (``os.fspath``, ``Path(model)``, ``str(model)`` give
the folder), so code written for a folder path keeps working with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .manifest import Manifest


@dataclass(frozen=True, repr=False)
class PreparedModel:
    """A prepared model folder and its manifest, read once.

    ``folder``: the folder (a :class:`~pathlib.Path`; a string given is converted);
    ``manifest``: what its ``manifest.json`` said when it was opened. The object does not
    follow later changes to the folder: open it again after preparing the folder anew."""

    folder: Path
    manifest: Manifest

    def __post_init__(self) -> None:
        if not isinstance(self.folder, Path):
            object.__setattr__(self, "folder", Path(self.folder))

    @classmethod
    def open(cls, where: ModelLike) -> PreparedModel:
        """``where`` itself when it is a :class:`PreparedModel` (nothing is read), else the
        folder at path ``where`` with its manifest read now (:meth:`Manifest.read`:
        FileNotFoundError naming the ``prepare`` command when the folder has no manifest,
        ValueError when it is of another format version). TypeError for anything else."""
        if isinstance(where, PreparedModel):
            return where
        if isinstance(where, (str, os.PathLike)):
            folder = Path(where)
            return cls(folder, Manifest.read(folder))
        raise TypeError(
            f"a model is a prepared folder's path or a PreparedModel, got {type(where).__name__}"
        )

    def graph_path(self, kind: str) -> Path:
        """The file of graph ``kind`` (``original``, ``attention_mask``, ``unpack_repack``) in
        the folder, as the manifest lists it; ValueError naming the folder's graphs when it
        has none of that kind."""
        name = self.manifest.graphs.get(kind)
        if name is None:
            raise ValueError(
                f"{self.folder} has no {kind!r} graph; graphs: {sorted(self.manifest.graphs)}"
            )
        return self.folder / name

    def __fspath__(self) -> str:
        """The folder's path, so ``Path(model)``, ``open`` and ``os`` functions take it."""
        return str(self.folder)

    def __str__(self) -> str:
        """The folder's path, as messages and reports name the model."""
        return str(self.folder)

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"PreparedModel({str(self.folder)!r}, source={m.source!r}, task={m.task.task!r}, "
            f"precision={m.precision!r})"
        )


ModelLike = PreparedModel | str | Path
"""What a function that takes a model folder accepts: a :class:`PreparedModel`, or the path of
a prepared folder (opened with :meth:`PreparedModel.open`)."""

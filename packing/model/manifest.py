"""``manifest.json`` of a prepared model folder: what was built, from what, with which shapes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .task import TaskSpec
from .weights import BertDims

MANIFEST = "manifest.json"
CALIBRATION = "calibration.json"  # token budget cache (packing.runtime.calibrate), not a model file
FORMAT_VERSION = 3  # 2: unpack_repack takes ATTENTION_GROUPS attention groups; 3: contrib kernels
PREPARED_BY = ("app", "cli", "user")
"""Who prepared a folder: ``app`` (the Serve app, :func:`deployments.model_store.ensure_model`),
``cli`` (``packed-bert prepare``) or ``user`` (:func:`packing.model.prepare.prepare` called
directly). Manifests written before this field read as ``unknown``: made by a user."""
UNKNOWN_PREPARER = "unknown"
PREPARING = ".preparing"
"""Marker :func:`packing.model.prepare.prepare` writes into a folder first (its text: who
prepares it) and removes after the manifest: a folder holding it and no manifest is an
unfinished preparation (:func:`unfinished_preparer`)."""


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """Description of a prepared model folder (see ``packed-bert prepare``)."""

    source: str  # --model argument: hub id, local folder or random:tiny|base
    dims: BertDims  # encoder dimensions
    seq_len: int  # tokens per row of the packed and padded graphs
    batch_size: int  # rows per batch
    max_valid_num: int  # max sequences per packed batch
    graphs: dict[str, str]  # graph kind -> file name in the folder
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    format_version: int = FORMAT_VERSION
    max_abs_diff: dict[str, float] = field(
        default_factory=dict
    )  # kind -> prepare's check: packed vs alone
    precision: str = "fp32"  # fp32 | int8 | fp16 (packing.model.quantize.PRECISIONS)
    prepared_by: str = "user"  # PREPARED_BY, or UNKNOWN_PREPARER for older manifests
    task: TaskSpec = field(default_factory=TaskSpec)  # what the folder serves (qa before tasks)
    kernels: tuple[str, ...] = ()  # kernels in the graphs in place of plain ops (graphs.KERNELS)
    # the source's encoder family (roberta.ARCHITECTURES: bert | roberta | xlm-roberta); the
    # folder's own config.json and graphs are BERT's either way (packing.model.roberta)
    architecture: str = "bert"

    def to_json(self) -> str:
        """Serialise (dims and task nested as dicts)."""
        d = asdict(self)
        d["task"] = self.task.to_dict()
        return json.dumps(d, indent=2, sort_keys=True)

    def write(self, folder: Path) -> None:
        """Write ``manifest.json`` into ``folder``."""
        (folder / MANIFEST).write_text(self.to_json() + "\n")

    @classmethod
    def read(cls, folder: str | Path) -> Manifest:
        """Read a folder's manifest; clear error when the folder was not prepared."""
        path = Path(folder) / MANIFEST
        if not path.exists():
            raise FileNotFoundError(
                f"{path} not found: prepare the folder first with "
                f"'packed-bert prepare --model SOURCE --out {folder}'"
            )
        raw = _load(path)
        if raw.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: format_version {raw.get('format_version')} is not "
                f"{FORMAT_VERSION}; prepare the folder again"
            )
        raw["dims"] = BertDims(**raw["dims"])
        raw["task"] = TaskSpec.from_dict(raw.get("task"))
        raw["kernels"] = tuple(sorted(raw.get("kernels", ())))
        from .quantize import check_precision

        check_precision(raw["precision"])
        return cls(**raw)

    @classmethod
    def provenance(cls, folder: str | Path) -> Provenance | None:
        """What the folder's manifest says it was prepared from, in any format version
        (older ones included, unlike :meth:`read`); None when the folder has no manifest.

        Raises ValueError naming the file when it is not a JSON object with a ``source``."""
        path = Path(folder) / MANIFEST
        if not path.exists():
            return None
        raw = _load(path)
        if not isinstance(raw.get("source"), str):
            raise ValueError(f"{path}: no 'source' string; not a manifest this code reads")

        def shape(name: str) -> int | None:
            value = raw.get(name)
            return value if isinstance(value, int) else None

        version = raw.get("format_version")
        try:
            task = TaskSpec.from_dict(raw.get("task")).task
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: bad 'task' ({err})") from err
        return Provenance(
            source=raw["source"],
            precision=str(raw["precision"]),
            prepared_by=str(raw["prepared_by"]),
            format_version=version if isinstance(version, int) else None,
            seq_len=shape("seq_len"),
            batch_size=shape("batch_size"),
            max_valid_num=shape("max_valid_num"),
            task=task,
        )

    def verify_files(self, folder: str | Path) -> None:
        """Raise ValueError if a listed file is missing or its checksum changed."""
        for name, digest in self.files.items():
            path = Path(folder) / name
            if not path.exists():
                raise ValueError(f"{path} is listed in the manifest but missing")
            if sha256_file(path) != digest:
                raise ValueError(f"{path} does not match its manifest checksum")


@dataclass(frozen=True)
class Provenance:
    """What a folder was prepared from and by whom (:meth:`Manifest.provenance`): the part of
    a manifest that every format version carries, so an outdated folder can still be judged."""

    source: str  # --model argument / the app's model_source
    precision: str  # fp32 when the manifest predates precisions
    prepared_by: str  # PREPARED_BY, or UNKNOWN_PREPARER (manifests before provenance)
    format_version: int | None
    seq_len: int | None
    batch_size: int | None
    max_valid_num: int | None
    task: str = "qa"  # what the folder serves (packing.model.task.TASKS); qa before tasks

    @property
    def app_made(self) -> bool:
        """Whether the Serve app prepared the folder (only such a folder may be re-prepared)."""
        return self.prepared_by == "app"

    def describe(self) -> str:
        """One phrase: source, task (when not qa), precision, who prepared it, format version."""
        task = "" if self.task == "qa" else f" for task {self.task}"
        return (
            f"{self.source!r}{task} in {self.precision}, prepared by "
            f"{preparer_words(self.prepared_by)}, format_version {self.format_version}"
        )


def preparer_words(prepared_by: str) -> str:
    """Who a ``prepared_by`` value (or an unfinished preparation's marker) names, in words."""
    return {"app": "the app", "cli": "`packed-bert prepare`", "user": "`prepare()` in Python"}.get(
        prepared_by, "a user (no `prepared_by` recorded)"
    )


def unfinished_preparer(folder: str | Path) -> str | None:
    """Who started the unfinished preparation of ``folder`` (the :data:`PREPARING` marker's
    text, :data:`UNKNOWN_PREPARER` when unreadable), or None when the folder has no marker."""
    path = Path(folder) / PREPARING
    if not path.exists():
        return None
    try:
        who = path.read_text().strip()
    except OSError:
        return UNKNOWN_PREPARER
    return who if who in PREPARED_BY else UNKNOWN_PREPARER


def _load(path: Path) -> dict:
    """The manifest's JSON object, with the defaults of fields older manifests lack
    (``precision`` fp32, ``prepared_by`` unknown); ValueError naming the file otherwise."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not readable as JSON ({err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a JSON object")
    raw.setdefault("precision", "fp32")  # folders before precisions: fp32
    raw.setdefault("prepared_by", UNKNOWN_PREPARER)  # folders before provenance: a user's
    return raw

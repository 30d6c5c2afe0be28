"""``manifest.json`` of a prepared model folder: what was built, from what, with which shapes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .weights import BertDims

MANIFEST = "manifest.json"
CALIBRATION = "calibration.json"  # token budget cache (packing.runtime.calibrate), not a model file
FORMAT_VERSION = 2  # 2: unpack_repack takes ATTENTION_GROUPS attention groups


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
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # kind -> prepare's check: packed vs alone
    precision: str = "fp32"  # fp32 | int8 | fp16 (packing.model.quantize.PRECISIONS)

    def to_json(self) -> str:
        """Serialise (dims nested as a dict)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def write(self, folder: Path) -> None:
        """Write ``manifest.json`` into ``folder``."""
        (folder / MANIFEST).write_text(self.to_json() + "\n")

    @classmethod
    def read(cls, folder: str | Path) -> "Manifest":
        """Read a folder's manifest; clear error when the folder was not prepared."""
        path = Path(folder) / MANIFEST
        if not path.exists():
            raise FileNotFoundError(
                f"{path} not found: prepare the folder first with "
                f"'packed-bert prepare --model SOURCE --out {folder}'"
            )
        raw = json.loads(path.read_text())
        if raw.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: format_version {raw.get('format_version')} is not "
                             f"{FORMAT_VERSION}; prepare the folder again")
        raw["dims"] = BertDims(**raw["dims"])
        from .quantize import check_precision

        check_precision(raw.setdefault("precision", "fp32"))  # folders before precisions: fp32
        return cls(**raw)

    def verify_files(self, folder: str | Path) -> None:
        """Raise ValueError if a listed file is missing or its checksum changed."""
        for name, digest in self.files.items():
            path = Path(folder) / name
            if not path.exists():
                raise ValueError(f"{path} is listed in the manifest but missing")
            if sha256_file(path) != digest:
                raise ValueError(f"{path} does not match its manifest checksum")

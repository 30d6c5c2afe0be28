"""This package's CPU kernels for ONNX Runtime (domain ``packed_bert``), built on the host.

``kernels.cc`` beside this file holds the kernels of :data:`packing.model.graphs.HOST_BUILT_KERNELS`:
``packed_attention`` (each unpack/repack layer's attention per sequence over the token axis),
``fused_int8`` (the per-token quantization, rescale, bias, GELU, residual add and
LayerNorm around each int8 Linear, one pass per row) and ``fused_fp32`` (the bias, GELU,
residual add and LayerNorm after each float32 Linear, one pass per row). It is compiled on
first use on each host with the host's C++ compiler for the host's CPU (``-march=native``:
AVX-512 VNNI hosts and AVX2 hosts each get their own vector code) and cached;
:func:`library_path` returns the shared library, which a backend registers with
``SessionOptions.register_custom_ops_library``.

The cache is ``$PACKED_BERT_KERNELS_DIR``, else ``~/.cache/packed-bert/kernels``; one
build per source, compiler and CPU (a key of the three), written to a temporary file and
renamed, so processes that start together (runner replicas) never load a half-written file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from packing.model.graphs import PB_DOMAIN

SOURCE = Path(__file__).with_name("kernels.cc")
CXX_FLAGS = (
    "-O3",
    "-march=native",
    "-std=c++17",
    "-fPIC",
    "-shared",
    "-fvisibility=hidden",
    "-fopenmp-simd",  # the `omp simd` loops vectorised (no OpenMP runtime)
    "-fno-math-errno",
    "-fno-trapping-math",
    "-ffp-contract=off",  # acc * scale + bias rounds twice, as the plain graph's Mul and Add
)
LIBS = ("-lm",)
BUILD_TIMEOUT_S = 300
CACHE_ENV = "PACKED_BERT_KERNELS_DIR"


class KernelBuildError(RuntimeError):
    """The kernel library could not be built on this host (no C++ compiler, or it failed)."""


def compiler() -> str | None:
    """The C++ compiler to build with: ``$CXX``, else ``g++`` or ``c++`` on PATH; None if none."""
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_flags() -> str:
    """The host CPU's feature flags (``-march=native`` builds differ by them)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return os.uname().machine


def cache_dir() -> Path:
    """Where built libraries are kept: ``$PACKED_BERT_KERNELS_DIR`` or
    ``~/.cache/packed-bert/kernels``."""
    given = os.environ.get(CACHE_ENV)
    return Path(given) if given else Path.home() / ".cache" / "packed-bert" / "kernels"


def _build_key(cxx: str) -> str:
    version = subprocess.run(
        [cxx, "--version"], capture_output=True, text=True, timeout=60, check=False
    ).stdout
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), version.encode(), " ".join(CXX_FLAGS + LIBS).encode()):
        h.update(part)
    h.update(_cpu_flags().encode())
    return h.hexdigest()[:16]


@lru_cache(maxsize=1)
def library_path() -> Path:
    """The kernel library for this host, built now if the cache has none (about a second).

    Raises :class:`KernelBuildError` naming the fix when there is no C++ compiler or the
    build fails (the compiler's own message included)."""
    cxx = compiler()
    if cxx is None:
        raise KernelBuildError(
            f"the {PB_DOMAIN} CPU kernels ({SOURCE.name}, used by folders prepared with the "
            "packed_attention, fused_fp32 or fused_int8 kernel) are built on first use and need "
            "a C++ compiler: install g++ (Debian/Ubuntu: apt-get install g++) or set CXX, or "
            "prepare the folder with --kernels mha (fp32) or --kernels int8_to_float,mha (int8)"
        )
    target = cache_dir() / _build_key(cxx) / "libpacked_bert_kernels.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    cmd = [cxx, *CXX_FLAGS, "-o", tmp, str(SOURCE), *LIBS]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
        if done.returncode != 0:
            raise KernelBuildError(
                f"building the {PB_DOMAIN} CPU kernels failed ({' '.join(cmd)}):\n"
                f"{done.stderr.strip()[-2000:]}"
            )
        os.replace(tmp, target)  # atomic: a process starting now sees no half-written file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def graph_needs_kernels(model_path: str | Path) -> bool:
    """True when the ONNX graph at ``model_path`` imports the ``packed_bert`` domain (reads
    the graph alone, not its external weights)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return any(op.domain == PB_DOMAIN for op in model.opset_import)

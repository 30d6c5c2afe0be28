"""The model-runtime interface, and its ONNX Runtime implementation.

A backend runs one prepared graph: ``run(inputs) -> outputs`` with numpy arrays in and
out, named as in :mod:`packing.model.graphs`. Runners never touch a runtime directly,
so another accelerator plugs in by implementing :class:`Backend`:

* ``run`` must be safe to call from one thread at a time (runners serialise calls);
* ``static_shapes`` is True when the runtime needs fixed input shapes (an IPU graph
  compiled by PopRT for ``batch_size x seq_len``, say): runners then give every input the
  same shape on every call -- ``batch_size`` rows, or for unpack/repack the batch's token
  capacity and ``[static_attention_rows, seq_len]`` attention rows
  (:func:`packing.policy.layouts.static_attention_rows`);
* ``describe()`` returns a short text for logs and benchmark headers.

Registered backends: ``onnxruntime`` (:class:`OnnxRuntimeBackend`, CPU or CUDA) and
``sim`` (:class:`packing.runtime.sim.SimBackend`, a simulated accelerator that sleeps for a
profile's device time and returns deterministic logits; for measuring the serving stack
against a device of known speed without one). ``sim`` accepts and ignores the
onnxruntime options (``device``, ``intra_op_threads``) so configs can switch backends.

A PopRT/IPU backend would wrap ``poprt.runtime.ModelRunner`` on a graph converted by
``poprt`` from the same ONNX file; it is not part of this package because the Poplar SDK
cannot be installed here, and untested code is not shipped. Register one with
:func:`register_backend`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import numpy as np


class Backend(ABC):
    """One loaded model graph that maps named numpy inputs to named numpy outputs."""

    #: True when every call must use the graph's full fixed shapes.
    static_shapes: bool = False

    @abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph once; returns every graph output by name."""

    @abstractmethod
    def describe(self) -> str:
        """One line naming the runtime, device and threads."""


HALF_PRECISIONS = ("fp16", "bf16")  # graph precisions the CPU provider is refused


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on the CPU, or its CUDA provider when ``onnxruntime-gpu`` is installed.

    ``device``: "cpu", "cuda", or "auto" (CUDA when available, else CPU).
    ``intra_op_threads``: threads inside one operator (None = ORT's default, all cores).

    A graph prepared in fp16 or bf16 (the model's ``precision`` metadata) is refused on the
    CPU provider with a RuntimeError saying so: ONNX Runtime's CPU kernels are float32 (it
    runs such a graph through casts, slower than fp32). ``allow_cpu_half`` lifts that, for
    checking an fp16 graph's numbers on a host without a GPU (prepare's check, the tests).
    """

    def __init__(self, model_path: str | Path, device: str = "auto",
                 intra_op_threads: int | None = None, inter_op_threads: int = 1,
                 allow_cpu_half: bool = False) -> None:
        import onnxruntime as ort

        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise RuntimeError(
                "device='cuda' needs onnxruntime-gpu with a working CUDA; available providers: "
                f"{available}"
            )
        use_cuda = device == "cuda" or (device == "auto" and "CUDAExecutionProvider" in available)
        providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda
                     else ["CPUExecutionProvider"])
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads is not None:
            if intra_op_threads < 1:
                raise ValueError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
            opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = inter_op_threads
        opts.log_severity_level = 3
        self.model_path = Path(model_path)
        if not self.model_path.exists():
            raise FileNotFoundError(f"model graph not found: {self.model_path}")
        self._session = ort.InferenceSession(str(self.model_path), opts, providers=providers)
        self._outputs = [o.name for o in self._session.get_outputs()]
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._threads = intra_op_threads
        self._provider = self._session.get_providers()[0]
        meta = self._session.get_modelmeta().custom_metadata_map
        self.precision = meta.get("precision", "fp32")
        if (self.precision in HALF_PRECISIONS and self._provider == "CPUExecutionProvider"
                and not allow_cpu_half):
            raise RuntimeError(
                f"{self.model_path} is a {self.precision} graph and would run on "
                f"CPUExecutionProvider, which has no {self.precision} kernels (device="
                f"{device!r}, available providers {available}); run it on CUDA "
                "(onnxruntime-gpu, device: cuda), or prepare the folder with --precision "
                "int8 or fp32 for CPUs")

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = self._inputs - inputs.keys()
        if missing:
            raise ValueError(f"{self.model_path.name}: missing inputs {sorted(missing)}")
        feed = {k: inputs[k] for k in self._inputs}
        return dict(zip(self._outputs, self._session.run(self._outputs, feed)))

    def describe(self) -> str:
        threads = self._threads or os.cpu_count()
        return (f"onnxruntime {self._provider} ({threads} intra-op threads) {self.model_path.name}"
                f"{'' if self.precision == 'fp32' else ' ' + self.precision}")


BackendFactory = Callable[..., Backend]


def _sim_backend(model_path: str | Path, **options) -> Backend:
    """Factory of the ``sim`` backend, imported on first use (sim imports this module)."""
    from .sim import SimBackend

    return SimBackend(model_path, **options)


_REGISTRY: dict[str, BackendFactory] = {"onnxruntime": OnnxRuntimeBackend, "sim": _sim_backend}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``factory(model_path, **options)`` available as backend ``name``."""
    _REGISTRY[name] = factory


def backend_kwargs(backend: str, options: dict | None = None,
                   intra_op_threads: int | None = None) -> dict:
    """``backend=`` plus its options, as the runners take them. ``intra_op_threads`` is an
    ONNX Runtime option and is added for that backend alone (None: its default)."""
    opts = dict(options or {})
    if backend == "onnxruntime" and intra_op_threads:
        opts["intra_op_threads"] = intra_op_threads
    return {"backend": backend, **opts}


def load_backend(name: str, model_path: str | Path, **options) -> Backend:
    """Instantiate backend ``name`` on ``model_path``; clear error for unknown names."""
    if name not in _REGISTRY:
        hint = (" PopRT/IPU needs the Graphcore Poplar SDK and a backend registered with "
                "packing.runtime.backend.register_backend." if name == "poprt" else "")
        raise ValueError(f"unknown backend {name!r}; available: {sorted(_REGISTRY)}.{hint}")
    return _REGISTRY[name](model_path, **options)

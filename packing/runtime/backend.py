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

ONNX Runtime itself comes from one of the package's extras, ``cpu`` (``onnxruntime``) or
``gpu`` (``onnxruntime-gpu``), never both (:func:`import_onnxruntime` says which to install
when neither is). CUDA is decided by the session, not by ``get_available_providers()``,
which lists CUDA whenever onnxruntime-gpu is installed: ``device="cuda"`` raises when a
session is not on ``CUDAExecutionProvider``, ``"auto"`` warns and runs on the CPU
(:func:`resolve_device`, :func:`cuda_problem`), and every CUDA session runs with TF32 off
(:data:`CUDA_PROVIDER_OPTIONS`). docs/backends.md, section CUDA.

A PopRT/IPU backend would wrap ``poprt.runtime.ModelRunner`` on a graph converted by
``poprt`` from the same ONNX file; it is not part of this package because the Poplar SDK
cannot be installed here, and untested code is not shipped. Register one with
:func:`register_backend`.
"""

from __future__ import annotations

import functools
import logging
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

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
#: Options of the CUDA execution provider in every session this module makes. TF32 off:
#: ONNX Runtime's CUDA provider otherwise lets cuBLAS/cuDNN run float32 MatMul and Gemm on
#: TF32 tensor cores (10-bit mantissa) on Ampere and later GPUs, and fp32 graphs would no
#: longer meet fp32's 1e-4 packed-vs-solo tolerance by construction. It does not touch fp16
#: arithmetic.
CUDA_PROVIDER_OPTIONS = {"use_tf32": "0"}
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
"""ONNX Runtime graph rewrites turned off for sessions on the CPU provider. ORT 1.32 fuses
residual ``Add`` + ``LayerNormalization`` into ``SkipLayerNormalization``, whose CPU kernel
ran 4-7x slower than the two operators it replaces at BERT-base shapes ([1, 256, 768]: 507
against 75 us; docs/precision.md "Where the time goes"). The rewrite stays on for CUDA; the
backend option ``disabled_optimizers`` overrides this list."""


def disabled_optimizers_for(on_cuda: bool, given: tuple[str, ...] | None = None) -> tuple:
    """The ONNX Runtime graph rewrites a session leaves out: ``given`` when the backend option
    names them, else :data:`CPU_DISABLED_OPTIMIZERS` on the CPU provider and none on CUDA."""
    if given is not None:
        return tuple(given)
    return () if on_cuda else CPU_DISABLED_OPTIMIZERS


INSTALL_HINT = (
    "install exactly one ONNX Runtime wheel, through the extras: "
    'pip install "packed-bert-serve[cpu]" for the CPU or "packed-bert-serve[gpu]" '
    'for CUDA (from a checkout: pip install -e ".[cpu]" or -e ".[gpu]")'
)
CUDA_HINT = (
    'for CUDA: pip uninstall -y onnxruntime onnxruntime-gpu, then pip install -e ".[gpu]" '
    "(onnxruntime-gpu with its CUDA and cuDNN libraries from PyPI), with an NVIDIA driver "
    "that runs the CUDA major version onnxruntime-gpu was built for (nvidia-smi's "
    "'CUDA Version'); ONNX Runtime's own error lines on stderr name the "
    "library that failed to load"
)

log = logging.getLogger(__name__)


class OnnxRuntimeMissing(ImportError, RuntimeError):
    """ONNX Runtime is not installed (neither the ``cpu`` nor the ``gpu`` extra), or its
    package folder is broken (two wheels installed over each other, one then removed)."""


def import_onnxruntime():
    """The ``onnxruntime`` module, or :class:`OnnxRuntimeMissing` saying which extra to install.

    Neither ONNX Runtime wheel is a hard dependency (``onnxruntime`` and ``onnxruntime-gpu``
    install the same ``onnxruntime`` package folder and must not both be installed); the
    ``cpu`` and ``gpu`` extras each bring one.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise OnnxRuntimeMissing(f"ONNX Runtime is not installed ({exc}); {INSTALL_HINT}") from exc
    if not hasattr(ort, "InferenceSession"):  # a folder left behind by an uninstall
        raise OnnxRuntimeMissing(
            f"the onnxruntime package at {getattr(ort, '__path__', '?')} is incomplete (two "
            "ONNX Runtime wheels installed over each other, then one removed?): pip uninstall "
            f"-y onnxruntime onnxruntime-gpu, then {INSTALL_HINT}"
        )
    return ort


def installed_onnxruntime_wheels() -> list[str]:
    """The ONNX Runtime distributions installed here (``onnxruntime``, ``onnxruntime-gpu``);
    more than one means they overwrote each other's files."""
    from importlib import metadata

    found = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return found


def _both_wheels_note() -> str:
    wheels = installed_onnxruntime_wheels()
    if len(wheels) < 2:
        return ""
    return (
        f" Both ONNX Runtime wheels are installed ({', '.join(wheels)}): they share one "
        "package folder and the last one installed wins."
    )


@functools.lru_cache(maxsize=1)
def _preload_cuda_libraries(ort) -> None:
    """Let onnxruntime-gpu (>= 1.21) load the CUDA and cuDNN libraries that the ``gpu``
    extra installs from PyPI (``nvidia-*`` wheels), which the dynamic loader does not search;
    once per process. Without them, system libraries are found the usual way."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None or CUDA_PROVIDER not in ort.get_available_providers():
        return
    try:
        preload()
    except Exception as exc:  # noqa: BLE001 - the session's provider check below decides
        log.debug("onnxruntime.preload_dlls failed: %s", exc)


def cuda_providers() -> list:
    """The ``providers`` argument of a CUDA session: CUDA with :data:`CUDA_PROVIDER_OPTIONS`,
    then the CPU provider (ONNX Runtime places there what CUDA has no kernel for)."""
    return [(CUDA_PROVIDER, dict(CUDA_PROVIDER_OPTIONS)), CPU_PROVIDER]


def session_provider(session) -> str:
    """The execution provider a session really runs on: the first of ``get_providers()``.
    ONNX Runtime drops a provider it cannot create (onnxruntime-gpu without its CUDA or cuDNN
    libraries, no driver, no device) with a log line and goes on with the rest, so the list
    asked for says nothing; this does."""
    providers = session.get_providers()
    return providers[0] if providers else "none"


def _probe_graph() -> bytes:
    """A one-MatMul float32 ONNX graph, to see whether a CUDA session really gets CUDA."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "x"], ["y"])], "cuda_probe", [x], [y]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every ONNX Runtime >= 1.18
    return model.SerializeToString()


@functools.lru_cache(maxsize=1)
def cuda_problem() -> str | None:
    """Why ONNX Runtime here cannot run on CUDA, or None when it can.

    None only when a session made with the CUDA provider first really runs on it (and runs a
    MatMul there): ``get_available_providers()`` lists CUDA whenever onnxruntime-gpu is
    installed, with or without a GPU, a driver, or the CUDA and cuDNN libraries. Cached for
    the process (the probe loads CUDA once).
    """
    ort = import_onnxruntime()
    available = ort.get_available_providers()
    if CUDA_PROVIDER not in available:
        return (
            f"onnxruntime {ort.__version__} here has no {CUDA_PROVIDER} (available: "
            f"{available}; installed: {installed_onnxruntime_wheels() or 'none'}); "
            f"{CUDA_HINT}.{_both_wheels_note()}"
        )
    _preload_cuda_libraries(ort)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(_probe_graph(), opts, providers=cuda_providers())
        got = session_provider(sess)
        if got == CUDA_PROVIDER:
            sess.run(None, {"x": np.eye(2, dtype=np.float32)})
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means no CUDA here, said why
        return f"a session with {CUDA_PROVIDER} failed ({type(exc).__name__}: {exc}); {CUDA_HINT}."
    return (
        f"onnxruntime {ort.__version__} ({', '.join(installed_onnxruntime_wheels())}) lists "
        f"{CUDA_PROVIDER}, but a session asking "
        f"for it runs on {got} (CUDA or cuDNN libraries not loadable, no driver or no "
        f"device); {CUDA_HINT}.{_both_wheels_note()}"
    )


def resolve_device(device: str) -> str:
    """``"cpu"`` or ``"cuda"``: the device a backend made with ``device`` runs on.

    ``"auto"`` is ``"cuda"`` only when :func:`cuda_problem` finds none; when CUDA is listed
    but a session cannot get it, that is logged as a warning and ``"auto"`` is the CPU.
    ``"cpu"`` and ``"cuda"`` are returned as given (a backend on ``"cuda"`` fails when it
    does not get CUDA).
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device != "auto":
        return device
    ort = import_onnxruntime()
    if CUDA_PROVIDER not in ort.get_available_providers():
        return "cpu"
    problem = cuda_problem()
    if problem:
        log.warning("device 'auto': using the CPU, not CUDA: %s", problem)
        return "cpu"
    return "cuda"


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on the CPU, or its CUDA provider when ``onnxruntime-gpu`` is installed.

    ``device``: "cpu", "cuda", or "auto" (CUDA when a session really gets it, else CPU).
    ``intra_op_threads``: threads inside one operator (None = ORT's default, all cores).
    ``spin``: whether ORT's idle intra-op (and inter-op) threads spin waiting for work
    (``session.intra_op.allow_spinning``; None = ORT's default, which spins). Spinning
    threads hold their cores between operators, which pays only when nothing else needs them.
    ``disabled_optimizers``: ONNX Runtime graph rewrites to leave out (None:
    :data:`CPU_DISABLED_OPTIMIZERS` on the CPU provider, none on CUDA).
    ``profile``: a file prefix; when set, ONNX Runtime's profiler records every operator of
    every run and :meth:`end_profiling` writes the trace (``packed-bert bench --profile``).
    ``memory_arena`` and ``memory_pattern``: ONNX Runtime's CPU memory arena and memory-pattern
    planning (``SessionOptions.enable_cpu_mem_arena`` and ``enable_mem_pattern``; both on by
    default, as in ONNX Runtime). ``io_binding``: :meth:`run` binds the inputs and lets ONNX
    Runtime allocate the outputs through an IO binding instead of ``InferenceSession.run``.
    The three were measured against the defaults kept here (docs/precision.md, "ONNX Runtime's
    session options"): none was faster beyond the host's noise.

    ``device="cuda"`` makes the session with the CUDA provider (TF32 off,
    :data:`CUDA_PROVIDER_OPTIONS`) and checks the provider the session really got: ONNX
    Runtime falls back to the CPU without an error when CUDA or cuDNN cannot be loaded, and
    this raises a RuntimeError instead, naming what was asked, what ONNX Runtime gave and how
    to fix it. ``"auto"`` takes that fallback, with a warning in the log.

    A graph prepared in fp16 or bf16 (the model's ``precision`` metadata) is refused on the
    CPU provider with a RuntimeError saying so: ONNX Runtime's CPU kernels are float32 (it
    runs such a graph through casts, slower than fp32). ``allow_cpu_half`` lifts that, for
    checking an fp16 graph's numbers on a host without a GPU (prepare's check, the tests).
    """

    def __init__(
        self,
        model_path: str | Path,
        device: str = "auto",
        intra_op_threads: int | None = None,
        inter_op_threads: int = 1,
        allow_cpu_half: bool = False,
        spin: bool | None = None,
        profile: str | None = None,
        disabled_optimizers: tuple[str, ...] | None = None,
        memory_arena: bool = True,
        memory_pattern: bool = True,
        io_binding: bool = False,
    ) -> None:
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
        ort = import_onnxruntime()
        available = ort.get_available_providers()
        if device == "cuda" and CUDA_PROVIDER not in available:
            raise RuntimeError(
                f"device='cuda' asked, but onnxruntime {ort.__version__} here has no "
                f"{CUDA_PROVIDER} (available providers: {available}; installed: "
                f"{installed_onnxruntime_wheels() or 'none'}); {CUDA_HINT}."
                f"{_both_wheels_note()}"
            )
        use_cuda = device == "cuda" or (device == "auto" and CUDA_PROVIDER in available)
        if use_cuda:
            _preload_cuda_libraries(ort)
        providers = cuda_providers() if use_cuda else [CPU_PROVIDER]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads is not None:
            if intra_op_threads < 1:
                raise ValueError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
            opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = inter_op_threads
        if spin is not None:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
            opts.add_session_config_entry("session.inter_op.allow_spinning", "1" if spin else "0")
        if profile is not None:
            opts.enable_profiling = True
            opts.profile_file_prefix = str(profile)
        opts.enable_cpu_mem_arena = memory_arena
        opts.enable_mem_pattern = memory_pattern
        opts.log_severity_level = 3
        self._io_binding = io_binding
        self.model_path = Path(model_path)
        if not self.model_path.exists():
            raise FileNotFoundError(f"model graph not found: {self.model_path}")

        # imported here, not at module load: the processes that import this module without
        # making an ONNX Runtime session (Ingress, Packer, sim) need neither onnx nor the kernels
        from packing.runtime import cpu_kernels

        own_kernels = cpu_kernels.graph_needs_kernels(self.model_path)
        if own_kernels:  # fused_int8, fused_fp32 or packed_attention
            opts.register_custom_ops_library(str(cpu_kernels.library_path()))

        def session(providers: list, on_cuda: bool):
            rewrites = disabled_optimizers_for(on_cuda, disabled_optimizers)
            return ort.InferenceSession(
                str(self.model_path), opts, providers=providers, disabled_optimizers=list(rewrites)
            )

        self._session = session(providers, use_cuda)
        self._outputs = [o.name for o in self._session.get_outputs()]
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._threads = intra_op_threads
        self._provider = session_provider(self._session)
        if use_cuda and self._provider != CUDA_PROVIDER:
            got = (
                f"ONNX Runtime {ort.__version__} made the session on {self._provider} "
                f"(session providers {self._session.get_providers()}; available "
                f"{available})"
            )
            if device == "cuda":
                raise RuntimeError(
                    f"device='cuda' asked for {self.model_path.name}, but {got}: the CUDA "
                    f"provider could not be created (CUDA or cuDNN libraries not loadable, no "
                    f"driver or no device); {CUDA_HINT}.{_both_wheels_note()}"
                )
            log.warning(
                "device 'auto': %s runs on the CPU, not CUDA: %s; %s.",
                self.model_path.name,
                got,
                CUDA_HINT,
            )
            # the CPU session a plain device='cpu' makes (its graph rewrites, the same numbers)
            self._session = session([CPU_PROVIDER], False)
        if own_kernels and self._provider == CUDA_PROVIDER:
            log.warning(
                "%s uses this package's CPU kernels (packed_bert domain): on CUDA those nodes "
                "run on the CPU between GPU kernels; prepare a folder for a GPU with --kernels "
                "mha (fp32) or --precision fp16",
                self.model_path.name,
            )
        meta = self._session.get_modelmeta().custom_metadata_map
        self.precision = meta.get("precision", "fp32")
        if (
            self.precision in HALF_PRECISIONS
            and self._provider == CPU_PROVIDER
            and not allow_cpu_half
        ):
            raise RuntimeError(
                f"{self.model_path} is a {self.precision} graph and would run on "
                f"CPUExecutionProvider, which has no {self.precision} kernels (device="
                f"{device!r}, available providers {available}); run it on CUDA "
                "(onnxruntime-gpu, device: cuda), or prepare the folder with --precision "
                "int8 or fp32 for CPUs"
            )

    @property
    def provider(self) -> str:
        """The execution provider the session runs on (``CUDAExecutionProvider``, ...)."""
        return self._provider

    @property
    def provider_options(self) -> dict:
        """The session's provider options as ONNX Runtime reports them (e.g. the CUDA
        provider's ``use_tf32``)."""
        return self._session.get_provider_options()

    def end_profiling(self) -> Path:
        """Stop the profiler (the backend was made with ``profile=``) and return the path of
        its trace (Chrome trace JSON: one event per operator run, see
        :mod:`packing.bench.profile`)."""
        return Path(self._session.end_profiling())

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = self._inputs - inputs.keys()
        if missing:
            raise ValueError(f"{self.model_path.name}: missing inputs {sorted(missing)}")
        if self._io_binding:
            binding = self._session.io_binding()
            for k in self._inputs:
                binding.bind_cpu_input(k, np.ascontiguousarray(inputs[k]))
            for name in self._outputs:
                binding.bind_output(name, "cpu")
            self._session.run_with_iobinding(binding)
            return dict(zip(self._outputs, binding.copy_outputs_to_cpu()))
        feed = {k: inputs[k] for k in self._inputs}
        return dict(zip(self._outputs, self._session.run(self._outputs, feed)))

    def describe(self) -> str:
        threads = self._threads or os.cpu_count()
        return (
            f"onnxruntime {self._provider} ({threads} intra-op threads) {self.model_path.name}"
            f"{'' if self.precision == 'fp32' else ' ' + self.precision}"
        )


BackendFactory = Callable[..., Backend]


def _sim_backend(model_path: str | Path, **options) -> Backend:
    """Factory of the ``sim`` backend, imported on first use (sim imports this module)."""
    from .sim import SimBackend

    return SimBackend(model_path, **options)


_REGISTRY: dict[str, BackendFactory] = {"onnxruntime": OnnxRuntimeBackend, "sim": _sim_backend}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``factory(model_path, **options)`` available as backend ``name``."""
    _REGISTRY[name] = factory


def backend_kwargs(
    backend: str, options: dict | None = None, intra_op_threads: int | None = None
) -> dict:
    """``backend=`` plus its options, as the runners take them. ``intra_op_threads`` is an
    ONNX Runtime option and is added for that backend alone (None: its default)."""
    opts = dict(options or {})
    if backend == "onnxruntime" and intra_op_threads:
        opts["intra_op_threads"] = intra_op_threads
    return {"backend": backend, **opts}


def load_backend(name: str, model_path: str | Path, **options) -> Backend:
    """Instantiate backend ``name`` on ``model_path``; clear error for unknown names."""
    if name not in _REGISTRY:
        hint = (
            " PopRT/IPU needs the Graphcore Poplar SDK and a backend registered with "
            "packing.runtime.backend.register_backend."
            if name == "poprt"
            else ""
        )
        raise ValueError(f"unknown backend {name!r}; available: {sorted(_REGISTRY)}.{hint}")
    return _REGISTRY[name](model_path, **options)

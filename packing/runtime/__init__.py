"""The serving core: backends, the plan executor, features and results, admission and the
dispatch step, the simulated device, token budget calibration. The in-process runners built
on it are :mod:`packing.runners`."""

from .backend import Backend, OnnxRuntimeBackend, load_backend, register_backend
from .executor import PlanExecutor, RunStats, open_graph
from .features import Features, InvalidInput, Pooled, Result, SpanLogits, validate_features
from .sim import SimBackend, SimProfile, sim_profile

__all__ = [
    "Backend",
    "OnnxRuntimeBackend",
    "load_backend",
    "register_backend",
    "Features",
    "InvalidInput",
    "SpanLogits",
    "Pooled",
    "Result",
    "validate_features",
    "RunStats",
    "PlanExecutor",
    "open_graph",
    "SimBackend",
    "SimProfile",
    "sim_profile",
]

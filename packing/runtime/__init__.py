"""Model runtime: backends, the plan executor, and the runners built on it."""

from .backend import Backend, OnnxRuntimeBackend, load_backend, register_backend
from .executor import PlanExecutor, RunStats, open_graph
from .features import Features, InvalidInput, Pooled, Result, SpanLogits, validate_features
from .model_runner import ModelRunner
from .pack_runner import PackRunner
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
    "ModelRunner",
    "PackRunner",
    "RunStats",
    "PlanExecutor",
    "open_graph",
    "SimBackend",
    "SimProfile",
    "sim_profile",
]

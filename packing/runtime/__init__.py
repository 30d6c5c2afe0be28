"""Model runtime: backends and the runners that execute batch plans on them."""

from .backend import Backend, OnnxRuntimeBackend, load_backend, register_backend
from .features import Features, InvalidInput, SpanLogits, validate_features
from .runners import ModelRunner, PackRunner, PlanExecutor, RunStats

__all__ = ["Backend", "OnnxRuntimeBackend", "load_backend", "register_backend", "Features",
           "InvalidInput", "SpanLogits", "validate_features", "ModelRunner", "PackRunner",
           "RunStats", "PlanExecutor"]

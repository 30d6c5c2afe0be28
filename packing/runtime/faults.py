"""Operator-controlled fault injection for drills and tests: make model calls fail on demand.

:class:`FaultInjectingBackend` wraps any :class:`~packing.runtime.backend.Backend`. While its
trigger file exists, every ``run`` raises :class:`InjectedFault` instead of calling the model;
once the file is removed, calls go through again. The trigger is a path in the operator's
config (``fault_file`` in the app's ``args``), read on the runner's host: nothing in a request
can turn it on. Leave it unset in production.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .backend import Backend


class InjectedFault(RuntimeError):
    """A model call refused on purpose because the fault trigger file exists."""


class FaultInjectingBackend(Backend):
    """``inner``, except that ``run`` raises :class:`InjectedFault` while ``trigger_file``
    exists. Checks the file on every call (one ``stat``), so a fault starts and stops
    without restarting anything."""

    def __init__(self, inner: Backend, trigger_file: str | Path) -> None:
        self.inner = inner
        self.trigger_file = Path(trigger_file)
        self.static_shapes = inner.static_shapes
        self.injected = 0  # model calls refused so far

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.trigger_file.exists():
            self.injected += 1
            raise InjectedFault(f"injected fault: {self.trigger_file} exists")
        return self.inner.run(inputs)

    def describe(self) -> str:
        return f"{self.inner.describe()} (fault injection while {self.trigger_file} exists)"

"""Where one layout's time went: :class:`LayoutProfile`, :func:`summarize` (a trace's runs
summed per :data:`~packing.bench.profile.categories.CATEGORIES` entry) and
:func:`format_profile` (the Markdown table)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .categories import CATEGORIES, category
from .trace import OpRun


@dataclass(frozen=True)
class LayoutProfile:
    """Where the time of one layout's batches went.

    ``ms``: milliseconds per batch in each :data:`CATEGORIES` entry (operators' time);
    ``run_ms``: mean wall time of a model run; ``tokens`` / ``slots``: mean real tokens and
    token slots the dense layers computed per batch."""

    layout: str
    precision: str
    batches: int
    tokens: float
    slots: float
    run_ms: float
    ms: dict[str, float] = field(default_factory=dict)

    @property
    def ops_ms(self) -> float:
        """Operators' time per batch (the wall time less what runs between operators)."""
        return sum(self.ms.values())

    def share(self, cat: str) -> float:
        """Share of the operators' time in ``cat``."""
        total = self.ops_ms
        return self.ms.get(cat, 0.0) / total if total else 0.0


def summarize(
    layout: str, precision: str, ops: Sequence[OpRun], run_us: Sequence[int], tokens, slots
) -> LayoutProfile:
    """A :class:`LayoutProfile` from a trace's counted operator runs and model runs."""
    n = max(len(run_us), 1)
    ms = dict.fromkeys(CATEGORIES, 0.0)
    for r in ops:
        ms[category(r.op, r.node, r.input_shapes)] += r.dur_us / 1000.0 / n
    return LayoutProfile(
        layout=layout,
        precision=precision,
        batches=len(run_us),
        tokens=float(np.mean(tokens)) if len(tokens) else 0.0,
        slots=float(np.mean(slots)) if len(slots) else 0.0,
        run_ms=float(np.mean(run_us)) / 1000.0 if len(run_us) else 0.0,
        ms=ms,
    )


def format_profile(profiles: Sequence[LayoutProfile]) -> str:
    """Markdown table: one column per profile, one row per :data:`CATEGORIES` entry that took
    time anywhere (ms per batch and share of the operators' time), then the operators' total,
    the model run's wall time, and real tokens and token slots per batch."""
    head = "| kind of operator | " + " | ".join(f"{p.layout} {p.precision}" for p in profiles)
    rows = [head + " |", "|---|" + "---:|" * len(profiles)]
    for cat in CATEGORIES:
        if not any(p.ms.get(cat, 0.0) > 0 for p in profiles):
            continue
        cells = [f"{p.ms.get(cat, 0.0):.1f} ms ({p.share(cat):.0%})" for p in profiles]
        rows.append(f"| {cat} | " + " | ".join(cells) + " |")
    rows.append("| operators, total | " + " | ".join(f"{p.ops_ms:.1f} ms" for p in profiles) + " |")
    rows.append("| model run (wall) | " + " | ".join(f"{p.run_ms:.1f} ms" for p in profiles) + " |")
    rows.append(
        "| real tokens / slots per batch | "
        + " | ".join(f"{p.tokens:.0f} / {p.slots:.0f}" for p in profiles)
        + " |"
    )
    rows.append(
        "| ms per 1,000 real tokens | "
        + " | ".join(f"{1000 * p.run_ms / max(p.tokens, 1):.1f}" for p in profiles)
        + " |"
    )
    return "\n".join(rows)

"""The calibration's result and rule: a measured throughput curve, and the budget picked from it.

:class:`Calibration` holds one curve (token budgets and the median real tokens per second at
each) and the budget chosen from it; :func:`budgets_for` lists the budgets measured for a
model's shapes; :func:`pick_budget` is the rule: the **smallest budget whose throughput is
at least ``threshold`` (default 0.95) times the best measured**, each budget's throughput
taken with ``plan_overhead_s`` seconds added to every batch when the batches are served
(:func:`served_rates`: the hops a served plan pays beyond its model run, which a small budget
pays more often per token).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

DEFAULT_THRESHOLD = 0.95


@dataclass(frozen=True)
class Calibration:
    """One measured throughput curve and the budget chosen from it.

    Attributes:
        budgets: token budgets measured, ascending (``seq_len x 1, 2, 4 ...`` and
            ``batch_size x seq_len``).
        tokens_per_s: median real tokens per second at each budget (same order).
        max_tokens: the chosen budget, one of ``budgets``.
        threshold: the rule's fraction of the best throughput.
        rule: the rule in words.
        plan_overhead_s: seconds added to each batch's time when picking (:func:`served_rates`;
            0 in-process, the app's ``plan_overhead_s`` when served).
        fingerprint: hex key of what was measured (see
            :func:`~packing.runtime.calibrate.key.fingerprint`); ``""`` when the options
            could not be fingerprinted.
        measured_at: when it was measured (UTC, ISO 8601).
        backend: the measured backend's ``describe()`` line.
        seconds: wall time the measurement took.
        others_load: share of the host's CPU other processes used while it measured
            (:class:`~packing.runtime.calibrate.load.OthersLoad`); None when unknown.
        from_cache: True when returned from ``calibration.json`` without measuring (not stored).
    """

    budgets: tuple[int, ...]
    tokens_per_s: tuple[float, ...]
    max_tokens: int
    threshold: float
    rule: str
    fingerprint: str
    measured_at: str
    backend: str = ""
    seconds: float = 0.0
    plan_overhead_s: float = 0.0
    others_load: float | None = None
    from_cache: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        budgets = tuple(int(b) for b in self.budgets)
        rates = tuple(float(r) for r in self.tokens_per_s)
        if not budgets or len(budgets) != len(rates):
            raise ValueError(
                f"calibration needs one throughput per budget, got {len(budgets)} "
                f"budgets and {len(rates)} throughputs"
            )
        if list(budgets) != sorted(set(budgets)) or budgets[0] < 1:
            raise ValueError(f"calibration budgets must be ascending positive ints, got {budgets}")
        if not all(math.isfinite(r) and r >= 0 for r in rates):
            raise ValueError(f"calibration throughputs must be finite and >= 0, got {rates}")
        if int(self.max_tokens) not in budgets:
            raise ValueError(
                f"chosen max_tokens {self.max_tokens!r} is not a measured budget {budgets}"
            )
        object.__setattr__(self, "budgets", budgets)
        object.__setattr__(self, "tokens_per_s", rates)
        object.__setattr__(self, "max_tokens", int(self.max_tokens))
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "plan_overhead_s", check_overhead(self.plan_overhead_s))

    @property
    def best_tokens_per_s(self) -> float:
        """The highest throughput measured."""
        return max(self.tokens_per_s)

    def to_dict(self) -> dict:
        """The cache entry: every field except ``from_cache``."""
        out = asdict(self)
        out.pop("from_cache")
        out["budgets"], out["tokens_per_s"] = list(self.budgets), list(self.tokens_per_s)
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> Calibration:
        """Inverse of :meth:`to_dict` (marks the result ``from_cache``); ValueError/TypeError
        /KeyError on a malformed entry."""
        fields = (
            "budgets",
            "tokens_per_s",
            "max_tokens",
            "threshold",
            "rule",
            "fingerprint",
            "measured_at",
            "backend",
            "seconds",
            "plan_overhead_s",
            "others_load",
        )
        return cls(**{k: raw[k] for k in fields if k in raw}, from_cache=True)

    def repicked(self, threshold: float, plan_overhead_s: float = 0.0) -> Calibration:
        """This curve with the budget picked again for ``threshold`` and ``plan_overhead_s``
        (itself when both are the ones it was picked with)."""
        threshold, overhead = float(threshold), check_overhead(plan_overhead_s)
        if (threshold, overhead) == (self.threshold, self.plan_overhead_s):
            return self
        return replace(
            self,
            threshold=threshold,
            plan_overhead_s=overhead,
            rule=_rule(threshold, overhead),
            max_tokens=pick_budget(self.budgets, self.tokens_per_s, threshold, overhead),
        )

    def table(self) -> str:
        """The curve as a text table: budget, tokens/s, ratio to the best, ``<-`` on the chosen;
        with a plan overhead, the served tokens/s the rule compared too."""
        rates = served_rates(self.budgets, self.tokens_per_s, self.plan_overhead_s)
        served = self.plan_overhead_s > 0
        best = max(rates) or 1.0
        head = f"{'budget':>8}  {'tokens/s':>12}"
        head += f"  {'served':>12}" if served else ""
        lines = [head + f"  {'of best':>7}"]
        for b, r, v in zip(self.budgets, self.tokens_per_s, rates):
            mark = "  <- max_tokens" if b == self.max_tokens else ""
            row = f"{b:>8}  {r:>12,.0f}" + (f"  {v:>12,.0f}" if served else "")
            lines.append(row + f"  {v / best:>7.3f}{mark}")
        return "\n".join(lines)


def check_overhead(plan_overhead_s: float) -> float:
    """``plan_overhead_s`` as a float; ValueError naming it unless it is a finite number >= 0."""
    if (
        isinstance(plan_overhead_s, bool)
        or not isinstance(plan_overhead_s, (int, float))
        or not math.isfinite(plan_overhead_s)
        or plan_overhead_s < 0
    ):
        raise ValueError(f"plan_overhead_s must be a number >= 0 seconds, got {plan_overhead_s!r}")
    return float(plan_overhead_s)


def _rule(threshold: float, plan_overhead_s: float = 0.0) -> str:
    rule = f"smallest budget with tokens/s >= {threshold:g} x the best measured"
    if plan_overhead_s > 0:
        rule += f", each batch's time plus {plan_overhead_s * 1e3:g} ms per plan"
    return rule


def served_rates(
    budgets: Sequence[int], tokens_per_s: Sequence[float], plan_overhead_s: float = 0.0
) -> list[float]:
    """Each budget's throughput when every batch also costs ``plan_overhead_s`` seconds:
    ``b / (b / r + plan_overhead_s)`` for budget ``b`` measured at ``r`` tokens/s (0 where
    ``r`` is 0; ``r`` itself at no overhead). A batch of a budget carries about ``b`` real
    tokens, so a small budget pays the overhead more often per token."""
    overhead = check_overhead(plan_overhead_s)
    if overhead == 0:
        return [float(r) for r in tokens_per_s]
    return [b / (b / r + overhead) if r > 0 else 0.0 for b, r in zip(budgets, tokens_per_s)]


def budgets_for(seq_len: int, batch_size: int) -> list[int]:
    """``seq_len x 1, 2, 4, 8 ...`` below ``batch_size x seq_len``, then that full budget."""
    full = int(seq_len) * int(batch_size)
    out, k = [], 1
    while seq_len * k < full:
        out.append(int(seq_len) * k)
        k *= 2
    out.append(full)
    return out


def pick_budget(
    budgets: Sequence[int],
    tokens_per_s: Sequence[float],
    threshold: float = DEFAULT_THRESHOLD,
    plan_overhead_s: float = 0.0,
) -> int:
    """The smallest budget whose throughput is ``>= threshold x`` the best one, each
    throughput taken with ``plan_overhead_s`` seconds added per batch (:func:`served_rates`).

    ``budgets`` ascending, ``tokens_per_s`` in the same order; ``threshold`` in (0, 1]
    (1.0 picks the fastest budget). ValueError on empty or mismatched input, a bad threshold
    or a negative overhead.
    """
    if (
        not isinstance(threshold, (int, float))
        or isinstance(threshold, bool)
        or not 0 < threshold <= 1
    ):
        raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
    if not budgets or len(budgets) != len(tokens_per_s):
        raise ValueError(
            f"need one throughput per budget, got {len(budgets)} budgets and "
            f"{len(tokens_per_s)} throughputs"
        )
    rates = served_rates(budgets, tokens_per_s, plan_overhead_s)
    best = max(rates)
    for b, r in zip(budgets, rates):
        if r >= threshold * best:
            return int(b)
    raise AssertionError("unreachable: the best budget always qualifies")

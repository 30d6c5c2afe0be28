"""The calibration's result and rule: a measured throughput curve, and the budget picked from it.

:class:`Calibration` holds one curve (token budgets and the median real tokens per second at
each) and the budget chosen from it; :func:`budgets_for` lists the budgets measured for a
model's shapes; :func:`pick_budget` is the rule: the **smallest budget whose throughput is
at least ``threshold`` (default 0.95) times the best measured**.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

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
        fingerprint: hex key of what was measured (see
            :func:`~packing.runtime.calibrate.key.fingerprint`); ``""`` when the options
            could not be fingerprinted.
        measured_at: when it was measured (UTC, ISO 8601).
        backend: the measured backend's ``describe()`` line.
        seconds: wall time the measurement took.
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
        )
        return cls(**{k: raw[k] for k in fields if k in raw}, from_cache=True)

    def table(self) -> str:
        """The curve as a text table: budget, tokens/s, ratio to the best, ``<-`` on the chosen."""
        best = self.best_tokens_per_s or 1.0
        lines = [f"{'budget':>8}  {'tokens/s':>12}  {'of best':>7}"]
        for b, r in zip(self.budgets, self.tokens_per_s):
            mark = "  <- max_tokens" if b == self.max_tokens else ""
            lines.append(f"{b:>8}  {r:>12,.0f}  {r / best:>7.3f}{mark}")
        return "\n".join(lines)


def _rule(threshold: float) -> str:
    return f"smallest budget with tokens/s >= {threshold:g} x the best measured"


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
    budgets: Sequence[int], tokens_per_s: Sequence[float], threshold: float = DEFAULT_THRESHOLD
) -> int:
    """The smallest budget whose throughput is ``>= threshold x`` the best one.

    ``budgets`` ascending, ``tokens_per_s`` in the same order; ``threshold`` in (0, 1]
    (1.0 picks the fastest budget). ValueError on empty or mismatched input or a bad threshold.
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
    best = max(tokens_per_s)
    for b, r in zip(budgets, tokens_per_s):
        if r >= threshold * best:
            return int(b)
    raise AssertionError("unreachable: the best budget always qualifies")

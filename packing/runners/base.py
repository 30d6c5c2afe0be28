"""What the offline runners share: the model, input validation, running a list of plans."""

from __future__ import annotations

from collections.abc import Sequence

from packing.model.prepared import PreparedModel
from packing.policy.plans import Plan
from packing.runtime.backend import Backend
from packing.runtime.executor import PlanExecutor, RunStats
from packing.runtime.features import Features, Result, validate_features


class _Runner:
    """Shared parts: the model (``model``, its ``manifest``), validation, offline execution of
    a list of plans."""

    def __init__(self, model: PreparedModel, backend: Backend, seq_len: int) -> None:
        self.model = model
        self.manifest = model.manifest
        self.seq_len = seq_len
        self._exec = PlanExecutor(backend, model.manifest, model)

    @property
    def stats(self) -> RunStats:
        """Counters of everything this runner computed."""
        return self._exec.stats

    @property
    def backend(self) -> Backend:
        """The loaded model graph."""
        return self._exec.backend

    @property
    def executor(self) -> PlanExecutor:
        """The :class:`PlanExecutor` every batch of this runner goes through (its model inputs:
        ``executor.inputs(plan, features)``)."""
        return self._exec

    def reset_stats(self) -> None:
        """Start counting from zero (e.g. after a warm-up)."""
        self._exec.stats = RunStats()

    def validate(self, f: Features) -> Features:
        """Checked int64 copy of ``f`` or :class:`InvalidInput`."""
        d = self.manifest.dims
        return validate_features(f, self.seq_len, d.vocab_size, d.type_vocab_size)

    def _validate_all(self, dataset: Sequence[Features]) -> list[Features]:
        out = []
        for i, f in enumerate(dataset):
            try:
                out.append(self.validate(f))
            except ValueError as exc:
                raise type(exc)(f"request {i}: {exc}") from None
        return out

    def run_plans(
        self,
        plans: Sequence[Plan],
        dataset: Sequence[Features],
        progress: bool = False,
        desc: str = "batches",
    ) -> list[Result]:
        """Execute ``plans`` whose ``seq_ids`` index ``dataset``; results in dataset order
        (:class:`SpanLogits` or :class:`Pooled`, as the folder's task says)."""
        results: list[Result | None] = [None] * len(dataset)
        bar = _progress(len(plans), desc) if progress else None
        for plan in plans:
            outs = self._exec.execute(plan, [dataset[i] for i in plan.seq_ids])
            for sid, out in zip(plan.seq_ids, outs):
                if results[sid] is not None:
                    raise RuntimeError(f"request {sid} was placed twice")
                results[sid] = out
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            raise RuntimeError(f"{len(missing)} requests got no result, first {missing[:5]}")
        return results  # type: ignore[return-value]


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False)

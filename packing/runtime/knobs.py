"""The packer's knobs, written once: each default, and how knobs become a :class:`PackingConfig`.

Two places take the knobs: the served Packer (:class:`deployments.config.PackingKnobs`, its
``user_config``) and the in-process :class:`~packing.runners.pack_runner.PackRunner` (keyword
arguments). Both read each default from the one constant named here, and both turn their
knobs into the packing policy's config with :func:`packing_config`.

=========================  ===============================================================
knob                       default (where it is written)
=========================  ===============================================================
``mode``                   :data:`packing.policy.config.DEFAULT_MODE`
``algorithm``              :data:`packing.policy.config.DEFAULT_ALGORITHM`
``max_valid_num``          :data:`DEFAULT_MAX_VALID_NUM` (None: the model folder's manifest)
``max_tokens``             :data:`DEFAULT_MAX_TOKENS` (``"auto"``: the calibrated budget)
``attention_groups``       :data:`packing.policy.attention.ATTENTION_GROUPS` (also its most)
``max_batch_size``,        :data:`packing.runtime.admission.DEFAULT_ADMISSION`
``batch_wait_timeout_s``,
``max_concurrent_batches``
``dispatch``               :data:`packing.runtime.dispatch.DEFAULT_DISPATCH`
=========================  ===============================================================

Each range is checked where the value is used, with :mod:`packing.policy.checks`
(:class:`PackingConfig`, :class:`~packing.runtime.admission.AdmissionConfig`); the served
knobs add upper caps of their own (``PackingKnobs``), which the in-process runner does not
have.
"""

from __future__ import annotations

from packing.model.manifest import Manifest
from packing.policy.attention import ATTENTION_GROUPS
from packing.policy.config import DEFAULT_ALGORITHM, DEFAULT_MODE, PackingConfig
from packing.policy.shapes import Shapes

from .calibrate.cache import AUTO, check_budget_word

__all__ = ["DEFAULT_MAX_TOKENS", "DEFAULT_MAX_VALID_NUM", "packing_config"]

DEFAULT_MAX_VALID_NUM: int | None = None
"""Sequences per batch where none is named: None, the model folder's ``max_valid_num``."""

DEFAULT_MAX_TOKENS: int | str | None = AUTO
"""Real tokens per batch where none is named: ``"auto"``, the budget calibrated for the
device (:func:`packing.runtime.calibrate.resolve_max_tokens`)."""


def packing_config(
    manifest: Manifest | Shapes,
    *,
    mode: str = DEFAULT_MODE,
    algorithm: str = DEFAULT_ALGORITHM,
    max_valid_num: int | None = DEFAULT_MAX_VALID_NUM,
    max_tokens: int | str | None = DEFAULT_MAX_TOKENS,
    attention_groups: int = ATTENTION_GROUPS,
    calibrated: int | None = None,
) -> PackingConfig:
    """The packing policy's config for a model folder's shapes (``manifest``, or any
    :class:`~packing.policy.shapes.Shapes`: its ``seq_len``, ``batch_size`` and
    ``max_valid_num``) under these knobs.

    ``max_valid_num`` None is the manifest's. ``max_tokens``: an int pins the budget, None is
    the full batch (``batch_size x seq_len``), ``"auto"`` is ``calibrated`` (the budget
    calibrated for the device; None, the full batch, until one is known).

    Raises:
        ValueError: a knob that is not valid or does not fit the model, naming it and its
            value (:class:`PackingConfig`'s messages); for ``"auto"``, a calibrated budget
            that does not fit says so.
    """
    auto = isinstance(max_tokens, str)
    if auto:
        check_budget_word(max_tokens)
    budget = calibrated if auto else max_tokens
    try:
        return PackingConfig(
            seq_len=manifest.seq_len,
            batch_size=manifest.batch_size,
            max_valid_num=max_valid_num or manifest.max_valid_num,
            mode=mode,
            algorithm=algorithm,
            max_tokens=budget,
            attention_groups=attention_groups,
        )
    except ValueError as exc:
        if auto and "max_tokens" in str(exc):
            raise ValueError(f"max_tokens 'auto' (calibrated budget {budget!r}): {exc}") from None
        raise

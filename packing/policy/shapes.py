"""The default static shapes of a prepared model folder: the one place they are written.

The spec's shapes: batches of 16 rows x 256 tokens, at most 40 sequences in one packed batch.
``packed-bert prepare``, :func:`packing.model.prepare.prepare`, the app's ``args.prepare``
(:class:`deployments.config.PrepareShapes`), :class:`packing.policy.config.PackingConfig`, the
``efficiency`` command and the benchmark workloads take their defaults from
:data:`DEFAULT_SHAPES`. Once a folder is prepared, its ``manifest.json`` holds the shapes in
force (``configs/squad.yaml`` prepares at ``seq_len`` 384: SQuAD windows).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shapes:
    """Static shapes of the packed and padded graphs."""

    seq_len: int  # tokens per row
    batch_size: int  # rows per batch
    max_valid_num: int  # most sequences in one packed batch


DEFAULT_SHAPES = Shapes(seq_len=256, batch_size=16, max_valid_num=40)
"""The spec's 16 x 256 batch with ``max_valid_num`` 40."""

"""Plans to model inputs, and model outputs back to per-sequence arrays.

:func:`build_inputs` turns a plan plus the token arrays of its sequences (in
plan order) into the int64 input tensors of the matching model layout;
:func:`scatter_outputs` cuts a model output laid out the same way back into one
array per sequence, in plan order. Both run once per batch on the serving hot
path, so all per-token work is vectorised (``np.repeat`` / ``cumsum`` index
arithmetic plus one fancy-index scatter or gather); only the concatenation of
the per-sequence arrays loops over sequences.

Layouts (``S = plan.seq_len``, ``n`` sequences, ``T`` real tokens):

* :class:`PaddedPlan` -- ``input_ids``, ``attention_mask`` (1 real / 0 pad),
  ``token_type_ids``, ``position_ids``: each ``[n, S]``, sequence ``k`` in row
  ``k`` from slot 0.
* :class:`AttentionMaskPlan` -- the same four names, ``[n_rows, S]``; here
  ``attention_mask`` holds segment ids 1, 2, 3 ... per row in slot order and 0
  on padding (PopRT's packed-attention-mask convention); ``position_ids``
  restart at 0 at each sequence start.
* :class:`UnpackRepackPlan` -- flat ``input_ids``, ``token_type_ids``,
  ``position_ids`` ``[T]``; per attention group ``g`` (``0 .. ATTENTION_GROUPS - 1``,
  chosen by the plan's :attr:`~packing.policy.plans.UnpackRepackPlan.attention`
  layout) ``unpack_index_g`` and ``segment_ids_g`` ``[R_g, W_g]`` to gather the flat
  tokens into that group's attention rows, each holding whole sequences, with per-row
  segment ids for the block-diagonal mask; ``repack_index`` ``[T]`` to gather them back
  from the concatenation of every group's flattened ``[R_g * W_g]`` rows.

Static shapes (a backend compiled for one input shape): row plans pad to
``batch_size`` rows (``pad_rows_to``); unpack/repack pads the four ``[T]``
arrays to the plan's ``capacity`` (``pad_tokens_to``) and puts every sequence in
group 0, ``[static_attention_rows(...), seq_len]`` (``pad_attention_to``; the
other groups are one inert slot each), shapes
that depend only on the packer's configuration, never on the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .attention import ATTENTION_GROUPS, attention_rows
from .plans import AttentionMaskPlan, PaddedPlan, Plan, UnpackRepackPlan

__all__ = [
    "build_inputs",
    "scatter_outputs",
    "token_coordinates",
    "attention_rows",
    "static_attention_rows",
]


def token_coordinates(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-token coordinates of sequences laid end to end.

    Returns ``(seq, pos, cu)``: for flat token ``t``, ``seq[t]`` is its sequence
    and ``pos[t]`` its position in that sequence (0-based); ``cu`` is the
    ``[n + 1]`` cumulative lengths (``cu[0] == 0``). All int64.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    cu = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=cu[1:])
    seq = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
    pos = np.arange(cu[-1], dtype=np.int64) - cu[:-1][seq]
    return seq, pos, cu


def _flat_tokens(name: str, arrays: Sequence[np.ndarray], lengths: np.ndarray) -> np.ndarray:
    """Concatenate the per-sequence arrays, checking count and lengths against the plan."""
    if len(arrays) != lengths.size:
        raise ValueError(f"{name}: got {len(arrays)} sequences, plan has {lengths.size}")
    if lengths.size == 0:
        return np.zeros(0, dtype=np.int64)
    got = np.fromiter((np.shape(a)[0] for a in arrays), dtype=np.int64, count=lengths.size)
    if not np.array_equal(got, lengths):
        k = int(np.flatnonzero(got != lengths)[0])
        raise ValueError(f"{name}[{k}] has {int(got[k])} tokens, plan says {int(lengths[k])}")
    return np.concatenate(arrays).astype(np.int64, copy=False)


def _slot_index(
    plan: PaddedPlan | AttentionMaskPlan, width: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat ``row * width + slot`` index of every token (``width`` defaults to the plan's
    ``seq_len``), plus per-token (seq, pos)."""
    width = plan.seq_len if width is None else int(width)
    seq, pos, _ = token_coordinates(plan.lengths)
    if isinstance(plan, PaddedPlan):
        dest = seq * width + pos
    else:
        dest = (plan.rows * width + plan.starts)[seq] + pos
    return dest, seq, pos


def _segment_ids(plan: AttentionMaskPlan) -> np.ndarray:
    """[n] segment id (1, 2, 3 ... in slot order within its row) of every sequence."""
    n = plan.n_seqs
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((plan.starts, plan.rows))
    rows_sorted = plan.rows[order]
    new_row = np.ones(n, dtype=bool)
    new_row[1:] = rows_sorted[1:] != rows_sorted[:-1]
    first = np.maximum.accumulate(np.where(new_row, np.arange(n), 0))
    seg = np.empty(n, dtype=np.int64)
    seg[order] = np.arange(n) - first + 1
    return seg


def build_inputs(
    plan: Plan,
    input_ids: Sequence[np.ndarray],
    token_type_ids: Sequence[np.ndarray],
    *,
    pad_rows_to: int | None = None,
    pad_tokens_to: int | None = None,
    pad_attention_to: tuple[int, int] | None = None,
    trim_rows: bool = False,
) -> dict[str, np.ndarray]:
    """Model inputs (all int64) for ``plan``.

    ``input_ids[k]`` / ``token_type_ids[k]`` are the 1-D token arrays of the
    k-th sequence of the plan (plan order, length ``plan.lengths[k]``).

    * PaddedPlan -> ``input_ids``, ``attention_mask`` (1/0), ``token_type_ids``,
      ``position_ids`` (``0 .. len-1``, then 0), each ``[n, S]``.
    * AttentionMaskPlan -> the same names, ``[n_rows, S]``; ``attention_mask``
      holds per-row segment ids 1, 2, 3 ... in slot order, 0 on padding;
      ``position_ids`` restart at 0 at each sequence start, 0 on padding.
    * UnpackRepackPlan -> ``input_ids``, ``token_type_ids``, ``position_ids``
      ``[T]``; for each attention group ``g < ATTENTION_GROUPS`` of
      ``plan.attention``, ``unpack_index_g`` ``[R_g, W_g]`` (flat token index
      of each slot of the group's attention rows, 0 on padding) and
      ``segment_ids_g`` ``[R_g, W_g]`` (1, 2, 3 ... per sequence within a row,
      0 on padding); a group the layout leaves unused is ``[1, 1]`` of zeros.
      ``repack_index`` ``[T]`` is the slot of each token in the concatenation
      of all groups' flattened rows (group order, row-major). With
      ``pad_tokens_to=P`` the three flat token arrays and ``repack_index`` are
      padded with zeros to ``[P]``: pad tokens are token id 0 at position 0,
      and their ``repack_index`` 0 points at the first slot of group 0, so the
      model's outputs at padded slots are junk the caller drops
      (:func:`scatter_outputs` ignores them). With
      ``pad_attention_to=(R, W)`` the plan's grouping is replaced by one group
      of rows ``W`` slots wide (first-fit decreasing), padded with all-zero
      rows to exactly ``[R, W]``. Padded slots are inert: segment id 0 masks
      them as keys (a query in an all-padding row sees only masked keys, which
      the graph's finite mask value keeps NaN-free), their ``unpack_index`` 0
      gathers a real token whose result no ``repack_index`` of a real token
      points at. For a static shape use ``(static_attention_rows(seq_len,
      capacity, max_valid_num), seq_len)``.

    ``trim_rows=True`` (AttentionMaskPlan only; for backends with dynamic shapes) makes
    the rows ``plan.used_width`` slots wide instead of ``seq_len``: the slots after the
    fullest row's last sequence, padding in every row, are not computed at all.

    ``pad_rows_to=R`` (row plans only; ignored for UnpackRepackPlan) appends
    all-zero rows up to ``[R, S]`` for backends with a static batch dimension;
    ``pad_tokens_to`` and ``pad_attention_to`` are ignored for row plans.

    Raises:
        ValueError: wrong number of sequences, a sequence whose length differs
            from the plan, or a padding target smaller than the batch (for
            ``pad_attention_to``: a sequence longer than ``W``, or more than
            ``R`` attention rows needed).
        TypeError: ``plan`` is not a plan.
    """
    if not isinstance(plan, (PaddedPlan, AttentionMaskPlan, UnpackRepackPlan)):
        raise TypeError(f"not a plan: {type(plan).__name__}")
    lengths = plan.lengths
    ids = _flat_tokens("input_ids", input_ids, lengths)
    types = _flat_tokens("token_type_ids", token_type_ids, lengths)
    if isinstance(plan, UnpackRepackPlan):
        return _unpack_repack_inputs(plan, ids, types, pad_tokens_to, pad_attention_to)
    n_rows = plan.n_rows
    if pad_rows_to is not None:
        if pad_rows_to < n_rows:
            raise ValueError(f"pad_rows_to={pad_rows_to} is less than the plan's n_rows={n_rows}")
        n_rows = int(pad_rows_to)

    width = plan.used_width if trim_rows and isinstance(plan, AttentionMaskPlan) else plan.seq_len
    dest, seq, pos = _slot_index(plan, width)
    shape = (n_rows, width)
    names = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
    out = {name: np.zeros(shape, dtype=np.int64) for name in names}
    out["input_ids"].reshape(-1)[dest] = ids
    out["token_type_ids"].reshape(-1)[dest] = types
    out["position_ids"].reshape(-1)[dest] = pos
    if isinstance(plan, PaddedPlan):
        out["attention_mask"].reshape(-1)[dest] = 1
    else:
        out["attention_mask"].reshape(-1)[dest] = _segment_ids(plan)[seq]
    return out


def static_attention_rows(seq_len: int, capacity: int, max_valid_num: int | None = None) -> int:
    """Most attention rows of ``seq_len`` slots that :func:`attention_rows` can need.

    For any batch of sequences of 1 ..= ``seq_len`` tokens, at most ``capacity``
    tokens in all and at most ``max_valid_num`` sequences (None: no count limit),
    first-fit decreasing into rows of ``W = seq_len`` uses at most this many rows,
    and some such batch uses exactly this many (the bound is tight).

    Proof. Say FFD opens ``R >= 2`` rows and let ``s`` be the length of the first
    sequence put in the last row. Sequences go in decreasing order, so each earlier
    row already held a sequence of ``>= s`` tokens, and none had room for ``s``:
    each earlier row holds ``>= max(s, W - s + 1)`` tokens and the last ``>= s``, so
    ``T >= (R - 1) * max(s, W - s + 1) + s``. With ``h = W // 2 + 1`` (the fewest
    tokens that are more than half a row) the minimum over ``s`` is ``R * h - 1``
    for even ``W`` (at ``s = W / 2``) and ``R * h`` for odd ``W`` (at ``s = h``).
    Hence ``R <= (T + 1) // h`` (even ``W``) or ``R <= T // h`` (odd ``W``), with
    ``T <= capacity``. Tight: ``R - 1`` sequences of ``h`` tokens and one of
    ``W - h + 1`` each need a row of their own. ``R == 1`` is within the bound since
    ``capacity >= seq_len >= h``. Each row holds at least one sequence, so also
    ``R <= max_valid_num``.

    For seq_len 256, batch_size 16 (capacity 4096): 31 rows; seq_len 64,
    batch_size 4: 7 rows.
    """
    seq_len, capacity = int(seq_len), int(capacity)
    if seq_len < 1 or capacity < 1:
        raise ValueError(f"seq_len and capacity must be >= 1, got {seq_len}, {capacity}")
    h = seq_len // 2 + 1
    rows = (capacity + (1 if seq_len % 2 == 0 else 0)) // h
    if max_valid_num is not None:
        rows = min(rows, int(max_valid_num))
    return max(1, rows)


def _unpack_repack_inputs(
    plan: UnpackRepackPlan,
    ids: np.ndarray,
    types: np.ndarray,
    pad_tokens_to: int | None,
    pad_attention_to: tuple[int, int] | None,
) -> dict[str, np.ndarray]:
    lengths = plan.lengths
    seq, pos, _ = token_coordinates(lengths)
    total = int(plan.real_tokens)
    if pad_attention_to is None:
        att = plan.attention
        widths, rows = att.widths.tolist(), att.rows.tolist()
        group, row, start, segment = att.group, att.row, att.start, att.segment
    else:
        pad_rows, width = (int(v) for v in pad_attention_to)
        if lengths.size and int(lengths.max()) > width:
            raise ValueError(
                f"pad_attention_to width {width} is less than the longest sequence "
                f"({int(lengths.max())} tokens)"
            )
        row, start, segment = attention_rows(lengths, width)
        need = int(row.max()) + 1 if lengths.size else 1
        if need > pad_rows:
            raise ValueError(
                f"plan needs {need} attention rows of {width} slots, more than pad_attention_to "
                f"rows={pad_rows} (static_attention_rows(seq_len={plan.seq_len}, capacity="
                f"{plan.capacity}, max_valid_num={plan.max_valid_num}) = "
                f"{static_attention_rows(plan.seq_len, plan.capacity, plan.max_valid_num)}; "
                f"plan has {plan.n_seqs} sequences, {total} tokens)"
            )
        widths, rows = [width], [pad_rows]
        group = np.zeros(lengths.size, dtype=np.int64)
    # groups the layout leaves unused get one inert slot (index 0, segment 0)
    widths = widths + [1] * (ATTENTION_GROUPS - len(widths))
    rows = rows + [1] * (ATTENTION_GROUPS - len(rows))
    sizes = np.array(rows, dtype=np.int64) * np.array(widths, dtype=np.int64)
    offset = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    width_of = np.array(widths, dtype=np.int64)[group]
    # slot of every token in the concatenation of all groups' flattened rows
    dest = (offset[group] + row * width_of + start)[seq] + pos
    flat_index = np.zeros(int(sizes.sum()), dtype=np.int64)
    flat_segment = np.zeros(int(sizes.sum()), dtype=np.int64)
    flat_index[dest] = np.arange(total, dtype=np.int64)
    flat_segment[dest] = segment[seq]
    flat = {"input_ids": ids, "token_type_ids": types, "position_ids": pos, "repack_index": dest}
    if pad_tokens_to is not None:
        if pad_tokens_to < total:
            raise ValueError(
                f"pad_tokens_to={pad_tokens_to} is less than the plan's real_tokens={total}"
            )
        extra = int(pad_tokens_to) - total
        flat = {k: np.concatenate((v, np.zeros(extra, dtype=np.int64))) for k, v in flat.items()}
    out = {
        "input_ids": flat["input_ids"],
        "token_type_ids": flat["token_type_ids"],
        "position_ids": flat["position_ids"],
    }
    for g in range(ATTENTION_GROUPS):
        lo, hi = int(offset[g]), int(offset[g] + sizes[g])
        out[f"unpack_index_{g}"] = flat_index[lo:hi].reshape(rows[g], widths[g])
        out[f"segment_ids_{g}"] = flat_segment[lo:hi].reshape(rows[g], widths[g])
    out["repack_index"] = flat["repack_index"]
    return out


def scatter_outputs(plan: Plan, output: np.ndarray) -> list[np.ndarray]:
    """Cut a model output back into one array per sequence, in plan order.

    ``output`` has the plan's layout in its leading dims -- ``[n, S, ...]`` for
    PaddedPlan, ``[rows, W, ...]`` for AttentionMaskPlan (``rows >= n_rows``, so
    padded rows are fine; ``W`` is ``S`` or, trimmed, at least ``plan.used_width``), ``[T, ...]`` or ``[T_padded, ...]`` for
    UnpackRepackPlan -- and any trailing dims are kept. Entry ``k`` is sequence
    ``k``'s ``[len_k, ...]`` slice. The result arrays are views of one compact
    copy, never of ``output`` itself, so the caller may reuse ``output``'s buffer.

    Raises:
        ValueError: ``output`` is too small for the plan.
    """
    if not isinstance(plan, (PaddedPlan, AttentionMaskPlan, UnpackRepackPlan)):
        raise TypeError(f"not a plan: {type(plan).__name__}")
    output = np.asarray(output)
    lengths = plan.lengths
    if lengths.size == 0:
        return []
    if isinstance(plan, UnpackRepackPlan):
        total = plan.real_tokens
        if output.ndim < 1 or output.shape[0] < total:
            raise ValueError(f"output shape {output.shape} is too small for {total} tokens")
        compact = output[:total].copy()
        cu = plan.cu_seqlens
    else:
        need_rows = plan.n_rows
        least = plan.used_width if isinstance(plan, AttentionMaskPlan) else plan.seq_len
        if (
            output.ndim < 2
            or output.shape[0] < need_rows
            or not least <= output.shape[1] <= plan.seq_len
        ):
            raise ValueError(
                f"output shape {output.shape} does not match [>= {need_rows}, "
                f"{least} .. {plan.seq_len}, ...]"
            )
        dest, _, _ = _slot_index(plan, output.shape[1])
        flat = output.reshape((output.shape[0] * output.shape[1],) + output.shape[2:])
        compact = flat[dest]
        cu = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=cu[1:])
    return np.split(compact, cu[1:-1])

"""``packed-bert train``: fine-tune the builtin base encoder for SQuAD on packed batches.

Each optimizer step sees ``seqs_per_step`` windows. ``layout="packed"`` lays them out as
this project's offline AttentionMask plans (SPFHP rows, block-diagonal segments, positions
restarting per sequence, rows trimmed to the fullest one); ``layout="padded"`` gives each
window its own row of ``seq_len`` slots, as Hugging Face's SQuAD example does
(``pad_to_max_length``). Same windows, same order, same steps: only the layout differs, so
:func:`compare_layouts` measures what packing saves in training.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..model import builtin
from ..policy.layouts import build_inputs
from ..policy.offline import plan_offline_attention_mask, plan_padded
from ..policy.plans import AttentionMaskPlan, PaddedPlan
from ..qa.windows import DOC_STRIDE
from .data import HELD_OUT_TITLES, TrainWindow, read_questions, training_windows

LAYOUTS = ("packed", "padded")


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings; validated on construction (ValueError names the bad value)."""

    squad_path: str  # SQuAD v1.1 dev json; the train split of packing.qa.squad_file is used
    seq_len: int = 384  # window length in tokens (question + context + specials)
    doc_stride: int = DOC_STRIDE  # context tokens shared by consecutive windows (serving's)
    seqs_per_step: int = 16  # windows per optimizer step, both layouts
    epochs: float = 2.0  # passes over the training windows (fractions allowed)
    max_steps: int | None = None  # stop after this many steps (None: run all epochs)
    lr: float = 1e-3  # peak learning rate (adapters, biases, LayerNorms, QA head)
    warmup_frac: float = 0.06  # share of steps with a linear warm-up
    weight_decay: float = 0.01  # AdamW decay on adapters and the QA head
    rank: int = 32  # LoRA rank
    alpha: float = 64.0  # LoRA scale numerator (scale = alpha / rank)
    dropout: float = 0.0  # dropout in embeddings, residuals and adapters (0.1 costs ~40% of
    #                       a CPU step: the random masks, not the model)
    seed: int = 0  # seeds shuffling, adapter init and dropout
    layout: str = "packed"  # packed | padded
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)  # torch intra-op threads

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        for name in ("seq_len", "seqs_per_step", "rank", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps!r}")
        if not (self.lr > 0 and 0 <= self.warmup_frac < 1 and 0 <= self.dropout < 1):
            raise ValueError(
                f"bad lr / warmup_frac / dropout: {self.lr!r} / "
                f"{self.warmup_frac!r} / {self.dropout!r}"
            )


def epoch_plans(
    windows: list[TrainWindow], cfg: TrainConfig, rng: np.random.Generator
) -> list[PaddedPlan | AttentionMaskPlan]:
    """One epoch's batches: the windows shuffled, cut into steps of ``seqs_per_step``, each
    step laid out by ``cfg.layout``. ``seq_ids`` in the plans index ``windows``."""
    order = rng.permutation(len(windows))
    lengths = np.array([len(windows[i].input_ids) for i in order], dtype=np.int64)
    plans: list[PaddedPlan | AttentionMaskPlan] = []
    k = cfg.seqs_per_step
    for i in range(0, len(order), k):
        ids, lens = order[i : i + k], lengths[i : i + k]
        if cfg.layout == "padded":
            plans += plan_padded(lens, cfg.seq_len, k, seq_ids=ids)
        else:
            plans += plan_offline_attention_mask(lens, cfg.seq_len, k, k, seq_ids=ids)
    return plans


def batch_tensors(plan: PaddedPlan | AttentionMaskPlan, windows: list[TrainWindow]):
    """``(inputs, flat_start, flat_end, seq_base, lengths)`` torch tensors for one plan:
    the layout's four int64 inputs ``[rows, W]``, the flat ``row * W + slot`` index of each
    sequence's first slot ``[n]``, its answer's start/end within it ``[n]``, and its length ``[n]``."""
    import torch

    wins = [windows[int(i)] for i in plan.seq_ids]
    trim = isinstance(plan, AttentionMaskPlan)
    arrays = build_inputs(
        plan, [w.input_ids for w in wins], [w.token_type_ids for w in wins], trim_rows=trim
    )
    width = arrays["input_ids"].shape[1]
    if isinstance(plan, PaddedPlan):
        base = np.arange(plan.n_seqs, dtype=np.int64) * width
    else:
        base = plan.rows * width + plan.starts
    inputs = {k: torch.from_numpy(v) for k, v in arrays.items()}
    starts = torch.tensor([w.start for w in wins], dtype=torch.int64)
    ends = torch.tensor([w.end for w in wins], dtype=torch.int64)
    return inputs, torch.from_numpy(base), starts, ends, torch.from_numpy(plan.lengths.copy())


def span_loss(start_logits, end_logits, base, starts, ends, lengths):
    """Mean over sequences of (CE(start) + CE(end)) / 2, each sequence's softmax taken over
    its own slots only (the other sequences of its row are not candidates)."""
    import torch
    import torch.nn.functional as F

    longest = int(lengths.max())
    offs = torch.arange(longest)
    valid = offs[None, :] < lengths[:, None]  # [n, longest]
    idx = (base[:, None] + offs[None, :]).clamp(max=start_logits.numel() - 1)
    total = 0.0
    for logits, target in ((start_logits, starts), (end_logits, ends)):
        g = logits.reshape(-1)[idx].masked_fill(~valid, float("-inf"))
        total = total + F.cross_entropy(g, target)
    return total / 2


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def train(
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    progress: bool = True,
    windows: list[TrainWindow] | None = None,
) -> dict:
    """Fine-tune ``builtin`` base + LoRA on the train split; returns statistics.

    With ``out_dir`` the delta (``delta.safetensors``) and its ``delta.json`` (hashes, split,
    settings, statistics, probe logits for :func:`packing.model.builtin.assemble`) are
    written there. ``windows`` (already labelled) skips tokenization.
    """
    import torch
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from .torch_bert import PackedBertQA

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    dims, base, folder = builtin.load_base()
    if windows is None:
        tok = AutoTokenizer.from_pretrained(str(folder))
        questions = read_questions(cfg.squad_path, "train")
        windows = training_windows(tok, questions, cfg.seq_len, cfg.doc_stride)
    model = PackedBertQA(
        dims, base, rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout, seed=cfg.seed
    )
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim == 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    rng = np.random.default_rng(cfg.seed)
    steps_per_epoch = math.ceil(len(windows) / cfg.seqs_per_step)
    total = math.ceil(cfg.epochs * steps_per_epoch)
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    warmup = max(1, int(cfg.warmup_frac * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, total, warmup))
    model.train()
    step, seconds, real_tokens, slots, losses = 0, 0.0, 0, 0, []
    bar = tqdm(total=total, desc=f"train ({cfg.layout})", unit="step", disable=not progress)
    while step < total:
        for plan in epoch_plans(windows, cfg, rng):
            if step >= total:
                break
            t0 = time.perf_counter()
            inputs, base_idx, starts, ends, lengths = batch_tensors(plan, windows)
            start_logits, end_logits = model(**inputs)
            loss = span_loss(start_logits, end_logits, base_idx, starts, ends, lengths)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            seconds += time.perf_counter() - t0
            real_tokens += int(plan.real_tokens)
            slots += int(inputs["input_ids"].numel())
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    bar.close()
    stats = {
        "layout": cfg.layout,
        "steps": step,
        "windows": len(windows),
        "seconds": round(seconds, 1),
        "real_tokens": real_tokens,
        "token_slots": slots,
        "final_loss": round(float(np.mean(losses[-50:])), 4),
    }
    if out_dir is not None:
        write_delta(model, cfg, stats, windows, Path(out_dir))
    return stats


def write_delta(
    model, cfg: TrainConfig, stats: dict, windows: list[TrainWindow], out_dir: Path
) -> dict:
    """Round the adapters to what ships (float16), record probe logits from the torch model,
    and write ``delta.safetensors`` + ``delta.json`` into ``out_dir``; returns the meta."""
    import torch
    from safetensors.numpy import save

    for module in model.modules():
        if hasattr(module, "lora_A"):
            module.lora_A.data = module.lora_A.data.half().float()
            module.lora_B.data = module.lora_B.data.half().float()
    model.eval()
    probe = min(
        windows[:64], key=lambda w: len(w.input_ids)
    )  # a short real window: cheap to check at assembly
    n = len(probe.input_ids)
    with torch.no_grad():
        ids = torch.from_numpy(probe.input_ids[None])
        s, e = model(
            ids,
            torch.from_numpy(probe.token_type_ids[None]),
            torch.arange(n)[None],
            torch.ones(1, n, dtype=torch.int64),
        )
    data = save(model.delta())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / builtin.DELTA_FILE).write_bytes(data)
    meta = {
        "base": {
            "package": builtin.BASE_PACKAGE,
            "version": builtin.BASE_VERSION,
            "sha256": builtin.BASE_SHA256,
        },
        "delta_sha256": builtin.sha256_bytes(data),
        "delta_bytes": len(data),
        "lora": {"rank": cfg.rank, "alpha": cfg.alpha},
        "split": {"held_out_titles": list(HELD_OUT_TITLES)},
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("squad_path", "threads")},
        "stats": stats,
        "probe": {
            "input_ids": probe.input_ids.tolist(),
            "token_type_ids": probe.token_type_ids.tolist(),
            "start_logits": [round(float(x), 6) for x in s[0]],
            "end_logits": [round(float(x), 6) for x in e[0]],
        },
    }
    (out_dir / builtin.DELTA_META).write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def compare_layouts(cfg: TrainConfig, steps: int, progress: bool = True) -> dict[str, dict]:
    """Train ``steps`` steps padded, then the same steps packed (same windows, same order,
    same initial weights), after one untimed warm-up step each; returns both statistics."""
    from transformers import AutoTokenizer

    folder = builtin.base_folder()
    tok = AutoTokenizer.from_pretrained(str(folder))
    windows = training_windows(
        tok, read_questions(cfg.squad_path, "train"), cfg.seq_len, cfg.doc_stride
    )
    out = {}
    for layout in ("padded", "packed"):
        run = TrainConfig(**{**asdict(cfg), "layout": layout, "max_steps": 1})
        train(run, progress=False, windows=windows)  # warm-up: threads, allocator
        run = TrainConfig(**{**asdict(cfg), "layout": layout, "max_steps": steps})
        out[layout] = train(run, progress=progress, windows=windows)
    return out

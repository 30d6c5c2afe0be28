"""embed-quality's report as text: host and texts, then Markdown tables of quality, retrieval
and speed, then the ratios."""

from __future__ import annotations

from packing.runtime.host import features_line

from .scores import MRR_K


def _folder_label(report: dict, model_dir: str) -> str:
    folders = report["folders"]
    precisions = [f["precision"] for f in folders]
    f = next(f for f in folders if f["model_dir"] == model_dir)
    return f["precision"] if precisions.count(f["precision"]) == 1 else model_dir


def format_report(report: dict) -> str:
    """The report as text: host and texts, then markdown tables of quality, retrieval and
    speed, then the ratios."""
    h, t, st = report["host"], report["texts"], report["sentence_transformers"]
    flags = features_line(h["flags"])
    lines = [
        f"date {h['date']}; CPU {h['cpu']} ({flags}); {h['cores']} cores, "
        f"{h['threads']} threads (torch, ONNX Runtime intra-op, tokenizers Rayon "
        f"{h['tokenizer_threads'] or 'default'})",
        "versions: " + ", ".join(f"{k} {v}" for k, v in h["versions"].items() if v),
    ]
    for f in report["folders"]:
        budget = f.get("max_tokens")
        cal = f.get("calibration")
        how = ""
        if "max_tokens" in f:
            how = f", unpack_repack token budget {budget or 'full batch'}"
            if cal:
                when = "cached" if cal["from_cache"] else f"measured now, {cal['seconds']:.0f} s"
                how += f" (calibrated, {when})"
        lines.append(
            f"folder {f['model_dir']}: {f['source']}, {f['precision']}, seq_len "
            f"{f['seq_len']}, batch_size {f['batch_size']}, max_valid_num "
            f"{f['max_valid_num']}{how}"
        )
    lines.append(
        f"texts: {t['questions']} questions + {t['paragraphs']} paragraphs = "
        f"{t['total']} (of {t['available']['questions']} / "
        f"{t['available']['paragraphs']} in the file); mean tokens "
        f"{t['tokens_mean']['questions']:.1f} / {t['tokens_mean']['paragraphs']:.1f}; "
        f"truncated {t['truncated']['questions']} / {t['truncated']['paragraphs']}"
    )
    lines.append(
        f"reference: sentence-transformers SentenceTransformer({st['folder']}), "
        f"max_seq_length {st['max_seq_length']}, normalize_embeddings=True"
    )
    lo, hi = report["settings"]["cosine_thresholds"]
    lines += [
        "",
        "Quality: cosine per text, ours vs sentence-transformers",
        f"| precision | mode | mean | worst | 1 - worst | worst text | >= {lo:g} | >= {hi:g} |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for q in report["quality"]:
        lines.append(
            f"| {_folder_label(report, q['model_dir'])} | {q['mode']} | "
            f"{q['mean']:.7f} | {q['min']:.7f} | {1.0 - q['min']:.1e} | "
            f"{q['worst_kind']} "
            f"({q['worst_tokens']} tokens) | {q[f'ge_{lo:g}']:.4f} | "
            f"{q[f'ge_{hi:g}']:.4f} |"
        )
    k = MRR_K
    lines += [
        "",
        f"Retrieval: {t['questions']} questions against {t['paragraphs']} paragraphs",
        f"| who | recall@1 | MRR@{k} | mean rank |",
        "|---|---:|---:|---:|",
    ]
    for r in report["retrieval"]:
        who = (
            r["who"]
            if r["who"] == "sentence-transformers"
            else f"{_folder_label(report, r['who'])} {r['mode']}"
        )
        lines.append(
            f"| {who} | {r['recall@1']:.4f} | {r[f'mrr@{k}']:.4f} | {r['mean_rank']:.2f} |"
        )
    lines += [
        "",
        f"Speed: {t['total']} texts (questions and paragraphs shuffled), tokenization "
        "and normalisation inside every timing",
        "| who | mode | texts/s | seconds | of which tokenize | batches | efficiency |",
        "|---|---|---:|---:|---:|---:|---:|",
        f"| sentence-transformers | encode, bs {st['batch_size']} | "
        f"{st['texts_per_s']:.1f} | {st['seconds']:.2f} | (inside) | - | - |",
    ]
    for s in report["speed"]:
        lines.append(
            f"| {_folder_label(report, s['model_dir'])} | {s['mode']} | "
            f"{s['texts_per_s']:.1f} | {s['seconds']:.2f} | {s['tokenize_s']:.2f} | "
            f"{s['batches']} | {s['efficiency']:.3f} |"
        )
    probe = ", ".join(f"bs {bs} {r:.1f}" for bs, r in st["probe"]["texts_per_s"].items())
    lines += [
        f"sentence-transformers batch size probe ({st['probe']['texts']} texts): {probe} texts/s",
        "",
        "Ratios (texts/s): ours / sentence-transformers' best, and each precision over "
        "the same mode's first fp32 folder",
    ]
    for r in report["ratios"]:
        tag = "best other mode, " if r["best_other"] else ""
        vs = (
            f"; {r['precision']} / {r['base_precision']} {r['vs_base']:.2f}x"
            if r["vs_base"] is not None
            else ""
        )
        lines.append(
            f"  {_folder_label(report, r['model_dir'])} {r['mode']} ({tag}"
            f"{r['texts_per_s']:.1f} texts/s): / sentence-transformers bs "
            f"{st['batch_size']} ({st['texts_per_s']:.1f}) "
            f"{r['vs_sentence_transformers']:.2f}x{vs}"
        )
    return "\n".join(lines)

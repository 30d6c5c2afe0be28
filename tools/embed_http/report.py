"""embed-http's figures and text: latency summary, the vector check against the first server,
the ratios and each server's best, and the report printed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from packing.runtime.host import features_line
from tools.embed_quality import cosine_rows


def latency_summary(latencies_s: Sequence[float]) -> dict:
    """``{"p50_ms", "p99_ms", "mean_ms", "max_ms"}`` of the latencies (seconds); every value
    None when there are none."""
    lat = np.asarray(latencies_s, dtype=np.float64) * 1e3
    if lat.size == 0:
        return {"p50_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    return {
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "mean_ms": float(lat.mean()),
        "max_ms": float(lat.max()),
    }


def vector_agreement(base: np.ndarray | None, other: np.ndarray | None) -> dict:
    """Cosine of ``other[i]`` with ``base[i]`` (rows of NaN: no answer) over the texts both
    answered: ``{"n", "mean", "worst", "worst_index", "note"}``; n 0 and a note when there is
    nothing to compare (no answers in common, or another number of dimensions)."""
    empty = {"n": 0, "mean": None, "worst": None, "worst_index": None}
    if base is None or other is None:
        return {**empty, "note": "no vectors"}
    if base.shape[1] != other.shape[1]:
        return {**empty, "note": f"{other.shape[1]} dimensions, the first server's {base.shape[1]}"}
    both = np.isfinite(base).all(axis=1) & np.isfinite(other).all(axis=1)
    if not both.any():
        return {**empty, "note": "no text answered by both"}
    idx = np.flatnonzero(both)
    cos = cosine_rows(base[idx], other[idx])
    k = int(cos.argmin())
    return {
        "n": int(idx.size),
        "mean": float(cos.mean()),
        "worst": float(cos[k]),
        "worst_index": int(idx[k]),
        "note": None,
    }


def ratios(rows: Sequence[dict]) -> list[dict]:
    """Each row's texts/s, p50 and p99 over those of the first server's row with the same
    ``texts_per_request`` (1 when a row has none; None where either is missing or zero):
    ``{"server", "texts_per_request", "texts_per_s", "p50", "p99"}``."""
    if not rows:
        return []
    first_name = rows[0]["server"]
    base = {}
    for r in rows:
        if r["server"] == first_name:
            base.setdefault(r.get("texts_per_request", 1), r)

    def over(row: dict, first: dict | None, key: str) -> float | None:
        a, b = row.get(key), (first or {}).get(key)
        return a / b if a and b else None

    out = []
    for r in rows:
        k = r.get("texts_per_request", 1)
        first = base.get(k)
        out.append(
            {
                "server": r["server"],
                "texts_per_request": k,
                "texts_per_s": over(r, first, "texts_per_s"),
                "p50": over(r, first, "p50_ms"),
                "p99": over(r, first, "p99_ms"),
            }
        )
    return out


def best_rows(rows: Sequence[dict]) -> list[dict]:
    """Per server (in first-seen order), its row of the most texts/s over every
    ``texts_per_request`` measured, and that figure over the first server's best:
    ``{"server", "texts_per_request", "texts_per_s", "ratio"}`` (ratio None where either is
    missing or zero)."""
    best: dict[str, dict] = {}
    for r in rows:
        old = best.get(r["server"])
        if old is None or (r.get("texts_per_s") or 0) > (old.get("texts_per_s") or 0):
            best[r["server"]] = r
    out = []
    first = next(iter(best.values()), None)
    for name, r in best.items():
        a, b = r.get("texts_per_s"), (first or {}).get("texts_per_s")
        out.append(
            {
                "server": name,
                "texts_per_request": r.get("texts_per_request", 1),
                "texts_per_s": a,
                "ratio": a / b if a and b else None,
            }
        )
    return out


def _f(value, fmt: str, none: str = "-") -> str:
    return none if value is None else format(value, fmt)


def format_report(report: dict) -> str:
    """The table, the ratios to the first server, the errors and the host, as text."""
    s, h, rows = report["settings"], report["host"], report["rows"]
    flags = features_line(h["flags"])
    lines = [
        f"host: {h['date']}  {h['cpu']}  {h['cores']} cores  {flags}",
        f"texts: {s['texts']} ({s['questions']} questions, {s['paragraphs']} paragraphs; "
        f"SQuAD v1.1 dev, seed {s['seed']})"
        + (
            f", at most {s['max_tokens']} tokens ({s['tokens']['mean']:.1f} mean, "
            f"{s['tokens']['max']} max; left out: {s['left_out_over_max_tokens']['paragraphs']}"
            f" paragraphs, {s['left_out_over_max_tokens']['questions']} questions)"
            if s.get("tokens")
            else ", no token limit"
        ),
        f"texts per request: {', '.join(str(k) for k in s.get('texts_per_request', [1]))}"
        f"; vectors as {s.get('encoding_format', 'float')}"
        f"; {s['concurrency']} concurrent clients, {s['warmup']} warm-up texts; servers "
        f"measured one at a time, in this order; latency is per request",
        "",
    ]
    head = (
        "server",
        "texts/req",
        "texts/s",
        "p50 ms",
        "p99 ms",
        "mean ms",
        "ok",
        "errors",
        "cos mean",
        "cos worst",
        "busy before",
    )
    table = [head]
    for r in rows:
        v = r["vs_first"]
        table.append(
            (
                r["server"],
                str(r.get("texts_per_request", 1)),
                _f(r["texts_per_s"], ".1f"),
                _f(r["p50_ms"], ".1f"),
                _f(r["p99_ms"], ".1f"),
                _f(r["mean_ms"], ".1f"),
                f"{r['answered']}/{r['texts']}",
                str(r["errors"]),
                _f(v["mean"], ".6f"),
                _f(v["worst"], ".6f"),
                _f(r["host_busy_before"], ".0%"),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for k, row in enumerate(table):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
            )
        )
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    base = rows[0]["server"] if rows else "-"
    lines += [
        "",
        f"ratios to {base} at the same texts per request:  (texts/s: higher is "
        f"faster; p50 / p99: lower is faster)",
    ]
    for q in report["ratios"]:
        lines.append(
            f"  {q['server']} x{q.get('texts_per_request', 1)}: texts/s "
            f"{_f(q['texts_per_s'], '.2f')}x  p50 {_f(q['p50'], '.2f')}x  "
            f"p99 {_f(q['p99'], '.2f')}x"
        )
    if len(report.get("settings", {}).get("texts_per_request", [1])) > 1:
        lines += ["", f"best of each server over the sizes, and its texts/s over {base}'s best:"]
        for b in report.get("best", []):
            lines.append(
                f"  {b['server']}: {_f(b['texts_per_s'], '.1f')} texts/s at "
                f"{b['texts_per_request']} per request  {_f(b['ratio'], '.2f')}x"
            )
    lines.append("")
    for r in rows:
        lines.append(
            f"{r['server']} x{r.get('texts_per_request', 1)}: POST {r['url']} (model "
            f"{r['model'] or 'not sent'}, {r['dimensions']} dims)"
        )
        if r["vs_first"].get("note"):
            lines.append(f"  vectors: {r['vs_first']['note']}")
        if r["errors"] or r["warmup_errors"]:
            lines.append(
                f"  {r['errors']} errors ({r['warmup_errors']} in the warm-up); first: "
                + " | ".join(r["error_samples"])
            )
    return "\n".join(lines)

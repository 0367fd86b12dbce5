"""Write the results: JSON (everything), a Markdown table (what a reader compares), and a
self-contained HTML page with inline SVG charts of per-step cost against steps stored."""

from __future__ import annotations

import html
import json
import math
import os
import statistics

from bench.runner import METRICS

# One colour per contender whatever else is in the run, so charts compare at a glance.
COLORS = {"durably": "#1b6ac9", "floor": "#222222", "dbos": "#d1495b", "dbos-wal": "#edae49",
          "huey": "#00798c"}
OTHER = ["#6a4c93", "#8a8a8a", "#3b8b3b"]


def _fmt(x: float | None) -> str:
    if x is None:
        return "–"
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _cell(s: dict) -> str:
    if not s or s.get("median") is None:
        return "–"
    if s["n"] == 1:
        return _fmt(s["median"])
    return f"{_fmt(s['median'])} ({_fmt(s['min'])}–{_fmt(s['max'])})"


def markdown(res: dict) -> str:
    meta = res["meta"]
    out = [
        f"# Benchmarks ({meta['mode']}, {meta['rounds']} rounds, {meta['started']})",
        "",
        f"`{meta['command']}` on {meta['host']['platform']}, {meta['host']['cpus']} CPUs "
        f"(1/5/15-min load at start {', '.join(f'{x:.2f}' for x in meta['host'].get('loadavg_at_start', ()))}, "
        f"at end {', '.join(f'{x:.2f}' for x in meta['host']['loadavg_at_end'])}); "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v),
        "",
        "Each cell: median over rounds (min–max). Contenders alternate round by round; "
        "ratios are taken within each round, then their median (min–max) is shown; "
        "a ratio above 1 means the first contender is better.",
        "",
    ]
    skipped = {n: s["reason"] for n, s in res["contenders"].items() if not s["available"]}
    for n, why in skipped.items():
        out.append(f"- **{n} skipped**: {why}")
    if skipped:
        out.append("")
    for case in res["cases"]:
        metrics = METRICS[case["kind"]]
        out += [f"## {case['title']}", "", "| contender | " + " | ".join(u for _, u, _ in metrics) + " |",
                "|---|" + "---:|" * len(metrics)]
        for name, summ in case["summary"].items():
            errors = [r["error"] for r in case["raw"][name] if "error" in r]
            row = [_cell(summ[m]) for m, _, _ in metrics]
            note = f" (errors: {len(errors)}; first: {errors[0][:120]})" if errors else ""
            out.append(f"| {name}{note} | " + " | ".join(row) + " |")
        head, unit, _ = metrics[0]
        if case["ratios"]:
            shown = [m for m, _, _ in metrics if m != "last_over_first"][:1 if case["kind"] in ("steps", "runs") else 4]
            out += ["", f"Ratios ({', '.join(m for m in shown)}):", "",
                    "| pair | " + " | ".join(shown) + " |", "|---|" + "---:|" * len(shown)]
            for pair, rs in case["ratios"].items():
                out.append(f"| {pair} | " + " | ".join(_cell(rs.get(m, {})) + "x" for m in shown) + " |")
        notes = sorted({
            f"{n}: " + "; ".join(f"{k}={v}" for k, v in r.items() if k in ("settings", "shape", "path", "concurrency", "commits_per_run"))
            for n, rs in case["raw"].items() for r in rs
            if "error" not in r and any(k in r for k in ("settings", "shape", "path", "concurrency", "commits_per_run"))
        })
        if notes:
            out += [""] + [f"- {x}" for x in notes]
        out.append("")
    scale = res.get("scale")
    out += ["## Workload 6: scale (durably only)", ""]
    if not scale:
        out.append("not run")
    elif "error" in scale or "skipped" in scale:
        out.append(f"not measured: {scale.get('error') or scale.get('skipped')}")
    else:
        out += ["| figure | value |", "|---|---:|"]
        out += [f"| {k} | {_fmt(v) if isinstance(v, (int, float)) else v} |" for k, v in scale.items()]
    out.append("")
    return "\n".join(out)


def _slice_medians(case: dict, name: str) -> tuple[list[int], list[float]]:
    rounds = [r for r in case["raw"][name] if "error" not in r]
    if not rounds:
        return [], []
    ends = rounds[0]["slice_end"]
    ys = [statistics.median(r["slice_us_per_step"][j] for r in rounds if j < len(r["slice_us_per_step"]))
          for j in range(len(ends))]
    return ends, ys


def svg_chart(case: dict, width: int = 760, height: int = 360) -> str:
    """Per-step cost (log scale) against steps already stored, one line per contender."""
    series = {n: _slice_medians(case, n) for n in case["raw"]}
    series = {n: s for n, s in series.items() if s[0]}
    if not series:
        return "<p>no data</p>"
    left, right, top, bottom = 70, 140, 20, 45
    w, h = width - left - right, height - top - bottom
    xmax = max(max(xs) for xs, _ in series.values())
    yvals = [y for _, ys in series.values() for y in ys if y > 0]
    lo, hi = math.floor(math.log10(min(yvals))), math.ceil(math.log10(max(yvals)))
    if hi == lo:
        hi += 1

    def px(x: float) -> float:
        return left + w * x / xmax

    def py(y: float) -> float:
        return top + h * (1 - (math.log10(y) - lo) / (hi - lo))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#999"/>']
    for e in range(lo, hi + 1):
        y = py(10 ** e)
        parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(10 ** e)}</text>')
    for j in range(5):
        x = xmax * j / 4
        parts.append(f'<text x="{px(x):.1f}" y="{top + h + 16}" text-anchor="middle">{x:,.0f}</text>')
    parts.append(f'<text x="{left + w / 2}" y="{height - 6}" text-anchor="middle">steps stored in the run (end of slice)</text>')
    parts.append(f'<text transform="translate(14 {top + h / 2}) rotate(-90)" text-anchor="middle">µs per step (log)</text>')
    for i, (name, (xs, ys)) in enumerate(series.items()):
        color = COLORS.get(name, OTHER[i % len(OTHER)])
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys, strict=True) if y > 0)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts.append(f'<text x="{left + w + 8}" y="{top + 14 + 16 * i}" fill="{color}">{html.escape(name)} {_fmt(statistics.median(ys))} µs</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def html_page(res: dict) -> str:
    meta = res["meta"]
    body = [f"<h1>Per-step cost against job size</h1><p>{html.escape(meta['mode'])} run, "
            f"{meta['rounds']} rounds, {html.escape(meta['started'])}. Each point: median over rounds of the "
            "per-step cost within one slice of the run; a flat line means a step does not get dearer "
            "as more steps are stored.</p>"]
    for case in res["cases"]:
        if case["kind"] == "steps":
            body.append(f"<h2>{html.escape(case['title'])}</h2>{svg_chart(case)}")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>durably bench</title>"
            "<style>body{font-family:sans-serif;max-width:820px;margin:2em auto}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def write(res: dict, out_dir: str, stem: str = "latest") -> dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"{stem}.{ext}") for ext in ("json", "md", "html")}
    with open(paths["json"], "w") as f:
        json.dump(res, f, indent=1)
    with open(paths["md"], "w") as f:
        f.write(markdown(res))
    with open(paths["html"], "w") as f:
        f.write(html_page(res))
    return paths

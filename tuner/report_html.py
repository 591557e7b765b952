"""REPORT.html of an export: one self-contained page (plotly's script inline, no network needed)."""

from __future__ import annotations

import difflib
import html

import optuna
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tuner import results
from tuner.cost import cost_per_million
from tuner.verification.stats import error_bar, ratio_text, upper


def report_html(study: optuna.Study, chosen: int, sla: float | None, verified: dict | None, headline: str,
                notes: list[str] | tuple[str, ...] = ()) -> str:
    """The study's Pareto front (finalists highlighted), the verified finalists with their
    intervals, the chosen trial's latency percentiles and its config diff from Triton's default."""
    frame = results.trials_frame(study)
    done = results.completed(frame)
    front = results.pareto_front(frame)
    finalists = verified["finalists"] if verified else {}
    sections: list[tuple[str, str]] = []  # (title, html)

    # 1. Pareto front of the single draws.
    pareto = go.Figure()
    costs = ["" if c is None or c != c else f", {c:.4g} per million inferences" for c in done.cost_per_million]
    pareto.add_trace(go.Scatter(x=done.p99_ms, y=done.throughput, mode="markers", name="trials (single draws)",
                                marker={"color": "#9aa5b1", "size": 8}, text=[f"trial {n}" for n in done.number],
                                customdata=costs,
                                hovertemplate="%{text}: %{y:.1f} infer/s, p99 %{x:.1f} ms%{customdata}<extra></extra>"))
    pareto.add_trace(go.Scatter(x=front.p99_ms, y=front.throughput, mode="lines+markers", name="Pareto front",
                                line={"color": "#1f77b4"}, marker={"size": 9}))
    picked = done[done.number.isin(list(finalists))]
    if not picked.empty:
        pareto.add_trace(go.Scatter(x=picked.p99_ms, y=picked.throughput, mode="markers+text", name="finalists",
                                    marker={"color": "#ff7f0e", "size": 14, "symbol": "diamond-open",
                                            "line": {"width": 2}},
                                    text=[f"trial {n}" for n in picked.number], textposition="top center"))
    mine = done[done.number == chosen]
    pareto.add_trace(go.Scatter(x=mine.p99_ms, y=mine.throughput, mode="markers", name=f"exported (trial {chosen})",
                                marker={"color": "#d62728", "size": 18, "symbol": "star"}))
    if sla:
        pareto.add_vline(x=sla, line_dash="dash", line_color="#d62728", annotation_text=f"SLA {sla} ms")
    pareto.update_layout(xaxis_title="p99 latency (ms)", yaxis_title="throughput (infer/s)", height=460)
    sections.append(("Pareto front of the search (throughput against p99, each trial's single draw)",
                     pareto.to_html(full_html=False, include_plotlyjs=True)))

    # 2. The verified finalists: medians of the rounds with their 95 % intervals.
    if finalists:
        names = [f"trial {n}" + (" (winner)" if n == verified["winner"] else "")
                 + (" (default)" if n == verified["default"] else "") for n in finalists]
        box = make_subplots(rows=1, cols=2, subplot_titles=("throughput (infer/s)", "p99 latency (ms)"))
        for col, key in ((1, "throughput"), (2, "p99_ms")):
            med = [f[key]["median"] for f in finalists.values()]
            box.add_trace(go.Scatter(
                x=names, y=med, mode="markers", showlegend=False, marker={"size": 12, "color": "#1f77b4"},
                error_y=_error_bars([f[key] for f in finalists.values()])), row=1, col=col)
        tallest = max(upper(f["p99_ms"]) for f in finalists.values())
        if sla and sla <= 2 * tallest:  # else the SLA line squashes the chart
            box.add_hline(y=sla, line_dash="dash", line_color="#d62728", row=1, col=2)
        box.update_layout(height=420)
        ratio = verified.get("vs_default")
        text = (f"{verified['rounds']} interleaved rounds ({verified['stopped']}); "
                + ("medians with 95 % intervals" if verified["rounds"] > 1 else "single draws, no interval")
                + f". P(winner is best): {'-' if verified['p_best'] is None else format(verified['p_best'], '.2f')}")
        if ratio is not None:
            text += f"; {ratio_text(ratio)}"
        sections.append(("Verified finalists", f"<p>{html.escape(text)}</p>"
                         + box.to_html(full_html=False, include_plotlyjs=False)))
    else:
        sections.append(("Verified finalists", "<p>Not verified: the figures are the search's single draws.</p>"))

    # 3. Latency percentiles of the exported trial (its trial measurement).
    row = done[done.number == chosen].iloc[0]
    keys = ["p50_ms", "p90_ms", "p95_ms", "p99_ms"]
    lat = go.Figure(go.Bar(x=[k.removesuffix("_ms") for k in keys], y=[row[k] for k in keys], name="single draw",
                           marker_color="#1f77b4", text=[f"{row[k]:.2f}" for k in keys], textposition="outside"))
    if chosen in finalists:
        p99 = finalists[chosen]["p99_ms"]
        lat.add_trace(go.Scatter(x=["p99"], y=[p99["median"]], mode="markers", name="p99 verified (median, 95 %)",
                                 marker={"color": "#ff7f0e", "size": 12},
                                 error_y=_error_bars([p99])))
    lat.update_layout(yaxis_title="latency (ms)", height=380)
    rate = row.get("request_rate")
    level = (f"a request rate of {rate:g}/s" if rate and rate == rate else f"concurrency {int(row.concurrency)}")
    sections.append((f"Latency percentiles of trial {chosen} at {level}",
                     lat.to_html(full_html=False, include_plotlyjs=False)))

    # 4. Its config against Triton's default (the configs the trials were measured with).
    default = verified["default"] if verified and verified.get("default") is not None else None
    if default is None:
        base = done[done.baseline]
        default = int(base.number.iloc[0]) if not base.empty else None
    if default is None:
        diff = "<p>No default-config trial completed.</p>"
    elif default == chosen:
        diff = "<p>The exported trial is Triton's default configuration: no difference.</p>"
    else:
        lines = difflib.unified_diff(study.trials[default].user_attrs.get("config_pbtxt", "").splitlines(),
                                     study.trials[chosen].user_attrs.get("config_pbtxt", "").splitlines(),
                                     f"config.pbtxt (trial {default}, Triton's default)",
                                     f"config.pbtxt (trial {chosen}, exported)", lineterm="")
        colors = {"+": "#1a7f37", "-": "#cf222e", "@": "#8250df"}
        diff = "<pre class='diff'>" + "\n".join(
            f"<span style='color:{colors.get(line[:1], '#24292f')}'>{html.escape(line)}</span>" for line in lines
        ) + "</pre>"
    sections.append(("Config diff from Triton's default (config.pbtxt as each trial was measured)", diff))

    body = "\n".join(f"<h2>{html.escape(title)}</h2>\n{content}" for title, content in sections)
    cost = _cost_text(row, finalists.get(chosen))
    warnings = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(headline)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#24292f}}
pre.diff{{background:#f6f8fa;padding:1em;overflow-x:auto}} .note{{background:#fff8c5;padding:.5em 1em}}</style>
</head><body>
<h1>{html.escape(headline)}</h1>
<p>Study {html.escape(study.study_name)}; SLA: {f"p99 &lt;= {sla} ms" if sla else "none"}.
Figures and the command that reproduces them: REPORT.md; the claim <code>tuner verify</code> checks: tuner-claim.json.</p>
{cost}
{warnings}
{body}
</body></html>
"""


def _cost_text(row, figures: dict | None) -> str:
    """A paragraph: what a million inferences of the exported trial cost at its machine's price
    per hour (at the verified median throughput when it has one); empty without a price."""
    price = row.get("price_per_hour")
    if price is None or price != price:
        return ""
    throughput = figures["throughput"]["median"] if figures else row["throughput"]
    which = "verified median" if figures else "single-draw"
    where = f" on {row['hardware']}" if isinstance(row.get("hardware"), str) else ""
    return (f"<p>Cost: {cost_per_million(throughput, price):.4g} per million inferences at the {which} throughput "
            f"({throughput:.1f} infer/s), the machine{html.escape(where)} priced at {price:g} per hour.</p>")


def _error_bars(figures: list[dict]) -> dict:
    """Plotly's asymmetric error bars of verified figures; none for a figure with no interval."""
    bars = [error_bar(f) for f in figures]
    return {"type": "data", "symmetric": False, "array": [b[0] for b in bars], "arrayminus": [b[1] for b in bars]}

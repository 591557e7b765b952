"""The benchmark's markdown: tables of the objectives, the grid's best, where the time went, the
winner measured again, and the whole report (results.json holds the same figures).

Pure formatting of the dicts that truth.py and runner.py produce.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from tuner.verification.stats import figure_text

from .stats import OBJECTIVES


def md_table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    cells = lambda row: "| " + " | ".join(str(c) for c in row) + " |"  # noqa: E731
    return "\n".join([cells(headers), "|" + "|".join("---" for _ in headers) + "|", *map(cells, rows)])


def fmt(x: float | None, spec: str = ".2f", none: str = "-") -> str:
    return none if x is None else format(x, spec)


def fmt_list(values: Sequence[float | int | None], spec: str = ".2f", none: str = "never") -> str:
    return " / ".join(fmt(v, spec, none) for v in values) if values else "-"


def objective_table(rows: Sequence[dict]) -> str:
    headers = ["objective", "SLA p99 ms", "grid best infer/s", "t95/T_grid median", "min", "max", "reached",
               "random t95/T_grid (expected)", "final ratio per seed (truth)", "as the search measured it",
               "trials to 95% per seed", "trials used per seed"]
    body = []
    for r in rows:
        t = r["t95_fraction"]
        best = r["grid_best"]
        body.append([
            r["objective"], fmt(r["sla_ms"], ".2f", "none"),
            "none meets it" if best is None else f"{best['throughput']:.1f}",
            fmt(t["median"], ".3f", "never"), fmt(t["min"], ".3f", "never"), fmt(t["max"], ".3f", "never"),
            f"{t['reached']} of {t['seeds']}",
            "-" if r["random"] is None else f"{r['random']['expected_fraction']:.3f} ({r['random']['good_points']} of "
                                            f"{r['random']['points']} points >= 95%)",
            fmt_list(r["final_ratios"], ".3f", "-"), fmt_list(r["measured_ratios"], ".3f", "-"),
            fmt_list(r["trials_to_95"], "d"), fmt_list(r["trials_used"], "d"),
        ])
    return md_table(headers, body)


def pct(x: float | None, none: str = "-") -> str:
    """A relative half-width (0.05) as +-5.0%."""
    return none if x is None or x != x or x == float("inf") else f"+-{100 * x:.1f}%"


def noise_line(noise: dict) -> str:
    """The machine's noise as the truth's interleaved rounds saw it (truth.truth_noise)."""
    if not noise or not noise.get("candidates"):
        return "Noise: no truth was measured."
    parts = [f"Noise of this machine (truth: {noise['candidates']} points x {noise['rounds']} interleaved rounds, each "
             f"point reloaded every round{', ' + format(noise['seconds'], '.0f') + ' s' if 'seconds' in noise else ''}):"]
    if "half_width_median" in noise:
        parts.append(f"a point's throughput 95% interval {pct(noise['half_width_median'])} (median over the points; "
                     f"worst {pct(noise['half_width_worst'])}), its p99's {pct(noise['p99_half_width_median'])};")
    if "max_over_min_median" in noise:
        parts.append(f"one point's rounds max/min {noise['max_over_min_median']:.3f} (median; worst "
                     f"{noise['max_over_min_worst']:.3f});")
    if noise.get("round_levels"):
        parts.append("each round's level (median over the points of round / truth median): "
                     + ", ".join(f"{x:.3f}" for x in noise["round_levels"]) + ".")
    return " ".join(parts)


def verified_table(rows: Sequence[dict]) -> str:
    """The headline: per objective, the search's whole time (sampling + verification) as a share of T_grid when its
    verified pick is worth >= 0.95 of the verified best by the truth and meets the SLA there; the noise per row."""
    headers = ["objective", "SLA p99 ms", "verified best infer/s [95% interval] (noise)", "searches",
               "time to verified pick >= 0.95 / T_grid: median", "min", "max", "reached",
               "verification share of search time: median (min-max)", "pick / verified best per seed (truth)",
               "pick's truth interval per seed", "pick meets SLA by truth p99 upper bound", "search time / T_grid per seed",
               "verification rounds per seed"]
    body = []
    for r in rows:
        t, b, v = r["time_fraction"], r["best"], r["verification_share"]
        kind = ("unconstrained, judged on its finalists" if r["derived"]
                else "unconstrained" if r["sla_ms"] is None else "given the SLA")
        body.append([
            r["objective"], fmt(r["sla_ms"], ".2f", "none"),
            "none meets it" if b is None else
            f"{figure_text(b['throughput'])} ({pct(b['throughput']['half_width'])}, {b['rounds']} rounds)",
            f"{len(r['seeds'])} ({kind})",
            fmt(t["median"], ".3f", "never"), fmt(t["min"], ".3f", "never"), fmt(t["max"], ".3f", "never"),
            f"{t['reached']} of {t['seeds']}",
            f"{fmt(v['median'], '.2f')} ({fmt(v['min'], '.2f')}-{fmt(v['max'], '.2f')})",
            fmt_list(r["ratios"], ".3f", "-"),
            " / ".join(pct(x) for x in r["pick_half_widths"]) or "-",
            " / ".join("-" if m is None else ("yes" if m else "NO") for m in r["meets_sla"]) or "-",
            fmt_list(r["total_fraction"], ".3f", "-"),
            " / ".join("-" if n is None else str(n) for n in r["rounds"]) or "-",
        ])
    return md_table(headers, body)


def split_table(splits: Sequence[tuple[str, dict]]) -> str:
    headers = ["run", "trials (measured / reused / failed / unstable)", "load s", "first request s", "measurement s",
               "other in trial s", "between trials s", "total s", "load %", "measurement %", "s per measured trial"]
    body = []
    for label, s in splits:
        total = s["total_s"] or math.nan
        per = s["total_s"] / s["measured"] if s["measured"] else math.nan
        body.append([label, f"{s['trials']} ({s['measured']} / {s['reused']} / {s['failed']} / {s.get('unstable', 0)})",
                     f"{s['load_s']:.1f}", f"{s['first_request_s']:.1f}", f"{s['measure_s']:.1f}",
                     f"{s['other_in_trial_s']:.1f}", f"{s['between_trials_s']:.1f}", f"{s['total_s']:.1f}",
                     f"{100 * (s['load_s'] + s['first_request_s']) / total:.0f}%",
                     f"{100 * s['measure_s'] / total:.0f}%", f"{per:.2f}"])
    return md_table(headers, body)


def best_table(grid: dict) -> str:
    body = []
    for name in OBJECTIVES:
        b = grid["best"][name]
        body.append([name, fmt(grid["objective_slas"][name], ".2f", "none"),
                     "-" if b is None else b["number"], "-" if b is None else f"{b['throughput']:.1f}",
                     "-" if b is None else f"{b['p99_ms']:.2f}", "-" if b is None else b["config"]])
    return md_table(["objective", "SLA p99 ms", "grid trial", "infer/s (truth)", "p99 ms (truth)", "configuration"],
                    body)


def truth_table(grid: dict) -> str:
    """Every truth point: median and 95% interval of throughput and p99 over its rounds, and its rounds."""
    body = [[t.get("config") or t["key"], f"{figure_text(t['throughput'])} ({pct(t['throughput']['half_width'])})",
             figure_text(t["p99_ms"], spec=".2f"),
             " / ".join(f"{x:.0f}" for x in t["throughputs"]), "yes" if t.get("outside_grid") else ""]
            for t in grid.get("truth") or []]
    return md_table(["point", "infer/s median [95% interval] (noise)", "p99 ms median [95% interval]",
                     "infer/s per round", "outside the grid"], body)


def repeat_table(repeats: dict) -> str:
    body = [[i + 1, f"{r['throughput']:.1f}" if r.get("throughput") else "failed",
             fmt(r.get("ratio"), ".3f"), fmt(r.get("p99_ms"), ".2f"),
             "-" if r.get("ratio") is None else ("yes" if abs(r["ratio"] - 1) <= repeats["tolerance"] else "NO")]
            for i, r in enumerate(repeats["runs"])]
    return md_table(["run", "infer/s", "/ stored", "p99 ms", f"within +-{repeats['tolerance']:.0%}"], body)


def render_markdown(report: dict) -> str:
    grid = report["grid"]
    lines = [
        f"# Search efficiency: {report['model']} ({report['grid_space']} space)",
        "",
        f"Measured {report['finished']} on {report['machine']}. Command: `{report['command']}`",
        "",
        "## Space",
        "",
        report["space_table"],
        "",
        f"Measurement (grid and searches alike): {report['measure']}; the grid measures each point at its "
        f"own concurrency (`concurrency_search: sample`, no confirmation), each deployment loaded once.",
        "",
        "## Grid (ground truth)",
        "",
        f"T_grid = {grid['t_grid_s']:.1f} s for {grid['split']['trials']} configurations "
        f"({grid['t_grid_s'] / max(grid['split']['trials'], 1):.2f} s each); "
        f"SLAs from the grid's p99s: loose {grid['slas']['loose']:.2f} ms (q={report['sla_quantiles'][0]}), "
        f"tight {grid['slas']['tight']:.2f} ms (q={report['sla_quantiles'][1]}).",
        f"Truth: {grid.get('remeasured_points', 0)} points (the grid's near-best under each SLA, within "
        f"{report.get('truth_within', 0):.0%} of its best by their single draws, and every search's verified pick) "
        f"measured in {report.get('truth_rounds', 0)} interleaved shuffled rounds, each point reloaded every round "
        f"(tuner's Verifier); a point's truth is the median of its rounds with a bootstrap 95% interval, the grid's "
        f"draw left out. The verified best below is the best truth median whose p99 upper bound meets the SLA.",
        "",
        best_table(grid),
        "",
        noise_line(grid.get("noise") or {}),
        "",
        "How steady the machine was: " + " ".join(drift_lines(grid.get("drift") or {})),
        "",
        *verified_section(report),
        "## Searches: the per-trial pick (secondary)",
        "",
        f"{len(report['searches'])} seeds ({', '.join(str(s['seed']) for s in report['searches']) or 'none'}), "
        f"budget {report['budget_s']:.1f} s each ({report['budget_fraction']:.3f} x T_grid), "
        f"SLA given to the search: {report['search_sla']} (this table: the unconstrained searches where there are "
        f"any). t95 = wall-clock from the search's first trial start "
        f"until the point it would return (its best within the SLA by its own measurements) is worth 95% of "
        f"the grid's best by the ground truth (and meets the SLA there).",
        "",
        objective_table(report["summary"]),
        "",
        "## Where the time goes",
        "",
        split_table([("grid", grid["split"]), *[(f"search seed {s['seed']}", s["split"]) for s in report["searches"]]]),
        "",
    ]
    for rep in report.get("repeats") or []:
        lines += [
            f"## Seed {rep['seed']}: winner measured again",
            "",
            f"Search trial {rep['trial']} ({rep['config']}), stored {rep['stored']:.1f} infer/s; unloaded, "
            f"reloaded and measured {len(rep['runs'])} times:",
            "",
            repeat_table(rep),
            "",
        ]
    if (report.get("grid") or {}).get("truth"):
        lines += ["## The truth, point by point", "", truth_table(report["grid"]), ""]
    if report.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in report["notes"]], ""]
    return "\n".join(lines)


def verified_section(report: dict) -> list[str]:
    rows = report.get("verified_summary")
    if not rows:
        return []
    v = report.get("verify") or {}
    return [
        "## Verified picks (the headline)",
        "",
        f"Each search is `tuner search`: sampling, then its verification stage (finalists reloaded and measured in "
        f"interleaved rounds; share {v.get('share', '?')} of the budget = {fmt(v.get('budget_s'), '.1f')} s, "
        f"{v.get('min_rounds', '?')}-{v.get('max_rounds', '?')} rounds, target {pct(v.get('target_half_width'))}). "
        f"Its value is its verified pick (the stage's winner under the objective's SLA) valued by the truth. Time "
        f"to a verified pick = the search's whole time (sampling + verification) / T_grid, counted when the pick's "
        f"truth median is >= 0.95 x the verified best's and its truth p99 upper bound meets the SLA; else never.",
        "",
        noise_line((report.get("grid") or {}).get("noise") or {}),
        "",
        verified_table(rows),
        "",
    ]


def drift_lines(drift: dict) -> list[str]:
    lines = []
    if "median_max_over_min" in drift:
        lines.append(f"Server compute time per request of identical single-request work ({drift['same_work_points']} grid "
                     f"points at concurrency 1 without dynamic batching, in {drift['same_work_groups']} groups that differ "
                     f"only in max_batch_size): max/min within a group {drift['median_max_over_min']:.2f} (median), "
                     f"{drift['worst_max_over_min']:.2f} (worst); CV {drift['cv']:.1%}.")
    for i, r in enumerate(drift.get("rounds", []), 1):
        lines.append(f"Near-best points measured again, round {i}: {r['points']} points at {r['mean_ratio_to_grid']:.3f} of "
                     f"their grid throughput on average ({r['min']:.3f} to {r['max']:.3f}).")
    return lines

#!/usr/bin/env python
"""Search efficiency: how fast `tuner search` gets within 95% of the best configuration that an
exhaustive sweep of the same space finds, measured for real (issue 8).

    python benchmarks/search_efficiency.py --model PATH_OR_ZOO [--grid-space small|default]
        [--seeds 3] [--out results/bench/...]

1. The ground truth: every configuration of the benchmark's space is measured once, through
   tuner's own search Objective (same render, load, first request and perf_analyzer code path as a
   search trial), on one tritonserver. Its wall-clock is T_grid. The grid gives the best
   throughput overall and under two p99 SLAs derived from its own p99 distribution.
2. `tuner.search.run` searches the same space with the same measurement settings, one fresh study
   per seed, with a time budget of a fraction of T_grid. For each seed and objective: the time
   until the best-so-far first reaches 95% of the grid's best, and the final ratio to it.
3. A table (printed, and written as markdown + JSON under --out), the split of trial time into
   load / first request / measurement, and the grid winner measured again (reloaded) N times.

docs/search-efficiency.md explains the method and the choices made here.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import random
import signal
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere: import the repo's tuner
    sys.path.insert(0, str(REPO))

from tuner.experiment import MeasureSpec, Space  # noqa: E402  (pydantic only: cheap, no server)

RUNTIME = "onnxruntime:fp32"  # the benchmark searches one runtime: the reference, ONNX Runtime fp32 on CPU
FRACTION = 0.95  # "within 95% of the grid's best"
OBJECTIVES = ("overall", "loose", "tight")
GAP_LIMIT_S = 60.0  # a pause between two grid trials longer than this is an interruption (resume), not work

# Each knob's values. Triton's default config (1 instance, max batch 4, no dynamic batching,
# threads 0) is in every preset: the search measures it first, so it must be a grid point too.
GRID_SPACES: dict[str, dict[str, list]] = {
    "default": {  # 3 x 4 x (1 + 2) x 3 x 6 = 648 configurations
        "instances": [1, 2, 3],
        "max_batch_size": [1, 4, 16, 32],
        "dynamic_batching": [False, True],
        "max_queue_delay_us": [0, 2000],
        "preferred_batch": [False],
        "threads": [0, 1, 2],
        "warmup": [False],
        "concurrency": [1, 2, 4, 8, 16, 32],
    },
    "small": {  # 2 x 2 x (1 + 2) x 2 x 3 = 72 configurations
        "instances": [1, 2],
        "max_batch_size": [4, 32],
        "dynamic_batching": [False, True],
        "max_queue_delay_us": [0, 2000],
        "preferred_batch": [False],
        "threads": [0, 1],
        "warmup": [False],
        "concurrency": [1, 4, 16],
    },
}
KNOB_NOTES = {
    "warmup": "pinned off: model_warmup changes the cold start (load time), not steady-state throughput, "
              "and perf_analyzer measures only after the first request",
    "preferred_batch": "pinned off by default (preferred_batch_size = max_batch_size); it would double the "
                       "dynamic-batching half of the grid",
    "max_queue_delay_us": "asked only when dynamic batching is on",
}


# --------------------------------------------------------------------------------------------
# The space and its grid (pure)
# --------------------------------------------------------------------------------------------


def benchmark_space(preset: str = "default", **overrides: list | None) -> Space:
    """The preset's space with the given knobs replaced; backend and precision pinned."""
    values = dict(GRID_SPACES[preset])
    values |= {k: v for k, v in overrides.items() if v is not None}
    return Space(**values, backends=["onnxruntime"], precisions=["fp32"])


def baseline_concurrency(space: Space) -> list[int]:
    """The concurrencies at which the search measures Triton's default first: tuner's default [1, 4]
    where the space has them, else the space's lowest, so the search never leaves the grid."""
    inside = [c for c in (1, 4) if c in space.concurrency]
    return inside or [min(space.concurrency)]


def grid_points(space: Space, batched: bool = True, runtime: str = RUNTIME) -> list[dict]:
    """Every distinct configuration of the space, as the exact params `tuner.space.suggest` asks
    for: the batching knobs only when the model is batched, the queue delay and preferred batch
    only when dynamic batching is on. No two points describe the same deployment and load."""
    batching: list[dict] = []
    for mbs in (space.max_batch_size if batched else [None]):
        if mbs is None:
            batching.append({})
            continue
        for dynamic in space.dynamic_batching:
            if not dynamic:
                batching.append({"max_batch_size": mbs, "dynamic_batching": False})
                continue
            for delay, preferred in itertools.product(space.max_queue_delay_us, space.preferred_batch):
                batching.append({"max_batch_size": mbs, "dynamic_batching": True,
                                 "max_queue_delay_us": delay, "preferred_batch": preferred})
    points = []
    for b, instances, threads, warmup, concurrency in itertools.product(
            batching, space.instances, space.threads, space.warmup, space.concurrency):
        points.append({"runtime": runtime, **b, "instances": instances, "threads": threads, "warmup": warmup,
                       "concurrency": concurrency})
    return points


def params_key(params: dict) -> tuple:
    return tuple(sorted(params.items()))


def describe_space(space: Space, batched: bool = True) -> str:
    lines = ["| knob | values | note |", "|---|---|---|"]
    for knob in ("instances", "max_batch_size", "dynamic_batching", "max_queue_delay_us", "preferred_batch",
                 "threads", "warmup", "concurrency"):
        values = ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in getattr(space, knob))
        lines.append(f"| {knob} | {values} | {KNOB_NOTES.get(knob, '')} |")
    lines.append(f"| runtime | {RUNTIME} | pinned |")
    lines.append("")
    lines.append(f"{len(grid_points(space, batched))} distinct configurations")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Time to 95%, SLAs, ratios (pure)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One finished trial as the benchmark reads it: when it ended (seconds after the run's first
    trial started) and what it measured; throughput None for a failed trial."""

    elapsed_s: float
    throughput: float | None
    p99_ms: float | None
    key: tuple | None = None
    number: int | None = None


def feasible(record: Record, sla_ms: float | None) -> bool:
    return record.throughput is not None and (sla_ms is None or record.p99_ms <= sla_ms)


def best_of(records: Iterable[Record], sla_ms: float | None = None) -> Record | None:
    """The highest-throughput record within the SLA (lower p99 breaks ties)."""
    ok = [r for r in records if feasible(r, sla_ms)]
    return max(ok, key=lambda r: (r.throughput, -r.p99_ms)) if ok else None


def final_ratio(records: Iterable[Record], target: float | None, sla_ms: float | None = None) -> float | None:
    """Best throughput within the SLA over `target` (0.0 when no trial meets the SLA)."""
    if not target:
        return None
    best = best_of(records, sla_ms)
    return 0.0 if best is None else best.throughput / target


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default method)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def derive_slas(p99s: Sequence[float], loose_q: float = 0.5, tight_q: float = 0.25,
                loose_ms: float | None = None, tight_ms: float | None = None) -> dict[str, float]:
    """The loose and tight p99 SLAs: quantiles of the grid's own p99s unless given in ms."""
    return {"loose": loose_ms if loose_ms is not None else round(quantile(p99s, loose_q), 3),
            "tight": tight_ms if tight_ms is not None else round(quantile(p99s, tight_q), 3)}


def objective_slas(slas: dict[str, float]) -> dict[str, float | None]:
    return {"overall": None, "loose": slas["loose"], "tight": slas["tight"]}


def incumbent_trace(records: Sequence[Record], truth: dict[tuple, Record], sla_ms: float | None = None
                    ) -> list[tuple[float, int, Record, Record | None]]:
    """After each trial: the point the run would return then (its best within the SLA by its own
    measurements) and that point's ground-truth figures (None: not in the truth, or over the SLA
    there). A lucky measurement can make a run pick a point; only the truth says what it is worth."""
    trace, seen = [], []
    ordered = sorted(records, key=lambda r: r.elapsed_s)
    trials = 0
    for i, r in enumerate(ordered):
        seen.append(r)
        if i + 1 < len(ordered) and ordered[i + 1].elapsed_s == r.elapsed_s:
            continue  # the points of one trial (a ramp) arrive together
        trials += 1
        pick = best_of(seen, sla_ms)
        if pick is None:
            continue
        true = truth.get(pick.key)
        trace.append((r.elapsed_s, trials, pick, true if true is not None and feasible(true, sla_ms) else None))
    return trace


def time_to_true_fraction(trace, target: float | None, fraction: float = FRACTION) -> tuple[float, int] | None:
    """(elapsed, trials) when the run's pick is first worth `fraction` of `target` by the truth."""
    if not target:
        return None
    for elapsed, trials, _pick, true in trace:
        if true is not None and true.throughput >= fraction * target:
            return elapsed, trials
    return None


def random_search_expectation(grid: Sequence[Record], target: float | None, sla_ms: float | None = None,
                              fraction: float = FRACTION) -> dict | None:
    """What sampling grid points uniformly without replacement would need, from the grid itself:
    with k of N points at >= fraction x target, the expected number of draws to the first one is
    (N + 1) / (k + 1); as a share of T_grid that is about (N + 1) / ((k + 1) N)."""
    if not target or not grid:
        return None
    n = len(grid)
    k = sum(feasible(r, sla_ms) and r.throughput >= fraction * target for r in grid)
    trials = (n + 1) / (k + 1)
    return {"good_points": k, "points": n, "expected_trials": round(trials, 2),
            "expected_fraction": round(trials / n, 4)}


def busy_time(intervals: Iterable[tuple[float, float]], max_gap_s: float = GAP_LIMIT_S) -> float:
    """Wall-clock from the first start to the last end, leaving out pauses longer than `max_gap_s`
    between trials (a run interrupted and resumed later is not charged for the pause)."""
    ordered = sorted(intervals)
    if not ordered:
        return 0.0
    total, (start, end) = 0.0, ordered[0]
    for s, e in ordered[1:]:
        if s - end > max_gap_s:
            total += end - start
            start = s
        end = max(end, e)
    return total + (end - start)


def machine_drift(trials: Sequence[dict], rounds: Sequence[Sequence[dict]] = ()) -> dict:
    """How much the measurements moved while the work stayed the same. At concurrency 1 without
    dynamic batching every request is one single inference, so points that differ only in
    max_batch_size do identical work: the spread of their server compute time per request is the
    machine's (and the stack's), not the configurations'. And the near-best points measured again:
    each round's throughput relative to the grid's for the same points."""
    groups: dict[tuple, list[float]] = {}
    for t in trials:
        p = t["params"]
        if t.get("compute_infer_ms") and p.get("concurrency") == 1 and not p.get("dynamic_batching"):
            same_work = params_key({k: v for k, v in p.items() if k != "max_batch_size"})
            groups.setdefault(same_work, []).append(t["compute_infer_ms"])
    spreads = [max(v) / min(v) for v in groups.values() if len(v) >= 2]
    relative = [x / statistics.fmean(v) for v in groups.values() if len(v) >= 2 for x in v]
    out: dict = {"same_work_groups": len(spreads), "same_work_points": len(relative)}
    if spreads:
        out |= {"median_max_over_min": round(statistics.median(spreads), 3), "worst_max_over_min": round(max(spreads), 3),
                "cv": round(statistics.pstdev(relative), 4)}
    grid_by_key = {params_key(t["params"]): t["throughput"] for t in trials if t.get("throughput")}
    per_round = []
    for rows in rounds:
        ratios = [t["throughput"] / grid_by_key[params_key(t["params"])] for t in rows
                  if t.get("throughput") and grid_by_key.get(params_key(t["params"]))]
        if ratios:
            per_round.append({"points": len(ratios), "mean_ratio_to_grid": round(statistics.fmean(ratios), 3),
                              "min": round(min(ratios), 3), "max": round(max(ratios), 3)})
    out["rounds"] = per_round
    return out


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


def seed_stats(values: Sequence[float | None]) -> dict:
    """Median, min and max over seeds; a seed that never got there counts as infinitely late."""
    if not values:
        return {"median": None, "min": None, "max": None, "reached": 0, "seeds": 0}
    as_float = [math.inf if v is None else v for v in values]
    finite = lambda x: None if math.isinf(x) else x  # noqa: E731
    return {"median": finite(statistics.median(as_float)), "min": finite(min(as_float)),
            "max": finite(max(as_float)), "reached": sum(v is not None for v in values), "seeds": len(values)}


def time_split(trials: Sequence[dict], span_s: float) -> dict:
    """Where a run's time went: load (load request to ready), first request, measurement
    (perf_analyzer), the rest of the trials (artifact, render, sampler), and between trials."""
    measured = [t for t in trials if t.get("repeat_of") is None]
    durations = sum(t.get("duration_s") or 0.0 for t in trials)
    load = sum(t.get("load_s") or 0.0 for t in measured)
    first = sum((t.get("first_request_ms") or 0.0) / 1000 for t in measured)
    measure = sum(t.get("measure_s") or 0.0 for t in measured)
    return {
        "trials": len(trials),
        "measured": len(measured),
        "reused": len(trials) - len(measured),
        "failed": sum(t.get("state") == "FAIL" for t in trials),
        "unstable": sum(bool(t.get("unstable")) for t in measured),
        "load_s": round(load, 3),
        "first_request_s": round(first, 3),
        "measure_s": round(measure, 3),
        "other_in_trial_s": round(max(durations - load - first - measure, 0.0), 3),
        "between_trials_s": round(max(span_s - durations, 0.0), 3),
        "total_s": round(span_s, 3),
    }


def records_of(trials: Sequence[dict]) -> list[Record]:
    """Every (configuration, concurrency) point the trials measured, as the run stored it. A ramp
    trial gives one point per concurrency it measured, its chosen point with the trial's stored
    figures (the mean of two runs when it was confirmed); a failed trial one empty record."""
    out = []
    for t in trials:
        if t.get("end_s") is None:
            continue
        deployment = {k: v for k, v in t["params"].items() if k != "concurrency"}
        if t.get("throughput") is None:
            out.append(Record(t["end_s"], None, None, params_key(t["params"]), t["number"]))
            continue
        chosen = t.get("concurrency") or t["params"].get("concurrency")
        curve = t.get("curve") or [{"concurrency": chosen, "throughput": t["throughput"], "p99_ms": t["p99_ms"]}]
        for point in curve:
            figures = (t["throughput"], t["p99_ms"]) if point["concurrency"] == chosen else \
                (point["throughput"], point["p99_ms"])
            key = params_key(deployment | {"concurrency": point["concurrency"]} if chosen else deployment)
            out.append(Record(t["end_s"], *figures, key, t["number"]))
    return out


def evaluate_search(trials: Sequence[dict], grid_best: dict[str, dict | None], slas: dict[str, float | None],
                    truth: dict[tuple, Record], t_grid_s: float) -> dict:
    """Per objective: time and trials until the search's pick is worth 95% of the grid's best (by the
    ground truth), the final ratio by the truth, and the same ratio as the search measured it."""
    records = records_of(trials)
    out = {}
    for name in OBJECTIVES:
        target = (grid_best.get(name) or {}).get("throughput")
        sla = slas[name]
        trace = incumbent_trace(records, truth, sla)
        hit = time_to_true_fraction(trace, target)
        final = trace[-1] if trace else None
        true_final = None if final is None or final[3] is None else final[3].throughput
        out[name] = {
            "t95_s": None if hit is None else round(hit[0], 3),
            "t95_fraction": None if hit is None or not t_grid_s else round(hit[0] / t_grid_s, 4),
            "trials_to_95": None if hit is None else hit[1],
            "final_ratio": None if not target else _round((true_final or 0.0) / target),
            "measured_ratio": _round(final_ratio(records, target, sla)),
            "best_trial": None if final is None else final[2].number,
            "best_key": None if final is None else list(map(list, final[2].key)),
            "best_measured": None if final is None else round(final[2].throughput, 3),
            "curve": [(round(e, 3), round(p.throughput, 3), None if t is None else round(t.throughput, 3))
                      for e, _n, p, t in trace],
        }
    return out


def summarize(grid: dict, searches: Sequence[dict]) -> list[dict]:
    """One row per objective over the seeds (the table the benchmark prints)."""
    rows = []
    for name in OBJECTIVES:
        per_seed = [s["objectives"][name] for s in searches]
        rows.append({
            "objective": name,
            "sla_ms": grid["objective_slas"][name],
            "grid_best": grid["best"][name],
            "random": grid["random_search"][name],
            "t95_fraction": seed_stats([o["t95_fraction"] for o in per_seed]),
            "final_ratios": [o["final_ratio"] for o in per_seed],
            "measured_ratios": [o["measured_ratio"] for o in per_seed],
            "trials_to_95": [o["trials_to_95"] for o in per_seed],
            "trials_used": [s["split"]["trials"] for s in searches],
        })
    return rows


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


# --------------------------------------------------------------------------------------------
# Formatting (pure)
# --------------------------------------------------------------------------------------------


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
        f"Ground truth: the grid's measurement of each point, averaged with {report.get('truth_repeats', 0)} more "
        f"measurements of its {grid.get('remeasured_points', 0)} near-best points (within "
        f"{report.get('truth_within', 0):.0%} of the grid's best under each SLA); the best below is the best truth.",
        "",
        best_table(grid),
        "",
        "How steady the machine was: " + " ".join(drift_lines(grid.get("drift") or {})),
        "",
        "## Searches",
        "",
        f"{len(report['searches'])} seeds ({', '.join(str(s['seed']) for s in report['searches']) or 'none'}), "
        f"budget {report['budget_s']:.1f} s each ({report['budget_fraction']:.3f} x T_grid), "
        f"SLA given to the search: {report['search_sla']}. t95 = wall-clock from the search's first trial start "
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
    if report.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in report["notes"]], ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Reading studies
# --------------------------------------------------------------------------------------------


def trial_rows(study) -> list[dict]:
    """The study's finished trials as plain dicts, times relative to its first trial's start."""
    import optuna

    from tuner.report import describe

    finished = [t for t in study.get_trials(deepcopy=False)
                if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
                and t.datetime_start is not None and t.datetime_complete is not None]
    if not finished:
        return []
    origin = min(t.datetime_start for t in finished)
    rows = []
    for t in sorted(finished, key=lambda t: t.datetime_start):
        attrs = t.user_attrs
        m = attrs.get("measurement") if t.state == optuna.trial.TrialState.COMPLETE else None
        rows.append({
            "number": t.number,
            "state": t.state.name,
            "params": dict(t.params),
            "config": describe(attrs["candidate"]) if "candidate" in attrs else "",
            "start_s": round((t.datetime_start - origin).total_seconds(), 3),
            "end_s": round((t.datetime_complete - origin).total_seconds(), 3),
            "duration_s": round((t.datetime_complete - t.datetime_start).total_seconds(), 3),
            "throughput": m["throughput"] if m else None,
            "p99_ms": m["p99_ms"] if m else None,
            "compute_infer_ms": m.get("compute_infer_ms") if m else None,
            "load_s": attrs.get("load_s"),
            "first_request_ms": attrs.get("first_request_ms"),
            "measure_s": attrs.get("measure_s"),
            "prepare_s": attrs.get("prepare_s"),
            "repeat_of": attrs.get("repeat_of"),
            "baseline": bool(attrs.get("baseline", False)),
            "unstable": bool(attrs.get("unstable", False)),
            "error": attrs.get("error"),
            "concurrency": (attrs.get("candidate") or {}).get("concurrency"),
            "curve": [{k: p[k] for k in ("concurrency", "throughput", "p99_ms")} for p in attrs.get("curve", [])],
            "confirm": attrs.get("confirm"),
        })
    return rows


def grid_slas(trials: Sequence[dict], loose_q: float, tight_q: float, loose_ms: float | None,
              tight_ms: float | None) -> dict[str, float]:
    done = [r for r in records_of(trials) if r.throughput is not None]
    if not done:
        raise SystemExit("no grid configuration was measured successfully; see the server log under --out")
    return derive_slas([r.p99_ms for r in done], loose_q, tight_q, loose_ms, tight_ms)


def truth_candidates(records: Sequence[Record], slas: dict[str, float | None], within: float = 0.9,
                     per_objective: int = 6) -> list[tuple]:
    """The grid points worth measuring again before calling one the best: per objective, those the
    grid measured within `within` of its best under the SLA (at most `per_objective`, best first).
    One draw per point makes the grid's best the luckiest of hundreds of noisy draws."""
    keys: list[tuple] = []
    for sla in slas.values():
        top = best_of(records, sla)
        if top is None:
            continue
        near = sorted((r for r in records if feasible(r, sla) and r.throughput >= within * top.throughput),
                      key=lambda r: -r.throughput)[:per_objective]
        keys += [r.key for r in near if r.key not in keys]
    return keys


def unconfirmed_bests(truth: dict[tuple, Record], slas: dict[str, float | None], remeasured: Sequence[tuple]
                      ) -> list[tuple]:
    """The best point of each objective by the truth that rests on a single draw: once the lucky
    near-best points are averaged down, a point just outside them can become the best."""
    keys = []
    for sla in slas.values():
        best = best_of(list(truth.values()), sla)
        if best is not None and best.key not in remeasured and best.key not in keys:
            keys.append(best.key)
    return keys


def ground_truth(records: Sequence[Record], again: Iterable[Record] = ()) -> dict[tuple, Record]:
    """Each grid point's figures: the grid's measurement, averaged with its re-measurements where
    there are any (throughput and p99 alike)."""
    runs: dict[tuple, list[Record]] = {}
    for r in [*records, *again]:
        if r.throughput is not None:
            runs.setdefault(r.key, []).append(r)
    return {key: Record(0.0, statistics.fmean(r.throughput for r in rs), statistics.fmean(r.p99_ms for r in rs),
                        key, rs[0].number)
            for key, rs in runs.items()}


def grid_summary(trials: Sequence[dict], slas: dict[str, float], truth: dict[tuple, Record],
                 remeasured: Sequence[tuple] = ()) -> dict:
    """The grid's best per objective by the ground truth, what random sampling would need, and time."""
    obj_slas = objective_slas(slas)
    by_key = {params_key(t["params"]): t for t in trials}
    values = list(truth.values())
    best, rand = {}, {}
    for name, sla in obj_slas.items():
        b = best_of(values, sla)
        t = by_key.get(b.key) if b else None
        best[name] = None if b is None else {"number": t["number"], "throughput": round(b.throughput, 3),
                                             "p99_ms": round(b.p99_ms, 3), "grid_throughput": t["throughput"],
                                             "params": t["params"], "config": t["config"]}
        rand[name] = random_search_expectation(values, b.throughput if b else None, sla)
    t_grid = busy_time([(t["start_s"], t["end_s"]) for t in trials])
    return {"t_grid_s": round(t_grid, 3), "slas": slas, "objective_slas": obj_slas, "best": best,
            "random_search": rand, "remeasured_points": len(remeasured), "split": time_split(trials, t_grid),
            "trials": list(trials)}


# --------------------------------------------------------------------------------------------
# Running (real tritonserver + perf_analyzer)
# --------------------------------------------------------------------------------------------


class LineReporter:
    """tuner's Reporter protocol as one plain line per trial (logs stay readable)."""

    def __init__(self, label: str):
        self.label = label
        self.total = 0
        self.count = 0
        self.started = time.monotonic()

    def note(self, message: str) -> None:
        print(f"[{self.label}] {message}", flush=True)

    def search_started(self, study, total: int, done: int) -> None:
        self.total, self.count, self.started = total - done, 0, time.monotonic()

    def trial_started(self, number: int, candidate) -> None:
        pass

    def trial_finished(self, trial) -> None:
        from tuner.report import describe

        self.count += 1
        attrs = trial.user_attrs
        what = describe(attrs["candidate"]) if "candidate" in attrs else ""
        m = attrs.get("measurement")
        if trial.state.name == "COMPLETE" and m:
            how = (f"repeat of {attrs['repeat_of']}" if "repeat_of" in attrs
                   else f"load {attrs.get('load_s', 0):.1f} s, measure {attrs.get('measure_s', 0):.1f} s")
            result = f"{m['throughput']:.1f} infer/s p99 {m['p99_ms']:.2f} ms ({how})"
        else:
            result = f"{trial.state.name}: {attrs.get('error', 'no reason recorded')}"
        elapsed = time.monotonic() - self.started
        print(f"[{self.label} {self.count}/{self.total} {elapsed:.0f}s] #{trial.number} {what} -> {result}",
              flush=True)


@contextlib.contextmanager
def fixed_data_seed(data_seed: int):
    """tuner seeds its sample inputs with the sampler seed; hold the inputs fixed so that every
    search measures the same requests as the grid and only the sampler's seed varies."""
    from tuner import search

    original = search.load_samples

    def load_samples(source, exp):
        return original(source, exp.model_copy(update={"seed": data_seed}))

    search.load_samples = load_samples
    try:
        yield
    finally:
        search.load_samples = original


def _storage(url: str):
    import optuna

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # heartbeats are "experimental"; tuner's own storage uses them too
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=10, grace_period=30)


def _delete_study(storage, name: str) -> None:
    import optuna

    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=name, storage=storage)


def _point_done(trial) -> bool:
    """Measured (complete) or failed for a reason of its own: not an interrupted trial."""
    return trial.state.name == "COMPLETE" or (trial.state.name == "FAIL" and "error" in trial.user_attrs)


class FixedRunner:
    """One server and one tuner Objective, measuring given params through Optuna trials: the grid
    (one study, every point enqueued) and the winner's repeats (a fresh one-trial study each)."""

    def __init__(self, exp, storage):
        self.exp, self.storage = exp, storage

    def __enter__(self) -> "FixedRunner":
        from tuner import model_source, search
        from tuner.server.launch import make_server

        self.source = model_source.resolve(self.exp.model, self.exp.results_dir / "cache")
        ws = search.Workspace(self.exp.results_dir / "grid")
        samples = search._prepare(self.source, ws, self.exp)
        self.server = make_server(self.exp.server, ws.repository, ws.server_log, "grid")
        self.server.start()
        try:
            self.reporter = LineReporter("grid")
            self.objective = search.Objective(self.exp, self.source, self.server, ws, samples, self.reporter,
                                              tuple(self.server.backends()))
        except BaseException:
            self.server.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()

    def measure(self, study_name: str, points: Sequence[dict], label: str, fresh: bool = False,
                order_seed: int = 0):
        """Measure every point not yet done in the study (resuming it), deployments in a seeded
        random order (drift of the machine over the run spreads over all knobs instead of following
        one), the concurrencies of each deployment one after the other on its one load."""
        import optuna

        from tuner.errors import TrialError

        if fresh:
            _delete_study(self.storage, study_name)
        # The sampler is never consulted: every param of every trial is fixed.
        study = optuna.create_study(study_name=study_name, storage=self.storage, load_if_exists=True,
                                    sampler=optuna.samplers.RandomSampler(seed=order_seed),
                                    directions=["maximize", "minimize"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # trials of a killed run: failed, then measured again
        trials = study.get_trials(deepcopy=False)
        have = {params_key(t.params) for t in trials if _point_done(t)}
        # An enqueued trial holds its params as "fixed_params" until it runs.
        waiting = {params_key(t.system_attrs.get("fixed_params", t.params)) for t in trials
                   if t.state.name == "WAITING"}
        todo = by_deployment([p for p in points if params_key(p) not in have | waiting], order_seed)
        for p in todo:
            study.enqueue_trial(p, skip_if_exists=False)
        remaining = len(todo) + len(waiting)
        if remaining:
            if have:
                print(f"[{label}] resuming: {len(have)} of {len(points)} configurations already measured", flush=True)
            self.reporter.label = label
            self.reporter.search_started(study, remaining, 0)
            study.optimize(self.objective, n_trials=remaining, catch=(TrialError,),
                           callbacks=[lambda _s, t: self.reporter.trial_finished(t)])
        return study


def by_deployment(points: Sequence[dict], order_seed: int = 0) -> list[dict]:
    """Points grouped by deployment (everything but the concurrency), the groups shuffled (seeded),
    each group's concurrencies ascending: an exhaustive sweep that loads each deployment once, as
    Triton keeps a model whose config is unchanged (tuner's Objective then skips the reload)."""
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault(params_key({k: v for k, v in p.items() if k != "concurrency"}), []).append(p)
    order = list(groups.values())
    random.Random(order_seed).shuffle(order)
    return [p for group in order for p in sorted(group, key=lambda p: p.get("concurrency", 0))]


def run_search(exp, storage, reporter):
    """A fresh `tuner search` study (what `tuner search` runs, minus its printing)."""
    from tuner import search

    _delete_study(storage, exp.study)
    return search.run(exp, reporter)


def _install_sigterm():
    def handler(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _zoo_cache(out: Path, cache_dir: Path, model: str) -> None:
    """Zoo models export once into results/cache/zoo; the benchmark's results_dir (--out) shares it."""
    from tuner import zoo

    if zoo.get(model) is None:
        return
    link = out / "cache" / "zoo"
    if link.exists() or link.is_symlink():
        return
    (cache_dir / "zoo").mkdir(parents=True, exist_ok=True)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to((cache_dir / "zoo").resolve(), target_is_directory=True)


def _csv(kind):
    def parse(text: str) -> list:
        items = [x.strip() for x in text.split(",") if x.strip()]
        if kind is bool:
            table = {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}
            try:
                return [table[x.lower()] for x in items]
            except KeyError as exc:
                raise argparse.ArgumentTypeError(f"not a boolean: {exc.args[0]} (use true/false)") from None
        return [kind(x) for x in items]

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="zoo name (wenet, wenet-tiny), an .onnx file or a Triton model dir")
    p.add_argument("--grid-space", choices=sorted(GRID_SPACES), default="default",
                   help="preset space (default: 648 configurations; small: 72)")
    p.add_argument("--seeds", type=int, default=3,
                   help="number of searches (seeds --first-seed, +1, ...); 0: the grid only")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the study DB, server logs, report.md and results.json "
                        "(default results/bench/search-efficiency/<model>-<grid-space>)")
    narrow = p.add_argument_group("narrow the space (comma lists replace the preset's values)")
    for knob, kind in (("instances", int), ("max-batch-size", int), ("dynamic-batching", bool),
                       ("queue-delay-us", int), ("preferred-batch", bool), ("threads", int), ("warmup", bool),
                       ("concurrency", int)):
        narrow.add_argument(f"--{knob}", type=_csv(kind), default=None)
    m = p.add_argument_group("measurement (grid and searches alike): the experiment file's, else tuner's "
                             "defaults; each flag overrides")
    m.add_argument("--experiment", type=Path, default=None,
                   help="take measure: and server: from this experiment file (default: experiments/<model>.yaml "
                        "when it exists, as `tuner search` does); its space is not used")
    m.add_argument("--interval-ms", type=int, default=None)
    m.add_argument("--stability-percent", type=float, default=None)
    m.add_argument("--max-windows", type=int, default=None)
    m.add_argument("--samples", type=int, default=None)
    m.add_argument("--perf-timeout-s", type=float, default=None)
    s = p.add_argument_group("SLAs and searches")
    s.add_argument("--loose-quantile", type=float, default=0.5, help="loose SLA = this quantile of the grid's p99s")
    s.add_argument("--tight-quantile", type=float, default=0.25, help="tight SLA = this quantile of the grid's p99s")
    s.add_argument("--loose-sla-ms", type=float, default=None, help="fix the loose SLA instead")
    s.add_argument("--tight-sla-ms", type=float, default=None, help="fix the tight SLA instead")
    s.add_argument("--budget-fraction", type=float, default=0.15,
                   help="each search's timeout as a fraction of T_grid (default 0.15: T_grid/9 plus a margin)")
    s.add_argument("--budget-s", type=float, default=None, help="each search's timeout in seconds instead")
    s.add_argument("--search-trials", type=int, default=None, help="trial cap per search (default: 2 x grid size)")
    s.add_argument("--search-sla", choices=["none", "loose", "tight"], default="none",
                   help="max_p99_ms given to the search (default none: the Pareto search serves every SLA)")
    s.add_argument("--data-seed", type=int, default=0, help="seed of the sample inputs, the same for every run")
    s.add_argument("--repeats", type=int, default=3,
                   help="measure each search's final pick again this many times (0: skip)")
    s.add_argument("--truth-repeats", type=int, default=2,
                   help="measure the grid's near-best points this many more times; the truth is their mean")
    s.add_argument("--truth-within", type=float, default=0.9,
                   help="near-best: within this share of the grid's best under each SLA")
    s.add_argument("--truth-points", type=int, default=6, help="at most this many near-best points per objective")
    s.add_argument("--remeasure-grid", action="store_true", help="measure the grid again even if --out holds it")
    s.add_argument("--cache-dir", type=Path, default=Path("results/cache"), help="zoo model export cache to share")
    s.add_argument("--dry-run", action="store_true", help="print the space and the grid size, measure nothing")
    return p.parse_args(argv)


def settings(args) -> tuple[MeasureSpec, dict, str]:
    """Measurement and server settings: the experiment file's (if any), then the flags."""
    from tuner import experiment

    path = args.experiment
    if path is None and (default := Path("experiments") / f"{args.model}.yaml").is_file():
        path = default
    base = experiment.load(path, {"model": args.model}) if path else None
    measure = base.measure if base else MeasureSpec()
    flags = {"interval_ms": args.interval_ms, "stability_percent": args.stability_percent,
             "max_windows": args.max_windows, "samples": args.samples, "timeout_s": args.perf_timeout_s}
    measure = MeasureSpec(**(measure.model_dump() | {k: v for k, v in flags.items() if v is not None}))
    server = base.server.model_dump(mode="json") if base else {}
    return measure, server, f"{path} + flags" if path else "tuner's defaults + flags"


def build_experiment(args, space: Space, measure: MeasureSpec, server: dict, out: Path, study: str, seed: int,
                     trials: int, timeout_s: float | None = None, max_p99_ms: float | None = None):
    from tuner import experiment

    return experiment.build({
        "model": args.model, "study": study, "storage": f"sqlite:///{out / 'bench.db'}", "results_dir": str(out),
        "trials": trials, "timeout_s": timeout_s, "max_p99_ms": max_p99_ms, "seed": seed,
        "baseline_concurrency": baseline_concurrency(space), "space": space.model_dump(),
        "measure": measure.model_dump(), "server": server,
    }, "benchmark")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from pydantic import ValidationError

    from tuner import model_source
    from tuner.errors import TunerError
    from tuner.space import widen_for_baseline

    try:
        space = benchmark_space(args.grid_space, instances=args.instances, max_batch_size=args.max_batch_size,
                                dynamic_batching=args.dynamic_batching, max_queue_delay_us=args.queue_delay_us,
                                preferred_batch=args.preferred_batch, threads=args.threads, warmup=args.warmup,
                                concurrency=args.concurrency)
        measure, server, measure_from = settings(args)
        out = args.out or Path("results/bench/search-efficiency") / f"{Path(args.model).stem}-{args.grid_space}"
        out.mkdir(parents=True, exist_ok=True)
        _zoo_cache(out, args.cache_dir, args.model)
        source = model_source.resolve(args.model, out / "cache")
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"error: invalid space: {problems}", file=sys.stderr)
        return 2
    except TunerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    batched = source.signature.batched
    widened = widen_for_baseline(space, baseline_concurrency(space), batched)
    notes = []
    if widened != space:
        changed = [k for k in Space.model_fields if getattr(widened, k) != getattr(space, k)]
        notes.append(f"widened {', '.join(changed)} to hold Triton's default config, which every search measures first")
        space = widened
    points = grid_points(space, batched)
    print(f"model {args.model} (served as {source.name}, {'batched' if batched else 'not batched'}); "
          f"space {args.grid_space}:\n{describe_space(space, batched)}", flush=True)
    print(f"measurement ({measure_from}): {measure.model_dump()}; results under {out}", flush=True)
    for n in notes:
        print(f"note: {n}", flush=True)
    if args.dry_run:
        return 0

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    _install_sigterm()
    storage_url = f"sqlite:///{out / 'bench.db'}"
    storage = _storage(storage_url)
    cap = args.search_trials or 2 * len(points)
    report: dict = {"model": args.model, "grid_space": args.grid_space, "space": space.model_dump(),
                    "space_table": describe_space(space, batched), "grid_size": len(points),
                    "measure": measure.model_dump(), "measure_from": measure_from,
                    "command": " ".join(["python", *sys.argv]),
                    "machine": f"{os.uname().nodename}, {os.cpu_count()} CPUs",
                    "sla_quantiles": [args.loose_quantile, args.tight_quantile], "notes": notes,
                    "truth_repeats": args.truth_repeats, "truth_within": args.truth_within}
    grid_measure = measure.model_copy(update={"concurrency_search": "sample", "confirm_best": False})
    try:
        with fixed_data_seed(args.data_seed):
            grid_exp = build_experiment(args, space, grid_measure, server, out, "grid", args.data_seed, len(points))
            with FixedRunner(grid_exp, storage) as runner:
                started = time.monotonic()
                study = runner.measure("grid", points, "grid", fresh=args.remeasure_grid)
                keys = {params_key(p) for p in points}
                grid_trials = [t for t in trial_rows(study) if params_key(t["params"]) in keys
                               and (t["state"] == "COMPLETE" or t["error"])]  # not the interrupted ones
                slas = grid_slas(grid_trials, args.loose_quantile, args.tight_quantile, args.loose_sla_ms,
                                 args.tight_sla_ms)
                records = records_of(grid_trials)
                again_keys = truth_candidates(records, objective_slas(slas), args.truth_within, args.truth_points)
                params_of = {params_key(t["params"]): t["params"] for t in grid_trials}
                for attempt in range(3):  # a point whose single draw becomes the best once the others are averaged: again
                    again: list[Record] = []
                    rounds: list[list[dict]] = []
                    for i in range(1, args.truth_repeats + 1):
                        st = runner.measure(f"truth-{i}", [params_of[k] for k in again_keys],
                                            f"truth {i}/{args.truth_repeats}", fresh=args.remeasure_grid and attempt == 0,
                                            order_seed=i)
                        rounds.append([t for t in trial_rows(st) if params_key(t["params"]) in set(again_keys)])
                        again += records_of(rounds[-1])
                    truth = ground_truth(records, again)
                    missing = unconfirmed_bests(truth, objective_slas(slas), again_keys)
                    if not missing or not args.truth_repeats:
                        break
                    again_keys += missing
                grid = grid_summary(grid_trials, slas, truth, again_keys)
                grid["drift"] = machine_drift(grid_trials, rounds)
                print(f"grid: T_grid {grid['t_grid_s']:.1f} s over {len(grid_trials)} configurations "
                      f"(this invocation: {time.monotonic() - started:.1f} s, with {len(again_keys)} points measured "
                      f"{args.truth_repeats} more times); SLAs {grid['slas']}", flush=True)
                print(best_table(grid), flush=True)
            report["grid"] = grid
            budget = args.budget_s or args.budget_fraction * grid["t_grid_s"]
            report |= {"budget_s": budget, "budget_fraction": budget / grid["t_grid_s"] if grid["t_grid_s"] else 0.0,
                       "search_sla": args.search_sla, "search_trials_cap": cap}
            sla = None if args.search_sla == "none" else grid["slas"][args.search_sla]
            searches = []
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                exp = build_experiment(args, space, measure, server, out, f"search-seed{seed}", seed, cap, budget,
                                       sla)
                print(f"search seed {seed}: budget {budget:.1f} s, at most {cap} trials", flush=True)
                found = run_search(exp, storage, LineReporter(f"seed {seed}"))
                trials = trial_rows(found)
                span = max((t["end_s"] for t in trials), default=0.0)
                searches.append({"seed": seed, "budget_s": budget, "split": time_split(trials, span),
                                 "objectives": evaluate_search(trials, grid["best"], grid["objective_slas"],
                                                               truth, grid["t_grid_s"]),
                                 "outside_grid": sum(r.key not in truth for r in records_of(trials)
                                                     if r.throughput is not None),
                                 "trials": trials})
            if args.repeats and searches:
                with FixedRunner(grid_exp, storage) as runner:
                    report["repeats"] = [measure_winner(runner, s, args.repeats) for s in searches]
    except TunerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished grid trials are kept in the study; run the same command again to resume",
              file=sys.stderr)
        return 130
    report["searches"] = searches
    report["summary"] = summarize(grid, searches)
    report["finished"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if any(s["outside_grid"] for s in searches):
        report["notes"].append("some search trials fell outside the grid: " +
                               ", ".join(f"seed {s['seed']}: {s['outside_grid']}" for s in searches))
    markdown = render_markdown(report)
    (out / "report.md").write_text(markdown)
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str))
    print()
    print(markdown)
    print(f"written: {out / 'report.md'}, {out / 'results.json'}")
    return 0


def measure_winner(runner: FixedRunner, search: dict, repeats: int, tolerance: float = 0.05) -> dict:
    """A search's final pick (overall) unloaded, reloaded and measured again, `repeats` times, each in
    a fresh study (in the search's study tuner would reuse the stored figures instead), against the
    figure the search stored for it."""
    pick = search["objectives"]["overall"]
    params = {k: v for k, v in pick["best_key"]}
    runs = []
    for i in range(1, repeats + 1):
        # Triton keeps a model whose config is unchanged (the load returns at once), so unload it
        # first: every repeat is a real reload, as the stored trial was.
        runner.server.unload(runner.source.name)
        label = f"seed {search['seed']} winner {i}/{repeats}"
        study = runner.measure(f"winner-seed{search['seed']}-{i}", [params], label, fresh=True)
        t = trial_rows(study)[-1]
        ratio = t["throughput"] / pick["best_measured"] if t["throughput"] else None
        runs.append({"throughput": t["throughput"], "p99_ms": t["p99_ms"], "ratio": _round(ratio)})
    rep = {"seed": search["seed"], "trial": pick["best_trial"], "config": t["config"],
           "stored": pick["best_measured"], "tolerance": tolerance, "runs": runs}
    print(repeat_table(rep), flush=True)
    return rep


if __name__ == "__main__":
    sys.exit(main())

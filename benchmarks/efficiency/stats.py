"""Measured records and what they say: the best within an SLA, the point a run would return after
each trial, the time until that point is worth 95% of a target, and where a run's time went.

Pure: plain dicts (a study's trials as `runner.trial_rows` reads them) and Records in, figures out.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

FRACTION = 0.95  # "within 95% of the grid's best"
OBJECTIVES = ("overall", "loose", "tight")
GAP_LIMIT_S = 60.0  # a pause between two grid trials longer than this is an interruption (resume), not work


def params_key(params: dict) -> tuple:
    return tuple(sorted(params.items()))


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


def rounded(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)

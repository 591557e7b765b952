"""The grid as ground truth, and a search valued against it.

One draw per grid point makes the grid's best the luckiest of hundreds of noisy draws: the
near-best points are measured again and a point's truth is the mean of its measurements. A
search's pick is then valued by the truth for the same point, not by its own (maybe lucky) figure.

Pure: the trials of the grid and of the searches as plain dicts (runner.trial_rows).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

from .stats import (OBJECTIVES, Record, best_of, busy_time, derive_slas, feasible, final_ratio, incumbent_trace,
                    objective_slas, params_key, random_search_expectation, records_of, rounded, seed_stats,
                    time_split, time_to_true_fraction)


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
            "final_ratio": None if not target else rounded((true_final or 0.0) / target),
            "measured_ratio": rounded(final_ratio(records, target, sla)),
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

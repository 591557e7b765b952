"""The grid as ground truth, and a search valued against it.

One draw per grid point makes the grid's best the luckiest of hundreds of noisy draws: the
near-best points are measured again and a point's truth is the mean of its measurements. A
search's pick is then valued by the truth for the same point, not by its own (maybe lucky) figure.

Pure: the trials of the grid and of the searches as plain dicts (runner.trial_rows).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

from tuner.verification.stats import interval, upper

from .stats import (FRACTION, OBJECTIVES, Record, best_of, busy_time, derive_slas, feasible, final_ratio, incumbent_trace,
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
                 remeasured: Sequence[tuple] = (), best_keys: dict[str, tuple | None] | None = None) -> dict:
    """The grid's best per objective by the ground truth (or the given points: the verified best), what random
    sampling would need, and time."""
    obj_slas = objective_slas(slas)
    by_key = {params_key(t["params"]): t for t in trials}
    values = list(truth.values())
    best, rand = {}, {}
    for name, sla in obj_slas.items():
        if best_keys is None:
            b = best_of(values, sla)
        else:
            b = truth.get(best_keys[name]) if best_keys.get(name) is not None else None
        t = (by_key.get(b.key) if b else None) or {}
        best[name] = None if b is None else {"number": t.get("number"), "throughput": round(b.throughput, 3),
                                             "p99_ms": round(b.p99_ms, 3), "grid_throughput": t.get("throughput"),
                                             "params": t.get("params", dict(b.key)), "config": t.get("config", "")}
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


# --- The verified truth (issue 13): candidates measured in interleaved rounds, as tuner's
# verification stage measures its finalists, and each search valued by its verified pick. ---

def interleaved_truth(rounds: Sequence[dict[tuple, dict | None]], seed: int = 0) -> dict[tuple, dict]:
    """Each candidate's truth from the interleaved rounds (round r measured every candidate once, reloaded,
    in a shuffled order): the median of its rounds with a bootstrap 95% interval, throughput and p99 alike,
    exactly as tuner.verification.stats.interval computes a finalist's. The grid's own draw is left out: it
    is the draw that made the point a candidate (so biased high), and it was measured in another way (one
    load for all of a deployment's concurrencies, at another time). A failed measurement (None) adds nothing."""
    values: dict[tuple, list[dict]] = {}
    for r in rounds:
        for key, m in r.items():
            values.setdefault(key, [])
            if m and m.get("throughput") is not None:
                values[key].append(m)
    out = {}
    for key, ms in values.items():
        if not ms:
            continue
        t = interval([m["throughput"] for m in ms], seed)
        p = interval([m["p99_ms"] for m in ms], seed)
        out[key] = {"throughput": _rounded_interval(t.as_dict()), "p99_ms": _rounded_interval(p.as_dict()),
                    "rounds": len(ms), "throughputs": [round(m["throughput"], 3) for m in ms],
                    "p99s": [round(m["p99_ms"], 3) for m in ms]}
    return out


def _rounded_interval(d: dict) -> dict:
    return {k: (v if v is None or not math.isfinite(v) else round(v, 4) if k == "half_width" else round(v, 3))
            for k, v in d.items()}


def meets_by_truth(point: dict | None, sla_ms: float | None) -> bool:
    """Within the SLA by the truth: the upper bound of its p99 interval, as tuner's verification judges a finalist."""
    return point is not None and (sla_ms is None or upper(point["p99_ms"]) <= sla_ms)


def verified_best(truth: dict[tuple, dict], sla_ms: float | None) -> tuple | None:
    """The best truth median within the SLA (judged on the p99's upper bound); a lower p99 median breaks ties."""
    ok = [k for k, v in truth.items() if meets_by_truth(v, sla_ms)]
    return max(ok, key=lambda k: (truth[k]["throughput"]["median"], -truth[k]["p99_ms"]["median"]), default=None)


def truth_as_records(truth: dict[tuple, dict], grid_records: Sequence[Record] = ()) -> dict[tuple, Record]:
    """The truth as Records for the per-trial trace (stats.incumbent_trace): a candidate's median throughput and its
    p99's upper bound (so that the trace's SLA test is the verified one); other grid points keep their one draw."""
    out = {r.key: r for r in grid_records if r.throughput is not None}
    for key, v in truth.items():
        out[key] = Record(0.0, v["throughput"]["median"], upper(v["p99_ms"]), key, (out.get(key) or Record(0, 0, 0)).number)
    return out


def point_key(row: dict) -> tuple:
    """The grid point a trial row stands for: its deployment at the concurrency its trial chose (a ramp may choose
    another concurrency than the one it was asked); the same key stats.records_of gives that point."""
    deployment = {k: v for k, v in row["params"].items() if k != "concurrency"}
    chosen = row.get("concurrency") or row["params"].get("concurrency")
    return params_key(deployment | {"concurrency": chosen} if chosen else deployment)


def verified_winner(verification: dict | None, sla_ms: float | None) -> int | None:
    """The trial a search's verification stage picks under `sla_ms`: its own winner when it verified under that SLA,
    else the same rule (tuner.verification.finalists.decide) applied to its verified finalists: the highest verified
    median among those whose p99 upper bound meets the SLA. None: nothing verified, or no finalist meets it."""
    if not verification:
        return None
    if verification.get("max_p99_ms") == sla_ms:
        w = verification.get("winner")
        return None if w is None else int(w)
    finalists = {int(n): f for n, f in verification.get("finalists", {}).items()}
    ok = [n for n, f in finalists.items() if sla_ms is None or upper(f["p99_ms"]) <= sla_ms]
    return max(ok, key=lambda n: finalists[n]["throughput"]["median"], default=None)


def search_seconds(trials: Sequence[dict], verification: dict | None) -> dict:
    """A search's time: sampling (its first trial's start to its last trial's end) plus its verification stage
    (which starts as sampling ends), and the verification's share of the whole."""
    sampling = max((t["end_s"] for t in trials if t.get("end_s") is not None), default=0.0)
    verify = float((verification or {}).get("seconds") or 0.0)
    total = sampling + verify
    return {"sampling_s": round(sampling, 3), "verification_s": round(verify, 3), "total_s": round(total, 3),
            "verification_share": round(verify / total, 4) if total else None}


def evaluate_verified(search: dict, truth: dict[tuple, dict], best: dict[str, tuple | None],
                      slas: dict[str, float | None], t_grid_s: float, objectives: Sequence[str] = OBJECTIVES,
                      fraction: float = FRACTION) -> dict:
    """Per objective, the search's verified pick valued by the truth: its ratio to the verified best (truth medians),
    whether it meets the SLA by the truth (p99 upper bound), and, when it is worth >= `fraction` of the best and
    meets the SLA, the search's whole time (sampling + verification) as a share of T_grid; None: never."""
    rows = {t["number"]: t for t in search["trials"]}
    ver = search.get("verification")
    time = search_seconds(search["trials"], ver)
    own = search.get("search_sla_ms")
    out = {}
    for name in objectives:
        sla = slas[name]
        number = verified_winner(ver, sla)
        key = point_key(rows[number]) if number in rows else None
        point = truth.get(key) if key is not None else None
        best_key = best.get(name)
        target = truth[best_key]["throughput"]["median"] if best_key in truth else None
        ratio = point["throughput"]["median"] / target if point is not None and target else None
        meets = meets_by_truth(point, sla)
        reached = ratio is not None and meets and ratio >= fraction
        finalist = ((ver or {}).get("finalists") or {}).get(number) or ((ver or {}).get("finalists") or {}).get(str(number))
        out[name] = {
            "trial": number,
            "key": None if key is None else [list(kv) for kv in key],
            "config": rows[number]["config"] if number in rows else None,
            "derived": ver is not None and ver.get("max_p99_ms") != sla,  # picked from finalists verified without this SLA
            "in_truth": point is not None,
            "ratio": rounded(ratio),
            "truth_median": None if point is None else point["throughput"]["median"],
            "truth_half_width": None if point is None else point["throughput"]["half_width"],
            "meets_sla": meets if point is not None else None,
            "verified_median": None if not finalist else finalist["throughput"]["median"],
            "verified_half_width": None if not finalist else finalist["throughput"]["half_width"],
            "reached": reached,
            "time_fraction": round(time["total_s"] / t_grid_s, 4) if reached and t_grid_s else None,
        }
    return {"time": time, "rounds": (ver or {}).get("rounds"), "stopped": (ver or {}).get("stopped"),
            "search_sla_ms": own, "objectives": out}


def truth_noise(truth: dict[tuple, dict], rounds: Sequence[dict[tuple, dict | None]]) -> dict:
    """The machine's noise as the truth saw it: the intervals' half-widths (median and worst over the candidates),
    the round-to-round spread of one candidate (max/min of its rounds, median and worst over the candidates), and
    each round's level (the median over candidates of its throughput / the candidate's truth median)."""
    if not truth:
        return {"candidates": 0}
    hw = [v["throughput"]["half_width"] for v in truth.values() if v["rounds"] >= 2]
    p99_hw = [v["p99_ms"]["half_width"] for v in truth.values() if v["rounds"] >= 2]
    spread = [max(v["throughputs"]) / min(v["throughputs"]) for v in truth.values()
              if v["rounds"] >= 2 and min(v["throughputs"]) > 0]
    levels = []
    for r in rounds:
        ratios = [m["throughput"] / truth[k]["throughput"]["median"] for k, m in r.items()
                  if m and m.get("throughput") is not None and k in truth and truth[k]["throughput"]["median"]]
        if ratios:
            levels.append(round(statistics.median(ratios), 4))
    out = {"candidates": len(truth), "rounds": len(rounds), "round_levels": levels}
    if hw:
        out |= {"half_width_median": round(statistics.median(hw), 4), "half_width_worst": round(max(hw), 4),
                "p99_half_width_median": round(statistics.median(p99_hw), 4)}
    if spread:
        out |= {"max_over_min_median": round(statistics.median(spread), 4), "max_over_min_worst": round(max(spread), 4)}
    return out


def summarize_verified(truth: dict[tuple, dict], best: dict[str, tuple | None], slas: dict[str, float | None],
                       searches: Sequence[dict]) -> list[dict]:
    """One row per objective over the seeds: the searches given that objective's SLA (search_sla: none for overall);
    where none was given it, the unconstrained searches' verified finalists judged under the SLA (marked derived)."""
    rows = []
    for name in OBJECTIVES:
        own = [s for s in searches if s.get("search_sla", "none") == ("none" if name == "overall" else name)]
        derived = not own
        chosen = own or [s for s in searches if s.get("search_sla", "none") == "none"]
        per_seed = [s["verified"]["objectives"][name] for s in chosen]
        times = [s["verified"]["time"] for s in chosen]
        b = best.get(name)
        rows.append({
            "objective": name, "sla_ms": slas[name], "derived": derived, "seeds": [s["seed"] for s in chosen],
            "best": None if b is None else {"key": [list(kv) for kv in b], "config": truth[b].get("config"),
                                            "throughput": truth[b]["throughput"], "p99_ms": truth[b]["p99_ms"],
                                            "rounds": truth[b]["rounds"]},
            "time_fraction": seed_stats([o["time_fraction"] for o in per_seed]),
            "ratios": [o["ratio"] for o in per_seed],
            "meets_sla": [o["meets_sla"] for o in per_seed],
            "pick_half_widths": [o["truth_half_width"] for o in per_seed],
            "verification_share": seed_stats([t["verification_share"] for t in times]),
            "total_fraction": [None if not s.get("t_grid_s") else round(t["total_s"] / s["t_grid_s"], 4)
                               for s, t in zip(chosen, times)],
            "rounds": [s["verified"]["rounds"] for s in chosen],
        })
    return rows

"""Which trials the verification stage measures again, and what their rounds decide."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from tuner import results
from tuner.cost import cost_per_million
from tuner.verification.stats import interval, p_best, paired_ratio

NEAR_SLA = 1.25  # a trial whose single draw is this close over the SLA may verify within it


def choose(frame: pd.DataFrame, max_p99_ms: float | None, leaders: int = 3, incumbent: int | None = None) -> list[int]:
    """The leading trials within the SLA (by their single draws), the `incumbent` (an earlier
    verification's winner under this SLA: a resumed search verifies again, and a pick already
    verified within the SLA stays in the running), the best one just over the SLA, and Triton's
    default (every "tuned vs default" ratio is measured against it). Repeats of a measured
    deployment count once."""
    done = results.completed(frame)
    done = done[done.repeat_of.isna()].sort_values(["throughput", "p99_ms"], ascending=[False, True])
    within = done if max_p99_ms is None else done[done.p99_ms <= max_p99_ms]
    chosen = list(within.number.head(leaders))
    if incumbent is not None and incumbent in set(done.number):
        chosen.append(incumbent)
    if max_p99_ms is not None:
        near = done[(done.p99_ms > max_p99_ms) & (done.p99_ms <= max_p99_ms * NEAR_SLA)]
        chosen += list(near.number.head(1))
    default = done[done.baseline]
    if not default.empty:
        chosen.append(default.number.iloc[0])
    return sorted({int(n) for n in chosen}, key=chosen.index)


def fit(chosen: Sequence[int], costs: Mapping[int, float], budget_s: float, rounds: int,
        keep: set[int]) -> list[int]:
    """The finalists whose `rounds` full rounds fit the stage's budget (each finalist's cost: its
    reload, warm-up and measurement, in seconds). A round is only paired when it measures every
    finalist, so rather than end after one round with no interval, the stage drops finalists from
    the end of the priority order `choose` gives (the one near the SLA, then the lower leaders);
    those in `keep` (the top leader, the incumbent and the default) always stay."""
    kept = list(chosen)
    for number in reversed(chosen):
        if sum(costs[n] for n in kept) * rounds <= budget_s:
            break
        if number not in keep:
            kept.remove(number)
    return kept


def decide(rounds: Sequence[Mapping[int, Mapping[str, float]]], max_p99_ms: float | None,
           default: int | None, seed: int = 0, *, min_throughput: float | None = None,
           prices: Mapping[int, float | None] | None = None, objective: str = "throughput") -> dict:
    """Each finalist's verified throughput and p99 (median of the rounds, with intervals), and its
    cost per million inferences where its machine's price is known; the winner: among those whose
    p99's upper bound meets the SLA and whose median meets the throughput floor, the highest
    verified median, or with the cost objective the lowest verified cost."""
    numbers = list(rounds[0])
    prices = prices or {}
    throughput = {n: [r[n]["throughput"] for r in rounds] for n in numbers}
    p99 = {n: [r[n]["p99_ms"] for r in rounds] for n in numbers}
    finalists = {}
    for n in numbers:
        t, p = interval(throughput[n], seed), interval(p99[n], seed)
        finalists[n] = {"throughput": t.as_dict(), "p99_ms": p.as_dict(),
                        "meets_sla": max_p99_ms is None or p.upper <= max_p99_ms,
                        "meets_floor": min_throughput is None or t.median >= min_throughput,
                        "cost_per_million": cost_per_million(t.median, prices.get(n))}
    eligible = [n for n in numbers if finalists[n]["meets_sla"] and finalists[n]["meets_floor"]]
    if objective == "cost":
        priced = [n for n in eligible if finalists[n]["cost_per_million"] is not None]
        winner = min(priced, key=lambda n: finalists[n]["cost_per_million"], default=None)
    else:
        winner = max(eligible, key=lambda n: finalists[n]["throughput"]["median"], default=None)
    decision: dict = {"rounds": len(rounds), "finalists": finalists, "winner": winner, "default": default,
                      "p_best": None, "vs_default": None}
    if winner is not None:
        decision["p_best"] = p_best({n: throughput[n] for n in eligible}, winner, seed)
        if default is not None and default != winner:
            ratio = paired_ratio(throughput[winner], throughput[default], seed)
            significant = None if ratio.low is None else ratio.low > 1 or ratio.high < 1  # None: one round, untested
            decision["vs_default"] = ratio.as_dict() | {"significant": significant}
    return decision

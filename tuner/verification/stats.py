"""What interleaved rounds say: each finalist's median with an interval, the chance the winner
is really best, and the winner against Triton's default as a paired ratio.

Rounds are paired: round r measured every finalist once, in a shuffled order, minutes apart at
most, so a drift of the machine falls on all of them alike. The paired ratio's interval is over the
round-by-round ratios, and P(best) resamples whole rounds (a seeded bootstrap): both keep that
pairing. Intervals are Student's t on logs (see `interval`): honest from two rounds on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

RESAMPLES = 2000
# Student's t, two-sided 95 %, for 1-30 degrees of freedom (beyond: the normal's 1.96).
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
       2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
MEDIAN_SE = math.sqrt(math.pi / 2)  # a median's standard error over the mean's, for normal draws


@dataclass(frozen=True)
class Interval:
    """A median and its 95 % interval; one round has none (low and high None): a single draw's
    [x, x] would claim a precision that was never measured. Every display keys on `low is None`."""

    median: float
    low: float | None
    high: float | None

    @property
    def half_width(self) -> float | None:
        """Half the interval's width relative to the median (0.05: known to about +-5 %)."""
        if self.low is None:
            return None
        return (self.high - self.low) / 2 / self.median if self.median else float("inf")

    @property
    def upper(self) -> float:
        """The high end, or the one draw there is: what an SLA is checked against."""
        return upper(self.as_dict())

    def as_dict(self) -> dict:
        return asdict(self) | {"half_width": self.half_width}


def figure_text(figure: Mapping | Interval, unit: str = "", spec: str = ".1f", spread: bool = False) -> str:
    """"median unit [low, high]" (and "(+-x %)" with `spread`), or "median unit" for a figure with
    no interval (one round, a single draw): every terminal and report line writes figures so."""
    figure = figure.as_dict() if isinstance(figure, Interval) else figure
    text = f"{figure['median']:{spec}}{' ' + unit if unit else ''}"
    if figure.get("low") is None:
        return text
    text += f" [{figure['low']:{spec}}, {figure['high']:{spec}}]"
    return text + (f" (+-{figure['half_width'] * 100:.1f} %)" if spread else "")


def ratio_text(ratio: Mapping) -> str:
    """The winner against Triton's default, as `decide` gives it: the paired ratio with its
    interval and whether it holds 1.00x, or, from one round, the ratio alone and untested."""
    if ratio["low"] is None:
        return f"tuned / default (one round): {ratio['median']:.2f}x, untested for significance"
    verdict = "" if ratio["significant"] else ": no significant gain on this machine (the interval holds 1.00x)"
    return f"tuned / default (paired rounds): {ratio['median']:.2f}x [{ratio['low']:.2f}, {ratio['high']:.2f}]{verdict}"


def upper(figure: Mapping) -> float:
    """A figure's high end, or its one draw when it has no interval: what an SLA is checked against."""
    return figure["median"] if figure.get("high") is None else figure["high"]


def error_bar(figure: Mapping) -> tuple[float, float]:
    """(above, below) the median to the interval's ends, for a chart's error bar; (0, 0) with none."""
    if figure.get("low") is None:
        return 0.0, 0.0
    return figure["high"] - figure["median"], figure["median"] - figure["low"]


def _resampled_rounds(rounds: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, rounds, size=(RESAMPLES, rounds))


def interval(values: Sequence[float], seed: int = 0) -> Interval:
    """The median of the rounds and its 95 % interval: Student's t on the logs of the rounds (relative
    noise; the median's standard error taken as sqrt(pi / 2) times the mean's). Verification stops
    after 2-5 rounds, where a bootstrap of the rounds holds the true median far less often than it
    says (simulated with 5 % lognormal noise: 50 % of the time from 2 rounds, 74 % from 3, 85 %
    from 4); this one holds it 96-98 % of the time at every count, and is as wide as few rounds
    are. `seed` is unused (the interval draws nothing); p_best still resamples."""
    x = np.asarray(values, dtype=float)
    median = float(np.median(x))
    if len(x) < 2:
        return Interval(median, None, None)
    logs = np.log(np.maximum(x, np.finfo(float).tiny))  # a round that served nothing: a huge spread
    half = t95(len(x) - 1) * MEDIAN_SE * float(np.std(logs, ddof=1)) / math.sqrt(len(x))
    return Interval(median, median * math.exp(-half), median * math.exp(half))


def t95(df: int) -> float:
    """The two-sided 95 % quantile of Student's t with `df` degrees of freedom."""
    return T95[df - 1] if df <= len(T95) else 1.96


def p_best(throughputs: Mapping[int, Sequence[float]], winner: int, seed: int = 0) -> float | None:
    """How often the winner has the highest median when whole rounds are resampled; None from one
    round (resampling one round always gives it back)."""
    keys = list(throughputs)
    table = np.asarray([throughputs[k] for k in keys], dtype=float)  # finalists x rounds
    if table.shape[1] < 2:
        return None
    picks = _resampled_rounds(table.shape[1], seed)
    medians = np.median(table[:, picks], axis=2)  # finalists x resamples
    return float(np.mean(np.argmax(medians, axis=0) == keys.index(winner)))


def paired_ratio(tuned: Sequence[float], default: Sequence[float], seed: int = 0) -> Interval:
    """Tuned over default, round by round (both measured in the same rounds)."""
    return interval(np.asarray(tuned, dtype=float) / np.asarray(default, dtype=float), seed)

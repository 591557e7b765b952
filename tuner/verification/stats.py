"""What interleaved rounds say: each finalist's median with an interval, the chance the winner
is really best, and the winner against Triton's default as a paired ratio.

Rounds are paired: round r measured every finalist once, in a shuffled order, minutes apart at
most, so a drift of the machine falls on all of them alike. Resampling whole rounds (a seeded
bootstrap) keeps that pairing in every interval and probability computed here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000


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
    """The median of the rounds and its bootstrap percentile interval."""
    x = np.asarray(values, dtype=float)
    if len(x) == 1:
        return Interval(float(x[0]), None, None)
    medians = np.median(x[_resampled_rounds(len(x), seed)], axis=1)
    tail = (1 - CONFIDENCE) / 2
    return Interval(float(np.median(x)), float(np.quantile(medians, tail)), float(np.quantile(medians, 1 - tail)))


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

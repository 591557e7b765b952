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
    median: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        """Half the interval's width relative to the median (0.05: known to about +-5 %)."""
        return (self.high - self.low) / 2 / self.median if self.median else float("inf")

    def as_dict(self) -> dict:
        return asdict(self) | {"half_width": self.half_width}


def _resampled_rounds(rounds: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, rounds, size=(RESAMPLES, rounds))


def interval(values: Sequence[float], seed: int = 0) -> Interval:
    """The median of the rounds and its bootstrap percentile interval."""
    x = np.asarray(values, dtype=float)
    if len(x) == 1:
        return Interval(float(x[0]), float(x[0]), float(x[0]))
    medians = np.median(x[_resampled_rounds(len(x), seed)], axis=1)
    tail = (1 - CONFIDENCE) / 2
    return Interval(float(np.median(x)), float(np.quantile(medians, tail)), float(np.quantile(medians, 1 - tail)))


def p_best(throughputs: Mapping[int, Sequence[float]], winner: int, seed: int = 0) -> float:
    """How often the winner has the highest median when whole rounds are resampled."""
    keys = list(throughputs)
    table = np.asarray([throughputs[k] for k in keys], dtype=float)  # finalists x rounds
    picks = _resampled_rounds(table.shape[1], seed)
    medians = np.median(table[:, picks], axis=2)  # finalists x resamples
    return float(np.mean(np.argmax(medians, axis=0) == keys.index(winner)))


def paired_ratio(tuned: Sequence[float], default: Sequence[float], seed: int = 0) -> Interval:
    """Tuned over default, round by round (both measured in the same rounds)."""
    return interval(np.asarray(tuned, dtype=float) / np.asarray(default, dtype=float), seed)

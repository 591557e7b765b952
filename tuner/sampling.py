"""Keep the sampler inside the experiment's own space.

Triton's default (or a repository as given) is enqueued as a trial, so each of its values must be
a legal choice of the param's distribution (Optuna cannot mix choice sets within a study):
tuner.space.widen_for_baseline and tuner.pipeline.space.widen add them. Without this wrapper the
sampler would then draw those added values too: an experiment that asked for `dynamic_batching:
[true]` saw half its random first trials run without batching (at 632e72a the wenet-gpu winners
both had the encoder's batching off, its queue 90 % of the latency). The baseline keeps its fixed
params; every sampled trial takes only values the experiment listed.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState


def added_values(given: Mapping[str, Sequence], widened: Mapping[str, Sequence]) -> dict[str, tuple]:
    """The params whose widened choices hold values the experiment did not list, with the
    experiment's own choices (param name -> values)."""
    return {name: tuple(given[name]) for name, choices in widened.items()
            if name in given and set(choices) - set(given[name])}


class WithinSpace(BaseSampler):
    """`inner`'s draws, with each param of `allowed` kept among its allowed values: a relative
    draw outside them is dropped (the param is then drawn independently), an independent draw
    outside them is replaced by a uniform pick among them."""

    def __init__(self, inner: BaseSampler, allowed: Mapping[str, Sequence], seed: int | None = None):
        self.inner = inner
        self.allowed = {name: tuple(values) for name, values in allowed.items()}
        self._rng = random.Random(seed)

    def _allows(self, name: str, value: Any) -> bool:
        return name not in self.allowed or value in self.allowed[name]

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        drawn = self.inner.sample_relative(study, trial, search_space)
        return {name: value for name, value in drawn.items() if self._allows(name, value)}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        value = self.inner.sample_independent(study, trial, param_name, param_distribution)
        if self._allows(param_name, value):
            return value
        return self._rng.choice(self.allowed[param_name])

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
        self._rng.seed()

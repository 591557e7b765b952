"""The search space of a pipeline repository and its Optuna suggestion.

Each composing model searches the scheduling knobs of tuner.knobs (instances, max batch size,
dynamic batching, queue delay, preferred batch) and any of its config `parameters` named as
categorical knobs. Optuna params are named per step, "encoder.instances", "scoring.param.method",
plus one "concurrency" for the client load. A knob with one value is still asked, so every trial
holds the same params (a knob that does not exist, like the queue delay without dynamic batching,
is not asked, as in tuner.space).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import optuna

from tuner.errors import TunerError
from tuner.experiment import STEP_KNOBS, Space
from tuner.knobs import BY_NAME, Context
from tuner.pipeline.repository import PipelineRepository, StepSettings, as_given, describe

# Given an Optuna param's name and its choices, the value taken.
_Choose = Callable[[str, Sequence], Any]


@dataclass(frozen=True)
class StepSpace:
    """The values one composing model's knobs may take."""

    instances: tuple[int, ...]
    max_batch_size: tuple[int, ...]  # (0,): the model does not batch
    dynamic_batching: tuple[bool, ...]
    max_queue_delay_us: tuple[int, ...]
    preferred_batch: tuple[bool, ...]
    parameters: dict[str, tuple[str, ...]] = field(default_factory=dict)  # config parameter -> its values

    @property
    def context(self) -> Context:
        """What decides which of the step's knobs exist."""
        return Context(batched=max(self.max_batch_size) > 0)


@dataclass(frozen=True)
class PipelineCandidate:
    """One deployment of a pipeline repository: each step's settings and the client load."""

    steps: dict[str, StepSettings]
    concurrency: int  # 0: not sampled (a ramp finds it)

    def as_dict(self) -> dict:
        return {"steps": {name: step.as_dict() for name, step in self.steps.items()}, "concurrency": self.concurrency}

    @classmethod
    def from_dict(cls, values: dict) -> "PipelineCandidate":
        return cls({name: StepSettings.from_dict(step) for name, step in values["steps"].items()},
                   values.get("concurrency", 0))

    def describe(self) -> str:
        return f"{describe(self.steps)} {BY_NAME['concurrency'].label(self.concurrency)}"


def step_spaces(repo: PipelineRepository, space: Space, overrides: Mapping[str, Mapping] | None = None,
                parameters: Mapping[str, Mapping[str, Sequence[str]]] | None = None) -> dict[str, StepSpace]:
    """Each step's space: the experiment's `space`, or a step's own values from `overrides`
    (the experiment's `steps`: knob -> values, and "parameters"); `parameters` are config
    parameters the model's source searches (step -> key -> values), which overrides replace."""
    # An override may be the experiment's StepOverride (pydantic: iterating gives its fields).
    overrides = {name: {k: v for k, v in dict(values).items() if v is not None}
                 for name, values in (overrides or {}).items()}
    parameters = parameters or {}
    unknown = sorted((set(overrides) | set(parameters)) - set(repo.steps))
    if unknown:
        raise TunerError(f"steps {', '.join(unknown)} are not composing models of {repo.top}; "
                         f"its steps: {', '.join(repo.steps)}")
    spaces = {}
    for name, step in repo.steps.items():
        override = overrides.get(name, {})
        unknown = sorted(set(override) - {*STEP_KNOBS, "parameters"})
        if unknown:
            raise TunerError(f"steps.{name}: unknown {', '.join(unknown)}; known: {', '.join(STEP_KNOBS)}, parameters")
        values = {knob: tuple(override.get(knob, getattr(space, knob))) for knob in STEP_KNOBS}
        if step.config.max_batch_size <= 0:
            values.update(max_batch_size=(0,), dynamic_batching=(False,))
        elif step.config.HasField("sequence_batching"):
            values["dynamic_batching"] = (False,)  # a stateful model keeps its sequence batcher
        searched = {**parameters.get(name, {}), **override.get("parameters", {})}
        empty = sorted(key for key, choices in searched.items() if not choices)
        if empty:
            raise TunerError(f"steps.{name}.parameters: {', '.join(empty)} must list at least one value")
        spaces[name] = StepSpace(**values, parameters={key: tuple(searched[key]) for key in sorted(searched)})
    return spaces


def suggest(trial: optuna.Trial, spaces: dict[str, StepSpace], concurrency: Sequence[int]) -> PipelineCandidate:
    """Ask the trial for each step's knobs, then the concurrency (none given: not asked, 0)."""
    return _draw(spaces, concurrency, trial.suggest_categorical)


def params_of(candidate: PipelineCandidate, spaces: dict[str, StepSpace]) -> dict:
    """The params `suggest` gives for this candidate (for `study.enqueue_trial`)."""
    values = _param_values(candidate)
    params = {}

    def replay(name: str, choices: Sequence) -> Any:
        if name not in values:
            raise ValueError(f"the candidate has no value for {name}")
        if values[name] not in choices:
            raise ValueError(f"{name}={values[name]!r} is not among {tuple(choices)}: widen the spaces first")
        params[name] = values[name]
        return values[name]

    _draw(spaces, (candidate.concurrency,) if candidate.concurrency else (), replay)
    return params


def widen(spaces: dict[str, StepSpace], repo: PipelineRepository) -> dict[str, StepSpace]:
    """The spaces with each step's as-given values added, so the repository as given can be enqueued."""
    wider = {}
    for name, space in spaces.items():
        given = as_given(repo.steps[name].config, space.parameters)
        values = given.as_dict()
        knobs = {knob: _with(getattr(space, knob), values[knob])
                 for knob in STEP_KNOBS if BY_NAME[knob].exists(values, space.context)}
        given_parameters = dict(given.parameters)
        searched = {key: _with(choices, given_parameters[key]) if key in given_parameters else choices
                    for key, choices in space.parameters.items()}
        wider[name] = replace(space, **knobs, parameters=searched)
    return wider


def baseline(repo: PipelineRepository, spaces: dict[str, StepSpace], concurrency: int = 0) -> PipelineCandidate:
    """The repository as given, as a candidate of these spaces. A searched parameter its config
    does not set takes its first value: the given repository holds none to keep."""
    steps = {}
    for name, space in spaces.items():
        given = as_given(repo.steps[name].config, space.parameters)
        parameters = {key: choices[0] for key, choices in space.parameters.items()} | dict(given.parameters)
        steps[name] = replace(given, parameters=tuple(sorted(parameters.items())))
    return PipelineCandidate(steps, concurrency)


def _draw(spaces: dict[str, StepSpace], concurrency: Sequence[int], choose: _Choose) -> PipelineCandidate:
    """The one walk through the params that both suggesting and replaying follow."""
    steps = {}
    for name, space in spaces.items():
        chosen: dict = {}
        for knob in (BY_NAME[k] for k in STEP_KNOBS):
            if knob.exists(chosen, space.context):
                chosen[knob.name] = choose(f"{name}.{knob.name}", getattr(space, knob.name))
        parameters = tuple((key, choose(f"{name}.param.{key}", choices)) for key, choices in space.parameters.items())
        steps[name] = StepSettings(**{k: chosen.get(k, BY_NAME[k].off) for k in STEP_KNOBS}, parameters=parameters)
    return PipelineCandidate(steps, choose("concurrency", tuple(concurrency)) if concurrency else 0)


def param_choices(spaces: dict[str, StepSpace], concurrency: Sequence[int] = ()) -> dict[str, tuple]:
    """Every param `suggest` may ask, under its name, with its choices (knobs that exist only
    with another's value included)."""
    choices: dict[str, tuple] = {"concurrency": tuple(concurrency)} if concurrency else {}
    for name, space in spaces.items():
        choices |= {f"{name}.{knob}": tuple(getattr(space, knob)) for knob in STEP_KNOBS}
        choices |= {f"{name}.param.{key}": values for key, values in space.parameters.items()}
    return choices


def _param_values(candidate: PipelineCandidate) -> dict:
    """Every value of the candidate under the name of the param that would choose it."""
    values: dict = {"concurrency": candidate.concurrency}
    for name, step in candidate.steps.items():
        values |= {f"{name}.{knob}": getattr(step, knob) for knob in STEP_KNOBS}
        values |= {f"{name}.param.{key}": value for key, value in step.parameters}
    return values


def _with(choices: tuple, value: Any) -> tuple:
    return choices if value in choices else tuple(sorted({*choices, value}))

"""The study: opening it, what it records about itself, and the trials it starts with."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna

from tuner.errors import TunerError
from tuner.experiment import Experiment, Space
from tuner.model_source import ModelSource
from tuner.space import triton_default_params, widen_for_baseline

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)


def sampler(exp: Experiment) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(
        seed=exp.seed,
        multivariate=True,
        group=True,  # the batching knobs exist only when dynamic batching is on
        # Triton's default and the strong first shapes count among these: a few random trials
        # more, then TPE. Searches are short (a ninth of a sweep), so model-guided steps pay.
        n_startup_trials=max(3, min(6, exp.trials // 3)),
    )


def open_study(exp: Experiment, study_name: str, create: bool = True) -> optuna.Study:
    """Open (or create) the study; storage problems become one clear line."""
    url = exp.storage_url
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.RDBStorage(url, heartbeat_interval=10, grace_period=30)
        if create:
            return optuna.create_study(study_name=study_name, storage=storage, sampler=sampler(exp),
                                       directions=["maximize", "minimize"], load_if_exists=True)
        return optuna.load_study(study_name=study_name, storage=storage, sampler=sampler(exp))
    except KeyError:
        raise TunerError(f"no study named {study_name!r} in {url}; `tuner search` creates it") from None
    except Exception as exc:  # sqlalchemy errors: bad URL, missing driver, unreachable database
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TunerError(f"cannot open study storage {url!r}: {first}") from None


def record_identity(study: optuna.Study, exp: Experiment, source: ModelSource) -> None:
    """What the study is of, so that export, report and the dashboard can read it back alone."""
    study.set_user_attr("model", exp.model)
    study.set_user_attr("model_name", source.name)
    study.set_user_attr("max_p99_ms", exp.max_p99_ms)
    study.set_user_attr("experiment", exp.model_dump(mode="json"))


def finished_count(study: optuna.Study) -> int:
    return sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))


def strong_first_params(space: Space, batched: bool = True, runtime: str = "onnxruntime:fp32") -> list[dict]:
    """Shapes that usually win, measured right after Triton's default so the sampler starts from
    good ground: dynamic batching up to the largest batch with the shortest queue delay, on one
    instance with the runtime's own threads, and on two instances of one thread each (two
    requests in flight without the runtimes fighting over cores). Only values the space holds."""
    if not batched or True not in space.dynamic_batching:
        return []
    base = triton_default_params(None, batched, runtime) | {
        "max_batch_size": max(space.max_batch_size), "dynamic_batching": True,
        "max_queue_delay_us": min(space.max_queue_delay_us),
        "preferred_batch": False if False in space.preferred_batch else True,
        "warmup": False if False in space.warmup else True}
    shapes = [base | {"instances": min(space.instances), "threads": 0 if 0 in space.threads else min(space.threads)}]
    if 2 in space.instances:
        shapes.append(base | {"instances": 2, "threads": 1 if 1 in space.threads else shapes[0]["threads"]})
    return [shape for shape in shapes
            if all(value in getattr(space, knob) for knob, value in shape.items() if knob != "runtime")]


def enqueue_first_trials(study: optuna.Study, exp: Experiment, batched: bool) -> None:
    """Triton's default config goes first (at each baseline concurrency, or once with a ramp): the
    bar to beat. Then a few shapes that usually win, so that the sampler starts from good ground;
    never more first trials than the study's budget of trials."""
    ramping = exp.measure.ramps
    first = [(triton_default_params(c, batched, exp.baseline_runtime), {"baseline": True})
             for c in ([None] if ramping else exp.baseline_concurrency)]
    space = widen_for_baseline(exp.space, exp.baseline_concurrency, batched, exp.baseline_runtime)
    middle = sorted(space.concurrency)[len(space.concurrency) // 2]
    first += [(params if ramping else params | {"concurrency": middle}, None)
              for params in strong_first_params(space, batched, exp.baseline_runtime)]
    for params, attrs in first[:max(exp.trials, 1)]:
        study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=True)

"""The study: opening it, what it records about itself, and the trials it starts with."""

from __future__ import annotations

import hashlib
import statistics
import warnings

import optuna

from tuner.backends.base import file_digest
from tuner.candidate import REFERENCE_RUNTIME
from tuner.errors import TunerError
from tuner.experiment import Experiment, Space
from tuner.model_source import ModelSource
from tuner.pipeline.source import PipelineSource
from tuner.space import triton_default_params, widen_for_baseline
from tuner.storage import mask, open_storage

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
    storage = open_storage(url)  # its own errors are one line already, the URL masked
    try:
        if create:
            return optuna.create_study(study_name=study_name, storage=storage, sampler=sampler(exp),
                                       directions=["maximize", "minimize"], load_if_exists=True)
        return optuna.load_study(study_name=study_name, storage=storage, sampler=sampler(exp))
    except KeyError:
        raise TunerError(f"no study named {study_name!r} in {mask(url)}; `tuner search` creates it") from None
    except Exception as exc:  # sqlalchemy errors: bad URL, missing driver, unreachable database
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TunerError(f"cannot open study storage {mask(url)!r}: {first}") from None


def model_digest(source: ModelSource | PipelineSource) -> str:
    """What identifies the model a study measures: the content of the ONNX file it serves, or of
    every file of a pipeline's repository."""
    if isinstance(source, PipelineSource):
        digest = hashlib.sha256()
        root = source.repository.root
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(f"{path.relative_to(root).as_posix()}:{file_digest(path)}\n".encode())
        return digest.hexdigest()
    return file_digest(source.onnx_path)


def check_identity(study: optuna.Study, exp: Experiment, source: ModelSource | PipelineSource) -> None:
    """A study resumes only on the model and the space it was searched on: its trials would
    otherwise mix two models' figures, or Optuna could not mix their choices."""
    if not study.trials:
        return
    remedy = "use --study NEW_NAME for a new study, or --fresh to start this one again"
    stored_digest = study.user_attrs.get("model_digest")
    if stored_digest is not None and stored_digest != model_digest(source):
        raise TunerError(f"study {study.study_name!r} holds trials of another model ({study.user_attrs.get('model')}, "
                         f"sha256 {stored_digest[:12]}; now {exp.model}, sha256 {model_digest(source)[:12]}); "
                         f"{remedy}")
    stored_space = (study.user_attrs.get("experiment") or {}).get("space") or {}
    space = exp.space.model_dump(mode="json")
    # A knob the study did not know yet (added to tuner since) is not a change: its trials simply lack it.
    changed = [f"{k}: {stored_space[k]} -> {space[k]}" for k in space if k in stored_space and stored_space[k] != space[k]]
    if changed:
        raise TunerError(f"study {study.study_name!r} was searched over another space ({'; '.join(changed)}); {remedy}")


def record_identity(study: optuna.Study, exp: Experiment, source: ModelSource | PipelineSource) -> None:
    """What the study is of, so that export, report and the dashboard can read it back alone."""
    study.set_user_attr("model", exp.model)
    study.set_user_attr("model_name", source.name)
    study.set_user_attr("model_digest", model_digest(source))
    study.set_user_attr("max_p99_ms", exp.max_p99_ms)
    study.set_user_attr("experiment", exp.model_dump(mode="json"))


def delete_own_study(exp: Experiment, study_name: str) -> bool:
    """Delete a study tuner wrote (for --fresh); False when there is none. A study of the same
    storage that tuner did not write is refused."""
    try:
        study = open_study(exp, study_name, create=False)
    except TunerError:
        return False
    if "experiment" not in study.user_attrs:
        raise TunerError(f"study {study_name!r} in the storage was not written by tuner; --fresh deletes only "
                         f"tuner's studies: choose another --study")
    optuna.delete_study(study_name=study_name, storage=open_storage(exp.storage_url))
    return True


def interrupted(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial whose search was killed mid-way: failed by the heartbeat, with no reason of its own."""
    return trial.state == optuna.trial.TrialState.FAIL and "error" not in trial.user_attrs


def surplus(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial a worker started when the others had already taken the rest of the budget: given
    back unmeasured (tuner.trial.TrialRunner)."""
    return bool(trial.user_attrs.get("surplus"))


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial counts against the study's budget: finished ones, except the interrupted
    (measured again) and the surplus (never measured)."""
    return trial.state in FINISHED and not interrupted(trial) and not surplus(trial)


def finished_count(study: optuna.Study) -> int:
    """Trials that count against the budget."""
    return sum(counted(t) for t in study.get_trials(deepcopy=False))


def expected_trial_s(study: optuna.Study) -> float | None:
    """What the next trial is expected to take, start to finish: the median wall time of the
    study's counted trials. None before any has finished."""
    walls = [t.duration.total_seconds() for t in study.get_trials(deepcopy=False)
             if counted(t) and t.duration is not None]
    return statistics.median(walls) if walls else None


def taken_before(study: optuna.Study, number: int, trials: list[optuna.trial.FrozenTrial] | None = None) -> int:
    """The budget taken by the trials numbered before `number`: counted ones and those running.
    Trial numbers are handed out by the storage in order, so every worker sees the same answer
    for one trial and exactly the trials within the budget go ahead. `trials`: the study's, when
    the caller has just read them."""
    running = optuna.trial.TrialState.RUNNING
    found = study.get_trials(deepcopy=False) if trials is None else trials
    return sum(t.number < number and (counted(t) or t.state == running) for t in found)


def give_back_reason(study: optuna.Study, number: int, trials: int) -> str | None:
    """Why a trial just started must not be measured: the budget is taken by the trials before it
    (other workers got there first), or an earlier trial measures the same interrupted trial
    again (two workers requeued it). None: it goes ahead."""
    found = study.get_trials(deepcopy=False)  # read once: this runs at every trial's start
    if taken_before(study, number, found) >= trials:
        return f"the study's budget of {trials} trials was taken by other workers first"
    mine = next((t for t in found if t.number == number), None)
    again = mine.user_attrs.get("remeasures") if mine is not None else None
    if again is not None:
        earlier = [t.number for t in found if t.number < number and t.user_attrs.get("remeasures") == again
                   and not surplus(t)]
        if earlier:
            return f"trial {earlier[0]} already measures interrupted trial {again} again"
    return None


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Enqueue each interrupted trial once more with its params (Triton's default keeps its
    baseline mark, every ratio depends on it); returns the numbers of the trials requeued."""
    trials = study.get_trials(deepcopy=False)
    done = {t.user_attrs.get("remeasures") for t in trials}
    requeued = []
    for t in trials:
        params = t.params or t.system_attrs.get("fixed_params")
        if interrupted(t) and t.number not in done and params:
            attrs = {"remeasures": t.number} | ({"baseline": True} if t.user_attrs.get("baseline") else {})
            study.enqueue_trial(params, user_attrs=attrs)
            requeued.append(t.number)
    return requeued


def strong_first_params(space: Space, batched: bool = True, runtime: str = REFERENCE_RUNTIME) -> list[dict]:
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

"""The Optuna loop: open the study, start a server, ask for trials and tell their results.

What one trial does is tuner.trial; the study's set-up is tuner.study.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol

import optuna

from tuner import model_source, sampling, verification, workers, zoo
from tuner.candidate import Candidate
from tuner.errors import TrialError
from tuner.experiment import Experiment
from tuner.server.launch import make_server
from tuner.study import (check_identity, delete_own_study, enqueue_first_trials, expected_trial_s, finished_count,
                         open_study, record_identity, requeue_interrupted, taken_before)
from tuner.pipeline import runner as pipeline_runner, source as pipeline_source, space as pipeline_space
from tuner.pipeline.source import PipelineSource
from tuner.trial import TrialObjective, TrialRunner
from tuner.workspace import Workspace, claim_slot, prepare_inputs


class Reporter(Protocol):
    def note(self, message: str) -> None: ...
    def search_started(self, study: optuna.Study, total: int, done: int) -> None: ...
    def trial_started(self, number: int, candidate: Candidate) -> None: ...
    def trial_finished(self, trial: optuna.trial.FrozenTrial) -> None: ...


POLL_S = 5.0  # a worker waiting for the others looks at the study this often


def prepare_study(exp: Experiment, source: model_source.ModelSource, study_name: str, reporter: Reporter,
                  fresh: bool = False) -> optuna.Study:
    """Open the study (deleted first with `fresh`), check it is of this model and space, record
    what it is of, and enqueue the first trials of a new one."""
    if fresh and delete_own_study(exp, study_name):
        reporter.note(f"deleted the earlier study {study_name!r} (--fresh)")
    study = open_study(exp, study_name)
    check_identity(study, exp, source)
    record_identity(study, exp, source)
    if not study.trials:
        if isinstance(source, PipelineSource):
            enqueue_pipeline_baseline(study, exp, source)
        else:
            enqueue_first_trials(study, exp, source.signature.batched)
    return study


def resolve_source(exp: Experiment, reporter: Reporter) -> model_source.ModelSource | PipelineSource:
    """The model to search: a pipeline (a zoo pipeline, or a repository whose top model is an
    ensemble or a BLS model), else one model (a zoo name, an ONNX file, a model directory)."""
    if exp.model in pipeline_source.ZOO_PIPELINES:
        reporter.note(f"preparing built-in pipeline {exp.model} (exported and written on first use, then cached)")
    pipeline = pipeline_source.resolve(exp.model, exp.results_dir / "cache", exp.seed or 0)
    if pipeline is not None:
        return pipeline
    if zoo.get(exp.model) is not None:
        reporter.note(f"preparing built-in model {exp.model} (exported to ONNX on first use, then cached)")
    return model_source.resolve(exp.model, exp.results_dir / "cache")


def enqueue_pipeline_baseline(study: optuna.Study, exp: Experiment, source: PipelineSource) -> None:
    """The repository as given goes first (at each baseline concurrency, or once with a ramp):
    the bar every pipeline candidate is measured against."""
    spaces = pipeline_runner.spaces_of(exp, source)
    ramping = exp.measure.ramps
    for level in ([0] if ramping else exp.baseline_concurrency)[:max(exp.trials, 1)]:
        params = pipeline_space.params_of(pipeline_runner.as_given(exp, source, level), spaces)
        study.enqueue_trial(params, user_attrs={"baseline": True}, skip_if_exists=True)


def run(exp: Experiment, reporter: Reporter, fresh: bool = False) -> optuna.Study:
    """Search until the study holds `exp.trials` finished trials (or the timeout), then verify
    its finalists. A study of the same name resumes, on the same model and space only; `fresh`
    deletes it first. Several searches on one study (one storage, any hosts) share its budgets
    as workers (tuner.workers): each measures in a workspace and on a server of its own."""
    # The reporter tells what happens, failed trials with their reason; Optuna's own log lines
    # (and its tracebacks of caught failures) would repeat it.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    source = resolve_source(exp, reporter)
    study_name = exp.study or source.name
    study = prepare_study(exp, source, study_name, reporter, fresh)
    _requeue_interrupted(study, reporter)
    done = finished_count(study)
    reporter.search_started(study, exp.trials, done)
    if done >= exp.trials and not _needs_verification(study, exp):
        return study

    with claim_slot(Workspace.of(exp.results_dir, study_name)) as (slot, ws):
        worker = workers.make(slot, exp.price_per_hour)
        if slot or len(workers.live(study)) > 0:
            reporter.note(f"worker {worker.id} ({worker.hardware}); workspace {ws.root}")
        pipeline = isinstance(source, PipelineSource)
        samples = [] if pipeline else prepare_inputs(source, ws, exp)
        server = make_server(exp.server, ws.repository, ws.server_log,
                             study_name if slot == 0 else f"{study_name}-w{slot}")
        with workers.Registration(study, worker) as registration, server.start():
            if pipeline:
                runner = pipeline_runner.PipelineTrialRunner(exp, source, server, ws, note=reporter.note,
                                                             on_start=reporter.trial_started, worker=worker)
                measure = runner.verify_measure(study)
            else:
                runner = TrialRunner(exp, source, server, ws, samples, note=reporter.note,
                                     on_start=reporter.trial_started, worker=worker)
                measure = verification.Verifier(study, exp, source, server, ws, samples)
            # The baseline's values were added to the choices so it could be enqueued; sampled
            # trials keep to the values the experiment listed.
            study.sampler = sampling.WithinSpace(study.sampler, runner.sampled_within(), exp.seed)
            _sample(study, runner, exp, reporter, _deadline(study, worker, exp))
            registration.set_state("sampled")
            if _needs_verification(study, exp) and _verifies(study, worker, reporter):
                if exp.server.launch != "remote":
                    # On a fresh server, as `tuner verify` measures an export: minutes of loads and
                    # unloads must not weigh on the figures a claim is made of (issue 13 saw a wenet
                    # claim verify 10-17 % higher on a fresh server than in the search's own).
                    server.stop()
                    server.start()
                verification.run(study, exp, measure, note=reporter.note)
    return study


def _deadline(study: optuna.Study, worker: workers.Worker, exp: Experiment) -> float | None:
    """When sampling stops starting trials: the search's time budget (what verification leaves of
    timeout_s), counted from the start of the earliest live worker."""
    budget = exp.verify.search_timeout_s(exp.timeout_s)
    return None if budget is None else workers.session_start(study, worker.id) + budget


def _sample(study: optuna.Study, runner: TrialObjective, exp: Experiment, reporter: Reporter,
            deadline: float | None) -> None:
    """One trial at a time until the study's budget is finished or the time is up. While the
    other workers measure the last trials of the budget this one waits: one of them may die,
    and its trial is then measured again here."""
    waiting = False
    while True:
        _requeue_interrupted(study, reporter)
        if finished_count(study) >= exp.trials or (deadline is not None and time.time() >= deadline):
            return
        if (late := _would_overrun(study, deadline)) is not None:
            reporter.note(late)
            return
        if taken_before(study, sys.maxsize) >= exp.trials:
            if not waiting:
                reporter.note("the rest of the study's budget is being measured by other workers: waiting for them")
                waiting = True
            time.sleep(POLL_S)
            continue
        waiting = False
        study.optimize(runner, n_trials=1, catch=(TrialError,),
                       callbacks=[lambda _s, t: reporter.trial_finished(t)])


def _would_overrun(study: optuna.Study, deadline: float | None) -> str | None:
    """Why no further trial starts though the deadline has not passed: its expected wall time
    would run past it, into the time kept for verification (a GPU trial of two minutes started
    just before the deadline left the verification half its share). None: it may start."""
    expected = expected_trial_s(study)
    if deadline is None or expected is None:
        return None
    left = deadline - time.time()
    if expected <= left:
        return None
    return (f"no further trial: trials have taken {expected:.0f} s (median) and {max(left, 0):.0f} s "
            "of the sampling time are left")


def _verifies(study: optuna.Study, worker: workers.Worker, reporter: Reporter) -> bool:
    """Whether this worker runs the study's verification: once every live worker has finished
    sampling, the first of them by id does; the others stop."""
    waiting = False
    while (elected := workers.elected_verifier(study, worker.id)) is None:
        if not waiting:
            reporter.note("waiting for the other workers to finish sampling: one worker verifies the study")
            waiting = True
        time.sleep(POLL_S)
    if not elected:
        reporter.note("another worker verifies the study's finalists; this one stops")
    return elected


def _needs_verification(study: optuna.Study, exp: Experiment) -> bool:
    """Verification is due when enabled and no verification covers the study's finished trials."""
    if not exp.verify.enabled:
        return False
    done = verification.stored(study)
    return (done is None or done.get("trials_seen") != finished_count(study)
            or done.get("stopped") == verification.UNFINISHED)


def _requeue_interrupted(study: optuna.Study, reporter: Reporter) -> None:
    """Trials of a killed search: failed once their heartbeat is stale, then measured again."""
    optuna.storages.fail_stale_trials(study)
    for number in requeue_interrupted(study):
        reporter.note(f"trial {number} was interrupted (the search was stopped mid-trial): measuring it again")

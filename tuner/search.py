"""The Optuna loop: open the study, start a server, ask for trials and tell their results.

What one trial does is tuner.trial; the study's set-up is tuner.study.
"""

from __future__ import annotations

from typing import Protocol

import optuna

from tuner import model_source, verification, zoo
from tuner.candidate import Candidate
from tuner.errors import TrialError
from tuner.experiment import Experiment
from tuner.server.launch import make_server
from tuner.study import (check_identity, delete_own_study, enqueue_first_trials, finished_count, open_study,
                         record_identity, requeue_interrupted)
from tuner.trial import TrialRunner
from tuner.workspace import Workspace, prepare_inputs


class Reporter(Protocol):
    def note(self, message: str) -> None: ...
    def search_started(self, study: optuna.Study, total: int, done: int) -> None: ...
    def trial_started(self, number: int, candidate: Candidate) -> None: ...
    def trial_finished(self, trial: optuna.trial.FrozenTrial) -> None: ...


def run(exp: Experiment, reporter: Reporter, fresh: bool = False) -> optuna.Study:
    """Search until the study holds `exp.trials` finished trials (or the timeout). A study of the
    same name resumes, on the same model and space only; `fresh` deletes it first."""
    # The reporter tells what happens, failed trials with their reason; Optuna's own log lines
    # (and its tracebacks of caught failures) would repeat it.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if zoo.get(exp.model) is not None:
        reporter.note(f"preparing built-in model {exp.model} (exported to ONNX on first use, then cached)")
    source = model_source.resolve(exp.model, exp.results_dir / "cache")
    study_name = exp.study or source.name
    if fresh and delete_own_study(exp, study_name):
        reporter.note(f"deleted the earlier study {study_name!r} (--fresh)")
    study = open_study(exp, study_name)
    check_identity(study, exp, source)
    record_identity(study, exp, source)
    if not study.trials:
        enqueue_first_trials(study, exp, source.signature.batched)
    _requeue_interrupted(study, reporter)
    done = finished_count(study)
    reporter.search_started(study, exp.trials, done)
    if done >= exp.trials and not _needs_verification(study, exp):
        return study

    ws = Workspace.of(exp.results_dir, study_name)
    samples = prepare_inputs(source, ws, exp)
    server = make_server(exp.server, ws.repository, ws.server_log, study_name)
    with server.start():
        if done < exp.trials:
            runner = TrialRunner(exp, source, server, ws, samples, note=reporter.note,
                                 on_start=reporter.trial_started)
            study.optimize(runner, n_trials=exp.trials - done, timeout=exp.verify.search_timeout_s(exp.timeout_s),
                           catch=(TrialError,), callbacks=[lambda _s, t: reporter.trial_finished(t),
                                                           lambda s, _t: _requeue_interrupted(s, reporter)])
        if exp.verify.enabled:
            verification.run(study, exp, verification.Verifier(study, exp, source, server, ws, samples),
                             note=reporter.note)
    return study


def _needs_verification(study: optuna.Study, exp: Experiment) -> bool:
    """Verification is due when enabled and no verification covers the study's finished trials."""
    if not exp.verify.enabled:
        return False
    done = verification.stored(study)
    return done is None or done.get("trials_seen") != finished_count(study)


def _requeue_interrupted(study: optuna.Study, reporter: Reporter) -> None:
    """Trials of a killed search: failed once their heartbeat is stale, then measured again."""
    optuna.storages.fail_stale_trials(study)
    for number in requeue_interrupted(study):
        reporter.note(f"trial {number} was interrupted (the search was stopped mid-trial): measuring it again")

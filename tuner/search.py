"""The Optuna loop: open the study, start a server, ask for trials and tell their results.

What one trial does is tuner.trial; the study's set-up is tuner.study.
"""

from __future__ import annotations

from typing import Protocol

import optuna

from tuner import model_source, zoo
from tuner.candidate import Candidate
from tuner.errors import TrialError
from tuner.experiment import Experiment
from tuner.server.launch import make_server
from tuner.study import enqueue_first_trials, finished_count, open_study, record_identity
from tuner.trial import TrialRunner
from tuner.workspace import Workspace, prepare_inputs


class Reporter(Protocol):
    def note(self, message: str) -> None: ...
    def search_started(self, study: optuna.Study, total: int, done: int) -> None: ...
    def trial_started(self, number: int, candidate: Candidate) -> None: ...
    def trial_finished(self, trial: optuna.trial.FrozenTrial) -> None: ...


def run(exp: Experiment, reporter: Reporter) -> optuna.Study:
    """Search until the study holds `exp.trials` finished trials (or the timeout)."""
    # The reporter tells what happens, failed trials with their reason; Optuna's own log lines
    # (and its tracebacks of caught failures) would repeat it.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if zoo.get(exp.model) is not None:
        reporter.note(f"preparing built-in model {exp.model} (exported to ONNX on first use, then cached)")
    source = model_source.resolve(exp.model, exp.results_dir / "cache")
    study_name = exp.study or source.name
    study = open_study(exp, study_name)
    optuna.storages.fail_stale_trials(study)  # trials of a killed search: failed, not lost
    record_identity(study, exp, source)
    if not study.trials:
        enqueue_first_trials(study, exp, source.signature.batched)
    done = finished_count(study)
    reporter.search_started(study, exp.trials, done)
    if done >= exp.trials:
        return study

    ws = Workspace(exp.results_dir / study_name)
    samples = prepare_inputs(source, ws, exp)
    server = make_server(exp.server, ws.repository, ws.server_log, study_name)
    with server.start():
        runner = TrialRunner(exp, source, server, ws, samples, note=reporter.note, on_start=reporter.trial_started)
        study.optimize(runner, n_trials=exp.trials - done, timeout=exp.timeout_s, catch=(TrialError,),
                       callbacks=[lambda _s, t: reporter.trial_finished(t)])
    return study

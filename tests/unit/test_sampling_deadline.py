"""The search starts no trial that is expected to run past its sampling deadline."""

import datetime as dt
import time

import optuna

from tuner import search
from tuner.study import expected_trial_s

T0 = dt.datetime(2026, 12, 1, 12, 0, 0)


def _trial(study: optuna.Study, seconds: float, state=optuna.trial.TrialState.COMPLETE, **attrs) -> None:
    study.add_trial(optuna.trial.FrozenTrial(
        number=0, trial_id=0, state=state, value=1.0 if state == optuna.trial.TrialState.COMPLETE else None,
        datetime_start=T0, datetime_complete=T0 + dt.timedelta(seconds=seconds), params={}, distributions={},
        user_attrs=attrs, system_attrs={}, intermediate_values={}))


def _study(*walls: float) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study()
    for wall in walls:
        _trial(study, wall)
    return study


def test_no_estimate_before_a_trial_has_finished():
    assert expected_trial_s(_study()) is None
    assert search._would_overrun(_study(), time.time() + 1) is None


def test_the_estimate_is_the_median_of_the_counted_trials():
    study = _study(40, 140, 150)
    _trial(study, 5, state=optuna.trial.TrialState.FAIL)                      # interrupted: measured again
    _trial(study, 2, state=optuna.trial.TrialState.FAIL, surplus=True)        # never measured
    assert expected_trial_s(study) == 140


def test_a_trial_that_would_run_past_the_deadline_does_not_start():
    study = _study(40, 140)  # the default pipeline and a compiled one: 90 s expected
    reason = search._would_overrun(study, time.time() + 60)
    assert reason is not None and "90 s (median)" in reason
    assert search._would_overrun(study, time.time() + 120) is None


def test_without_a_deadline_trials_always_start():
    assert search._would_overrun(_study(40, 140), None) is None

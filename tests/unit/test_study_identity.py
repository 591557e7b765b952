"""A study knows what it is of; interrupted trials are measured again. In-memory studies."""

import optuna
import pytest

from tuner.errors import TunerError
from tuner.experiment import build
from tuner.study import check_identity, finished_count, interrupted, record_identity, requeue_interrupted


class Source:
    def __init__(self, path):
        self.name, self.onnx_path = "m", path


def _study_with_one_trial(exp, source):
    study = optuna.create_study(study_name="m", directions=["maximize", "minimize"])
    record_identity(study, exp, source)
    study.add_trial(optuna.trial.create_trial(values=[1.0, 2.0]))
    return study


def test_a_study_resumes_on_its_own_model_and_space_only(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    a.write_bytes(b"model a")
    b.write_bytes(b"model b")
    exp = build({"model": str(a), "space": {"instances": [1, 2]}})
    study = _study_with_one_trial(exp, Source(a))
    check_identity(study, exp, Source(a))  # the same: fine
    with pytest.raises(TunerError, match=r"holds trials of another model .* use --study NEW_NAME .* --fresh"):
        check_identity(study, exp.model_copy(update={"model": str(b)}), Source(b))
    wider = build({"model": str(a), "space": {"instances": [1, 2, 3]}})
    with pytest.raises(TunerError, match=r"another space \(instances: \[1, 2\] -> \[1, 2, 3\]\)"):
        check_identity(study, wider, Source(a))


def test_a_knob_added_since_the_study_is_no_change(tmp_path):
    a = tmp_path / "a.onnx"
    a.write_bytes(b"model a")
    exp = build({"model": str(a)})
    study = _study_with_one_trial(exp, Source(a))
    stored = study.user_attrs["experiment"]
    del stored["space"]["warmup"]  # as a study written before the knob existed
    study.set_user_attr("experiment", stored)
    check_identity(study, exp, Source(a))


def test_an_empty_study_takes_any_model(tmp_path):
    a = tmp_path / "a.onnx"
    a.write_bytes(b"model a")
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("model_digest", "something else")
    check_identity(study, build({"model": str(a)}), Source(a))


def test_interrupted_trials_are_requeued_once_and_do_not_count():
    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = {"instances": optuna.distributions.CategoricalDistribution([1, 2])}
    study.add_trial(optuna.trial.create_trial(params={"instances": 1}, distributions=dist, values=[1.0, 2.0]))
    killed = optuna.trial.create_trial(params={"instances": 2}, distributions=dist, state=optuna.trial.TrialState.FAIL,
                                       user_attrs={"baseline": True})
    study.add_trial(killed)
    study.add_trial(optuna.trial.create_trial(params={"instances": 1}, distributions=dist,
                                              state=optuna.trial.TrialState.FAIL, user_attrs={"error": "refused"}))
    assert [interrupted(t) for t in study.trials] == [False, True, False]
    assert finished_count(study) == 2
    assert requeue_interrupted(study) == [1]
    assert requeue_interrupted(study) == []  # once
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs == {"remeasures": 1, "baseline": True}
    assert waiting[0].system_attrs["fixed_params"] == {"instances": 2}

"""The dashboard's empty and odd states: each is a clear message, never a stack trace. No server needed."""

import optuna
import pytest

from dashboard_studies import make_study, measured

FAIL = optuna.trial.TrialState.FAIL


def test_a_storage_without_studies_says_how_to_start_one(tmp_path, dashboard):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.storages.RDBStorage(url)  # the schema, no study
    at = dashboard(url)
    assert not at.error
    assert "No studies" in at.info[0].value and "tuner search" in at.info[0].value


@pytest.mark.parametrize("url", ["sqlite:////nonexistent/dir/x.db", "foo://x"])
def test_a_storage_that_cannot_be_opened_is_one_error(url, dashboard):
    at = dashboard(url)
    assert len(at.error) == 1
    assert f"cannot open study storage '{url}'" in at.error[0].value


def test_a_study_with_only_failed_trials_shows_their_reasons(tmp_path, dashboard):
    url = f"sqlite:///{tmp_path / 'failed.db'}"
    reason = "load failed: model 'mlp' has no instance"
    make_study(url, "broken", [{"state": FAIL, "attrs": {"error": reason}}, {"state": FAIL}])
    at = dashboard(url)
    infos = " ".join(i.value for i in at.info)
    assert "nothing to plot" in infos and "No completed trial yet" in infos and "at least 3 completed" in infos
    failed = next(d.value for d in at.dataframe if "state" in d.value.columns)
    assert list(failed.number) == [0, 1] and failed.error.iloc[0] == reason
    assert at.error[0].value == "Trial 1 failed: no reason recorded"  # the trial view opens the newest
    at.selectbox(key="trial-broken").set_value(0).run()
    assert at.error[0].value == f"Trial 0 failed: {reason}"
    assert not at.get("plotly_chart")


def test_a_rejected_trial_is_never_the_best_and_is_drawn_apart(tmp_path, dashboard):
    url = f"sqlite:///{tmp_path / 'rejected.db'}"
    make_study(url, "accuracy", [measured(100.0, 5.0), measured(300.0, 4.0, instances=2, rejected="max abs error 0.3"),
                                 measured(200.0, 6.0, instances=3), measured(400.0, 20.0, instances=4)])
    at = dashboard(url)
    assert next(m for m in at.metric if m.label == "trial").value == "2"  # 300/s is rejected, 400/s over the SLA
    pareto = at.get("plotly_chart")[0].proto.spec
    assert '"name":"rejected"' in pareto and '"name":"over SLA"' in pareto
    at.selectbox(key="trial-accuracy").set_value(1).run()
    assert [w.value for w in at.warning] == ["Rejected by the accuracy check: max abs error 0.3"]

"""The dashboard's empty and odd states: each is a clear message, never a stack trace. No server needed."""

import optuna
import pytest

from dashboard_studies import make_study, measured, verification

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


def _verified_table(at):
    return next((d.value for d in at.dataframe if "meets SLA" in d.value.columns), None)


def _finalists_study(url: str, rounds: list[dict], **kw) -> optuna.Study:
    """Triton's default (0), two leaders within the 10 ms SLA (2 the better single draw), one over it."""
    study = make_study(url, "verified", [measured(100.0, 5.0, baseline=True), measured(300.0, 6.0, instances=2),
                                         measured(320.0, 7.0, instances=3), measured(400.0, 20.0, instances=4)])
    study.set_user_attr("verification", verification(rounds, 10.0, default=0, trials_seen=4, **kw))
    return study


def test_a_verified_study_shows_its_finalists_and_offers_the_verified_winner(tmp_path, dashboard):
    url = f"sqlite:///{tmp_path / 'verified.db'}"
    rounds = [{0: (100.0 + r, 5.0), 1: (310.0 + 2 * r, 6.0), 2: (290.0 - r, 7.0)} for r in range(5)]
    _finalists_study(url, rounds)
    at = dashboard(url)
    subheaders = [s.value for s in at.subheader]
    assert subheaders.index("Verified finalists") < subheaders.index("Best trial under the SLA")
    assert not any("Not verified yet" in i.value for i in at.info)
    table = _verified_table(at)
    assert list(table.trial) == [1, 2, 0] and list(table.role) == ["winner", "", "default"]
    assert table["throughput (infer/s) median [95 % interval]"].iloc[0].startswith("314.0 [")
    assert any(c.value.startswith("5 interleaved rounds over 3 finalists (converged") for c in at.caption)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["P(winner is best)"] == "1.00"
    assert at.success[0].value.startswith("tuned / default 3.0")
    # The best under the study's own SLA is the verified winner, not trial 2 (the better single draw).
    assert metrics["trial"] == "1" and metrics["infer/s (verified)"] == "314.0"
    assert metrics["vs Triton's default"].startswith("3.0")
    assert at.selectbox(key="trial-verified").value == 1
    assert any('"name":"each round\'s draw"' in c.proto.spec for c in at.get("plotly_chart"))

    at.number_input(key="sla-verified").set_value(9.0).run()  # an SLA other than the verified one: single draws
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["trial"] == "2" and metrics["infer/s (single draw)"] == "320.0"
    assert any("differs from the one verified" in c.value for c in at.caption)


def test_a_verification_without_a_significant_gain_says_so(tmp_path, dashboard):
    url = f"sqlite:///{tmp_path / 'even.db'}"
    _finalists_study(url, [{0: (d, 5.0), 1: (t, 6.0), 2: (250.0, 7.0)}
                           for t, d in ((305.0, 300.0), (298.0, 304.0), (310.0, 297.0))], stopped="budget")
    at = dashboard(url)
    assert any(i.value.startswith("no significant gain on this machine") for i in at.info)
    assert any("stopped by the stage's time budget" in c.value for c in at.caption)
    assert next(m for m in at.metric if m.label == "vs Triton's default").delta.endswith("not significant")


def test_a_study_not_verified_yet_says_its_figures_are_single_draws(tmp_path, dashboard):
    url = f"sqlite:///{tmp_path / 'unverified.db'}"
    make_study(url, "draws", [measured(100.0, 5.0, baseline=True), measured(300.0, 6.0, instances=2)])
    at = dashboard(url)
    assert "Not verified yet: figures below are single draws." in [i.value for i in at.info]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["trial"] == "1" and metrics["infer/s (single draw)"] == "300.0"
    assert _verified_table(at) is None

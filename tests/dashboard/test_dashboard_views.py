"""The dashboard's pure views: the figures keep the trial behind each marker, so a click opens the right
trial; the verified finalists' table, figure and winner come from the study's verification."""

import optuna

from dashboard_studies import make_study, measured, memory_study, verification
from tuner.dashboard import views


def test_every_marker_of_the_pareto_chart_leads_back_to_its_trial(tmp_path):
    study = make_study(f"sqlite:///{tmp_path / 'views.db'}", "views", [
        measured(100.0, 5.0), measured(300.0, 4.0, rejected="max abs error 0.3"), measured(200.0, 6.0),
        measured(400.0, 20.0), {"state": optuna.trial.TrialState.FAIL, "attrs": {"error": "load failed"}}])
    frame = views.annotate(study, max_p99_ms=10.0)
    figure = views.pareto_figure(frame, max_p99_ms=10.0)
    clicked = {}
    for curve, trace in enumerate(figure.data):
        if trace.mode == "markers":  # not the Pareto front's line
            for index, (x, y) in enumerate(zip(trace.x, trace.y)):
                clicked[(x, y)] = views.clicked_trial(figure, {"curve_number": curve, "point_index": index})
    assert clicked == {(5.0, 100.0): 0, (4.0, 300.0): 1, (6.0, 200.0): 2, (20.0, 400.0): 3}
    assert list(frame.status) == ["ok", "rejected", "ok", "over SLA", "failed"]


# Triton's default (0), two leaders within the SLA (1, 2: 2 is the better single draw) and one over it (3).
TRIALS = [measured(100.0, 5.0, baseline=True), measured(300.0, 6.0, instances=2), measured(320.0, 7.0, instances=3),
          measured(400.0, 20.0, instances=4)]
# Five interleaved rounds: trial 1 verifies best (and drifts upwards), trial 2 below it, the default far below.
ROUNDS = [{0: (100.0 + r, 5.0), 1: (310.0 + 2 * r, 6.0 + r / 10), 2: (290.0 - r, 7.0)} for r in range(5)]
# The same finalists measured against a default that is about as fast: the gain is within the noise.
EVEN = [{0: (d, 5.0), 1: (t, 6.0)} for t, d in ((305.0, 300.0), (298.0, 304.0), (310.0, 297.0), (296.0, 306.0),
                                                 (303.0, 299.0))]


def _verified_study(rounds=ROUNDS, sla=10.0, **kw):
    study = memory_study(TRIALS, sla)
    study.set_user_attr("verification", verification(rounds, sla, default=0, **kw))
    return study


def test_a_study_without_verification_has_none_and_offers_the_best_single_draw():
    study = memory_study(TRIALS)
    frame = views.annotate(study, 10.0)
    assert views.verified(study) is None and not views.verified_for(None, 10.0)
    assert views.chosen(frame, None, 10.0) == (2, False)


def test_the_verified_table_has_each_finalist_with_its_interval_and_role():
    study = _verified_study()
    found = views.verified(study)
    assert set(found["finalists"]) == {0, 1, 2} and found["winner"] == 1  # keys are ints again
    table = views.verified_table(views.annotate(study, 10.0), found)
    assert list(table.trial) == [1, 2, 0]  # the highest verified throughput first
    assert list(table.role) == ["winner", "", "default"]
    assert list(table["meets SLA"]) == [True, True, True]
    t = found["finalists"][1]["throughput"]
    assert (table.iloc[0]["throughput (infer/s) median [95 % interval]"]
            == f"{t['median']:.1f} [{t['low']:.1f}, {t['high']:.1f}]")
    assert t["low"] <= t["median"] == 314.0 <= t["high"]
    assert table.iloc[0]["± %"] == round(t["half_width"] * 100, 1)
    assert table.iloc[0].settings == views.settings(views.annotate(study, 10.0).iloc[1].to_dict())


def test_the_verified_winner_is_chosen_only_under_the_sla_it_was_verified_for():
    study = _verified_study()
    found = views.verified(study)
    frame = views.annotate(study, 10.0)
    assert views.chosen(frame, found, 10.0) == (1, True)  # not 2, the better single draw
    assert views.chosen(views.annotate(study, 9.0), found, 9.0) == (2, False)  # another SLA: the best single draw
    assert views.chosen(views.annotate(study, None), found, None) == (3, False)  # no SLA: the fastest single draw
    unconstrained = _verified_study(sla=None)
    assert views.chosen(views.annotate(unconstrained, None), views.verified(unconstrained), None)[1]


def test_tuned_against_default_is_the_paired_ratio_or_no_significant_gain():
    found = views.verified(_verified_study())
    assert found["vs_default"]["significant"]
    assert views.vs_default_text(found).startswith(f"tuned / default {found['vs_default']['median']:.2f}×")
    even = views.verified(_verified_study(EVEN))
    assert even["winner"] == 1 and not even["vs_default"]["significant"]
    assert views.vs_default_text(even).startswith("no significant gain on this machine")
    assert views.vs_default_text(even | {"winner": 0, "vs_default": None}).startswith("Triton's default is")
    assert views.vs_default_text(even | {"winner": None, "vs_default": None}).startswith("no finalist meets the SLA")
    assert views.rounds_text(found).startswith("5 interleaved rounds over 3 finalists (converged")


def test_the_verified_figure_has_error_bars_and_every_rounds_draw():
    found = views.verified(_verified_study())
    figure = views.verified_figure(found)
    medians, draws = [t for t in figure.data if t.name == "verified median"], [t for t in figure.data
                                                                             if t.name == "each round's draw"]
    assert len(medians) == len(draws) == 2  # throughput and p99 side by side
    throughput = medians[0]
    order = [1, 2, 0]
    assert list(throughput.customdata) == order
    for i, n in enumerate(order):
        f = found["finalists"][n]["throughput"]
        assert throughput.y[i] == f["median"]
        assert throughput.y[i] + throughput.error_y.array[i] == f["high"]
        assert throughput.y[i] - throughput.error_y.arrayminus[i] == f["low"]
    dots = draws[0]
    assert len(dots.y) == 5 * 3
    # Trial 1's dots, left to right, are its five rounds in order: the drift shows as a slope.
    ones = sorted((x, y) for x, y in zip(dots.x, dots.y) if -0.5 < x - order.index(1) < 0.5)
    assert [y for _, y in ones] == [310.0, 312.0, 314.0, 316.0, 318.0]
    assert list(dots.marker.color) == [r + 1 for r in range(5) for _ in order]
    assert figure.layout.xaxis.ticktext == ("trial 1 (winner)", "trial 2", "trial 0 (default)")
    assert any(s.y0 == 10.0 for s in figure.layout.shapes)  # the SLA on the p99 panel


def test_a_finalist_p50_is_the_median_of_its_rounds():
    found = views.verified(_verified_study())
    assert views.verified_p50(found, 1) == (6.0 + 0.2) / 3
    assert views.verified_p50(found, 7) is None


def test_the_study_picker_labels_a_verified_study_with_its_verified_throughput(tmp_path):
    url = f"sqlite:///{tmp_path / 'overview.db'}"
    make_study(url, "draws", TRIALS)
    make_study(url, "verified", TRIALS).set_user_attr("verification", verification(ROUNDS, 10.0, default=0))
    overview = views.study_overview(optuna.storages.RDBStorage(url))
    labels = {row.study: views.describe_study(row) for _, row in overview.iterrows()}
    assert labels["verified"].endswith("verified 314.0 infer/s")
    assert labels["draws"].endswith("best 320.0 infer/s")

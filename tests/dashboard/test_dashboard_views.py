"""The dashboard's figures keep the trial behind each marker, so a click opens the right trial."""

import optuna

from dashboard_studies import make_study, measured
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

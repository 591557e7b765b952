"""The cost per million inferences and the worker of each trial: in the results frame, the
`tuner report` tables and summary, the dashboard's tables and hover, and the export's claim."""

import optuna
import pandas as pd
import pytest
from rich.console import Console

from tuner import export, report, results
from tuner.dashboard import views

COMPLETE, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL


def _trial(throughput: float | None, p99_ms: float = 5.0, instances: int = 1, state=COMPLETE, **attrs):
    candidate = {"instances": instances, "max_batch_size": 4, "dynamic_batching": False, "max_queue_delay_us": 0,
                 "preferred_batch": False, "threads": 0, "warmup": False, "concurrency": 2,
                 "backend": "onnxruntime", "precision": "fp32", "kind": "KIND_CPU"}
    user_attrs = {"candidate": candidate} | attrs
    if throughput is not None:
        user_attrs["measurement"] = {"throughput": throughput, "p50_ms": p99_ms / 3, "p90_ms": p99_ms / 2,
                                     "p95_ms": p99_ms / 1.5, "p99_ms": p99_ms, "avg_ms": p99_ms / 2.5,
                                     "queue_ms": 0.1, "compute_input_ms": 0.05, "compute_infer_ms": 1.0,
                                     "compute_output_ms": 0.05}
    values = [throughput, p99_ms] if state == COMPLETE else None
    return optuna.trial.create_trial(state=state, values=values, user_attrs=user_attrs)


def _study(trials, price_per_hour: float | None = None) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("experiment", {"model": "mlp.onnx", "trials": len(trials), "price_per_hour": price_per_hour})
    for trial in trials:
        study.add_trial(trial)
    return study


def _text(renderable) -> str:
    console = Console(record=True, width=400)
    console.print(renderable)
    return console.export_text()


def test_the_cost_is_the_price_per_hour_over_an_hour_of_throughput():
    # 3.6 per hour at 1000 inferences/s: 3.6 million inferences an hour, 1.0 per million.
    study = _study([_trial(1000.0), _trial(500.0, price_per_hour=7.2), _trial(None, state=FAIL, error="load failed")],
                   price_per_hour=3.6)
    frame = results.trials_frame(study)
    assert frame.price_per_hour.tolist()[:2] == [3.6, 7.2]  # the trial's own price wins over the experiment's
    assert frame.cost_per_million.iloc[0] == pytest.approx(1.0)
    assert frame.cost_per_million.iloc[1] == pytest.approx(4.0)
    assert pd.isna(frame.cost_per_million.iloc[2])  # nothing served, no cost
    assert results.priced(frame)
    per_runtime = results.best_per_runtime(frame)
    assert per_runtime.cost_per_million.iloc[0] == pytest.approx(1.0)  # the best trial's cost


def test_without_a_price_there_is_no_cost_column():
    frame = results.trials_frame(_study([_trial(1000.0), _trial(800.0, instances=2)]))
    assert frame.cost_per_million.isna().all() and not results.priced(frame)
    for table in (report.results_table(frame, None), report.runtime_table(frame, None)):
        assert "cost / 1M" not in [c.header for c in table.columns]
    assert "per million" not in report.summary(frame, None)
    assert views.extra_columns(frame) == []


def test_the_report_shows_the_cost_of_each_trial_when_a_price_is_known():
    frame = results.trials_frame(_study([_trial(1000.0, baseline=True), _trial(2000.0, instances=2)],
                                        price_per_hour=3.6))
    table = report.results_table(frame, None)
    headers = [c.header for c in table.columns]
    assert "cost / 1M" in headers and "worker" not in headers
    costs = list(table.columns[headers.index("cost / 1M")].cells)
    assert costs == ["0.500", "1.00"]  # highest throughput first: 3.6 / (2000 * 3600) * 1e6, then 1.0
    runtime = report.runtime_table(frame, None)
    runtime_headers = [c.header for c in runtime.columns]
    assert list(runtime.columns[runtime_headers.index("cost / 1M")].cells) == ["0.500"]
    text = report.summary(frame, None)
    assert "tuned:   trial 1: 2000.0 infer/s, p99 5.0 ms, 0.500 per million inferences" in text
    assert "default: trial 0: 1000.0 infer/s, p99 5.0 ms, 1.00 per million inferences" in text


def test_the_worker_of_each_trial_is_shown_when_several_measured_the_study():
    one = [_trial(1000.0, worker="a/w0", host="a", hardware="cpu x2"),
           _trial(900.0, instances=2, worker="a/w0", host="a", hardware="cpu x2")]
    frame = results.trials_frame(_study(one))
    assert not results.several_workers(frame)
    assert "worker" not in [c.header for c in report.results_table(frame, None).columns]
    assert views.hidden_columns(frame) == ["worker", "host", "hardware"]

    two = one + [_trial(1200.0, instances=3, worker="b/w0", host="b", hardware="cpu x2")]
    frame = results.trials_frame(_study(two))
    assert frame.worker.tolist() == ["a/w0", "a/w0", "b/w0"] and frame.host.tolist() == ["a", "a", "b"]
    assert results.several_workers(frame)
    table = report.results_table(frame, None)
    headers = [c.header for c in table.columns]
    assert list(table.columns[headers.index("worker")].cells) == ["b/w0", "a/w0", "a/w0"]
    assert "b/w0" in _text(table)
    assert views.extra_columns(frame) == ["worker", "host"] and views.hidden_columns(frame) == []


def test_the_dashboard_hover_and_best_trial_carry_the_cost():
    study = _study([_trial(1000.0, worker="a/w0", host="a"), _trial(2000.0, instances=2, worker="b/w0", host="b"),
                    _trial(400.0, p99_ms=50.0, instances=3, worker="b/w0", host="b")], price_per_hour=3.6)
    frame = views.annotate(study, 10.0)
    assert views.extra_columns(frame) == ["cost_per_million", "worker", "host"]
    figure = views.pareto_figure(frame, 10.0)
    within = next(t for t in figure.data if t.customdata is not None and 1 in [row[0] for row in t.customdata])
    assert "cost per million inferences=%{customdata" in within.hovertemplate and "worker=" in within.hovertemplate
    assert "b/w0" in [str(v) for v in within.customdata[list(within.customdata[:, 0]).index(1)]]
    over = next(t for t in figure.data if t.name == views.OVER_SLA)  # the grey crosses carry their own text
    assert over.hovertext[0].endswith("400.0 infer/s, p99 50.00 ms, 2.5 per million inferences<br>measured by b/w0")
    top = frame.set_index("number", drop=False).loc[1]
    assert views.cost_text(top, None) == ("0.5 per million inferences at 2000.0 infer/s (single draw), "
                                          "machine priced 3.6/hour")
    verified = {"throughput": {"median": 1800.0, "low": 1700.0, "high": 1900.0}}
    assert views.cost_text(top, verified).startswith("0.5556 per million inferences at 1800.0 infer/s (verified median)")
    unpriced = views.annotate(_study([_trial(1000.0)]), None)
    assert views.cost_text(unpriced.iloc[0], None) is None


def test_the_export_claims_the_cost_at_the_claimed_throughput_with_its_interval():
    cost = export._cost(3.6, {"median": 1000.0, "low": 900.0, "high": 1200.0})
    assert cost["price_per_hour"] == 3.6
    per_million = cost["per_million_inferences"]
    assert per_million["median"] == pytest.approx(1.0)
    assert per_million["low"] == pytest.approx(1000 / 1200) and per_million["high"] == pytest.approx(1 / 0.9)
    single = export._cost(3.6, {"median": 1000.0, "low": None, "high": None})["per_million_inferences"]
    assert single["median"] == pytest.approx(1.0) and single["low"] is None and single["high"] is None
    assert export._cost(None, {"median": 1000.0, "low": None, "high": None}) is None
    assert export._cost(float("nan"), {"median": 1000.0, "low": None, "high": None}) is None

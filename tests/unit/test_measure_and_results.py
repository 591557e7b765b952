from pathlib import Path

import optuna
import pandas as pd
import pytest

from tuner import results
from tuner.errors import TrialError
from tuner.experiment import Space
from tuner.measure.perf_analyzer import parse_csv
from tuner.space import suggest, triton_default_params, widen_for_baseline

# A row as perf_analyzer 2.48 writes it with --verbose-csv (times in microseconds).
CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
    "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,"
    "Avg latency,request/response,response wait\n"
    "4,2048.5,12,300,150,20,1500,10,5,1800,2100,2300,5700,1900,2048,1700\n"
)


def test_perf_analyzer_csv_becomes_milliseconds():
    m = parse_csv(CSV)
    assert (m.concurrency, m.throughput) == (4, 2048.5)
    assert (m.p50_ms, m.p99_ms, m.avg_ms) == (1.8, 5.7, 1.9)
    assert (m.queue_ms, m.compute_infer_ms, m.client_send_ms) == (0.15, 1.5, 0.012)


def test_an_empty_csv_is_a_trial_error():
    with pytest.raises(TrialError):
        parse_csv(CSV.splitlines()[0] + "\n")


def test_suggestions_only_ask_for_batching_knobs_when_batching():
    space = Space()
    off = suggest(optuna.trial.FixedTrial({**triton_default_params(4), "dynamic_batching": False}), space)
    assert not off.dynamic_batching and off.max_queue_delay_us == 0 and off.preferred_batch_sizes == []
    on = suggest(optuna.trial.FixedTrial({**triton_default_params(4), "max_batch_size": 16, "dynamic_batching": True,
                                          "max_queue_delay_us": 100, "preferred_batch": True}), space)
    assert on.preferred_batch_sizes == [16] and on.max_queue_delay_us == 100
    unbatched = suggest(optuna.trial.FixedTrial(triton_default_params(2, batched=False)), space, batched=False)
    assert unbatched.max_batch_size == 0 and not unbatched.dynamic_batching


def test_the_default_config_always_fits_the_space():
    pinned = Space(instances=[3], max_batch_size=[16], threads=[1], concurrency=[8])
    widened = widen_for_baseline(pinned, [1, 4], batched=True)
    assert widened.instances == [1, 3] and widened.max_batch_size == [4, 16] and widened.threads == [0, 1]
    assert widened.concurrency == [1, 4, 8]


def _frame(rows):
    base = {k: None for k in results.KNOBS + results.FIGURES}
    return pd.DataFrame([base | {"state": "COMPLETE", "baseline": False} | r for r in rows])


def test_best_respects_the_sla_and_pareto_drops_dominated_trials():
    frame = _frame([
        {"number": 0, "throughput": 100.0, "p99_ms": 10.0, "baseline": True},
        {"number": 1, "throughput": 300.0, "p99_ms": 50.0},
        {"number": 2, "throughput": 200.0, "p99_ms": 20.0},
        {"number": 3, "throughput": 150.0, "p99_ms": 30.0},  # dominated by 2
        {"number": 4, "throughput": 999.0, "p99_ms": 1.0, "state": "FAIL"},
    ])
    assert results.best(frame).number == 1
    assert results.best(frame, max_p99_ms=25).number == 2
    assert results.best(frame, max_p99_ms=5) is None
    assert results.best(frame, baseline=True).number == 0
    assert list(results.pareto_front(frame).number) == [0, 2, 1]


def test_a_request_rate_run_is_parsed_and_commanded():
    from tuner.experiment import MeasureSpec
    from tuner.measure.perf_analyzer import command

    text = ("Request Rate,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
            "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,"
            "Avg latency,request/response,response wait\n"
            "100,98.996,138,3719,1868,74,1729,390,3,2957,20100,32710,62191,7924,141,7734\n")
    m = parse_csv(text)
    assert (m.request_rate, m.concurrency, m.throughput, m.p99_ms) == (100, 0, 98.996, 62.191)
    assert m.sustained and m.load_level == 100
    cmd = command("m", "127.0.0.1:1", 100, MeasureSpec(load="request_rate"), Path("x.csv"), None)
    assert cmd[cmd.index("--request-rate-range") + 1] == "100"
    assert cmd[cmd.index("--request-distribution") + 1] == "poisson" and "--concurrency-range" not in cmd

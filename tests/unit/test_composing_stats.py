"""Composing-model statistics (tuner/measure/composing.py) parsed from real perf_analyzer output.

The fixtures in tests/data/ are perf_analyzer's stdout and CSV, captured from one real run
against the served wenet-tiny ensemble (tests/data/README.md says how)."""

from pathlib import Path

import pytest

from tuner.measure import composing, perf_analyzer

DATA = Path(__file__).resolve().parents[1] / "data"
STDOUT = DATA / "perf_analyzer_wenet_ensemble_stdout.txt"
CSV = DATA / "perf_analyzer_wenet_ensemble.csv"
STEPS = {"feature_extractor", "encoder", "scoring"}


def test_every_measured_level_has_every_step():
    levels = composing.parse_levels(STDOUT)
    assert list(levels) == [1.0, 2.0]  # the run was --concurrency-range 1:2
    for steps in levels.values():
        assert set(steps) == STEPS


def test_a_step_is_read_field_by_field():
    # The captured text at concurrency 1:
    #   encoder, version: 1
    #       Inference count: 125 / Execution count: 125 / Successful request count: 125
    #       Avg request latency: 16385 usec (overhead 6 usec + queue 1157 usec + compute input 101 usec
    #                            + compute infer 14911 usec + compute output 209 usec)
    encoder = composing.parse_levels(STDOUT)[1.0]["encoder"]
    assert encoder == composing.StepStats(
        inference_count=125, execution_count=125, latency_us=16385, overhead_us=6, queue_us=1157,
        compute_input_us=101, compute_infer_us=14911, compute_output_us=209)
    assert encoder.compute_us == 101 + 14911 + 209
    # Triton's average is the sum of its parts (perf_analyzer rounds each to a microsecond).
    parts = encoder.overhead_us + encoder.queue_us + encoder.compute_us
    assert encoder.latency_us == pytest.approx(parts, abs=5)


def test_shares_sum_to_one_and_follow_queue_plus_compute():
    shares = composing.step_shares(STDOUT)  # the last level measured: concurrency 2
    assert set(shares) == STEPS
    assert sum(s["share"] for s in shares.values()) == pytest.approx(1.0)
    total = sum(s["queue_us"] + s["compute_us"] for s in shares.values())
    for s in shares.values():
        assert s["share"] == pytest.approx((s["queue_us"] + s["compute_us"]) / total)
    # Rescoring in python is the slow step of wenet-tiny on this machine, and at concurrency 2 the
    # second request waits in its queue.
    assert max(shares, key=lambda n: shares[n]["share"]) == "scoring"
    assert shares["scoring"]["queue_us"] > shares["scoring"]["compute_us"] * 0.2


def test_the_steps_add_up_to_the_ensembles_server_compute():
    """The CSV row of an ensemble carries the steps' summed compute (but not their queueing)."""
    steps = composing.step_shares(STDOUT, level=2)
    # perf_analyzer orders the CSV's rows by throughput, not by level: pick concurrency 2's row.
    lines = CSV.read_text().splitlines()
    row = perf_analyzer.parse_csv("\n".join([lines[0], *(l for l in lines[1:] if l.startswith("2,"))]))
    assert row.concurrency == 2
    summed_infer_ms = sum(s["compute_infer_us"] for s in steps.values()) / 1000
    assert summed_infer_ms == pytest.approx(row.compute_infer_ms, rel=0.05)
    assert row.queue_ms < 0.1  # the ensemble's own queue; the steps queued for tens of ms
    assert sum(s["queue_us"] for s in steps.values()) / 1000 > 10


def test_a_text_is_parsed_like_its_file():
    assert composing.step_shares(STDOUT.read_text(), level=1) == composing.step_shares(STDOUT, level=1)


def test_a_single_model_report_or_a_missing_level_is_an_error():
    single = STDOUT.read_text().split("  Composing models:")[0]
    with pytest.raises(composing.ComposingStatsMissing):
        composing.step_shares(single)
    with pytest.raises(composing.ComposingStatsMissing, match="measured: 1, 2"):
        composing.step_shares(STDOUT, level=4)


def test_a_request_rate_level_is_keyed_by_its_rate():
    # Captured from --request-rate-range 4 --request-distribution poisson --async.
    shares = composing.parse_levels(DATA / "perf_analyzer_wenet_ensemble_rate_stdout.txt")
    assert list(shares) == [4.0]
    assert set(shares[4.0]) == STEPS
    assert shares[4.0]["scoring"].execution_count <= shares[4.0]["scoring"].inference_count

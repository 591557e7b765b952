"""The concurrency ramp and the first trials: pure logic, measurements made up."""

import optuna
import pytest

from tuner.experiment import Space
from tuner.measure import ramp
from tuner.measure.perf_analyzer import Measurement
from tuner.space import suggest, triton_default_params
from tuner.study import strong_first_params


def point(concurrency, throughput, p99):
    return Measurement(concurrency, throughput, p99 / 2, p99, p99, p99, p99 / 2, 0, 0, 0, 0, 0, 0)


def fake(curve: dict[int, tuple[float, float]]):
    asked = []

    def measure_at(c):
        asked.append(c)
        return point(c, *curve[c])

    return measure_at, asked


def test_the_ramp_stops_when_doubling_the_load_no_longer_pays():
    measure_at, asked = fake({1: (100, 1), 2: (190, 1.2), 4: (300, 2), 8: (305, 4), 16: (400, 9)})
    curve = ramp.ramp(measure_at, [16, 1, 4, 2, 8], min_gain=0.03)
    assert asked == [1, 2, 4, 8]  # ascending; 8 adds under 3 % over 4, so 16 is never measured
    assert [p.concurrency for p in curve] == [1, 2, 4, 8]
    assert ramp.pick(curve).concurrency == 8  # the highest throughput measured


def test_a_batching_deployment_ramps_on_until_its_batches_can_fill():
    stall = {1: (4155, 1), 2: (4740, 1), 4: (3591, 2), 8: (4263, 3), 16: (6472, 4), 32: (8160, 6)}  # measured
    measure_at, asked = fake(stall)
    assert ramp.pick(ramp.ramp(measure_at, list(stall))).concurrency == 2  # fooled by the stall
    measure_at, asked = fake(stall)
    floor = ramp.batching_floor(instances=1, max_batch_size=32, dynamic_batching=True)
    assert ramp.pick(ramp.ramp(measure_at, list(stall), floor=floor)).concurrency == 32
    assert ramp.batching_floor(2, 4, True) == 8 and ramp.batching_floor(3, 32, False) == 3
    # The SLA still ends it early.
    measure_at, asked = fake(stall)
    ramp.ramp(measure_at, list(stall), max_p99_ms=2.5, floor=32)
    assert asked == [1, 2, 4, 8]  # 8 is the first over 2.5 ms


def test_the_ramp_stops_past_the_sla_and_picks_within_it():
    measure_at, asked = fake({1: (100, 1), 2: (190, 3), 4: (300, 6), 8: (500, 12)})
    curve = ramp.ramp(measure_at, [1, 2, 4, 8], max_p99_ms=5)
    assert asked == [1, 2, 4]  # 4 is the first over 5 ms
    assert ramp.pick(curve, max_p99_ms=5).concurrency == 2
    # No point within the SLA: the least-bad one, so the trial reports its violation.
    measure_at, _ = fake({1: (100, 9), 2: (190, 12)})
    assert ramp.pick(ramp.ramp(measure_at, [1, 2], max_p99_ms=5), max_p99_ms=5).concurrency == 1


def test_a_falling_step_ends_the_ramp_and_ties_go_to_lower_latency():
    measure_at, asked = fake({1: (100, 1), 2: (90, 2), 4: (400, 3)})
    assert [p.concurrency for p in ramp.ramp(measure_at, [1, 2, 4])] == [1, 2]
    assert ramp.pick([point(1, 100, 3), point(2, 100, 1)]).concurrency == 2
    with pytest.raises(ValueError):
        ramp.pick([])


def test_mean_averages_every_figure():
    m = ramp.mean([point(4, 100, 2), point(4, 200, 4)])
    assert (m.concurrency, m.throughput, m.p99_ms, m.p50_ms) == (4, 150, 3, 1.5)


def test_without_sampled_concurrency_the_candidate_leaves_it_to_the_ramp():
    space = Space()
    trial = optuna.trial.FixedTrial(triton_default_params(None))
    candidate = suggest(trial, space, sample_concurrency=False)
    assert candidate.concurrency == 0 and "concurrency" not in trial.params


def test_strong_first_shapes_use_only_values_of_the_space():
    space = Space(instances=[1, 2, 3], max_batch_size=[4, 16], max_queue_delay_us=[100, 500], threads=[0, 1])
    shapes = strong_first_params(space)
    assert [(s["instances"], s["threads"]) for s in shapes] == [(1, 0), (2, 1)]
    assert all(s["max_batch_size"] == 16 and s["dynamic_batching"] and s["max_queue_delay_us"] == 100
               for s in shapes)
    for s in shapes:  # each is a legal trial of the space: suggest asks for exactly these params
        trial = optuna.trial.FixedTrial(s)
        suggest(trial, space, sample_concurrency=False)
        assert trial.params == s
    assert len(strong_first_params(space.model_copy(update={"instances": [1, 3]}))) == 1
    assert strong_first_params(space.model_copy(update={"dynamic_batching": [False]})) == []
    assert strong_first_params(space, batched=False) == []


def test_first_trials_never_exceed_the_studys_budget(tmp_path):
    from tuner.experiment import build
    from tuner.study import enqueue_first_trials

    for trials, expected in ((1, 1), (2, 2), (20, 3)):
        exp = build({"model": "m.onnx", "trials": trials, "space": {"instances": [1, 2], "threads": [0, 1]}})
        study = optuna.create_study(directions=["maximize", "minimize"])
        enqueue_first_trials(study, exp, batched=True)
        waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
        assert len(waiting) == expected
        assert waiting[0].user_attrs == {"baseline": True}  # Triton's default always goes first


def rate_point(rate, throughput, p99):
    return Measurement(0, throughput, p99 / 2, p99, p99, p99, p99 / 2, 0, 0, 0, 0, 0, 0, request_rate=rate)


def test_a_request_rate_ramp_stops_at_the_first_rate_the_server_cannot_sustain():
    served = {50: (50, 5), 100: (99, 6), 200: (150, 40), 400: (160, 90)}
    asked = []

    def measure_at(rate):
        asked.append(rate)
        return rate_point(rate, *served[rate])

    curve = ramp.ramp(measure_at, [50, 100, 200, 400])
    assert asked == [50, 100, 200]  # 200/s offered, 150/s served: an overload, the queue only grows
    assert ramp.pick(curve).request_rate == 100  # the highest sustained rate, not the highest throughput
    assert ramp.pick(curve, max_p99_ms=5.5).request_rate == 50
    assert ramp.mean([curve[1], curve[1]]).request_rate == 100


def test_headroom_prefers_a_load_whose_p99_stays_under_the_sla_by_that_share():
    curve = [point(16, 70, 300), point(32, 87, 440)]
    assert ramp.pick(curve, max_p99_ms=500).concurrency == 32  # on the edge: 88 % of the SLA
    assert ramp.pick(curve, max_p99_ms=500, headroom=0.15).concurrency == 16
    # No point has the headroom: the SLA itself decides.
    assert ramp.pick([point(16, 70, 460), point(32, 87, 490)], max_p99_ms=500, headroom=0.15).concurrency == 32

"""Several workers on one study: the budget they share, who verifies, how a host is split.

Optuna's in-memory storage stands in for the shared database: the logic reads only the study.
"""

from __future__ import annotations

import time

import optuna
import pytest

from tuner import workers
from tuner.errors import TunerError
from tuner.fleet import Share, split
from tuner.study import finished_count, give_back_reason, taken_before
from tuner.verification.finalists import decide

State = optuna.trial.TrialState


def _study(states: list[State], attrs: dict[int, dict] | None = None) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for number, state in enumerate(states):
        user_attrs = (attrs or {}).get(number, {})
        values = [1.0, 1.0] if state == State.COMPLETE else None
        study.add_trial(optuna.trial.create_trial(state=state, values=values, user_attrs=user_attrs))
    return study


def test_a_trial_beyond_the_budget_is_given_back():
    # 3 counted, 1 running: a budget of 4 is taken by the trials before number 4.
    study = _study([State.COMPLETE, State.PRUNED, State.FAIL, State.RUNNING], {2: {"error": "boom"}})
    assert taken_before(study, 4) == 4
    assert "budget of 4 trials" in give_back_reason(study, 4, trials=4)
    assert give_back_reason(study, 3, trials=4) is None  # the running one itself is within it
    assert give_back_reason(study, 4, trials=5) is None


def test_interrupted_and_surplus_trials_take_no_budget():
    # An interrupted trial (FAIL without a reason) and a surplus one do not count.
    study = _study([State.COMPLETE, State.FAIL, State.FAIL], {2: {"error": "x", "surplus": True}})
    assert finished_count(study) == 1
    assert taken_before(study, 3) == 1


def test_two_requeues_of_one_interrupted_trial_measure_it_once():
    study = _study([State.FAIL, State.COMPLETE, State.RUNNING], {1: {"remeasures": 0}, 2: {"remeasures": 0}})
    assert "trial 1 already measures interrupted trial 0" in give_back_reason(study, 2, trials=10)
    assert give_back_reason(study, 1, trials=10) is None


def _register(study: optuna.Study, wid: str, state: str, started: float, seen: float) -> None:
    study.set_user_attr(workers.PREFIX + wid, {"state": state, "started": started, "seen": seen})


def test_the_first_worker_done_by_id_verifies_once_all_are_done():
    now = time.time()
    study = _study([])
    _register(study, "b/w0", "sampled", now - 50, now)
    _register(study, "a/w1", "sampling", now - 40, now)
    assert workers.elected_verifier(study, "b/w0", now) is None  # a/w1 still samples: wait
    _register(study, "a/w1", "sampled", now - 40, now)
    assert workers.elected_verifier(study, "a/w1", now) is True
    assert workers.elected_verifier(study, "b/w0", now) is False


def test_dead_and_stopped_workers_neither_block_nor_verify():
    now = time.time()
    study = _study([])
    _register(study, "a/w0", "sampling", now - 500, now - workers.GONE_AFTER_S - 1)  # died mid-search
    _register(study, "a/w1", "stopped", now - 400, now)
    _register(study, "c/w0", "sampled", now - 30, now)
    assert set(workers.live(study, now)) == {"c/w0"}
    assert workers.elected_verifier(study, "c/w0", now) is True
    # The time budget counts from the earliest live worker's start.
    _register(study, "d/w0", "sampling", now - 100, now)
    assert workers.session_start(study, "c/w0", now) == pytest.approx(now - 100)


def test_a_host_is_split_into_disjoint_gpus_or_cpu_blocks():
    assert split(2, ["0", "1"], [0, 1, 2, 3]) == [Share(gpus=("0",)), Share(gpus=("1",))]
    assert split(2, ["0", "1", "2", "3"], []) == [Share(gpus=("0", "2")), Share(gpus=("1", "3"))]
    assert split(2, ["0"], [0, 1, 2, 3, 4]) == [Share(cpus=(0, 1, 2)), Share(cpus=(3, 4))]
    with pytest.raises(TunerError, match="needs at least 3 CPUs"):
        split(3, [], [0, 1])


def _rounds(figures: dict[int, list[tuple[float, float]]]) -> list[dict]:
    count = len(next(iter(figures.values())))
    return [{n: {"throughput": f[i][0], "p99_ms": f[i][1]} for n, f in figures.items()} for i in range(count)]


def test_the_floor_and_the_cost_objective_decide_the_winner():
    rounds = _rounds({1: [(100, 5), (102, 5), (98, 5)], 2: [(60, 4), (61, 4), (59, 4)]})
    # One price for both: the cheapest is the fastest.
    by_cost = decide(rounds, 10, None, prices={1: 2.0, 2: 2.0}, objective="cost")
    assert by_cost["winner"] == 1
    assert by_cost["finalists"][1]["cost_per_million"] == pytest.approx(2.0 / (100 * 3600) * 1e6)
    # Trial 2 measured on a machine a quarter of the price: cheaper per inference, slower.
    assert decide(rounds, 10, None, prices={1: 2.0, 2: 0.5}, objective="cost")["winner"] == 2
    assert decide(rounds, 10, None, prices={1: 2.0, 2: 0.5}, objective="throughput")["winner"] == 1
    # A floor above trial 2's verified median rules it out.
    assert decide(rounds, 10, None, prices={1: 2.0, 2: 0.5}, objective="cost", min_throughput=80)["winner"] == 1
    assert decide(rounds, 10, None, min_throughput=200)["winner"] is None

"""A verification stage stores itself after every round: a search killed between rounds keeps the
rounds measured, and the next run of the search measures only the rounds still to come."""

import optuna
import pytest

from tuner import experiment, search, verification

ROUNDS = {0: [6.0, 6.2, 5.9], 1: [150.0, 160.0, 155.0]}  # Triton's default, the leader


def _study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for number, (throughput, p99) in enumerate([(6.0, 2500.0), (150.0, 300.0)]):
        study.add_trial(optuna.trial.create_trial(
            values=[throughput, p99], user_attrs={"baseline": number == 0, "load_s": 1.0,
                                                  "measurement": {"throughput": throughput, "p99_ms": p99}}))
    return study


def _measure(calls: list, stop_after: int | None = None):
    def measure(number: int, round_number: int) -> dict:
        if stop_after is not None and len(calls) == stop_after:
            raise KeyboardInterrupt  # the search is killed mid-round
        calls.append((number, round_number))
        return {"throughput": ROUNDS[number][round_number], "p99_ms": 300.0 if number else 2500.0}
    return measure


def test_a_killed_stage_keeps_its_rounds_and_the_next_run_measures_only_the_rest():
    exp = experiment.build({"model": "-", "max_p99_ms": 500, "verify": {"min_rounds": 3, "max_rounds": 3}})
    study = _study()
    first: list = []
    with pytest.raises(KeyboardInterrupt):
        verification.run(study, exp, _measure(first, stop_after=3))  # killed in round 2
    kept = verification.stored(study)
    assert kept["stopped"] == verification.UNFINISHED and kept["rounds"] == 1
    assert verification.resumable(study) is not None and search._needs_verification(study, exp)

    second: list = []
    done = verification.run(study, exp, _measure(second))
    assert sorted(second) == [(0, 1), (0, 2), (1, 1), (1, 2)]  # rounds 2 and 3 only
    assert done["rounds"] == 3 and done["stopped"] == "max_rounds"
    assert [r[1]["throughput"] for r in done["rounds_measured"]] == ROUNDS[1]  # round 1 is the killed run's
    assert verification.resumable(study) is None and not search._needs_verification(study, exp)


def test_a_stage_of_other_trials_is_not_resumed():
    exp = experiment.build({"model": "-", "max_p99_ms": 500, "verify": {"min_rounds": 3, "max_rounds": 3}})
    study = _study()
    with pytest.raises(KeyboardInterrupt):
        verification.run(study, exp, _measure([], stop_after=3))
    study.add_trial(optuna.trial.create_trial(values=[100.0, 200.0], user_attrs={"load_s": 1.0}))
    assert verification.resumable(study) is None  # a trial finished since: the finalists may differ

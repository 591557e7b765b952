"""Which finalists a verification stage keeps so that its minimum rounds fit its budget, and how a
stage that still ran one round only is shown (single draws, no interval)."""

import optuna
import pandas as pd

from tuner.report import verified_lines
from tuner.verification import ATTR, finalists, stored


def test_finalists_that_fit_the_budget_are_all_kept():
    assert finalists.fit([4, 7, 9, 0], {4: 10, 7: 10, 9: 10, 0: 10}, budget_s=120, rounds=3, keep={4, 0}) == [4, 7, 9, 0]


def test_the_near_sla_trial_then_the_lower_leaders_leave_first_and_the_top_leader_and_default_stay():
    costs = {4: 35, 7: 35, 9: 35, 0: 35}  # leaders 4 and 7, 9 just over the SLA, 0 Triton's default
    assert finalists.fit([4, 7, 9, 0], costs, budget_s=220, rounds=2, keep={4, 0}) == [4, 7, 0]
    assert finalists.fit([4, 7, 9, 0], costs, budget_s=150, rounds=2, keep={4, 0}) == [4, 0]
    assert finalists.fit([4, 7, 9, 0], costs, budget_s=10, rounds=2, keep={4, 0}) == [4, 0]


def test_one_round_is_shown_as_single_draws_without_an_interval():
    rounds = [{2: {"throughput": 154.0, "p99_ms": 300.0}, 0: {"throughput": 6.0, "p99_ms": 2500.0}}]
    decision = finalists.decide(rounds, 500.0, default=0)
    assert decision["finalists"][2]["throughput"]["low"] is None and decision["p_best"] is None
    assert decision["vs_default"]["low"] is None and decision["vs_default"]["significant"] is None
    verified = decision | {"stopped": "budget", "seconds": 140.0, "max_p99_ms": 500.0}
    frame = pd.DataFrame({"number": [0, 2], "backend": ["onnxruntime", "onnxruntime"]})
    text = "\n".join(verified_lines(frame, verified))
    assert "one round only" in text and "154.0 infer/s, p99 300.0 ms" in text and "[154.0" not in text
    assert "P(winner is best)" not in text and "25.67x, untested for significance" in text


def test_a_one_round_verification_stored_by_older_code_loses_its_zero_width_intervals():
    figure = {"median": 154.0, "low": 154.0, "high": 154.0, "half_width": 0.0}
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr(ATTR, {"rounds": 1, "winner": 2, "default": 0, "p_best": 1.0, "rounds_measured": [],
                               "vs_default": {"median": 25.79, "low": 25.79, "high": 25.79, "significant": True},
                               "finalists": {"2": {"throughput": figure, "p99_ms": figure, "meets_sla": True}}})
    found = stored(study)
    assert found["finalists"][2]["throughput"] == {"median": 154.0, "low": None, "high": None, "half_width": None}
    assert found["p_best"] is None and found["vs_default"]["low"] is None and found["vs_default"]["significant"] is None


def _trials(rows):
    return pd.DataFrame([{"number": n, "state": "COMPLETE", "throughput": t, "p99_ms": p, "baseline": n == 0,
                          "repeat_of": None} for n, t, p in rows])


def test_an_earlier_verified_winner_stays_a_finalist_when_a_resumed_search_verifies_again():
    # Trial 7 won the first verification; the resumed search found 12 with a better single draw.
    frame = _trials([(0, 1.2, 1500), (7, 3.3, 530), (12, 3.9, 740), (13, 3.0, 1100)])
    assert finalists.choose(frame, 1000, leaders=1) == [12, 13, 0]
    assert finalists.choose(frame, 1000, leaders=1, incumbent=7) == [12, 7, 13, 0]
    costs = {0: 30, 7: 30, 12: 30, 13: 30}
    assert finalists.fit([12, 7, 13, 0], costs, budget_s=270, rounds=3, keep={12, 7, 0}) == [12, 7, 0]

import numpy as np
import pytest

from tuner.verification import stats
from tuner.verification.stats import interval, p_best, paired_ratio


def test_the_interval_holds_the_median_and_narrows_with_agreeing_rounds():
    wide = interval([80, 100, 120, 90, 110])
    tight = interval([99, 100, 101, 100, 100])
    assert wide.median == 100 and tight.median == 100
    assert wide.low <= 100 <= wide.high and tight.low <= 100 <= tight.high
    assert tight.half_width < 0.02 < wide.half_width


def test_a_clear_winner_is_best_in_almost_every_resample():
    rounds = {1: [200, 210, 190, 205, 198], 2: [100, 104, 98, 101, 99]}
    assert p_best(rounds, 1) > 0.99 and p_best(rounds, 2) < 0.01


def test_pairing_sees_through_drift_that_moves_every_finalist_alike():
    drift = [1.0, 1.3, 0.7, 1.2, 0.8]
    tuned = [110 * d for d in drift]
    default = [100 * d for d in drift]
    ratio = paired_ratio(tuned, default)
    assert ratio.median == pytest.approx(1.1) and ratio.low > 1.05  # unpaired, the drift would swamp 10 %
    assert interval(tuned).low < interval(default).high  # the unpaired intervals overlap


def test_resampling_is_seeded():
    rounds = {1: [100, 104, 97], 2: [101, 99, 103]}
    assert p_best(rounds, 1, seed=4) == p_best(rounds, 1, seed=4)


def test_few_rounds_give_an_interval_as_wide_as_they_know():
    # The same spread from 2, 3 and 6 rounds: Student's t widens the few, where a bootstrap of 2
    # rounds gave back their own min and max (a 95 % claim that held half of the time).
    two, three, six = interval([98, 102]), interval([98, 100, 102]), interval([98, 100, 102] * 2)
    assert two.half_width > 0.15 > three.half_width > 0.04 > six.half_width
    assert two.low < 98 and two.high > 102 and two.upper == two.high


def test_the_interval_holds_the_true_median_about_95_percent_of_the_time_from_three_rounds():
    rng = np.random.default_rng(0)
    held = [(lambda iv: iv.low <= 100 <= iv.high)(interval(100 * np.exp(0.05 * rng.standard_normal(3))))
            for _ in range(400)]
    assert 0.92 <= np.mean(held) <= 1.0


def test_one_round_has_no_interval_and_is_written_as_its_draw():
    one = stats.interval([154.0])
    assert (one.low, one.high, one.half_width, one.upper) == (None, None, None, 154.0)
    assert stats.p_best({2: [154.0], 0: [6.0]}, 2) is None
    assert stats.figure_text(one, "infer/s", spread=True) == "154.0 infer/s"
    assert stats.error_bar(one.as_dict()) == (0.0, 0.0)
    two = stats.interval([100.0, 110.0])
    assert stats.figure_text(two, "ms", ".0f") == f"105 ms [{two.low:.0f}, {two.high:.0f}]"
    assert stats.figure_text(two.as_dict(), spread=True).endswith(f"(+-{two.half_width * 100:.1f} %)")
    assert stats.upper(two.as_dict()) == two.high and stats.error_bar(two.as_dict()) == (two.high - 105, 105 - two.low)


def test_the_ratio_against_the_default_says_whether_its_interval_holds_one():
    gain = {"median": 1.4, "low": 1.2, "high": 1.6, "significant": True}
    even = {"median": 1.05, "low": 0.95, "high": 1.15, "significant": False}
    one = {"median": 1.4, "low": None, "high": None, "significant": None}
    assert stats.ratio_text(gain) == "tuned / default (paired rounds): 1.40x [1.20, 1.60]"
    assert stats.ratio_text(even).endswith("[0.95, 1.15]: no significant gain on this machine (the interval holds 1.00x)")
    assert stats.ratio_text(one) == "tuned / default (one round): 1.40x, untested for significance"

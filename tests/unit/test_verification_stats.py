import pytest

from tuner.verification.stats import interval, p_best, paired_ratio


def test_the_interval_holds_the_median_and_narrows_with_agreeing_rounds():
    wide = interval([80, 100, 120, 90, 110])
    tight = interval([99, 100, 101, 100, 100])
    assert wide.median == 100 and tight.median == 100
    assert wide.low <= 100 <= wide.high and tight.low <= 100 <= tight.high
    assert tight.half_width < 0.02 < wide.half_width
    assert interval([7.0]).half_width == 0


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
    assert interval([1, 5, 2, 8, 3], seed=4) == interval([1, 5, 2, 8, 3], seed=4)

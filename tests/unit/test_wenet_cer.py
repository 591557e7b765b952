"""Character error rate (tuner/zoo/wenet/cer.py) on known cases and against a brute-force search."""

import itertools
import math
from functools import lru_cache

import numpy as np
import pytest

from tuner.zoo.wenet.cer import Edits, cer, corpus_cer, edit_distance, edits


def brute_force_distance(a: tuple, b: tuple) -> int:
    """Levenshtein distance by its recursive definition (exponential without the cache)."""
    @lru_cache(maxsize=None)
    def d(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))
    return d(len(a), len(b))


def test_identical_sequences_have_no_errors():
    assert edits("擊埒洼", "擊埒洼") == Edits(0, 0, 0, 3)
    assert cer((5, 7, 9), (5, 7, 9)) == 0.0


def test_the_textbook_case_splits_into_two_substitutions_and_one_insertion():
    e = edits("kitten", "sitting")
    assert (e.substitutions, e.deletions, e.insertions) == (2, 0, 1)
    assert e.distance == 3
    assert cer("kitten", "sitting") == pytest.approx(3 / 6)


def test_each_kind_of_edit_is_counted_as_what_it_is():
    assert edits("abc", "abxc") == Edits(0, 0, 1, 3)  # one unit too many
    assert edits("abc", "ac") == Edits(0, 1, 0, 3)  # one unit missing
    assert edits("abc", "axc") == Edits(1, 0, 0, 3)  # one unit wrong
    # Equal cost: two substitutions or a deletion plus an insertion; substitutions are preferred.
    assert edits("ab", "ba") == Edits(2, 0, 0, 2)


def test_the_rate_is_over_the_reference_length_and_can_exceed_one():
    assert cer("ab", "abcdef") == pytest.approx(4 / 2)
    assert cer("abcdef", "") == 1.0  # everything deleted


def test_an_empty_reference():
    assert cer("", "") == 0.0
    assert math.isinf(cer("", "x"))


def test_token_ids_work_like_characters():
    assert edit_distance([1, 2, 3, 4], [1, 3, 4, 5]) == edit_distance("abcd", "acde") == 2
    assert cer(np.array([3, 1, 4, 1, 5]).tolist(), [3, 1, 4, 1, 5]) == 0.0


def test_the_distance_equals_the_recursive_definition_on_every_short_pair():
    alphabet = "ab"
    words = [tuple(w) for n in range(5) for w in itertools.product(alphabet, repeat=n)]
    for a in words:
        for b in words:
            e = edits(a, b)
            assert e.distance == brute_force_distance(a, b), (a, b)
            # The kinds are a real alignment: hypothesis length = ref - deletions + insertions.
            assert len(b) == len(a) - e.deletions + e.insertions, (a, b)


def test_random_pairs_match_the_recursive_definition_and_are_symmetric():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = tuple(rng.integers(0, 5, rng.integers(0, 12)))
        b = tuple(rng.integers(0, 5, rng.integers(0, 12)))
        assert edit_distance(a, b) == brute_force_distance(a, b) == edit_distance(b, a)


def test_corpus_rate_weighs_utterances_by_their_length():
    pairs = [("a", "b"), ("abcdefghij", "abcdefghij")]  # 1 error in 11 reference units
    assert corpus_cer(pairs) == pytest.approx(1 / 11)
    assert corpus_cer(pairs) != pytest.approx((cer("a", "b") + 0.0) / 2)
    assert corpus_cer([]) == 0.0

"""The pipeline guard's comparison (no server): text by corpus CER, floats by relative error,
integer outputs reported only, limits of None reporting only."""

import json
import math

import numpy as np
import pytest

from tuner.pipeline.guard import compare


def text(s: str) -> np.ndarray:
    return np.array([s.encode("utf-8")], dtype=object)


REFERENCE = [
    {"TEXT": text("你好世界"), "IDS": np.array([3, 4, 5, 6], np.int64), "SCORES": np.array([1.0, -2.0], np.float32)},
    {"TEXT": text("天气"), "IDS": np.array([7, 8], np.int64), "SCORES": np.array([0.5, 4.0], np.float32)},
]


def outputs(texts=("你好世界", "天气"), ids=((3, 4, 5, 6), (7, 8)), scores=((1.0, -2.0), (0.5, 4.0))):
    return [{"TEXT": text(t), "IDS": np.array(i, np.int64), "SCORES": np.array(s, np.float32)}
            for t, i, s in zip(texts, ids, scores)]


def test_identical_outputs_pass_with_zero_figures_and_a_json_verdict():
    verdict = compare(REFERENCE, outputs(), {"TEXT"}, max_cer=0.0, max_rel_error=0.1)
    assert verdict == {"ok": True, "outputs": {
        "TEXT": {"metric": "cer", "value": 0.0, "limit": 0.0},
        "IDS": {"metric": "cer", "value": 0.0, "limit": None},
        "SCORES": {"metric": "rel_error", "value": 0.0, "limit": 0.1},
    }}
    assert json.loads(json.dumps(verdict)) == verdict


def test_text_is_judged_by_corpus_cer_over_all_requests():
    # One substitution in the first request, one deletion in the second: 2 edits over 6 characters.
    served = outputs(texts=("你好世间", "天"))
    verdict = compare(REFERENCE, served, {"TEXT"}, max_cer=0.0, max_rel_error=0.1)
    assert verdict["outputs"]["TEXT"]["value"] == pytest.approx(2 / 6)
    assert not verdict["ok"]
    assert compare(REFERENCE, served, {"TEXT"}, max_cer=0.34, max_rel_error=0.1)["ok"]
    assert compare(REFERENCE, served, {"TEXT"}, max_cer=None, max_rel_error=0.1)["ok"]  # report only


def test_integer_outputs_are_reported_by_their_error_rate_but_never_reject():
    served = outputs(ids=((3, 4, 9), (7, 8)))  # 5 -> 9 substituted, 6 deleted: 2 edits over 6 ids
    verdict = compare(REFERENCE, served, {"TEXT"}, max_cer=0.0, max_rel_error=0.1)
    assert verdict["outputs"]["IDS"] == {"metric": "cer", "value": pytest.approx(2 / 6), "limit": None}
    assert verdict["ok"]


def test_float_outputs_are_judged_by_error_over_the_reference_range():
    served = outputs(scores=((1.0, -2.0), (0.5, 3.6)))  # off by 0.4 where the largest |ref| is 4
    verdict = compare(REFERENCE, served, {"TEXT"}, max_cer=0.0, max_rel_error=0.2)
    assert verdict["outputs"]["SCORES"]["value"] == pytest.approx(0.1, rel=1e-5)
    assert verdict["ok"]
    assert not compare(REFERENCE, served, {"TEXT"}, max_cer=0.0, max_rel_error=0.05)["ok"]


@pytest.mark.parametrize("bad", [(1.0, float("nan")), (1.0, float("inf")), (1.0, -2.0, 3.0)])
def test_nan_inf_or_another_shape_is_an_infinite_error(bad):
    served = outputs(scores=(bad, (0.5, 4.0)))
    verdict = compare(REFERENCE, served, {"TEXT"}, max_cer=0.0, max_rel_error=0.5)
    assert verdict["outputs"]["SCORES"]["value"] == math.inf
    assert not verdict["ok"]


def test_a_missing_output_fails_its_comparison():
    served = outputs()
    del served[1]["TEXT"]
    verdict = compare(REFERENCE, served, {"TEXT"}, max_cer=0.5, max_rel_error=0.1)
    assert verdict["outputs"]["TEXT"]["value"] == math.inf
    assert not verdict["ok"]


def test_only_the_outputs_the_reference_holds_are_compared():
    reference = [{"TEXT": r["TEXT"]} for r in REFERENCE]
    verdict = compare(reference, outputs(), {"TEXT"}, max_cer=0.0, max_rel_error=0.1)
    assert set(verdict["outputs"]) == {"TEXT"}


def test_a_result_count_other_than_the_references_is_an_error():
    with pytest.raises(ValueError):
        compare(REFERENCE, outputs()[:1], {"TEXT"}, max_cer=0.0, max_rel_error=0.1)

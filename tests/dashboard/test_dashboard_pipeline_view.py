"""The dashboard's view of a pipeline trial (issue 15): its steps, and where the time went."""

import pytest

from tuner.dashboard import views

STEPS = {"preprocess": {"instances": 2, "max_batch_size": 8, "dynamic_batching": True, "max_queue_delay_us": 500,
                        "preferred_batch": False, "parameters": {}},
         "classify": {"instances": 1, "max_batch_size": 8, "dynamic_batching": False, "max_queue_delay_us": 0,
                      "preferred_batch": False, "parameters": {"method": "greedy"}}}
SHARES = {"preprocess": {"inference_count": 100, "execution_count": 25, "queue_us": 500.0, "compute_us": 1500.0,
                         "share": 0.25},
          "classify": {"inference_count": 100, "execution_count": 100, "queue_us": 1000.0, "compute_us": 5000.0,
                       "share": 0.75}}


def test_a_pipeline_trial_shows_each_step_with_its_batching_and_share():
    table = views.step_table({"candidate": {"steps": STEPS, "concurrency": 4}, "step_shares": SHARES})
    assert list(table.step) == ["preprocess", "classify"]
    assert list(table.settings) == ["x2 mbs=8 db=on delay=500us nopref", "x1 mbs=8 db=off method=greedy"]
    assert list(table["requests per execution"]) == [4.0, 1.0]
    assert list(table["queue ms"]) == [0.5, 1.0] and list(table["compute ms"]) == [1.5, 5.0]
    assert list(table["share of the time %"]) == [25.0, 75.0]
    assert views.settings({"steps": STEPS, "concurrency": 4}).endswith("conc=4")


def test_a_single_model_trial_has_no_step_table_and_a_step_without_statistics_shows_none():
    assert views.step_table({"candidate": {"backend": "onnxruntime", "concurrency": 4}}) is None
    table = views.step_table({"candidate": {"steps": STEPS, "concurrency": 4}})
    assert table["share of the time %"].isna().all()
    assert views.text_diff("a\nb", "a\nc", "given", "trial 3").splitlines()[-2:] == ["-b", "+c"]


@pytest.mark.parametrize("same", ["x: 1"])
def test_identical_configs_have_an_empty_diff(same):
    assert views.text_diff(same, same, "given", "trial") == ""

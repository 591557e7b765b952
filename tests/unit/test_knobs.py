"""The knob table drives the space, the suggestions, Triton's default, descriptions and configs."""

import numpy as np
import optuna
import pytest

from tuner import knobs, results
from tuner.candidate import Candidate, describe
from tuner.errors import TunerError
from tuner.experiment import Space, build
from tuner.render import parse, render
from tuner.signature import Signature, Tensor
from tuner.space import context, grid, suggest, triton_default_params

SIGNATURE = Signature(inputs=(Tensor("x", "TYPE_FP32", "float32", (-1, 4)),),
                      outputs=(Tensor("y", "TYPE_FP32", "float32", (-1, 2)),), batched=True)
SAMPLE = {"x": np.zeros((3, 4), np.float32)}


def test_the_space_has_a_field_per_knob_with_its_values_and_description():
    space = Space()
    for knob in knobs.KNOBS:
        assert getattr(space, knob.name) == list(knob.values)
        assert Space.model_fields[knob.name].description == knob.description


def test_space_values_are_checked_against_the_knob():
    with pytest.raises(TunerError, match="space.graph_optimization: Value error, values must be among all, "):
        build({"model": "m.onnx", "space": {"graph_optimization": ["fastest"]}})
    with pytest.raises(TunerError, match="space.max_queue_delay_us: Value error, values must be >= 0"):
        build({"model": "m.onnx", "space": {"max_queue_delay_us": [-1]}})


def test_suggest_asks_exactly_the_knobs_that_exist():
    space = Space()
    point = {"runtime": "onnxruntime:fp32", "instances": 2, "max_batch_size": 8, "dynamic_batching": False,
             "threads": 1, "graph_optimization": "all", "warmup": True}
    trial = optuna.trial.FixedTrial(point)
    candidate = suggest(trial, space, sample_concurrency=False)
    assert trial.params == point  # no queue delay without dynamic batching, no gpus on CPU, no load
    assert (candidate.max_queue_delay_us, candidate.concurrency, candidate.family) == (0, 0, "onnxruntime")


def test_openvino_has_no_onnxruntime_graph_level():
    trial = optuna.trial.FixedTrial(triton_default_params(None, runtime="openvino:fp32"))
    candidate = suggest(trial, Space(), runtimes=["openvino:fp32"], sample_concurrency=False)
    assert "graph_optimization" not in trial.params and candidate.graph_optimization is None


def test_a_knob_set_per_model_under_a_prefix():
    params = {f"encoder.{k}": v for k, v in triton_default_params(None).items()}
    trial = optuna.trial.FixedTrial(params)
    candidate = suggest(trial, Space(), sample_concurrency=False, prefix="encoder.")
    assert set(trial.params) == set(params) and candidate.instances == 1


def test_triton_default_comes_from_the_table():
    assert triton_default_params(None) == {
        "runtime": "onnxruntime:fp32", "instances": 1, "max_batch_size": 4, "dynamic_batching": False,
        "threads": 0, "graph_optimization": "all", "warmup": False}
    assert "max_batch_size" not in triton_default_params(2, batched=False)
    assert triton_default_params(2, batched=False)["concurrency"] == 2


def test_the_grid_is_every_combination_suggest_can_ask_for():
    space = Space(instances=[1, 2], max_batch_size=[4], dynamic_batching=[False, True], max_queue_delay_us=[0, 100],
                  preferred_batch=[False], threads=[0], graph_optimization=["all", "basic"], warmup=[False],
                  concurrency=[1, 4])
    points = grid(space)
    # instances x (no batching + batching x 2 delays) x 2 levels x 2 concurrencies
    assert len(points) == 2 * (1 + 2) * 2 * 2
    for point in points:
        trial = optuna.trial.FixedTrial(point)
        suggest(trial, space)
        assert trial.params == point


def test_describe_names_every_knob_that_exists():
    c = Candidate(instances=2, max_batch_size=32, dynamic_batching=True, max_queue_delay_us=100,
                  threads=1, graph_optimization="basic", concurrency=16)
    assert describe(c) == ("onnxruntime/fp32 x2 mbs=32 db=on delay=100us nopref thr=1 opt=basic warm=n conc=16")
    assert describe(Candidate(backend="openvino", family="openvino")) == "openvino/fp32 x1 thr=0 warm=n conc=ramp"


def test_results_and_the_candidate_carry_every_knob():
    assert set(knobs.NAMES) <= set(results.KNOBS)
    old = {"instances": 1, "max_batch_size": 4, "dynamic_batching": False, "max_queue_delay_us": 0,
           "preferred_batch": False, "threads": 0, "warmup": False, "concurrency": 4, "backend": "onnxruntime",
           "precision": "fp32", "kind": "KIND_CPU", "retired_knob": 1}
    assert Candidate.from_dict(old).graph_optimization is None  # a study stored before the knob existed


@pytest.mark.parametrize("level, native", [("all", None), ("extended", 1), ("basic", -1), ("disabled", 2)])
def test_graph_optimization_reaches_both_config_forms(level, native):
    c = Candidate(max_batch_size=4, graph_optimization=level, concurrency=1)
    adapter = parse(render("adapter", "m", SIGNATURE, c, SAMPLE))
    assert adapter.parameters["graph_optimization_level"].string_value == level
    config = parse(render("native", "m", SIGNATURE, c, SAMPLE))
    if native is None:  # Triton's default: nothing written
        assert not config.optimization.HasField("graph")
    else:
        assert config.optimization.graph.level == native
    assert config.instance_group[0].count == 1 and config.max_batch_size == 4  # the template's part stays


def test_knob_contexts_follow_the_backend():
    assert context("openvino:fp32").family == "openvino"
    assert context("onnxruntime:fp32", batched=False).batched is False
    assert knobs.by_reach("load") == ["concurrency", "request_rate"]


def test_the_request_rate_load_model_asks_for_a_rate_instead_of_a_concurrency():
    params = triton_default_params(None) | {"request_rate": 100}
    trial = optuna.trial.FixedTrial(params)
    candidate = suggest(trial, Space(), sample_concurrency=True, load="request_rate")
    assert "concurrency" not in trial.params and candidate.request_rate == 100 and candidate.concurrency == 0
    assert (candidate.load, candidate.load_level) == ("request_rate", 100)
    assert describe(candidate).endswith("rate=100/s")

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tuner import backends
from tuner.backends import PrepareRequest
from tuner.accuracy import AccuracySpec, CtcCheck, check, reference_outputs


@pytest.fixture(scope="module")
def samples():
    return [{"x": x} for x in np.random.default_rng(0).standard_normal((6, 64)).astype(np.float32)]


def run(path: Path, samples) -> list[dict[str, np.ndarray]]:
    """The candidate side as a client sees it: one request per sample, Triton's batch dim of one."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [{"y": session.run(None, {"x": s["x"][None]})[0]} for s in samples]


def zeroed(source: Path, target: Path) -> Path:
    model = onnx.load(str(source))
    for init in model.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), init.name))
    onnx.save(model, str(target))
    return target


def test_the_reference_passes_against_itself(mlp_onnx, samples):
    reference = reference_outputs(mlp_onnx, samples)
    assert reference[0]["y"].shape == (1, 8)
    report = check(reference, run(mlp_onnx, samples))
    assert report.passed and report.max_rel_error == {"y": 0.0} and report.samples == 6
    assert report.has_nan == {"y": False} and report.has_inf == {"y": False}
    assert report.reason == "max relative error y 0"


def test_fp16_passes_with_its_figures(mlp_onnx, samples, tmp_path):
    fp16 = backends.get("onnxruntime").prepare(PrepareRequest(mlp_onnx, "fp16", tmp_path))
    report = check(reference_outputs(mlp_onnx, samples), run(fp16, samples), AccuracySpec(max_rel_error=0.01))
    assert report.passed, report.reason
    assert 0 < report.max_rel_error["y"] < 2e-3


def test_a_model_with_zeroed_weights_is_rejected_with_the_figures(mlp_onnx, samples, tmp_path):
    broken = zeroed(mlp_onnx, tmp_path / "zeroed.onnx")
    report = check(reference_outputs(mlp_onnx, samples), run(broken, samples))
    assert not report.passed
    assert report.max_rel_error["y"] == pytest.approx(1.0)  # every output is 0: off by the whole range
    assert report.reason == "y: max relative error 1 > 0.1"
    assert report.as_dict()["max_rel_error"] == {"y": pytest.approx(1.0)}


def test_an_fp16_overflow_is_rejected_as_inf():
    # What a GPU running the MLP in fp16 computes for large inputs: sums beyond 65504 become Inf.
    w = np.full((64, 8), 10.0, np.float32)
    x = np.linspace(100, 300, 4 * 64, dtype=np.float32).reshape(4, 64)  # every value and product fits fp16
    reference = [{"y": x[i:i + 1] @ w} for i in range(4)]
    with np.errstate(over="ignore"):
        candidate = [{"y": (x[i:i + 1].astype(np.float16) @ w.astype(np.float16)).astype(np.float32)} for i in range(4)]
    assert np.isinf(candidate[0]["y"]).all() and np.isfinite(reference[0]["y"]).all()  # sums reach 1e5 > 65504
    report = check(reference, candidate)
    assert not report.passed and report.has_inf == {"y": True} and report.has_nan == {"y": False}
    assert "y: Inf where the reference is finite" in report.reason


def test_fp16_conversion_clamps_constants_beyond_its_range_and_the_guard_sees_it(tmp_path):
    # y = x + 1e6: the converter clamps constants beyond fp16's range to 65504.
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["y"])], "bias",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.full(4, 1e6, np.float32), "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    source = tmp_path / "bias.onnx"
    onnx.save(model, str(source))
    samples = [{"x": np.ones(4, np.float32)}]
    fp16 = backends.get("onnxruntime").prepare(PrepareRequest(source, "fp16", tmp_path / "cache"))
    report = check(reference_outputs(source, samples), run(fp16, samples))
    assert not report.passed and report.max_rel_error["y"] == pytest.approx(1 - 65505 / (1e6 + 1), rel=1e-3)
    assert report.reason.startswith("y: max relative error 0.93")


def test_nan_is_rejected_even_without_a_limit():
    reference = [{"y": np.ones((1, 3), np.float32)}]
    report = check(reference, [{"y": np.array([[1, np.nan, 1]], np.float32)}], AccuracySpec(max_rel_error=None))
    assert not report.passed and report.has_nan == {"y": True}
    assert report.max_rel_error == {"y": 0.0}  # measured over the finite values


def test_relative_error_is_against_the_outputs_range_not_each_element():
    # A 0.01 error on an element whose reference is ~0 is 1% of the range, not infinite.
    reference = [{"y": np.array([[1e-9, 1.0]], np.float32)}]
    report = check(reference, [{"y": np.array([[0.01, 1.0]], np.float32)}], AccuracySpec(max_rel_error=0.05))
    assert report.passed and report.max_rel_error["y"] == pytest.approx(0.01, rel=1e-3)


def test_shapes_missing_outputs_and_triton_extra_dims():
    reference = [{"y": np.ones((1, 3), np.float32), "n": np.array([3], np.int32)}]
    aligned = check(reference, [{"y": np.ones((1, 3), np.float32), "n": np.array([[3]], np.int32)}])
    assert aligned.passed and aligned.mismatch_fraction == {"n": 0.0}  # [B] served as [B, 1]
    report = check(reference, [{"y": np.ones((1, 4), np.float32)}])
    assert not report.passed
    assert "sample 0: y has shape (1, 4), reference (1, 3)" in report.reason
    assert "sample 0: output n missing" in report.reason


def test_integer_outputs_are_reported_and_checked_only_when_given_a_limit():
    reference = [{"idx": np.array([[1, 2, 3, 4]])}]
    candidate = [{"idx": np.array([[1, 2, 4, 3]])}]
    report = check(reference, candidate)
    assert report.passed and report.mismatch_fraction == {"idx": 0.5}
    strict = check(reference, candidate, AccuracySpec(output_limits={"idx": 0.1}))
    assert not strict.passed and "idx: 50.00% of values differ (limit 10.00%)" in strict.reason


def ctc_outputs(tokens: list[int], frames: int, vocab: int = 5, padding_token: int = 0):
    """log-probs peaked on `tokens` for the valid frames, then padding frames of another token."""
    lp = np.full((1, frames, vocab), -10.0, np.float32)
    path = tokens + [padding_token] * (frames - len(tokens))
    lp[0, np.arange(frames), path] = -0.01
    return {"ctc_log_probs": lp, "encoder_out_lens": np.array([len(tokens)], np.int32)}


def test_ctc_agreement_counts_valid_frames_only():
    spec = AccuracySpec(max_rel_error=None, ctc=CtcCheck(min_agreement=0.75))
    reference = [ctc_outputs([1, 2, 3, 4], 6, padding_token=0)]
    # One valid frame of four differs; the padding frames differ too but do not count.
    candidate = [ctc_outputs([1, 2, 3, 1], 6, padding_token=4)]
    report = check(reference, candidate, spec)
    assert report.passed and report.ctc_agreement == 0.75
    strict = check(reference, candidate, AccuracySpec(max_rel_error=None, ctc=CtcCheck(min_agreement=0.9)))
    assert not strict.passed and "greedy CTC tokens agree on 75.00% of frames (minimum 90.00%)" in strict.reason


def test_ctc_lengths_must_match():
    reference = [ctc_outputs([1, 2, 3], 4)]
    candidate = [ctc_outputs([1, 2, 3], 4) | {"encoder_out_lens": np.array([[2]], np.int32)}]
    report = check(reference, candidate, AccuracySpec(max_rel_error=None, ctc=CtcCheck()))
    assert not report.passed and "encoder_out_lens differ: [2] vs reference [3]" in report.reason

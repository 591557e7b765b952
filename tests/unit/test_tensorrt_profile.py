"""The TensorRT optimization profile (tensorrt is not installed here: the engine build is faked)."""

import numpy as np

from tuner import backends
from tuner.backends import PrepareRequest, tensorrt
from tuner.signature import Signature, Tensor

SPEECH = Signature(
    inputs=(Tensor("speech", "TYPE_FP32", "float32", (-1, 80)), Tensor("speech_lengths", "TYPE_INT32", "int32", ())),
    outputs=(Tensor("encoder_out", "TYPE_FP32", "float32", (-1, 256)),), batched=True)


def utterances(*frames):
    return [{"speech": np.zeros((t, 80), np.float32), "speech_lengths": np.array([t], np.int32)} for t in frames]


def test_variable_dims_span_the_samples_and_the_batch_the_space():
    profile = tensorrt.shape_profile(SPEECH, utterances(200, 1600, 900), max_batch_size=32)
    assert profile["speech"] == ([1, 200, 80], [32, 1600, 80], [32, 1600, 80])
    assert profile["speech_lengths"] == ([1], [32], [32])
    assert all(isinstance(v, int) for shapes in profile.values() for shape in shapes for v in shape)


def test_without_samples_variable_dims_come_from_the_signature():
    low, high = tensorrt.SIGNATURE_RANGE
    profile = tensorrt.shape_profile(SPEECH, [], max_batch_size=8)
    assert profile["speech"] == ([1, low, 80], [8, high, 80], [8, high, 80])


def test_an_unbatched_model_keeps_its_own_dims():
    sig = Signature(inputs=(Tensor("x", "TYPE_FP32", "float32", (1, -1)),), outputs=(), batched=False)
    profile = tensorrt.shape_profile(sig, [{"x": np.zeros((1, 5))}, {"x": np.zeros((1, 9))}], max_batch_size=0)
    assert profile["x"] == ([1, 5], [1, 9], [1, 9])


def test_fp32_and_fp16_engines_get_a_profile_from_the_requests_samples(tmp_path, monkeypatch):
    built = []

    def build(source, target, precision, profile, timing_cache):  # everything but TensorRT's build
        built.append((precision, profile))
        target.write_bytes(b"plan")
        return {"profile": profile}

    monkeypatch.setattr(tensorrt, "_build", build)
    monkeypatch.setattr("tuner.signature.read_signature", lambda path: SPEECH)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    trt = backends.get("tensorrt")
    for precision in ("fp32", "fp16"):
        trt.prepare(PrepareRequest(model, precision, tmp_path / "cache", samples=utterances(300, 50), max_batch_size=4))
        trt.prepare(PrepareRequest(model, precision, tmp_path / "cache", max_batch_size=4))  # no samples: still an engine
    speech = [profile["speech"] for _, profile in built]
    assert [p for p, _ in built] == ["fp32", "fp32", "fp16", "fp16"]
    assert speech[0] == ([1, 50, 80], [4, 300, 80], [4, 300, 80]) and speech[1][0][1] == tensorrt.SIGNATURE_RANGE[0]

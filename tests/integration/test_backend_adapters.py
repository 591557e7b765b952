"""Every CPU backend and precision this machine has, served through its python-backend adapter by the
real tritonserver, answers like the fp32 reference within its precision's tolerance."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper, numpy_helper

from tuner import accuracy, backends, client
from tuner.backends import PrepareRequest
from tuner.candidate import Candidate
from tuner.errors import TrialError
from tuner.render import render
from tuner.server import ModelPackage
from tuner.server.local import LocalServer
from tuner.signature import read_signature

# Max relative error (against the output's range) each precision may lose on the tiny MLP.
TOLERANCE = {"fp32": 1e-5, "fp16": 5e-3, "bf16": 3e-2, "int8": 0.1}
CASES = [("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("onnxruntime", "int8"),
         ("openvino", "fp32"), ("openvino", "fp16"), ("openvino", "bf16"), ("openvino", "int8")]


def render_adapter(name, signature, candidate, sample, ragged_outputs=None) -> str:
    return render("adapter", name, signature, candidate, sample, ragged_outputs)


def candidate(backend: str, precision: str) -> Candidate:
    return Candidate(instances=1, max_batch_size=8, dynamic_batching=False, max_queue_delay_us=0,
                     preferred_batch=False, threads=1, warmup=False, concurrency=1, backend=backend,
                     precision=precision, kind=backends.get(backend).default_kind,
                     family=backends.get(backend).family)


def ctc_model(path: Path, features: int = 4, vocab: int = 5) -> Path:
    """log_probs = LogSoftmax(x @ W): x [B, T, features], lengths [B] -> log_probs [B, T, vocab], lengths."""
    w = np.random.default_rng(3).standard_normal((features, vocab)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"]),
         helper.make_node("LogSoftmax", ["logits"], ["log_probs"], axis=-1),
         helper.make_node("Identity", ["lengths"], ["out_lengths"])],
        "ctc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "frames", features]),
         helper.make_tensor_value_info("lengths", TensorProto.INT32, ["batch"])],
        [helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, ["batch", "frames", vocab]),
         helper.make_tensor_value_info("out_lengths", TensorProto.INT32, ["batch"])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("adapters")
    with LocalServer(work / "repository", work / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def mlp_setup(mlp_onnx, tmp_path_factory):
    samples = [{"x": x} for x in np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)]
    calibration = [{"x": x} for x in np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)]
    return samples, calibration, accuracy.reference_outputs(mlp_onnx, samples), tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("backend,precision", CASES, ids=[f"{b}-{p}" for b, p in CASES])
def test_adapter_serves_the_precision_within_tolerance(server, mlp_onnx, mlp_setup, backend, precision):
    reason = backends.get(backend).unavailable_reason(None, precision)
    if reason:
        pytest.skip(reason)
    samples, calibration, reference, cache = mlp_setup
    runtime = backends.get(backend)
    artifact = runtime.prepare(PrepareRequest(mlp_onnx, precision, cache, calibration_samples=calibration))
    sig = read_signature(mlp_onnx)
    name = f"mlp_{backend}_{precision}".replace("-", "_")
    config = render_adapter(name, sig, candidate(backend, precision), samples[0])
    server.load(ModelPackage(name, config, runtime.adapter_files(artifact)))
    try:
        outputs = [client.infer(server.grpc_url, name, sig, s) for s in samples]
    finally:
        server.unload(name)
    report = accuracy.check(reference, outputs, accuracy.AccuracySpec(max_rel_error=TOLERANCE[precision]))
    print(f"{backend} {precision}: {report.reason}")
    assert report.passed, report.reason
    assert report.max_rel_error["y"] <= TOLERANCE[precision]


def test_openvino_adapter_runs_new_batch_sizes_and_lengths_and_trims_ragged_outputs(server, tmp_path):
    if reason := backends.get("openvino").unavailable_reason():
        pytest.skip(reason)
    source = ctc_model(tmp_path / "ctc.onnx")
    sig = read_signature(source)
    runtime = backends.get("openvino")
    artifact = runtime.prepare(PrepareRequest(source, "fp32", tmp_path / "cache"))
    sample = {"x": np.zeros((5, 4), np.float32), "lengths": np.array([5], np.int32)}
    config = render_adapter("ctc", sig, candidate("openvino", "fp32"), sample, {"log_probs": "out_lengths"})
    server.load(ModelPackage("ctc", config, runtime.adapter_files(artifact)))
    import onnxruntime as ort

    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        # (frames sent, valid lengths of the rows): new batch sizes and lengths for the compiled model
        for frames, valid in [(5, [5]), (9, [7, 3, 6]), (2, [2, 1]), (30, [12, 4, 9, 12, 1, 7, 8, 2])]:
            x = rng.standard_normal((len(valid), frames, 4)).astype(np.float32)
            lengths = np.array(valid, np.int32)[:, None]
            inputs = [grpcclient.InferInput("x", list(x.shape), "FP32"),
                      grpcclient.InferInput("lengths", list(lengths.shape), "INT32")]
            inputs[0].set_data_from_numpy(x)
            inputs[1].set_data_from_numpy(lengths)
            result = grpc.infer("ctc", inputs)
            expected = session.run(None, {"x": x, "lengths": lengths[:, 0]})[0]
            got = result.as_numpy("log_probs")
            longest = max(valid)
            assert got.shape == (len(valid), longest, 5)  # trimmed to the longest valid length of the request
            np.testing.assert_allclose(got, expected[:, :longest], rtol=1e-5, atol=1e-5)
            assert result.as_numpy("out_lengths").ravel().tolist() == lengths.ravel().tolist()
    finally:
        grpc.close()
        server.unload("ctc")


@pytest.mark.parametrize("level", ["all", "extended", "basic", "disabled"])
def test_onnxruntime_adapter_runs_each_graph_optimization_level(server, mlp_onnx, mlp_setup, level):
    """The graph_optimization knob reaches ONNX Runtime inside the server (an unknown level would
    fail the load) and changes nothing in what the model computes."""
    samples, _, reference, cache = mlp_setup
    runtime = backends.get("onnxruntime")
    artifact = runtime.prepare(PrepareRequest(mlp_onnx, "fp32", cache))
    sig = read_signature(mlp_onnx)
    name = f"mlp_graph_{level}"
    chosen = replace(candidate("onnxruntime", "fp32"), graph_optimization=level)
    config = render_adapter(name, sig, chosen, samples[0])
    assert f'key: "graph_optimization_level" value: {{ string_value: "{level}" }}' in config
    server.load(ModelPackage(name, config, runtime.adapter_files(artifact)))
    try:
        outputs = [client.infer(server.grpc_url, name, sig, s) for s in samples]
    finally:
        server.unload(name)
    report = accuracy.check(reference, outputs, accuracy.AccuracySpec(max_rel_error=TOLERANCE["fp32"]))
    assert report.passed, report.reason


def test_an_unknown_graph_optimization_level_fails_the_load(server, mlp_onnx, mlp_setup):
    samples, _, _, cache = mlp_setup
    runtime = backends.get("onnxruntime")
    artifact = runtime.prepare(PrepareRequest(mlp_onnx, "fp32", cache))
    chosen = replace(candidate("onnxruntime", "fp32"), graph_optimization="all")
    config = render_adapter("mlp_graph_bad", read_signature(mlp_onnx), chosen, samples[0])
    config = config.replace('string_value: "all"', 'string_value: "fastest"')
    assert "fastest" in config
    with pytest.raises(TrialError):
        server.load(ModelPackage("mlp_graph_bad", config, runtime.adapter_files(artifact)))

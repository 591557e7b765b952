import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tuner import backends
from tuner.backends import Backend, PrepareRequest, base, onnxruntime as ort_backend, tensorrt
from tuner.candidate import Candidate
from tuner.errors import TrialError, TunerError
from tuner.render import parse
from tuner.render import render as render_config
from tuner.resources import ADAPTER_DIR
from tuner.signature import Signature, Tensor

sys.path.insert(0, str(ADAPTER_DIR))
import tuner_adapter  # noqa: E402  (templates/python/tuner_adapter.py, the adapters' shared helper)

SPEECH = Signature(
    inputs=(Tensor("speech", "TYPE_FP32", "float32", (-1, 80)), Tensor("speech_lengths", "TYPE_INT32", "int32", ())),
    outputs=(Tensor("encoder_out", "TYPE_FP32", "float32", (-1, 256)), Tensor("lens", "TYPE_INT32", "int32", ())),
    batched=True,
)
SAMPLE = {"speech": np.zeros((300, 80), np.float32), "speech_lengths": np.array([300], np.int32)}


def candidate(backend="onnxruntime", precision="fp32", **changes) -> Candidate:
    base = dict(instances=2, max_batch_size=8, dynamic_batching=True, max_queue_delay_us=500, preferred_batch=True,
                threads=2, warmup=True, concurrency=4, backend=backend, precision=precision,
                kind=backends.get(backend).default_kind)
    return Candidate(**(base | changes))


def render(form: str, c: Candidate, ragged_outputs=None):
    return parse(render_config(form, "m", SPEECH, c, SAMPLE, ragged_outputs))


# --- registry and availability ------------------------------------------------------------------


def test_every_backend_is_registered_with_its_family_and_kind():
    assert backends.names() == ["onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "onnxruntime-openvino",
                                "openvino", "tensorrt", "pytorch"]
    assert {n: backends.get(n).default_kind for n in backends.names()} == {
        "onnxruntime": "KIND_CPU", "onnxruntime-cuda": "KIND_GPU", "onnxruntime-tensorrt": "KIND_GPU",
        "onnxruntime-openvino": "KIND_CPU", "openvino": "KIND_CPU", "tensorrt": "KIND_GPU", "pytorch": "KIND_GPU"}
    with pytest.raises(TunerError, match="unknown backend 'onnx'.*known: onnxruntime"):
        backends.get("onnx")


def test_every_backend_is_a_backend_and_a_backend_must_say_how_it_prepares_and_serves():
    assert all(isinstance(backends.get(n), Backend) for n in backends.names())

    class Incomplete(Backend):
        def check(self, kind, precision):
            return None

    with pytest.raises(TypeError, match="abstract method"):
        Incomplete()


def test_unavailable_reasons_name_what_is_missing():
    cpu = backends.get("onnxruntime")
    assert cpu.unavailable_reason("KIND_CPU", "fp32") is None
    assert "no bf16" in cpu.unavailable_reason("KIND_CPU", "bf16")
    assert "KIND_CPU instances, not KIND_GPU" in cpu.unavailable_reason("KIND_GPU")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "no CUDAExecutionProvider: install onnxruntime-gpu" in backends.get("onnxruntime-cuda").unavailable_reason()
    if "OpenVINOExecutionProvider" not in ort.get_available_providers():
        assert "onnxruntime-openvino" in backends.get("onnxruntime-openvino").unavailable_reason()
    if importlib.util.find_spec("tensorrt") is None:
        assert "TensorRT is not installed" in backends.get("tensorrt").unavailable_reason()
    if importlib.util.find_spec("torch") is None or not __import__("torch").cuda.is_available():
        assert backends.get("pytorch").unavailable_reason() is not None  # GPU only


def test_openvino_reports_hints_this_cpu_would_silently_run_in_f32(monkeypatch):
    from tuner.backends import openvino

    monkeypatch.setattr(openvino, "cpu_capabilities", lambda: ("FP32", "INT8", "BIN"))
    ov = backends.get("openvino")
    assert ov.unavailable_reason(None, "fp32") is None and ov.unavailable_reason(None, "int8") is None
    assert "no bf16 in OpenVINO" in ov.unavailable_reason(None, "bf16")
    monkeypatch.setattr(openvino, "cpu_capabilities", lambda: ("FP32", "INT8", "BF16"))
    assert ov.unavailable_reason(None, "bf16") is None


def test_choices_keep_what_runs_and_say_why_the_rest_does_not(monkeypatch):
    monkeypatch.setattr(tensorrt, "_tensorrt_version", lambda: "10.0")  # as if TensorRT were installed
    usable, skipped = backends.choices(["onnxruntime", "tensorrt"], ["fp32", "bf16"], server_backends=["python"])
    assert usable == [("onnxruntime", "fp32")]
    assert "no bf16" in skipped["onnxruntime:bf16"]
    assert "has no python-backend adapter" in skipped["tensorrt:fp32"]
    usable, _ = backends.choices(["tensorrt"], ["fp16"], server_backends=["python", "tensorrt"])
    assert usable == [("tensorrt", "fp16")]


def test_serving_form_prefers_the_native_backend_and_falls_back_to_the_adapter():
    ov = backends.get("openvino")
    assert backends.serving_form(ov, "fp32", ["python", "openvino"]) == "native"
    assert backends.serving_form(ov, "fp16", ["python", "openvino"]) == "adapter"  # no f16 hint natively
    assert backends.serving_form(ov, "fp32", ["python"]) == "adapter"
    assert backends.serving_form(backends.get("tensorrt"), "fp32", ["python"]) is None


# --- native configs: the field names Triton's backends read ------------------------------------


def test_onnxruntime_cpu_native_config_has_no_accelerator():
    config = render("native", candidate())
    assert config.platform == "onnxruntime_onnx" and not config.HasField("optimization")
    assert config.parameters["intra_op_thread_count"].string_value == "2"


def test_onnxruntime_cuda_is_the_default_provider_of_a_gpu_instance():
    config = render("native", candidate("onnxruntime-cuda", "fp16"))
    assert config.platform == "onnxruntime_onnx"
    assert config.instance_group[0].kind == config.instance_group[0].KIND_GPU
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator


@pytest.mark.parametrize("precision,mode", [("fp32", "FP32"), ("fp16", "FP16"), ("int8", "INT8")])
def test_onnxruntime_tensorrt_is_a_gpu_execution_accelerator(precision, mode):
    config = render("native", candidate("onnxruntime-tensorrt", precision))
    [trt] = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt"
    assert trt.parameters["precision_mode"] == mode
    assert trt.parameters["max_workspace_size_bytes"] == str(4 << 30)
    assert trt.parameters["trt_engine_cache_enable"] == "1" and trt.parameters["trt_engine_cache_path"]
    assert config.instance_group[0].kind == config.instance_group[0].KIND_GPU


def test_onnxruntime_openvino_is_a_cpu_execution_accelerator():
    config = render("native", candidate("onnxruntime-openvino"))
    [accelerator] = config.optimization.execution_accelerators.cpu_execution_accelerator
    assert accelerator.name == "openvino" and not accelerator.parameters
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator


def test_openvino_native_config_uses_the_openvino_backend_parameters():
    config = render("native", candidate("openvino", "bf16"))
    assert config.backend == "openvino" and not config.platform
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params == {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": "2", "HINT_BF16": "YES"}
    assert "HINT_BF16" not in render("native", candidate("openvino", "fp32", threads=0)).parameters
    with pytest.raises(TunerError, match="openvino fp16 has no native config"):
        render("native", candidate("openvino", "fp16"))


def test_tensorrt_and_pytorch_native_configs():
    plan = render("native", candidate("tensorrt", "fp16"))
    assert plan.platform == "tensorrt_plan" and plan.instance_group[0].kind == plan.instance_group[0].KIND_GPU
    lengths = plan.input[1]
    assert list(lengths.dims) == [1] and list(lengths.reshape.shape) == []
    # tuner does not TorchScript the zoo modules: the pytorch backend is measured and exported as
    # the python-backend adapter, and asking for its native form says so.
    with pytest.raises(TunerError, match="--form adapter"):
        render("native", candidate("pytorch", "fp16"))


def test_pytorch_adapter_runs_on_the_gpus_asked_for():
    config = render("adapter", candidate("pytorch", "bf16", gpus="0,1"))
    assert config.backend == "python" and config.parameters["precision"].string_value == "bf16"
    group = config.instance_group[0]
    assert group.kind == group.KIND_GPU and list(group.gpus) == [0, 1] and group.count == 2
    everywhere = render("adapter", candidate("pytorch", "fp32")).instance_group[0]
    assert list(everywhere.gpus) == []  # count instances on every GPU


def test_native_model_files_are_named_as_each_triton_backend_expects(tmp_path):
    artifact = tmp_path / "model.xml"
    assert backends.get("openvino").native_files(artifact) == {"1/model.xml": artifact, "1/model.bin": tmp_path / "model.bin"}
    assert list(backends.get("onnxruntime-cuda").native_files(tmp_path / "a.onnx")) == ["1/model.onnx"]
    assert list(backends.get("tensorrt").native_files(tmp_path / "a.plan")) == ["1/model.plan"]
    assert backends.get("pytorch").adapter_files(tmp_path / "model.json")["1/model.py"].name == "pytorch_model.py"


# --- adapter configs and files ----------------------------------------------------------------


def test_openvino_adapter_config_and_files(tmp_path):
    config = render("adapter", candidate("openvino", "bf16"), {"encoder_out": "lens"})
    assert config.backend == "python" and config.input[0].allow_ragged_batch
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params == {"model_file": "model.xml", "precision_hint": "bf16", "threads": "2",
                      "performance_hint": "LATENCY", "ragged_outputs": '{"encoder_out": "lens"}'}
    files = backends.get("openvino").adapter_files(tmp_path / "model.xml")
    assert files["1/model.py"].name == "openvino_model.py" and files["1/tuner_adapter.py"] == base.ADAPTER_HELPER
    assert files["1/model.bin"] == tmp_path / "model.bin"
    with pytest.raises(TrialError, match="tensorrt has no python-backend adapter"):
        backends.get("tensorrt").adapter_files(tmp_path / "model.plan")


def test_onnxruntime_adapters_name_their_providers():
    params = backends.template_variables(candidate("onnxruntime"), "adapter")["adapter_parameters"]
    assert params["providers"] == "CPUExecutionProvider" and "provider_options" not in params
    assert params["intra_op_threads"] == "2" and params["onnx_file"] == "model.onnx"
    params = backends.template_variables(candidate("onnxruntime-tensorrt", "fp16"), "adapter")["adapter_parameters"]
    assert params["providers"] == "TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider"
    trt = json.loads(params["provider_options"])[0]
    assert trt["trt_fp16_enable"] == "True" and trt["trt_int8_enable"] == "False"


# --- the adapters' shared helper ----------------------------------------------------------------


def test_helper_stacks_ragged_requests_with_zero_padding():
    a, b = np.ones((1, 3, 2), np.float32), np.full((2, 5, 2), 2, np.float32)
    stacked = tuner_adapter.stack([a, b])
    assert stacked.shape == (3, 5, 2) and stacked[0, 3:].sum() == 0 and stacked[1:].min() == 2
    feeds = tuner_adapter.feeds([{"x": a, "n": np.array([[3]])}, {"x": b, "n": np.array([[5], [4]])}], {"x": 3, "n": 1})
    assert feeds["n"].tolist() == [3, 5, 4]  # [B, 1] from Triton -> the model's [B]


def test_helper_gathers_into_a_reused_buffer_padding_every_axis_and_repeating_the_first_row():
    out = np.full((5, 4, 3), 7.0, np.float32)  # a reused buffer: its old contents must not show
    a, b = np.ones((1, 2, 3), np.float32), np.full((2, 4, 2), 2, np.float32)  # shorter on axis 1; on axis 2
    assert tuner_adapter.padded_shape([a, b], rows=5) == (5, 4, 3)
    assert tuner_adapter.padded_shape([a, b], axis1=6) == (3, 6, 3)
    tuner_adapter.gather([a, b], out)
    assert (out[0, :2] == 1).all() and (out[0, 2:] == 0).all()
    assert (out[1:3, :, :2] == 2).all() and (out[1:3, :, 2] == 0).all()
    assert (out[3:] == out[0]).all()  # rows after the requests' items: the first item again


def test_helper_splits_results_and_trims_ragged_outputs_per_request():
    results = {"y": np.arange(3 * 6).reshape(3, 6), "n": np.array([2, 6, 4])}
    first, second = tuner_adapter.split(results, rows=[1, 2], batched=True, ragged_outputs={"y": "n"})
    assert first["y"].shape == (1, 2) and second["y"].shape == (2, 6)
    assert first["n"].tolist() == [[2]] and second["n"].tolist() == [[6], [4]]  # [B] -> [B, 1] for Triton


def test_batch_of_one_mirrors_what_the_adapters_feed():
    feed = base.batch_of_one(SAMPLE, {"speech": 3, "speech_lengths": 1}, batched=True)
    assert feed["speech"].shape == (1, 300, 80) and feed["speech_lengths"].tolist() == [300]


# --- preparing artifacts -------------------------------------------------------------------------


def _feed(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_fp16_graph_keeps_fp32_io_and_runs_on_the_cpu_provider(mlp_onnx, tmp_path):
    artifact = backends.get("onnxruntime").prepare(PrepareRequest(mlp_onnx, "fp16", tmp_path))
    model = onnx.load(str(artifact))
    assert {i.type.tensor_type.elem_type for i in [*model.graph.input, *model.graph.output]} == {onnx.TensorProto.FLOAT}
    assert {i.data_type for i in model.graph.initializer} == {onnx.TensorProto.FLOAT16}
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_allclose(_feed(artifact, x), _feed(mlp_onnx, x), atol=5e-3)


def test_artifacts_are_cached_by_content_and_built_atomically(mlp_onnx, tmp_path):
    cpu, fp16 = backends.get("onnxruntime"), PrepareRequest(mlp_onnx, "fp16", tmp_path)
    first = cpu.prepare(fp16)
    mtime = first.stat().st_mtime_ns
    assert cpu.prepare(fp16) == first and first.stat().st_mtime_ns == mtime
    assert cpu.prepare(PrepareRequest(mlp_onnx, "fp32", tmp_path)) == mlp_onnx  # nothing to convert
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".building-")] == []
    assert backends.artifact_info(first)["settings"]["precision"] == "fp16"


def test_int8_is_static_with_calibration_samples_and_dynamic_without(mlp_onnx, tmp_path):
    rng = np.random.default_rng(1)
    calibration = [{"x": x} for x in rng.standard_normal((32, 64)).astype(np.float32)]
    cpu = backends.get("onnxruntime")
    static = cpu.prepare(PrepareRequest(mlp_onnx, "int8", tmp_path, calibration))
    dynamic = cpu.prepare(PrepareRequest(mlp_onnx, "int8", tmp_path))
    assert backends.artifact_info(static)["int8"] == "static"
    assert backends.artifact_info(dynamic)["int8"] == "dynamic"
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(static)).graph.node}
    x = rng.standard_normal((4, 64)).astype(np.float32)
    reference = _feed(mlp_onnx, x)
    for artifact in (static, dynamic):
        assert np.abs(_feed(artifact, x) - reference).max() < 0.1 * np.abs(reference).max()


def test_openvino_ir_keeps_f32_weights(mlp_onnx, tmp_path):
    ov = backends.get("openvino")
    xml = ov.prepare(PrepareRequest(mlp_onnx, "bf16", tmp_path))
    assert xml.name == "model.xml" and xml.with_suffix(".bin").is_file()
    weights = sum(i.dims[0] * i.dims[1] for i in onnx.load(str(mlp_onnx)).graph.initializer)
    assert xml.with_suffix(".bin").stat().st_size >= 4 * weights  # f32, not save_model's f16 default
    assert ov.prepare(PrepareRequest(mlp_onnx, "fp32", tmp_path)) == xml  # one IR for every float hint


def test_tensorrt_profile_spans_batch_and_sample_lengths():
    samples = [{"speech": np.zeros((t, 80), np.float32), "speech_lengths": np.array([t], np.int32)} for t in (50, 300, 120)]
    profile = tensorrt.shape_profile(SPEECH, samples, max_batch_size=16)
    assert profile["speech"] == ([1, 50, 80], [16, 300, 80], [16, 300, 80])
    assert profile["speech_lengths"] == ([1], [16], [16])
    assert tensorrt.shape_profile(SPEECH, [], 16)["speech"][2] == [16, tensorrt.SIGNATURE_RANGE[1], 80]


def test_tensorrt_sizes_its_profile_from_the_requests_samples(mlp_onnx, tmp_path, monkeypatch):
    # Everything but the engine build, which TensorRT would do: the fake records the profile it gets.
    def build(source, target, precision, profile, timing_cache):
        target.write_bytes(b"plan")
        return {"profile": profile}

    monkeypatch.setattr(tensorrt, "_build", build)
    monkeypatch.setattr("tuner.signature.read_signature", lambda path: SPEECH)
    samples = [{"speech": np.zeros((t, 80), np.float32), "speech_lengths": np.array([t], np.int32)} for t in (50, 300)]
    trt = backends.get("tensorrt")
    plan = trt.prepare(PrepareRequest(mlp_onnx, "fp16", tmp_path, samples=samples, max_batch_size=8))
    assert backends.artifact_info(plan)["profile"]["speech"] == [[1, 50, 80], [8, 300, 80], [8, 300, 80]]
    # int8 calibration inputs stand in for missing samples; with neither, the signature sizes them.
    calibrated = PrepareRequest(mlp_onnx, "fp16", tmp_path, calibration_samples=samples, max_batch_size=8)
    assert trt.prepare(calibrated) == plan
    assert trt.prepare(PrepareRequest(mlp_onnx, "fp32", tmp_path, max_batch_size=8)).exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None,
                    reason="TensorRT is not installed here (nor on the GPU machines): its engine build is untested")
def test_tensorrt_builds_an_fp16_engine(mlp_onnx, tmp_path):
    samples = [{"x": np.zeros(64, np.float32)}]
    plan = backends.get("tensorrt").prepare(PrepareRequest(mlp_onnx, "fp16", tmp_path, samples=samples,
                                                           max_batch_size=8))
    assert plan.name == "model.plan" and plan.stat().st_size > 0


def test_pytorch_needs_the_models_pytorch_definition(mlp_onnx, tmp_path):
    with pytest.raises(TrialError, match="built-in models only"):
        backends.get("pytorch").prepare(PrepareRequest(mlp_onnx, "fp16", tmp_path))
    artifact = backends.get("pytorch").prepare(
        PrepareRequest(mlp_onnx, "fp16", tmp_path, torch_module="tuner.zoo.wenet:wenet-tiny"))
    assert json.loads(artifact.read_text()) == {"torch_module": "tuner.zoo.wenet:wenet-tiny"}


def test_int8_for_tensorrt_needs_calibration(mlp_onnx, tmp_path):
    with pytest.raises(TrialError, match="needs calibration samples"):
        ort_backend.prepare_model(PrepareRequest(mlp_onnx, "int8", tmp_path), target="tensorrt")

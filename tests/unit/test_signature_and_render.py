import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tuner.errors import TrialError, TunerError
from tuner.model_source import generic_samples, resolve
from tuner.render import parse, render, to_json
from tuner.signature import Signature, Tensor, read_signature
from tuner.candidate import Candidate

SPEECH = Signature(
    inputs=(Tensor("speech", "TYPE_FP32", "float32", (-1, 80)), Tensor("speech_lengths", "TYPE_INT32", "int32", ())),
    outputs=(Tensor("encoder_out", "TYPE_FP32", "float32", (-1, 256)), Tensor("lens", "TYPE_INT32", "int32", ())),
    batched=True,
)
SAMPLE = {"speech": np.zeros((300, 80), np.float32), "speech_lengths": np.array([300], np.int32)}


def candidate(**changes) -> Candidate:
    base = dict(instances=2, max_batch_size=8, dynamic_batching=True, max_queue_delay_us=500, preferred_batch=True,
                threads=1, warmup=True, concurrency=4)
    return Candidate(**(base | changes))


def test_signature_of_a_batched_onnx_model(mlp_onnx):
    sig = read_signature(mlp_onnx)
    assert sig.batched
    assert [(t.name, t.triton_type, t.dims) for t in sig.inputs] == [("x", "TYPE_FP32", (64,))]
    assert [(t.name, t.dims) for t in sig.outputs] == [("y", (8,))]


def test_a_non_onnx_file_is_refused_with_a_clear_message(tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_text("this is not a protobuf")
    with pytest.raises(TunerError, match="not a readable ONNX model"):
        read_signature(bogus)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(TunerError, match="not an .onnx file"):
        resolve(str(text), tmp_path)
    with pytest.raises(TunerError, match="neither a built-in model"):
        resolve(str(tmp_path / "missing.onnx"), tmp_path)


def test_adapter_config_has_every_knob_and_parses():
    config = parse(render("adapter", "wenet", SPEECH, candidate(), SAMPLE, {"encoder_out": "lens"}))
    assert config.backend == "python" and config.max_batch_size == 8
    assert config.instance_group[0].count == 2 and config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert list(config.dynamic_batching.preferred_batch_size) == [8]
    speech, lengths = config.input
    assert list(speech.dims) == [-1, 80] and speech.allow_ragged_batch
    assert list(lengths.dims) == [1] and not lengths.allow_ragged_batch
    assert config.parameters["intra_op_threads"].string_value == "1"
    assert config.parameters["ragged_outputs"].string_value == '{"encoder_out": "lens"}'
    warmups = {w.batch_size: w for w in config.model_warmup}
    assert sorted(warmups) == [1, 8]
    assert list(warmups[8].inputs["speech"].dims) == [300, 80]
    assert warmups[8].inputs["speech"].input_data_file == "speech"


def test_knobs_that_are_off_leave_no_trace():
    text = render("adapter", "m", SPEECH, candidate(dynamic_batching=False, warmup=False), SAMPLE)
    config = parse(text)
    assert not config.HasField("dynamic_batching")
    assert not config.model_warmup
    assert not any(i.allow_ragged_batch for i in config.input)  # ragged needs the dynamic batcher


def test_native_config_is_what_the_onnxruntime_backend_reads():
    config = parse(render("native", "wenet", SPEECH, candidate(threads=2), SAMPLE))
    assert config.platform == "onnxruntime_onnx" and not config.backend
    assert config.parameters["intra_op_thread_count"].string_value == "2"
    lengths = config.input[1]
    assert list(lengths.dims) == [1] and lengths.HasField("reshape") and list(lengths.reshape.shape) == []


def test_load_api_json_round_trips_to_the_same_config():
    from google.protobuf import json_format

    text = render("adapter", "m", SPEECH, candidate(), SAMPLE)
    again = json_format.Parse(to_json(text), model_config_pb2.ModelConfig())
    assert again == text_format.Parse(text, model_config_pb2.ModelConfig())


def test_an_invalid_config_is_caught_before_the_server():
    with pytest.raises(TrialError, match="not a valid Triton ModelConfig"):
        parse('name: "m"\nmax_batch_size: "eight"\n')


def test_generic_samples_follow_the_signature(mlp_onnx):
    sig = read_signature(mlp_onnx)
    samples = generic_samples(sig)(np.random.default_rng(0), 3)
    assert len(samples) == 3 and samples[0]["x"].shape == (64,) and samples[0]["x"].dtype == np.float32
    ragged = generic_samples(SPEECH, default_length=20)(np.random.default_rng(0), 1)[0]
    assert ragged["speech"].shape == (20, 80) and ragged["speech_lengths"].dtype == np.int32


def test_a_wenet_style_export_gets_utterances_and_its_ragged_outputs(tmp_path):
    from tuner.zoo import wenet

    exported = wenet.export("wenet-tiny", tmp_path / "zoo").encoder
    source = resolve(str(exported), tmp_path)
    sample = source.sample_inputs(np.random.default_rng(0), 1)[0]
    assert sample["speech"].shape[1] == 80 and sample["speech_lengths"][0] == sample["speech"].shape[0]
    assert source.ragged_outputs["encoder_out"] == "encoder_out_lens"

"""WeNet through the real server: ragged requests batched by Triton's dynamic batcher and padded
by the adapter give each utterance the same outputs as running it alone."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tuner import backends, client, model_source
from tuner.backends import PrepareRequest
from tuner.render import render
from tuner.server import ModelPackage
from tuner.server.local import LocalServer
from tuner.candidate import Candidate


@pytest.fixture(scope="module")
def wenet_tiny(tmp_path_factory):
    return model_source.resolve("wenet-tiny-encoder", tmp_path_factory.mktemp("zoo"))


def _alone(source, sample):
    import onnxruntime as ort

    session = ort.InferenceSession(str(source.onnx_path), providers=["CPUExecutionProvider"])
    feed = {"speech": sample["speech"][None], "speech_lengths": sample["speech_lengths"]}
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


def test_a_padded_ragged_batch_equals_each_utterance_alone(wenet_tiny, tmp_path):
    source = wenet_tiny
    samples = source.sample_inputs(np.random.default_rng(3), 6)
    lengths = sorted({s["speech"].shape[0] for s in samples})
    assert len(lengths) > 3, "the samples must differ in length for this test to mean anything"
    # A long queue delay makes the batcher gather the concurrent requests into one execution.
    candidate = Candidate(instances=1, max_batch_size=8, dynamic_batching=True, max_queue_delay_us=300_000,
                          preferred_batch=False, threads=1, warmup=False, concurrency=6)
    config = render("adapter", source.name, source.signature, candidate, samples[0], source.ragged_outputs)
    files = backends.get("onnxruntime").adapter_files(source.onnx_path)
    with LocalServer(tmp_path / "repo", tmp_path / "server.log") as server:
        server.load(ModelPackage(source.name, config, files))
        with ThreadPoolExecutor(len(samples)) as pool:
            served = list(pool.map(lambda s: client.infer(server.grpc_url, source.name, source.signature, s), samples))
        stats = grpcclient.InferenceServerClient(server.grpc_url).get_inference_statistics(source.name, as_json=True)

    model_stats = stats["model_stats"][0]
    executions, inferences = int(model_stats["execution_count"]), int(model_stats["inference_count"])
    assert inferences == len(samples) and executions < inferences, "requests were never batched together"

    for sample, outputs in zip(samples, served):
        expected = _alone(source, sample)
        valid = int(expected["encoder_out_lens"][0])
        assert outputs["encoder_out_lens"].reshape(-1)[0] == valid
        # Ragged outputs come back trimmed to the request's own valid length, not the batch's longest.
        assert outputs["encoder_out"].shape[1] == valid
        for name in ("encoder_out", "ctc_log_probs", "beam_log_probs"):
            np.testing.assert_allclose(outputs[name][0, :valid], expected[name][0, :valid], rtol=1e-4, atol=1e-4)


def test_the_pytorch_adapter_serves_the_same_model_as_the_onnx_export(wenet_tiny, tmp_path):
    """The GPU backend's adapter, run here on a CPU instance: the zoo's PyTorch definition gives
    the exported ONNX model's outputs (on a GPU the same code runs on the instance's device)."""
    source = wenet_tiny
    samples = source.sample_inputs(np.random.default_rng(5), 3)
    candidate = Candidate(instances=1, max_batch_size=4, dynamic_batching=False, max_queue_delay_us=0,
                          preferred_batch=False, threads=1, warmup=False, concurrency=1,
                          backend="pytorch", precision="fp32", kind="KIND_CPU", family="pytorch")
    pytorch = backends.get("pytorch")
    artifact = pytorch.prepare(PrepareRequest(source.onnx_path, "fp32", tmp_path / "artifacts",
                                               torch_module=source.torch_module))
    config = render("adapter", source.name, source.signature, candidate, samples[0], source.ragged_outputs)
    with LocalServer(tmp_path / "repo", tmp_path / "server.log") as server:
        server.load(ModelPackage(source.name, config, pytorch.adapter_files(artifact)))
        for sample in samples:
            served = client.infer(server.grpc_url, source.name, source.signature, sample)
            expected = _alone(source, sample)
            np.testing.assert_array_equal(served["encoder_out_lens"].reshape(-1), expected["encoder_out_lens"])
            np.testing.assert_allclose(served["ctc_log_probs"], expected["ctc_log_probs"], rtol=1e-4, atol=1e-4)

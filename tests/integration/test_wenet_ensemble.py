"""The WeNet audio-to-text ensemble in the real tritonserver gives the in-process reference's text.

wenet-tiny keeps it quick: one export (about 45 s on a 2-core machine) serves both tests.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tuner.server.local import LocalServer
from tuner.zoo import wenet
from tuner.zoo.wenet import ensemble, pipeline

VARIANT = "wenet-tiny"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return wenet.export(VARIANT, tmp_path_factory.mktemp("zoo"))


def transcribe(url: str, model: str, waveform: np.ndarray) -> tuple[tuple[int, ...], str]:
    """One utterance through the ensemble: (token ids, text)."""
    wav = grpcclient.InferInput(ensemble.WAV, [1, waveform.size], "FP32")
    wav.set_data_from_numpy(waveform.reshape(1, -1))
    lens = grpcclient.InferInput(ensemble.WAV_LENS, [1, 1], "INT32")
    lens.set_data_from_numpy(np.array([[waveform.size]], np.int32))
    outputs = [grpcclient.InferRequestedOutput(n) for n in (ensemble.TRANSCRIPTS, ensemble.TOKENS)]
    client = grpcclient.InferenceServerClient(url)
    try:
        result = client.infer(model, [wav, lens], outputs=outputs, client_timeout=120)
    finally:
        client.close()
    text = result.as_numpy(ensemble.TRANSCRIPTS).reshape(-1)[0].decode("utf-8")
    return tuple(int(i) for i in result.as_numpy(ensemble.TOKENS).reshape(-1)), text


def test_concurrent_utterances_batched_in_the_ensemble_get_the_reference_text(artifacts, tmp_path):
    waveforms = pipeline.sample_waveforms(np.random.default_rng(15), 5, min_seconds=2.0, max_seconds=6.0)
    assert len({w.size for w in waveforms}) == len(waveforms), "the utterances must differ in length"
    # A long queue delay on every step lets the batchers gather the concurrent requests.
    gather = replace(ensemble.default_step(), max_queue_delay_us=300_000)
    spec = ensemble.EnsembleSpec(VARIANT, method="rescore", steps={s: gather for s in ensemble.STEPS})
    models = ensemble.packages(spec, artifacts, tmp_path / "work")

    with LocalServer(tmp_path / "repo", tmp_path / "server.log") as server:
        for package in models:  # composing models first, the ensemble last
            server.load(package)
        with ThreadPoolExecutor(len(waveforms)) as pool:
            served = list(pool.map(lambda w: transcribe(server.grpc_url, spec.model_name, w), waveforms))
        stats_client = grpcclient.InferenceServerClient(server.grpc_url)
        stats = {s: stats_client.get_inference_statistics(s, as_json=True)["model_stats"][0] for s in ensemble.STEPS}
        stats_client.close()

    features = stats[ensemble.FEATURES]
    assert int(features["inference_count"]) == len(waveforms)
    assert int(features["execution_count"]) < len(waveforms), "the feature extractor never batched requests"
    assert int(stats[ensemble.SCORING]["inference_count"]) == len(waveforms)

    reference = pipeline.ReferencePipeline(VARIANT, method="rescore")
    for waveform, (ids, text) in zip(waveforms, served):
        expected = reference(waveform)
        assert ids == expected.ids
        assert text == expected.text
        assert len(text) > 0


def test_the_written_repository_loads_from_disk_in_a_fresh_server_and_answers(artifacts, tmp_path):
    spec = ensemble.EnsembleSpec(VARIANT, method="prefix_beam", beam=4)
    repository = ensemble.write_repository(tmp_path / "repo", ensemble.packages(spec, artifacts, tmp_path / "work"))
    assert sorted(p.name for p in repository.iterdir()) == sorted([*ensemble.STEPS, VARIANT])

    waveform = pipeline.speech_like_waveform(np.random.default_rng(7), 3.0)
    with LocalServer(repository, tmp_path / "server.log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            # No config override: Triton reads every config.pbtxt from disk and, for an
            # ensemble, loads its composing models too.
            client.load_model(VARIANT, client_timeout=120)
            ready = {name: client.is_model_ready(name) for name in (*ensemble.STEPS, VARIANT)}
        finally:
            client.close()
        assert all(ready.values()), ready
        ids, text = transcribe(server.grpc_url, VARIANT, waveform)

    expected = pipeline.ReferencePipeline(VARIANT, method="prefix_beam", beam=4)(waveform)
    assert (ids, text) == (expected.ids, expected.text)

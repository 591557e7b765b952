"""The real perf_analyzer drives the served wenet-tiny ensemble with real waveforms of 2-16 s,
and each composing step's share of the server latency is read from its report."""

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tuner.server.local import LocalServer
from tuner.zoo import wenet
from tuner.zoo.wenet import ensemble, load, pipeline

VARIANT = "wenet-tiny"


def test_perf_analyzer_sends_the_waveforms_and_every_step_gets_its_share(tmp_path):
    artifacts = wenet.export(VARIANT, tmp_path / "zoo")
    spec = ensemble.EnsembleSpec(VARIANT, method="prefix_beam", beam=4)
    repository = ensemble.write_repository(tmp_path / "repo", ensemble.packages(spec, artifacts, tmp_path / "work"))
    waveforms = pipeline.sample_waveforms(np.random.default_rng(3), 4)  # 2-16 s, one per 3.5 s stratum

    with LocalServer(repository, tmp_path / "server.log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            client.load_model(VARIANT, client_timeout=120)
        finally:
            client.close()
        result = load.measure(VARIANT, server.grpc_url, waveforms, concurrency=2, seconds=6.0,
                              workdir=tmp_path / "perf")

    # perf_analyzer was given one data set per utterance, each of its own length.
    data = json.loads((tmp_path / "perf" / "input-data.json").read_text())["data"]
    assert [d[ensemble.WAV]["shape"] for d in data] == [[w.size] for w in waveforms]
    assert [d[ensemble.WAV_LENS]["content"] for d in data] == [[w.size] for w in waveforms]
    assert f"with {len(waveforms)} step/steps" in result.report  # perf_analyzer read them all

    m = result.measurement
    assert m.concurrency == 2
    assert m.throughput > 0
    assert 0 < m.p50_ms <= m.p99_ms
    assert result.audio_seconds_per_second == pytest.approx(m.throughput * load.mean_seconds(waveforms))

    assert set(result.steps) == set(ensemble.STEPS)
    assert sum(s["share"] for s in result.steps.values()) == pytest.approx(1.0, abs=1e-9)
    for step, s in result.steps.items():
        assert s["inference_count"] > 0, step
        assert s["compute_us"] > 0 and 0 < s["share"] < 1, step
    # The steps' latencies add up to the ensemble's end-to-end latency, less the network and
    # client: never more than the client saw.
    assert sum(s["busy_us"] for s in result.steps.values()) / 1000 <= m.avg_ms

"""The hand-written pipeline repositories (tests/pipeline_models.py) load in the real tritonserver
and answer with the in-process reference, behind an ensemble and behind a BLS model."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

import pipeline_models as pm
from tuner.server.local import LocalServer

# Requests of different batch sizes, sent together.
BATCH_SIZES = (1, 3, 2, 4, 1, 2)

REPOSITORIES = {
    "ensemble": (pm.two_step_ensemble, "scorer", ["scorer"]),
    # A BLS model declares no dependencies: its steps are loaded first, by name.
    "bls": (pm.bls_pipeline, "bls_scorer", [pm.PREPROCESS, pm.CLASSIFY, "bls_scorer"]),
}


def infer(url: str, model: str, raw: np.ndarray) -> dict[str, np.ndarray]:
    tensor = grpcclient.InferInput(pm.RAW, list(raw.shape), "FP32")
    tensor.set_data_from_numpy(raw)
    outputs = [grpcclient.InferRequestedOutput(n) for n in (pm.SCORES, pm.LABEL)]
    client = grpcclient.InferenceServerClient(url)
    try:
        result = client.infer(model, [tensor], outputs=outputs, client_timeout=30)
    finally:
        client.close()
    return {n: result.as_numpy(n) for n in (pm.SCORES, pm.LABEL)}


@pytest.mark.parametrize("kind", REPOSITORIES)
def test_written_configs_are_valid_model_configs(kind, tmp_path):
    write, top, _ = REPOSITORIES[kind]
    repository = write(tmp_path / "repo", top)
    assert sorted(p.name for p in repository.iterdir()) == sorted([pm.PREPROCESS, pm.CLASSIFY, top])
    for folder in repository.iterdir():
        config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert config.name == folder.name
        assert config.max_batch_size == pm.MAX_BATCH_SIZE
        assert not config.HasField("dynamic_batching")


def test_input_data_holds_one_raw_row_per_data_set(tmp_path):
    import json

    data = json.loads(pm.input_data(tmp_path / "data.json", n=5, seed=3).read_text())["data"]
    assert len(data) == 5
    assert data[0][pm.RAW]["shape"] == [pm.WIDTH]
    np.testing.assert_allclose(data[4][pm.RAW]["content"], pm.sample_raw(5, 3)[4])


@pytest.mark.parametrize("kind", REPOSITORIES)
def test_concurrent_requests_get_the_reference_outputs(kind, tmp_path):
    write, top, to_load = REPOSITORIES[kind]
    repository = write(tmp_path / "repo", top)
    raws = [pm.sample_raw(b, seed=i) for i, b in enumerate(BATCH_SIZES)]

    with LocalServer(repository, tmp_path / "server.log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            for name in to_load:  # config.pbtxt from disk: what the user wrote, no override
                client.load_model(name, client_timeout=120)
            assert all(client.is_model_ready(n) for n in (pm.PREPROCESS, pm.CLASSIFY, top))
            with ThreadPoolExecutor(len(raws)) as pool:
                served = list(pool.map(lambda raw: infer(server.grpc_url, top, raw), raws))
            classify_stats = client.get_inference_statistics(pm.CLASSIFY, as_json=True)["model_stats"][0]
        finally:
            client.close()

    assert int(classify_stats["inference_count"]) == sum(BATCH_SIZES)
    for raw, outputs in zip(raws, served):
        expected = pm.reference(raw)
        assert outputs[pm.SCORES].shape == (len(raw), pm.CLASSES)
        np.testing.assert_allclose(outputs[pm.SCORES], expected[pm.SCORES], rtol=1e-5, atol=1e-6)
        assert outputs[pm.LABEL].shape == (len(raw), 1)
        assert outputs[pm.LABEL].tolist() == expected[pm.LABEL].tolist()

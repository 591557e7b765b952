"""Pipeline sources resolved and their accuracy guard run against a real tritonserver.

wenet-tiny (the pipeline): exported and written once into a module-scoped cache (the export is about
45 s on a 2-core machine), deployed as given, checked with max_cer 0, then its scoring step
switched to greedy decoding by config parameter alone. A user's two-step ensemble (tests/
pipeline_models.py) is served beside it: its reference is its own as-given outputs.
"""

import json
import time

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

import pipeline_models
from tuner.errors import TunerError
from tuner.pipeline import repository
from tuner.pipeline.guard import PipelineGuard
from tuner.pipeline.source import resolve
from tuner.server import ModelPackage
from tuner.server.local import LocalServer
from tuner.zoo.wenet import ensemble


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def wenet_source(cache_dir):
    return resolve("wenet-tiny", cache_dir)


def test_the_wenet_tiny_pipeline_resolves_once_into_its_cache(wenet_source, cache_dir):
    source = wenet_source
    repo = source.repository
    assert (source.name, repo.top, repo.kind) == ("wenet-tiny", "wenet-tiny", "ensemble")
    assert list(repo.steps) == list(ensemble.STEPS)
    assert repo.root.is_relative_to(cache_dir)
    for step in repo.steps.values():  # Triton's default scheduling
        assert step.config.max_batch_size == 4 and not step.config.HasField("dynamic_batching")
        assert [g.count for g in step.config.instance_group] == [1]
    assert (repo.root / ensemble.SCORING / "1" / "decoder.onnx").is_file()
    assert repo.steps[ensemble.SCORING].config.parameters["method"].string_value == "rescore"
    assert source.parameters == {ensemble.SCORING: {"method": ("greedy", "prefix_beam", "rescore"),
                                                    "beam": ("4", "10")}}
    data = json.loads(source.input_data.read_text())["data"]
    assert len(data) == 16 and len({len(d[ensemble.WAV]["content"]) for d in data}) == 16
    assert 2.0 <= source.mean_seconds <= 16.0
    assert len(source.requests) == len(source.reference) == 4
    assert all(r[ensemble.TRANSCRIPTS].dtype == object and r[ensemble.TOKENS].dtype == np.int64
               for r in source.reference)

    written = (repo.root / ensemble.SCORING / "config.pbtxt").stat().st_mtime_ns
    again = resolve("wenet-tiny", cache_dir)
    assert again.repository.root == repo.root
    assert (repo.root / ensemble.SCORING / "config.pbtxt").stat().st_mtime_ns == written  # not rewritten


def test_user_repositories_resolve_and_other_models_are_left_to_model_source(tmp_path, cache_dir):
    ens = pipeline_models.two_step_ensemble(tmp_path / "shop")
    source = resolve(str(ens), cache_dir, seed=3)
    assert (source.name, source.repository.kind, source.reference, source.parameters) == \
        ("shop", "ensemble", None, {})
    assert len(source.requests) == 8 and source.requests[0][pipeline_models.RAW].shape == (pipeline_models.WIDTH,)
    assert source.input_data.is_relative_to(cache_dir)
    assert len(json.loads(source.input_data.read_text())["data"]) == 8

    bls = pipeline_models.bls_pipeline(tmp_path / "bls")
    assert resolve(f"{bls}:bls_scorer", cache_dir).repository.kind == "bls"
    assert resolve("wenet-tiny-encoder", cache_dir) is None  # a zoo model, not a pipeline
    assert resolve(str(tmp_path / "nothing-here"), cache_dir) is None

    strings = tmp_path / "strings"
    pipeline_models.two_step_ensemble(strings)
    config = strings / "scorer" / "config.pbtxt"
    config.write_text(config.read_text().replace("TYPE_FP32", "TYPE_STRING", 1))
    with pytest.raises(TunerError, match="not supported yet"):
        resolve(str(strings), cache_dir)


def with_parameter(package: ModelPackage, key: str, value: str) -> ModelPackage:
    config = text_format.Parse(package.config_pbtxt, ModelConfig())
    config.parameters[key].string_value = value
    return ModelPackage(package.name, text_format.MessageToString(config), package.files)


def test_the_guard_passes_the_deployed_pipelines_and_reports_the_cer_of_greedy_scoring(wenet_source, cache_dir,
                                                                                      tmp_path):
    started = time.monotonic()
    models = repository.packages(wenet_source.repository, {}, workdir=tmp_path / "work")
    user = resolve(str(pipeline_models.two_step_ensemble(tmp_path / "shop")), cache_dir)
    user_models = repository.packages(user.repository, {}, workdir=tmp_path / "user-work")
    with LocalServer(tmp_path / "repo", tmp_path / "server.log") as server:
        for package in [*models, *user_models]:  # composing models first, then the top
            server.load(package)

        guard = PipelineGuard(wenet_source, max_cer=0.0, max_rel_error=0.1)
        verdict = guard.check(server.grpc_url)
        assert verdict["ok"], verdict
        assert verdict["outputs"][ensemble.TRANSCRIPTS] == {"metric": "cer", "value": 0.0, "limit": 0.0}
        assert verdict["outputs"][ensemble.TOKENS]["value"] == 0.0

        scoring = next(p for p in models if p.name == ensemble.SCORING)
        server.load(with_parameter(scoring, "method", "greedy"))
        greedy = guard.check(server.grpc_url)
        cer = greedy["outputs"][ensemble.TRANSCRIPTS]
        assert cer["metric"] == "cer" and 0.0 <= cer["value"] < float("inf")
        assert greedy["ok"] == (cer["value"] <= 0.0)
        lenient = PipelineGuard(wenet_source, max_cer=cer["value"], max_rel_error=0.1).check(server.grpc_url)
        assert lenient["ok"], lenient

        # A user's pipeline: its reference is its own as-given outputs (text LABEL, float SCORES).
        user_guard = PipelineGuard(user, max_cer=0.0, max_rel_error=1e-6)
        user_guard.take_reference(server.grpc_url)
        user_verdict = user_guard.check(server.grpc_url)
    assert user_verdict["ok"], user_verdict
    assert user_verdict["outputs"][pipeline_models.LABEL]["metric"] == "cer"
    assert user_verdict["outputs"][pipeline_models.SCORES]["metric"] == "rel_error"
    print(f"greedy scoring against rescoring: CER {cer['value']:.3f}; {time.monotonic() - started:.0f} s")

"""The zoo's GPU pipeline (wenet-tiny-gpu) written on a machine without a GPU: its
repository's configs parse as Triton ModelConfigs with the right kinds, parameters and files, its
searched encoder parameters reach the pytorch adapter's settings, and its reference is the CPU
pipeline's. Nothing is served here (no GPU); the export of wenet-tiny takes about 35 s."""

import json
from dataclasses import replace

import pytest
from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

torch = pytest.importorskip("torch")

from tuner.experiment import Space  # noqa: E402
from tuner.pipeline import repository, space  # noqa: E402
from tuner.pipeline.source import ZOO_PIPELINES, resolve  # noqa: E402
from template_modules import load_template
from tuner.resources import ADAPTER_DIR  # noqa: E402
from tuner.zoo.wenet import ensemble, model  # noqa: E402

TINY = "wenet-tiny"
ENCODER_SEARCH = {"precision": ("fp32", "tf32", "fp16", "bf16"), "attention": ("native", "sdpa"),
                  "length_buckets": ("off", "256,512,1024,1600"), "cuda_graphs": ("false", "true")}


def pytorch_adapter():
    return load_template("pytorch_model.py", "tuner_pytorch_model_gpu_pipeline_test")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def gpu_source(cache_dir):
    return resolve("wenet-tiny-gpu", cache_dir)


def read_config(path) -> ModelConfig:
    return text_format.Parse(path.read_text(), ModelConfig())


def parameters(config: ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def model_config_kind(group) -> str:
    return type(group).Kind.Name(group.kind)


def test_the_zoo_pipelines_name_a_variant_and_a_device():
    assert ZOO_PIPELINES["wenet"] == ("wenet", "cpu")
    assert ZOO_PIPELINES["wenet-tiny"] == (TINY, "cpu")
    assert ZOO_PIPELINES["wenet-gpu"] == ("wenet", "gpu")
    assert ZOO_PIPELINES["wenet-tiny-gpu"] == (TINY, "gpu")


def test_the_gpu_repository_is_written_and_its_configs_parse(gpu_source, cache_dir):
    repo = gpu_source.repository
    assert (gpu_source.name, repo.top, repo.kind) == ("wenet-tiny-gpu", TINY, "ensemble")
    assert list(repo.steps) == list(ensemble.STEPS) and repo.root.is_relative_to(cache_dir)
    configs = {name: read_config(repo.root / name / "config.pbtxt") for name in (*ensemble.STEPS, TINY)}
    kinds = {name: [model_config_kind(g) for g in configs[name].instance_group] for name in ensemble.STEPS}
    assert kinds == {ensemble.FEATURES: ["KIND_GPU"], ensemble.ENCODER: ["KIND_GPU"], ensemble.SCORING: ["KIND_CPU"]}
    assert configs[TINY].platform == "ensemble"
    assert [s.model_name for s in configs[TINY].ensemble_scheduling.step] == list(ensemble.STEPS)
    for name in ensemble.STEPS:  # Triton's default scheduling, python backend
        assert configs[name].backend == "python" and configs[name].max_batch_size == 4
        assert not configs[name].HasField("dynamic_batching")

    encoder = parameters(configs[ensemble.ENCODER])
    ragged = json.loads(encoder.pop("ragged_outputs"))
    assert encoder == {"model_file": "model.json", "precision": "fp32", "attention": "native", "compile": "off",
                       "length_buckets": "off"}  # cuda_graphs: not without buckets
    assert set(ragged) == {"encoder_out", "ctc_log_probs", "beam_log_probs", "beam_log_probs_idx"}
    assert parameters(configs[ensemble.SCORING])["method"] == "rescore"

    encoder_dir = repo.root / ensemble.ENCODER / "1"
    assert sorted(p.name for p in encoder_dir.iterdir()) == ["model.json", "model.py", "tuner_adapter.py"]
    assert json.loads((encoder_dir / "model.json").read_text()) == {"torch_module": f"tuner.zoo.wenet:{TINY}"}
    assert (encoder_dir / "model.py").read_bytes() == (ADAPTER_DIR / "pytorch_model.py").read_bytes()
    assert (repo.root / ensemble.FEATURES / "1" / "features.py").is_file()
    assert (repo.root / ensemble.SCORING / "1" / "decoder.onnx").is_file()

    again = resolve("wenet-tiny-gpu", cache_dir)
    assert again.repository.root == repo.root  # written once, then reused


def test_the_gpu_source_searches_the_encoder_ladder_and_scoring(gpu_source):
    assert gpu_source.parameters == {
        ensemble.ENCODER: ENCODER_SEARCH,
        ensemble.SCORING: {"method": ("greedy", "prefix_beam", "rescore"), "beam": ("4", "10")},
    }
    spaces = space.step_spaces(gpu_source.repository, Space(), parameters=gpu_source.parameters)
    widened = space.widen(spaces, gpu_source.repository)
    assert widened[ensemble.ENCODER].parameters == ENCODER_SEARCH  # the written values are among the choices
    given = dict(space.baseline(gpu_source.repository, widened).steps[ensemble.ENCODER].parameters)
    assert given == {"precision": "fp32", "attention": "native", "length_buckets": "off", "cuda_graphs": "false"}


def test_searched_encoder_parameters_reach_the_pytorch_adapter(gpu_source, tmp_path):
    pm = pytorch_adapter()
    module, _, _ = model.serving_module(TINY)
    given = space.baseline(gpu_source.repository, space.step_spaces(
        gpu_source.repository, Space(), parameters=gpu_source.parameters))
    cases = {
        ("fp16", "sdpa", "256,512,1024,1600", "true"): pm.Settings("fp16", "sdpa", "off", (256, 512, 1024, 1600), True),
        # Graphs without buckets: ignored, the load does not fail.
        ("bf16", "native", "off", "true"): pm.Settings("bf16", "native", "off", (), False),
    }
    for (precision, attention, buckets, graphs), expected in cases.items():
        encoder = given.steps[ensemble.ENCODER]
        chosen = {"precision": precision, "attention": attention, "length_buckets": buckets, "cuda_graphs": graphs}
        steps = given.steps | {ensemble.ENCODER: replace(encoder, parameters=tuple(sorted(chosen.items())))}
        dest = repository.write(gpu_source.repository, steps, tmp_path / f"{precision}-{graphs}")
        config = read_config(dest / ensemble.ENCODER / "config.pbtxt")
        assert model_config_kind(config.instance_group[0]) == "KIND_GPU"
        settings = pm.Settings.from_parameters(parameters(config))
        assert settings == expected
        assert pm.refusal(settings, "cuda:0", module) is None
        assert (dest / ensemble.ENCODER / "1" / "model.json").is_file()


def test_the_reference_is_the_cpu_pipelines(gpu_source, cache_dir):
    cpu = resolve("wenet-tiny", cache_dir)
    assert cpu.repository.root != gpu_source.repository.root
    assert len(gpu_source.reference) == len(cpu.reference) == 4
    for ours, theirs in zip(gpu_source.reference, cpu.reference):
        assert ours.keys() == theirs.keys()
        for name in ours:
            assert (ours[name] == theirs[name]).all(), name
    cpu_encoder = read_config(cpu.repository.root / ensemble.ENCODER / "config.pbtxt")
    assert model_config_kind(cpu_encoder.instance_group[0]) == "KIND_CPU"
    assert parameters(cpu_encoder)["onnx_file"] == "model.onnx"

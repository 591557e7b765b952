"""A pipeline repository read from disk, its steps' settings, and the repository they deploy."""

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from tuner.errors import TunerError
from tuner.pipeline import repository
from tuner.pipeline.repository import StepSettings, apply, as_given, describe, is_pipeline, read, split_model_arg

PYTHON_MODEL = """
backend: "python"
max_batch_size: {mbs}
input [ {{ name: "IN" data_type: TYPE_FP32 dims: [ -1 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] }} ]
{extra}
"""


def ensemble(name: str, steps: list[str], mbs: int = 8) -> str:
    body = "\n".join(f'step [ {{ model_name: "{s}" model_version: -1 input_map {{ key: "IN" value: "IN" }} '
                     f'output_map {{ key: "OUT" value: "OUT" }} }} ]' for s in steps)
    return f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {mbs}\nensemble_scheduling {{ {body} }}\n'


def add_model(root: Path, name: str, config: str, files: dict[str, str] | None = None) -> Path:
    directory = root / name
    (directory / "1").mkdir(parents=True)
    (directory / "config.pbtxt").write_text(config)
    for relative, text in (files or {}).items():
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_text(text)
    return directory


def python_model(mbs: int = 8, extra: str = "") -> str:
    return PYTHON_MODEL.format(mbs=mbs, extra=extra)


@pytest.fixture
def two_step(tmp_path: Path) -> Path:
    """asr: pre -> clf; clf's config omits its name and has a user's dynamic batcher."""
    add_model(tmp_path, "asr", ensemble("asr", ["pre", "clf"], mbs=16))
    add_model(tmp_path, "pre", 'name: "pre"\n' + python_model(8, 'instance_group [ { count: 1 kind: KIND_CPU } ]'),
              {"1/model.py": "# pre\n"})
    add_model(tmp_path, "clf", python_model(8, """
        dynamic_batching { max_queue_delay_microseconds: 100 priority_levels: 2 default_priority_level: 1 }
        parameters { key: "method" value: { string_value: "greedy" } }
        version_policy { latest { num_versions: 1 } }"""), {"1/model.py": "# clf\n", "1/assets/units.txt": "a\n"})
    return tmp_path


def parse(text: str) -> ModelConfig:
    return text_format.Parse(text, ModelConfig())


def test_read_finds_the_top_ensemble_and_its_steps_in_order(two_step):
    repo = read(two_step)
    assert (repo.top, repo.kind, list(repo.steps), repo.fixed) == ("asr", "ensemble", ["pre", "clf"], {})
    assert repo.steps["clf"].config.name == "clf"  # named after its directory
    assert repo.steps["pre"].directory == two_step / "pre"
    assert is_pipeline(two_step)
    assert not is_pipeline(two_step / "pre") and not is_pipeline(two_step / "nowhere")


def test_nested_ensembles_are_flattened_and_kept_as_fixed_models(tmp_path):
    add_model(tmp_path, "top", ensemble("top", ["inner", "post"]))
    add_model(tmp_path, "inner", ensemble("inner", ["a", "b"]))
    for name in ("a", "b", "post"):
        add_model(tmp_path, name, python_model(), {"1/model.py": ""})
    repo = read(tmp_path)
    assert (repo.top, list(repo.steps), list(repo.fixed)) == ("top", ["a", "b", "post"], ["inner"])
    names = [p.name for p in repository.packages(repo, {}, tmp_path / "work")]
    assert names == ["a", "b", "post", "inner", "top"]


def test_a_bls_model_composes_every_other_model_by_name(tmp_path):
    add_model(tmp_path, "bls", python_model(0), {"1/model.py": ""})
    for name in ("zeta", "alpha"):
        add_model(tmp_path, name, python_model(), {"1/model.py": ""})
    repo = read(tmp_path, "bls")
    assert (repo.kind, list(repo.steps)) == ("bls", ["alpha", "zeta"])
    assert not is_pipeline(tmp_path)
    with pytest.raises(TunerError, match=r"holds no ensemble: .* name it with --model .*:MODEL"):
        read(tmp_path)


@pytest.mark.parametrize("arg, expected", [
    ("repo", (Path("repo"), None)),
    ("repo:asr", (Path("repo"), "asr")),
    ("/models/r:bls", (Path("/models/r"), "bls")),
])
def test_split_model_arg(arg, expected):
    assert split_model_arg(arg) == expected


def test_two_top_ensembles_ask_for_a_name(two_step):
    add_model(two_step, "other", ensemble("other", ["pre"]))
    with pytest.raises(TunerError, match=r"2 top ensembles \(asr, other\): name the one") as err:
        read(two_step)
    assert "\n" not in str(err.value)
    assert read(two_step, "other").steps.keys() == {"pre"}


def test_a_missing_step_names_its_config_path(two_step):
    add_model(two_step, "broken", ensemble("broken", ["pre", "ghost"]))
    with pytest.raises(TunerError, match=r"model 'ghost', but .*ghost/config.pbtxt does not exist"):
        read(two_step, "broken")


def test_an_unparsable_config_names_its_path(two_step):
    (two_step / "pre" / "config.pbtxt").write_text("max_batch_size: [oops\n")
    with pytest.raises(TunerError, match=r"pre/config.pbtxt is not a model config") as err:
        read(two_step)
    assert "\n" not in str(err.value)
    assert is_pipeline(two_step)  # the cheap check never raises


def test_a_top_that_is_neither_ensemble_nor_python_is_refused(tmp_path):
    add_model(tmp_path, "onnx", 'platform: "onnxruntime_onnx"\nmax_batch_size: 4\n')
    with pytest.raises(TunerError, match="neither an ensemble nor a python-backend"):
        read(tmp_path, "onnx")
    with pytest.raises(TunerError, match="has no model 'ghost'"):
        read(tmp_path, "ghost")


def test_as_given_and_apply_round_trip(two_step):
    repo = read(two_step)
    pre, clf = repo.steps["pre"].config, repo.steps["clf"].config
    assert apply(pre, as_given(pre)) == pre
    for settings in (StepSettings(3, 2, True, 50, True, (("method", "beam"),)),
                     StepSettings(1, 8, False, 0, False, (("method", "greedy"),))):
        assert as_given(apply(clf, settings), ["method"]) == settings
    assert as_given(clf, ["method"]) == StepSettings(1, 8, True, 100, False, (("method", "greedy"),))
    assert as_given(repo.steps["pre"].config) == StepSettings(1, 8, False, 0, False)


def test_apply_sets_the_knobs_and_keeps_everything_else(two_step):
    clf = read(two_step).steps["clf"].config
    edited = apply(clf, StepSettings(3, 4, True, 500, True, (("method", "beam"), ("beam", "4"))))
    assert [(g.count, g.kind) for g in edited.instance_group] == [(3, 0)]  # no kind: Triton decides
    assert edited.max_batch_size == 4
    batcher = edited.dynamic_batching
    assert (batcher.max_queue_delay_microseconds, list(batcher.preferred_batch_size)) == (500, [4])
    assert (batcher.priority_levels, batcher.default_priority_level) == (2, 1)  # the user's extras
    assert {k: v.string_value for k, v in edited.parameters.items()} == {"method": "beam", "beam": "4"}
    assert edited.version_policy == clf.version_policy and list(edited.input) == list(clf.input)
    assert clf.max_batch_size == 8  # a copy

    pre = read(two_step).steps["pre"].config
    edited = apply(pre, StepSettings(2, 8, False, 0, False))
    assert [(g.count, g.kind) for g in edited.instance_group] == [(2, pre.instance_group[0].kind)]
    assert not edited.HasField("dynamic_batching")
    assert not apply(clf, StepSettings(1, 8, False, 0, False)).HasField("dynamic_batching")


def test_apply_leaves_the_scheduling_of_models_that_do_not_batch_or_keep_state():
    unbatched = parse(python_model(0))
    edited = apply(unbatched, StepSettings(2, 0, False, 0, False))
    assert edited.max_batch_size == 0 and edited.WhichOneof("scheduling_choice") is None
    stateful = parse(python_model(4, "sequence_batching { max_sequence_idle_microseconds: 5000 }"))
    edited = apply(stateful, StepSettings(1, 2, True, 100, False))
    assert edited.max_batch_size == 2 and edited.sequence_batching == stateful.sequence_batching


def test_the_users_preferred_sizes_stay_while_their_max_batch_size_does():
    config = parse(python_model(8, "dynamic_batching { preferred_batch_size: [ 4, 8 ] }"))
    given = as_given(config)
    assert given.preferred_batch and apply(config, given).dynamic_batching == config.dynamic_batching
    smaller = apply(config, StepSettings(1, 2, True, 0, True))
    assert list(smaller.dynamic_batching.preferred_batch_size) == [2]


def test_settings_as_dict_round_trip_and_describe():
    settings = StepSettings(2, 8, True, 500, False, (("method", "greedy"),))
    assert StepSettings.from_dict(settings.as_dict()) == settings
    steps = {"pre": settings, "enc": StepSettings(1, 4, False, 0, False), "post": StepSettings(1, 0, False, 0, False)}
    assert describe(steps) == "pre x2 mbs=8 db=on delay=500us nopref method=greedy | enc x1 mbs=4 db=off | post x1"


def test_packages_lower_the_ensemble_and_give_it_a_version_directory(two_step, tmp_path):
    repo = read(two_step)
    settings = {"pre": StepSettings(2, 4, True, 0, True)}
    packages = repository.packages(repo, settings, tmp_path / "work")
    assert [p.name for p in packages] == ["pre", "clf", "asr"]
    configs = {p.name: parse(p.config_pbtxt) for p in packages}
    assert configs["asr"].max_batch_size == 4  # was 16, pre batches 4
    assert configs["clf"] == repo.steps["clf"].config  # no settings: as given
    assert packages[0].files == {"1/model.py": two_step / "pre" / "1" / "model.py"}
    assert set(packages[1].files) == {"1/model.py", "1/assets/units.txt"}
    assert set(packages[2].files) == {"1/README"} and packages[2].files["1/README"].is_relative_to(tmp_path / "work")
    with pytest.raises(ValueError, match="ghost"):
        repository.packages(repo, {"ghost": settings["pre"]}, tmp_path / "work")


def test_an_ensemble_already_batching_less_keeps_its_size(two_step, tmp_path):
    (two_step / "asr" / "config.pbtxt").write_text(ensemble("asr", ["pre", "clf"], mbs=2))
    packages = repository.packages(read(two_step), {}, tmp_path / "work")
    assert parse(packages[-1].config_pbtxt).max_batch_size == 2


def test_write_gives_a_repository_that_reads_back_as_the_settings(two_step, tmp_path):
    repo = read(two_step)
    settings = {"pre": StepSettings(2, 4, True, 250, True),
                "clf": StepSettings(3, 2, False, 0, False, (("method", "beam"),))}
    dest = tmp_path / "out"
    repository.write(repo, settings, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["asr", "clf", "pre"]  # nothing but models
    written = read(dest)
    assert {name: as_given(step.config, ["method"]) for name, step in written.steps.items()} == settings
    assert written.top_config.max_batch_size == 2
    assert (dest / "asr" / "1" / "README").is_file()
    assert (dest / "clf" / "1" / "assets" / "units.txt").read_text() == "a\n"

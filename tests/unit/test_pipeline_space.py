"""A pipeline repository's search space: per-step spaces, Optuna suggestions, the baseline."""

from pathlib import Path

import optuna
import pytest

from tuner.errors import TunerError
from tuner.experiment import STEP_KNOBS, Space, build
from tuner.pipeline.repository import StepSettings, as_given, read
from tuner.pipeline.space import (PipelineCandidate, StepSpace, baseline, params_of, step_spaces, suggest,
                                  widen)

optuna.logging.set_verbosity(optuna.logging.WARNING)

MODEL = """
backend: "python"
max_batch_size: {mbs}
input [ {{ name: "IN" data_type: TYPE_FP32 dims: [ -1 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] }} ]
{extra}
"""
ENSEMBLE = """
platform: "ensemble"
max_batch_size: 8
ensemble_scheduling {
""" + "".join(f'  step [ {{ model_name: "{model}" model_version: -1 input_map {{ key: "IN" value: "{a}" }} '
              f'output_map {{ key: "OUT" value: "{b}" }} }} ]\n'
              for model, a, b in (("pre", "IN", "MID"), ("clf", "MID", "OUT"), ("post", "OUT", "X"))) + "}\n"


@pytest.fixture
def repo(tmp_path: Path):
    """asr: pre (batches 8, 1 instance, no batcher) -> clf (batcher, method parameter) -> post (no batching)."""
    models = {
        "asr": ENSEMBLE,
        "pre": MODEL.format(mbs=8, extra=""),
        "clf": MODEL.format(mbs=8, extra='dynamic_batching { max_queue_delay_microseconds: 300 }\n'
                                          'parameters { key: "method" value: { string_value: "greedy" } }'),
        "post": MODEL.format(mbs=0, extra="instance_group [ { count: 2 } ]"),
    }
    for name, config in models.items():
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "config.pbtxt").write_text(config)
    return read(tmp_path)


SPACE = Space(instances=[2, 3], max_batch_size=[4, 16], dynamic_batching=[False, True], max_queue_delay_us=[0, 500],
              preferred_batch=[False, True], concurrency=[1, 4])


def test_each_step_gets_the_space_or_its_own_values(repo):
    spaces = step_spaces(repo, SPACE, overrides={"pre": {"instances": [1, 4]}},
                         parameters={"clf": {"method": ["greedy", "beam"]}})
    assert list(spaces) == ["pre", "clf", "post"]
    assert spaces["pre"].instances == (1, 4) and spaces["clf"].instances == (2, 3)
    assert spaces["clf"] == StepSpace((2, 3), (4, 16), (False, True), (0, 500), (False, True),
                                      {"method": ("greedy", "beam")})
    assert (spaces["post"].max_batch_size, spaces["post"].dynamic_batching) == ((0,), (False,))


def test_the_experiments_step_overrides_are_taken_as_they_are(repo):
    experiment = build({"model": "repo", "steps": {"clf": {"max_batch_size": [2], "parameters": {"method": ["beam"]}}}})
    spaces = step_spaces(repo, experiment.space, experiment.steps, {"clf": {"method": ["greedy", "beam"]}})
    assert spaces["clf"].max_batch_size == (2,) and spaces["clf"].parameters == {"method": ("beam",)}
    assert spaces["pre"].instances == tuple(experiment.space.instances)


def test_unknown_steps_and_keys_are_named_with_the_known_ones(repo):
    with pytest.raises(TunerError, match=r"steps ghost are not composing models of asr; its steps: pre, clf, post"):
        step_spaces(repo, SPACE, {"ghost": {"instances": [1]}})
    with pytest.raises(TunerError, match=r"steps.pre: unknown threads; known: instances, .*, parameters"):
        step_spaces(repo, SPACE, {"pre": {"threads": [1]}})


def spaces_of(repo):
    return step_spaces(repo, SPACE, parameters={"clf": {"method": ["greedy", "beam"]}})


def within(candidate: PipelineCandidate, spaces) -> bool:
    for name, space in spaces.items():
        step = candidate.steps[name]
        if step.instances not in space.instances or step.max_batch_size not in space.max_batch_size:
            return False
        if step.dynamic_batching and (step.max_queue_delay_us not in space.max_queue_delay_us
                                      or step.preferred_batch not in space.preferred_batch):
            return False
        if not step.dynamic_batching and (step.max_queue_delay_us, step.preferred_batch) != (0, False):
            return False
        parameters = dict(step.parameters)
        if parameters.keys() != space.parameters.keys() or \
                any(v not in space.parameters[k] for k, v in parameters.items()):
            return False
    return True


def test_suggestions_stay_within_the_spaces_and_replay_as_their_params(repo):
    spaces = spaces_of(repo)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen_batching = set()
    for _ in range(30):
        trial = study.ask()
        candidate = suggest(trial, spaces, SPACE.concurrency)
        assert within(candidate, spaces) and candidate.concurrency in SPACE.concurrency
        assert params_of(candidate, spaces) == trial.params
        assert candidate.steps["post"].max_batch_size == 0 and "post.max_batch_size" not in trial.params
        assert ("clf.max_queue_delay_us" in trial.params) == candidate.steps["clf"].dynamic_batching
        seen_batching.add(candidate.steps["clf"].dynamic_batching)
        assert PipelineCandidate.from_dict(candidate.as_dict()) == candidate
        study.tell(trial, 1.0)
    assert seen_batching == {False, True}


def test_without_concurrencies_the_load_is_not_asked(repo):
    trial = optuna.create_study().ask()
    candidate = suggest(trial, spaces_of(repo), ())
    assert candidate.concurrency == 0 and "concurrency" not in trial.params
    assert candidate.describe().endswith(" conc=ramp")


def test_the_baseline_is_enqueued_after_widening_and_comes_back_as_given(repo):
    spaces = widen(spaces_of(repo), repo)
    assert spaces["pre"].instances == (1, 2, 3) and spaces["pre"].max_batch_size == (4, 8, 16)
    assert spaces["clf"].max_queue_delay_us == (0, 300, 500) and spaces["post"].instances == (2, 3)
    given = baseline(repo, spaces, concurrency=4)
    assert given.steps == {
        "pre": StepSettings(1, 8, False, 0, False),
        "clf": StepSettings(1, 8, True, 300, False, (("method", "greedy"),)),
        "post": StepSettings(2, 0, False, 0, False),
    }
    assert given.steps["clf"] == as_given(repo.steps["clf"].config, ["method"])
    study = optuna.create_study()
    study.enqueue_trial(params_of(given, spaces))
    assert suggest(study.ask(), spaces, SPACE.concurrency) == given
    assert given.describe() == ("pre x1 mbs=8 db=off | clf x1 mbs=8 db=on delay=300us nopref method=greedy | "
                                "post x2 conc=4")


def test_a_value_outside_the_spaces_asks_to_widen_them(repo):
    with pytest.raises(ValueError, match=r"pre.instances=1 is not among \(2, 3\): widen"):
        params_of(baseline(repo, spaces_of(repo)), spaces_of(repo))


def test_the_step_knobs_are_the_settings_fields():
    assert set(STEP_KNOBS) | {"parameters"} == set(StepSettings.__dataclass_fields__)

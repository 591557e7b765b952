"""Sampled trials keep to the experiment's values; the enqueued baseline keeps its own."""

from pathlib import Path

import optuna
import pytest

from tuner.experiment import Space
from tuner.pipeline.repository import read
from tuner.pipeline.space import StepSpace, baseline, param_choices, params_of, step_spaces, suggest, widen
from tuner.sampling import WithinSpace, added_values

optuna.logging.set_verbosity(optuna.logging.WARNING)

MODEL = """
backend: "python"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""
ENSEMBLE = """
platform: "ensemble"
max_batch_size: 8
ensemble_scheduling {
  step [ { model_name: "enc" model_version: -1 input_map { key: "IN" value: "IN" } output_map { key: "OUT" value: "OUT" } } ]
}
"""


def _tpe(seed: int) -> optuna.samplers.BaseSampler:
    # As tuner.study.sampler builds it: multivariate, grouped, a few random first trials.
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=4)


def _objective(trial: optuna.Trial) -> float:
    batching = trial.suggest_categorical("dynamic_batching", [False, True])
    instances = trial.suggest_categorical("instances", [1, 2, 4])
    # The baseline's value (no batching) scores best: TPE alone would come back to it.
    return (10.0 if not batching else 1.0) + instances


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_trials_never_take_a_value_only_the_baseline_added(seed):
    study = optuna.create_study(direction="maximize",
                                sampler=WithinSpace(_tpe(seed), {"dynamic_batching": (True,)}, seed))
    study.enqueue_trial({"dynamic_batching": False, "instances": 1})
    study.optimize(_objective, n_trials=16)
    trials = study.get_trials()
    assert trials[0].params == {"dynamic_batching": False, "instances": 1}
    assert all(t.params["dynamic_batching"] is True for t in trials[1:])
    assert {t.params["instances"] for t in trials[1:]} == {1, 2, 4}  # a knob left free stays free


def test_without_the_wrapper_the_added_value_is_sampled():
    # The failure the wrapper prevents, on the same study shape.
    study = optuna.create_study(direction="maximize", sampler=_tpe(0))
    study.enqueue_trial({"dynamic_batching": False, "instances": 1})
    study.optimize(_objective, n_trials=16)
    assert any(t.params["dynamic_batching"] is False for t in study.get_trials()[1:])


def test_added_values_lists_only_the_params_the_baseline_widened():
    given = {"dynamic_batching": [True], "instances": [1, 2], "concurrency": [8, 16]}
    widened = {"dynamic_batching": [False, True], "instances": [1, 2], "concurrency": [4, 8, 16]}
    assert added_values(given, widened) == {"dynamic_batching": (True,), "concurrency": (8, 16)}


def test_a_pipeline_step_keeps_its_listed_values(tmp_path: Path):
    for name, config in {"asr": ENSEMBLE, "enc": MODEL}.items():
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "config.pbtxt").write_text(config)
    repo = read(tmp_path)
    space = Space(instances=[2, 4], max_batch_size=[8], dynamic_batching=[True], max_queue_delay_us=[500],
                  preferred_batch=[False], concurrency=[16])
    listed = step_spaces(repo, space)
    widened = widen(listed, repo)
    assert widened["enc"] == StepSpace((1, 2, 4), (8,), (False, True), (500,), (False,))
    allowed = added_values(param_choices(listed, [16]), param_choices(widened, [4, 16]))
    assert allowed == {"enc.instances": (2, 4), "enc.dynamic_batching": (True,), "concurrency": (16,)}

    study = optuna.create_study(sampler=WithinSpace(_tpe(3), allowed, 3))
    given = baseline(repo, widened, concurrency=4)
    study.enqueue_trial(params_of(given, widened))
    drawn = [suggest(study.ask(), widened, [4, 16]) for _ in range(8)]
    assert drawn[0] == given
    assert all(c.steps["enc"].dynamic_batching and c.steps["enc"].instances in (2, 4) and c.concurrency == 16
               for c in drawn[1:])

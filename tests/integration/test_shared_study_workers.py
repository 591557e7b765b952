"""Several workers on one study: two `tuner search` processes against one real PostgreSQL, and
`tuner search --workers 2` on SQLite; real tritonserver and perf_analyzer under each worker.

What must hold: the study ends with exactly its --trials counted trials, both workers measured
some, no trial was measured twice by accident, the verification ran once, and a worker killed
mid-trial has its trial measured again by the other.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from tests.integration.conftest import write_experiment
from tests.models import mlp
from tuner.storage import open_storage
from tuner.study import counted, interrupted

def _search(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tuner", "search", "--experiment", "e.yaml", *args],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def _check_one_search(study: optuna.Study, trials: int) -> list[optuna.trial.FrozenTrial]:
    found = study.get_trials(deepcopy=False)
    done = [t for t in found if counted(t)]
    assert len(done) == trials, [(t.number, t.state.name, t.user_attrs.get("error")) for t in found]
    assert not [t for t in found if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
                and not t.user_attrs.get("surplus")]
    # Each interrupted trial was measured again exactly once.
    again = [t.user_attrs["remeasures"] for t in done if "remeasures" in t.user_attrs]
    assert len(again) == len(set(again))
    verification = study.user_attrs.get("verification")
    assert verification and verification["trials_seen"] == trials
    return done


def test_two_workers_on_one_postgresql_study_share_its_budget(tmp_path, postgres_url):
    mlp(tmp_path / "m.onnx")
    write_experiment(tmp_path / "e.yaml", model="m.onnx", trials=6)
    args = ("--storage", postgres_url, "--study", "shared")
    first = _search(tmp_path, *args)
    time.sleep(3)  # the second joins a running search (on another host it would be the same)
    second = _search(tmp_path, *args)
    out = _finish(first) + _finish(second)

    study = optuna.load_study(study_name="shared", storage=open_storage(postgres_url))
    done = _check_one_search(study, 6)
    by_worker = {t.user_attrs.get("worker") for t in done}
    assert len(by_worker) == 2, by_worker  # both measured trials
    assert all(t.user_attrs.get("host") and t.user_attrs.get("hardware") for t in done)
    assert out.count("verifying ") == 1  # one worker verified, the other stopped
    assert "another worker verifies the study's finalists" in out
    # Each worker staged its models in a folder of its own.
    assert (tmp_path / "results/shared/repository").is_dir()
    assert (tmp_path / "results/shared/workers/1/repository").is_dir()


def test_a_killed_workers_trial_is_measured_again_by_the_other(tmp_path, postgres_url):
    mlp(tmp_path / "m.onnx")
    write_experiment(tmp_path / "e.yaml", model="m.onnx", trials=5)
    args = ("--storage", postgres_url, "--study", "survivor")
    doomed = _search(tmp_path, *args)
    storage = open_storage(postgres_url)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the doomed worker is mid-trial
        try:
            running = optuna.load_study(study_name="survivor", storage=storage).get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        except KeyError:
            running = []
        if running:
            break
        time.sleep(0.5)
    assert running, "the first worker never started a trial"
    survivor = _search(tmp_path, *args)
    time.sleep(2)
    os.kill(doomed.pid, signal.SIGKILL)  # no cleanup of its own: its server dies with it (parent-death signal)
    doomed.wait(timeout=30)
    out = _finish(survivor)

    study = optuna.load_study(study_name="survivor", storage=storage)
    done = _check_one_search(study, 5)
    lost = [t.number for t in study.get_trials(deepcopy=False) if interrupted(t)]
    assert lost, "the killed worker's trial was not failed by its heartbeat"
    assert {t.user_attrs.get("remeasures") for t in done} >= set(lost)
    assert "measuring it again" in out


def test_workers_flag_runs_two_workers_on_one_host(tmp_path):
    mlp(tmp_path / "m.onnx")
    write_experiment(tmp_path / "e.yaml", model="m.onnx", trials=5)
    out = _finish(_search(tmp_path, "--workers", "2", "--storage", "sqlite:///results/t.db"))
    assert "[w0] " in out and "[w1] " in out
    assert "worker 0: CPU" in out and "worker 1: CPU" in out  # no GPU here: disjoint CPU sets
    study = optuna.load_study(study_name="m", storage=open_storage("sqlite:///" + str(tmp_path / "results/t.db")))
    done = _check_one_search(study, 5)
    assert len({t.user_attrs.get("worker") for t in done}) == 2
    assert out.count("verified:") == 1  # the parent prints the study's results once

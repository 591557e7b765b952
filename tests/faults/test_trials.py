"""Faults inside trials, on real processes: a killed search, a hung perf_analyzer, a server that
refuses every load, a stage that raises. Each asserts what survived."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
import yaml

from tuner import results, tools
from tuner.server.local import free_ports

pytestmark = pytest.mark.integration
STALE_AFTER_S = 32  # the storage's heartbeat grace period (30 s) and a little more


def experiment(path: Path, **fields) -> Path:
    spec = {"trials": 3, "results_dir": str(path.parent / "results"),
            "space": {"instances": [1, 2], "max_batch_size": [4], "max_queue_delay_us": [100], "threads": [0, 1],
                      "warmup": [False], "concurrency": [2, 4]},
            "measure": {"interval_ms": 500, "max_windows": 4, "samples": 4, "timeout_s": 30}} | fields
    path.write_text(yaml.safe_dump(spec))
    return path


def search_cmd(model: Path, spec: Path, study: str) -> list[str]:
    storage = f"sqlite:///{spec.parent / 'results' / 'tuner.db'}"
    return [sys.executable, "-m", "tuner", "search", "--model", str(model), "--experiment", str(spec),
            "--storage", storage, "--study", study]


def load(spec: Path, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{spec.parent / 'results' / 'tuner.db'}")


def wait_for_child(parent: subprocess.Popen, name: str, timeout_s: float = 120) -> psutil.Process:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert parent.poll() is None, "the search ended before the fault could be injected"
        for child in psutil.Process(parent.pid).children(recursive=True):
            try:
                if child.name() == name and child.status() != psutil.STATUS_ZOMBIE:
                    return child
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.1)
    raise AssertionError(f"no {name} started within {timeout_s} s")


def leftovers(folder: Path) -> list[str]:
    """Processes whose command line names this test's folder (servers, stubs, perf_analyzer)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if str(folder) in cmdline and p.pid != os.getpid():
            found.append(cmdline[:120])
    return found


def test_a_search_killed_in_tritons_default_measures_it_again_on_resume(mlp_onnx, tmp_path):
    spec = experiment(tmp_path / "exp.yaml")
    cmd = search_cmd(mlp_onnx, spec, "killed")
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_child(first, "perf_analyzer")  # trial 0, Triton's default, is being measured
    first.kill()
    first.wait()
    time.sleep(STALE_AFTER_S)  # until its trial's heartbeat is stale
    assert leftovers(tmp_path) == []

    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "trial 0 was interrupted" in resumed.stdout
    study = load(spec, "killed")
    assert study.trials[0].state == optuna.trial.TrialState.FAIL and "error" not in study.trials[0].user_attrs
    again = [t for t in study.trials if t.user_attrs.get("remeasures") == 0]
    assert len(again) == 1 and again[0].state == optuna.trial.TrialState.COMPLETE
    assert again[0].user_attrs["baseline"] and again[0].params == study.trials[0].params
    frame = results.trials_frame(study)
    assert frame.failure.iloc[0] == "interrupted"
    assert sum(frame.failure != "interrupted") == 3  # the budget: 3 trials besides the interrupted one
    assert "default: trial" in resumed.stdout  # tuned vs default has its default again
    assert leftovers(tmp_path) == []


def test_a_hung_perf_analyzer_is_killed_and_the_trial_tried_again(mlp_onnx, tmp_path):
    spec = experiment(tmp_path / "exp.yaml", trials=1, measure={"interval_ms": 500, "max_windows": 4, "samples": 4,
                                                                "timeout_s": 8})
    search = subprocess.Popen(search_cmd(mlp_onnx, spec, "hung"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    wait_for_child(search, "perf_analyzer").send_signal(signal.SIGSTOP)  # hangs: never answers again
    output, _ = search.communicate(timeout=300)
    assert search.returncode == 0, output
    trial = load(spec, "hung").trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs
    assert trial.user_attrs["retried"].startswith("perf_analyzer hung: perf_analyzer did not finish within 8 s")
    assert "tried twice" in output
    assert leftovers(tmp_path) == []


def test_a_server_that_refuses_every_load_fails_each_trial_with_its_reason(mlp_onnx, tmp_path):
    """A running server (remote mode) without the python backend: every load is refused."""
    empty = tmp_path / "no-backends"
    empty.mkdir()
    http, grpc, metrics = free_ports(3)
    server = subprocess.Popen(
        [str(tools.require_tritonserver()), f"--model-repository={tmp_path / 'their-models'}",
         "--model-control-mode=explicit", f"--backend-directory={empty}", "--http-address=127.0.0.1",
         f"--http-port={http}", "--grpc-address=127.0.0.1", f"--grpc-port={grpc}", "--metrics-address=127.0.0.1",
         f"--metrics-port={metrics}", "--exit-on-error=false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=tools.server_env())
    (tmp_path / "their-models").mkdir()
    try:
        spec = experiment(tmp_path / "exp.yaml", trials=2, server={
            "launch": "remote", "url": f"127.0.0.1:{http}", "grpc_url": f"127.0.0.1:{grpc}",
            "metrics_url": f"http://127.0.0.1:{metrics}/metrics"})
        result = subprocess.run(search_cmd(mlp_onnx, spec, "refused"), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        trials = load(spec, "refused").trials
        assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 2
        assert all("refused to load the candidate" in t.user_attrs["error"] for t in trials)
        assert "no completed trial" in result.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert leftovers(tmp_path) == []


def test_an_exception_inside_a_stage_fails_that_trial_and_the_search_goes_on(mlp_onnx, tmp_path):
    """The load test cannot write its CSV (a file stands where its folder should be): every trial
    fails with the exception as its reason, none crashes the search, each says it was internal."""
    spec = experiment(tmp_path / "exp.yaml", trials=2)
    blocked = tmp_path / "results" / "blocked" / "perf"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a folder")
    result = subprocess.run(search_cmd(mlp_onnx, spec, "blocked"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    trials = load(spec, "blocked").trials
    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.FAIL for t in trials)
    assert all(t.user_attrs["failure"] == "internal" and t.user_attrs["error"].startswith("FileExistsError")
               for t in trials)
    assert blocked.read_text() == "not a folder"
    assert leftovers(tmp_path) == []

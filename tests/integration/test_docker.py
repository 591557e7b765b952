"""Docker launch mode on a real Docker engine: a search in a container, the container removed
afterwards, and a search killed with SIGKILL cleaned up and resumed by the next one.

The fixture starts the engine (scripts/docker_engine.sh) and builds the local tritonserver image
(scripts/build_triton_image.sh); both need root. Without root and without a running engine and
image, the tests are skipped with the reason; as root (CI) they must run.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import optuna
import pytest
from typer.testing import CliRunner

from tuner.cli import app
from tuner.errors import TunerError
from tuner.server import docker as docker_server
from tuner.server.docker import LOCAL_IMAGE, STUDY_LABEL

from conftest import write_experiment

pytestmark = pytest.mark.docker
runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
TUNER = Path(sys.executable).parent / "tuner"


def _run_script(name: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "scripts" / name)], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def engine() -> docker.DockerClient:
    if os.geteuid() == 0:
        for script in ("docker_engine.sh", "build_triton_image.sh"):
            done = _run_script(script)
            assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
        return docker.from_env()
    try:
        client = docker.from_env()
        client.images.get(LOCAL_IMAGE)
        return client
    except docker.errors.DockerException as exc:
        pytest.skip(f"not root, so no Docker engine or image can be set up here ({exc}); "
                    "as root: bash scripts/docker_engine.sh && bash scripts/build_triton_image.sh")


def _containers(client: docker.DockerClient, study: str, pid: int | None = None) -> list:
    labels = [f"{STUDY_LABEL}={study}"] + ([f"{docker_server.OWNER_PID_LABEL}={pid}"] if pid else [])
    return client.containers.list(all=True, filters={"label": labels})


def _search_args(model: Path, spec: Path, storage: str, study: str) -> list[str]:
    return ["search", "--model", str(model), "--experiment", str(spec), "--storage", storage, "--study", study]


def test_the_container_is_set_up_as_the_search_needs(engine, tmp_path):
    server = docker_server.DockerServer(LOCAL_IMAGE, tmp_path / "repository", tmp_path / "server.log",
                                        "set-up", shm_size="256m")
    with server.start():
        attrs = engine.containers.get(server.container.id).attrs
        assert attrs["HostConfig"]["NetworkMode"] == "host"
        assert attrs["HostConfig"]["ShmSize"] == 256 * 1024**2
        assert [(m["Destination"], m["RW"]) for m in attrs["Mounts"]] == [("/models", False)]
        assert attrs["Config"]["Labels"][STUDY_LABEL] == "set-up"
        assert "--model-control-mode=explicit" in attrs["Config"]["Cmd"]
        assert server.http_url.startswith("127.0.0.1:") and server.metadata()["version"] == "2.51.0"
        assert server.backends() == ["python"]
    assert _containers(engine, "set-up") == []


def test_a_search_in_docker_completes_and_leaves_no_container(engine, mlp_onnx, tmp_path):
    spec = write_experiment(tmp_path / "exp.yaml", results_dir=str(tmp_path / "results"), trials=2,
                            server={"launch": "docker", "image": LOCAL_IMAGE, "shm_size": "256m"})
    storage = f"sqlite:///{tmp_path / 'results' / 'tuner.db'}"
    result = runner.invoke(app, _search_args(mlp_onnx, spec, storage, "mlp-docker"))
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="mlp-docker", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"], \
        [t.user_attrs.get("error") for t in study.trials]
    assert all(t.values[0] > 0 for t in study.trials)
    assert _containers(engine, "mlp-docker") == []
    # The container's output was kept beside the study: tritonserver served from the mounted repository.
    log = (tmp_path / "results" / "mlp-docker" / "server.log").read_text()
    assert "Started GRPCInferenceService at 127.0.0.1" in log and "successfully loaded 'mlp'" in log


def test_a_killed_search_leaves_a_container_the_next_search_removes_and_resumes(engine, mlp_onnx, tmp_path):
    results_dir = tmp_path / "results"
    spec = write_experiment(tmp_path / "exp.yaml", results_dir=str(results_dir), trials=2,
                            server={"launch": "docker", "image": LOCAL_IMAGE, "shm_size": "256m"})
    storage = f"sqlite:///{results_dir / 'tuner.db'}"
    args = _search_args(mlp_onnx, spec, storage, "killed")
    with open(tmp_path / "killed.out", "wb") as out:
        search = subprocess.Popen([str(TUNER), *args], stdout=out, stderr=subprocess.STDOUT)
    try:
        # Kill it while the second trial runs: one finished trial before it, one RUNNING.
        deadline = time.monotonic() + 240
        while True:
            assert search.poll() is None, (tmp_path / "killed.out").read_text()
            assert time.monotonic() < deadline, "the search never reached its second trial"
            # The study exists before the container: read it only then (no race on its schema).
            if _containers(engine, "killed", search.pid):
                trials = _trials(storage, "killed")
                if len(trials) == 2 and trials[1].state == optuna.trial.TrialState.RUNNING:
                    break
            time.sleep(0.3)
    finally:
        search.send_signal(signal.SIGKILL)
        search.wait()  # reaped: its pid no longer exists, as after a real kill
    before = _trials(storage, "killed")
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]
    assert [c.status for c in _containers(engine, "killed")] == ["running"]  # the leftover

    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "resuming study" in result.output
    assert _containers(engine, "killed") == []
    after = _trials(storage, "killed")
    assert after[0].state.name == "COMPLETE" and after[0].params == before[0].params
    # The killed trial is failed once its heartbeat is older than the storage's grace period.
    assert after[1].state.name in ("RUNNING", "FAIL")
    assert [t.state.name for t in after[2:]] == ["COMPLETE"]  # the study's 2 finished trials: old + new
    log = (results_dir / "killed" / "server.log").read_text()
    assert "removed leftover container tuner-killed-" in log  # the killed search's output stays above it


def test_ctrl_c_stops_the_search_and_removes_its_container(engine, mlp_onnx, tmp_path):
    spec = write_experiment(tmp_path / "exp.yaml", results_dir=str(tmp_path / "results"), trials=1,
                            server={"launch": "docker", "image": LOCAL_IMAGE, "shm_size": "256m"})
    args = _search_args(mlp_onnx, spec, f"sqlite:///{tmp_path / 'tuner.db'}", "interrupted")
    with open(tmp_path / "search.out", "wb") as out:
        # Ctrl-C as a terminal sends it, whatever the runner did with SIGINT: a shell that started
        # the tests in the background (`cmd &`) has it ignored, and children inherit that.
        search = subprocess.Popen([str(TUNER), *args], stdout=out, stderr=subprocess.STDOUT,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not _containers(engine, "interrupted", search.pid):
            assert search.poll() is None and time.monotonic() < deadline, (tmp_path / "search.out").read_text()
            time.sleep(0.2)
        search.send_signal(signal.SIGINT)
        assert search.wait(timeout=60) == 130, (tmp_path / "search.out").read_text()
    finally:
        search.kill()
        search.wait()
    assert _containers(engine, "interrupted") == []


def test_a_container_that_cannot_start_is_removed_with_a_clear_error(engine, tmp_path):
    # The imported base image has no tritonserver: docker cannot run the command.
    base = engine.images.list(name="tuner-debian-py311")[0].tags[0]
    server = docker_server.DockerServer(base, tmp_path / "repository", tmp_path / "server.log", "broken-image")
    with pytest.raises(TunerError, match=f"docker could not start {base}"):
        server.start()
    assert _containers(engine, "broken-image") == []


def _trials(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def test_a_missing_image_says_how_to_get_it(engine, mlp_onnx, tmp_path):
    spec = write_experiment(tmp_path / "exp.yaml", results_dir=str(tmp_path / "results"), trials=1,
                            server={"launch": "docker", "image": "tuner-no-such-image:0"})
    result = runner.invoke(app, _search_args(mlp_onnx, spec, f"sqlite:///{tmp_path / 'tuner.db'}", "noimage"))
    assert result.exit_code == 2, result.output
    assert "'tuner-no-such-image:0' is not on this machine" in result.output
    assert "scripts/build_triton_image.sh" in result.output and "Traceback" not in result.output


def test_a_missing_engine_says_how_to_get_one(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(TunerError, match="scripts/docker_engine.sh"):
        docker_server.engine()


def test_gpus_become_device_requests():
    assert docker_server.device_requests(None) == []
    assert docker_server.device_requests("all")[0]["Count"] == -1
    assert docker_server.device_requests("2")[0]["Count"] == 2
    assert docker_server.device_requests("0,1")[0]["DeviceIDs"] == ["0", "1"]
    with pytest.raises(TunerError, match="device ids"):
        docker_server.device_requests("0,,1")

"""No process outlives tuner, however it ends.

Real `tuner` commands are killed mid-way (SIGKILL, SIGTERM, SIGINT), a tritonserver is killed
mid-trial, and then psutil tells what still runs. Each test's processes are found by the tmp
folder their command lines name (the study's repository, storage, perf inputs), so the tests
never look at, or touch, any other server of the machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
import numpy as np
import yaml

from tuner import backends, tools
from tuner.candidate import Candidate
from tuner.render import render
from tuner.server import ModelPackage
from tuner.server.local import LocalServer, free_port, free_ports
from tuner.signature import read_signature

pytestmark = pytest.mark.integration

TUNER = str(Path(sys.executable).parent / "tuner")
SERVER, STUB, PERF = "tritonserver", "triton_python_backend_stub", "perf_analyzer"


@pytest.fixture(scope="module", autouse=True)
def _real_binaries():
    """These tests need the real tritonserver and perf_analyzer that scripts/setup.sh installs."""
    if tools.tritonserver_path() is None or tools.perf_analyzer_path() is None:
        pytest.fail("tritonserver or perf_analyzer missing: run `bash scripts/setup.sh` (make test does)")


# --- what runs ---------------------------------------------------------------------------------

def naming(path: Path, *programs: str) -> list[psutil.Process]:
    """Running processes whose command line names `path`, or that run in it (the dashboard's
    streamlit names no path: it has its storage in the environment); zombies have ended. With
    `programs`, only those whose executable is one of them."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status", "cwd"]):
        cmdline = proc.info["cmdline"] or []
        if proc.pid == os.getpid() or not cmdline or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if programs and os.path.basename(cmdline[0]) not in programs:
            continue
        if any(str(path) in arg for arg in cmdline) or str(path) in (proc.info["cwd"] or ""):
            found.append(proc)
    return found


def running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def describe(procs: list[psutil.Process]) -> str:
    lines = []
    for proc in procs:
        try:
            lines.append(f"  {proc.pid} (parent {proc.ppid()}): {' '.join(proc.cmdline())[:240]}")
        except psutil.Error:
            pass
    return "\n".join(lines) or "  (none)"


def wait_for(condition, timeout_s: float, what, step_s: float = 0.1):
    """`condition()`'s first truthy value within `timeout_s`; else fail saying `what()`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what()}")
        time.sleep(step_s)


def wait_ended(procs: list[psutil.Process], timeout_s: float, what: str) -> None:
    wait_for(lambda: not any(running(p) for p in procs), timeout_s,
             lambda: f"{what}; still running:\n{describe([p for p in procs if running(p)])}")


def assert_nothing_left(path: Path, timeout_s: float = 10) -> None:
    wait_for(lambda: not naming(path), timeout_s,
             lambda: f"processes naming {path} are left:\n{describe(naming(path))}")


@pytest.fixture
def sweep(tmp_path):
    """Whatever a failed test leaves naming its tmp folder is killed, so it cannot spoil the next."""
    yield tmp_path
    for proc in naming(tmp_path):
        try:
            proc.kill()
        except psutil.Error:
            pass


def start(cmd: list[str], log: Path, **kwargs) -> subprocess.Popen:
    """A command in its own session (a signal the test sends goes to it alone), output to `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=log.parent, **kwargs)


def port_answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- a small search ----------------------------------------------------------------------------

STUDY = "faults"


def search_command(tmp_path: Path, model: Path, trials: int) -> tuple[list[str], str]:
    """Two or three quick trials: one instance, one concurrency, 0.5 s windows, no confirmation."""
    spec = {
        "trials": trials,
        "results_dir": str(tmp_path / "results"),
        "baseline_concurrency": [2],
        "space": {"instances": [1], "max_batch_size": [4, 8], "max_queue_delay_us": [100], "threads": [0],
                  "concurrency": [2]},
        "measure": {"interval_ms": 500, "max_windows": 3, "samples": 4, "confirm_best": False},
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(spec))
    storage = f"sqlite:///{tmp_path / 'results' / 'tuner.db'}"
    return [TUNER, "search", "--model", str(model), "--experiment", str(tmp_path / "exp.yaml"),
            "--storage", storage, "--study", STUDY], storage


def trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)
    except Exception:  # no database or no study yet
        return []


# --- the faults --------------------------------------------------------------------------------

def test_a_search_killed_with_sigkill_takes_its_server_along_and_resumes(sweep, mlp_onnx):
    tmp_path = sweep
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cmd, storage = search_command(tmp_path, mlp_onnx, trials=2)
    search = start(cmd, tmp_path / "first.log")

    # Killed in its second trial: the first one finished, the server and a stub are up.
    def second_trial_running():
        states = [t.state for t in trials(storage)]
        return (states.count(optuna.trial.TrialState.COMPLETE) >= 1 and optuna.trial.TrialState.RUNNING in states
                and naming(tmp_path, STUB))
    wait_for(second_trial_running, 180,
             lambda: f"no second trial ran; output:\n{(tmp_path / 'first.log').read_text()[-3000:]}")
    server, stubs = naming(tmp_path, SERVER), naming(tmp_path, STUB)
    assert len(server) == 1 and stubs
    before = {t.number: (t.state, t.values) for t in trials(storage) if t.state.is_finished()}
    os.kill(search.pid, signal.SIGKILL)
    assert search.wait(timeout=10) == -signal.SIGKILL

    # Linux sent the server SIGTERM (parent-death signal): it ends, and its stub with it.
    wait_ended(server + stubs, 15, "tritonserver and its stubs outlive a SIGKILLed tuner")
    assert_nothing_left(tmp_path, 30)  # perf_analyzer too, once its server is gone

    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    after = {t.number: (t.state, t.values) for t in trials(storage)}
    assert before and all(after[number] == kept for number, kept in before.items())
    assert_nothing_left(tmp_path)


def test_a_server_killed_mid_trial_is_restarted_and_its_stubs_do_not_stay(sweep, mlp_onnx):
    tmp_path = sweep
    cmd, storage = search_command(tmp_path, mlp_onnx, trials=2)
    search = start(cmd, tmp_path / "search.log")

    wait_for(lambda: naming(tmp_path, PERF) and naming(tmp_path, STUB), 180,
             lambda: f"no trial measured; output:\n{(tmp_path / 'search.log').read_text()[-3000:]}")
    [server] = [p for p in naming(tmp_path, SERVER)
                if any(a.startswith(f"--model-repository={tmp_path}") for a in p.cmdline())]
    old_stubs = [p for p in naming(tmp_path, STUB) if p.ppid() == server.pid]
    assert old_stubs
    server.kill()

    # The dead server's stubs (they ignore SIGTERM once it is gone) end when tuner finds it dead,
    # while the search goes on: not next to the later trials.
    wait_ended(old_stubs, 15, "the killed server's stubs outlive it")
    new_server = wait_for(lambda: [p for p in naming(tmp_path, SERVER) if p.pid != server.pid], 60,
                          lambda: "the search did not start a new server")[0]
    orphans = []
    while search.poll() is None:
        # Every stub running from now on belongs to the new server.
        orphans += [p for p in naming(tmp_path, STUB) if started_before(p, new_server)]
        time.sleep(0.5)
    output = (tmp_path / "search.log").read_text()
    assert search.returncode == 0, output[-3000:]
    assert not orphans, f"stubs of the killed server ran next to later trials:\n{describe(orphans)}"
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in trials(storage)), output[-3000:]
    assert_nothing_left(tmp_path)


def started_before(proc: psutil.Process, other: psutil.Process) -> bool:
    try:
        return proc.create_time() < other.create_time()
    except psutil.Error:  # ended meanwhile
        return False


@pytest.fixture
def study_db(tmp_path) -> str:
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    optuna.create_study(study_name="shown", storage=storage, directions=["maximize", "minimize"])
    return storage


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["sigterm", "sigint", "sigkill"])
def test_the_dashboard_takes_streamlit_along(sweep, study_db, sig):
    tmp_path = sweep
    port = free_port()
    dashboard = start([TUNER, "dashboard", "--storage", study_db, "--port", str(port)], tmp_path / "dashboard.log")
    wait_for(lambda: port_answers(port), 90,
             lambda: f"streamlit did not answer; output:\n{(tmp_path / 'dashboard.log').read_text()[-3000:]}")
    children = psutil.Process(dashboard.pid).children(recursive=True)
    assert any("streamlit" in " ".join(c.cmdline()) for c in children)

    os.kill(dashboard.pid, sig)
    assert dashboard.wait(timeout=15) == (-signal.SIGKILL if sig == signal.SIGKILL else 130)
    wait_ended(children, 10, f"streamlit outlives tuner dashboard on {signal.Signals(sig).name}")
    assert not port_answers(port)
    assert_nothing_left(tmp_path, 5)


def test_doctor_stops_its_server_on_sigterm(sweep):
    tmp_path = sweep
    # The doctor's server runs on an empty repository in a tmp folder: here, under tmp_path.
    doctor = start([TUNER, "doctor"], tmp_path / "doctor.log", env={**os.environ, "TMPDIR": str(tmp_path)})
    server = wait_for(lambda: naming(tmp_path, SERVER), 60,
                      lambda: f"the doctor started no server; output:\n{(tmp_path / 'doctor.log').read_text()}")
    os.kill(doctor.pid, signal.SIGTERM)
    assert doctor.wait(timeout=30) == 130, (tmp_path / "doctor.log").read_text()
    wait_ended(server, 5, "the doctor's tritonserver outlives it")
    assert_nothing_left(tmp_path, 5)


def loaded_server(repository: Path, model: Path) -> LocalServer:
    """A server of `repository` with `model` loaded through the python-backend adapter: one stub."""
    config = render("adapter", "mlp", read_signature(model),
                    Candidate(instances=1, max_batch_size=4, dynamic_batching=False, max_queue_delay_us=0,
                              preferred_batch=False, threads=1, warmup=False, concurrency=1),
                    {"x": np.zeros(64, np.float32)})
    server = LocalServer(repository, repository.parent / "stray.log").start()
    server.load(ModelPackage("mlp", config, backends.get("onnxruntime").adapter_files(model)))
    return server


def test_a_server_start_ends_leftovers_of_its_repository_and_nothing_else(sweep, mlp_onnx):
    tmp_path = sweep
    repository = tmp_path / "repo"
    binary = tools.require_tritonserver()

    def bare(repository: Path) -> subprocess.Popen:
        """A tritonserver no tuner watches any more (its search was killed)."""
        repository.mkdir(exist_ok=True)
        ports = free_ports(2)
        return subprocess.Popen(
            [str(binary), f"--model-repository={repository}", "--model-control-mode=explicit",
             f"--backend-directory={tools.backend_directory(binary)}", "--http-address=127.0.0.1",
             f"--http-port={ports[0]}", "--grpc-address=127.0.0.1", f"--grpc-port={ports[1]}",
             "--allow-metrics=false"],
            env=tools.server_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    # A server of this repository killed with its model loaded: its stub stays, with parent 1
    # (it does so for as long as its dead server is not reaped; here that is never).
    dead = loaded_server(repository, mlp_onnx)
    orphans = psutil.Process(dead.process.pid).children()
    assert orphans
    os.kill(dead.process.pid, signal.SIGKILL)
    wait_for(lambda: all(p.ppid() != dead.process.pid for p in orphans), 10, lambda: "the stub was not orphaned")
    left = bare(repository)  # and a live server of this repository
    other = bare(tmp_path / "repo-other")  # someone else's: its path only begins alike
    try:
        time.sleep(1)
        assert left.poll() is None and other.poll() is None and all(running(p) for p in orphans)
        server = LocalServer(repository, tmp_path / "server.log").start()
        try:
            assert left.wait(timeout=1) is not None  # ended before the new server started
            assert not any(running(p) for p in orphans)
            assert other.poll() is None
            assert server.is_alive()
        finally:
            server.stop()
        assert other.poll() is None  # stop() left it alone too
        assert not [p for p in naming(tmp_path, SERVER) if f"--model-repository={repository}" in p.cmdline()]
        assert "leftover" in (tmp_path / "server.log").read_text()
    finally:
        for proc in (left, other, dead.process):
            proc.kill()
            proc.wait()
    assert_nothing_left(tmp_path, 5)

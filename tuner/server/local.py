"""A tritonserver process on this machine, one per search, in explicit model-control mode.

It binds 127.0.0.1 on free ports, keeps its log beside the study, and is stopped (with its
python-backend stub processes, which share its process group) on success, error and Ctrl-C.

Nothing outlives tuner: the server gets SIGTERM from Linux when tuner dies, even by SIGKILL
(parent-death signal), and shuts its stubs down. What a dead server leaves (its stubs, which
ignore SIGTERM once their server is gone) is ended, by SIGKILL where needed, when the server is
found dead, at stop() and at start(); start() thereby also ends what a killed earlier search of
the same study left. Those are found by their command line naming this server's repository path:
processes that do not name it (other servers) are never touched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tuner import tools
from tuner.errors import TrialError, TunerError
from tuner.processes import child_of_ours, end_processes_naming
from tuner.render import to_json
from tuner.server import ModelPackage
from tuner.server.repository import stage


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports. The sockets stay bound until all are chosen: one
    closed before the next is asked for can be handed out again (a server was once given one port
    for HTTP and metrics, and refused to start)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# The processes a server of one repository runs: the server and its python-backend stubs.
SERVER_PROGRAMS = frozenset({"tritonserver", "triton_python_backend_stub"})


class LocalServer:
    def __init__(self, repository: Path, log_path: Path, startup_timeout_s: float = 60.0,
                 load_timeout_s: float = 180.0):
        self.repository = repository
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.load_timeout_s = load_timeout_s
        self.process: subprocess.Popen | None = None
        self.http_port = self.grpc_port = self.metrics_port = 0

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> "LocalServer":
        binary = tools.require_tritonserver()
        self.repository.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._end_leftovers()  # a dead server of ours, or what a killed earlier search left
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        cmd = [
            str(binary),
            # Absolute: the leftovers of this repository are found by this path.
            f"--model-repository={os.path.abspath(self.repository)}",
            "--model-control-mode=explicit",
            f"--backend-directory={tools.backend_directory(binary)}",
            "--http-address=127.0.0.1", f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true", "--allow-cpu-metrics=true", "--allow-gpu-metrics=true",
            "--metrics-interval-ms=500",  # several readings within one measurement window
            "--exit-on-error=false", "--log-verbose=0",
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"\n# {' '.join(cmd)}\n".encode())
            log.flush()
            # Own process group: stopping it also stops the python-backend stubs. SIGTERM when
            # tuner dies: Triton then unloads its models and ends its stubs.
            self.process = subprocess.Popen(**child_of_ours(cmd, signal.SIGTERM), stdout=log, stderr=subprocess.STDOUT,
                                            env=tools.server_env(), start_new_session=True)
        try:
            self._wait_live()
        except BaseException:  # Ctrl-C or SIGTERM while it starts: `with` would not stop it
            self.stop()
            raise
        return self

    @contextmanager
    def _client(self):
        """A short-lived gRPC client (gRPC: the HTTP client needs gevent, which GPU images lack);
        closed at once so no connection holds up the server's shutdown."""
        client = grpcclient.InferenceServerClient(self.grpc_url)
        try:
            yield client
        finally:
            client.close()

    def _wait_live(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TunerError(f"tritonserver exited with code {self.process.returncode} at start; "
                                 f"its log {self.log_path} ends with:\n{log_tail(self.log_path)}")
            try:
                with self._client() as client:
                    if client.is_server_live(client_timeout=2.0):
                        return
            except Exception:  # connection refused while it starts
                pass
            time.sleep(0.2)
        self.stop()
        raise TunerError(f"tritonserver was not live after {self.startup_timeout_s:.0f} s; see {self.log_path}")

    def backends(self) -> list[str]:
        return tools.server_backends(tools.require_tritonserver())

    def metadata(self) -> dict:
        with self._client() as client:
            return client.get_server_metadata(as_json=True)

    def is_alive(self) -> bool:
        if self.process is None:
            return False
        if self.process.poll() is None:
            return True
        self._end_leftovers()  # its stubs outlive a killed server
        self.process = None
        return False

    def _end_leftovers(self) -> None:
        """End the process group of our last server and every server or stub process that
        names this repository (SIGTERM, then SIGKILL); noted in the server log."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # the group outlives its leader
            except (ProcessLookupError, PermissionError):
                pass
        ended = end_processes_naming(self.repository, SERVER_PROGRAMS, grace_s=2.0)
        if ended:
            try:
                with open(self.log_path, "a") as log:
                    log.write(f"\n# ended {len(ended)} leftover process(es) of {self.repository}: "
                              f"pids {', '.join(str(p.pid) for p in ended)}\n")
            except OSError:
                pass

    def load(self, package: ModelPackage) -> None:
        stage(self.repository, package)
        try:
            with self._client() as client:
                client.load_model(package.name, config=to_json(package.config_pbtxt), client_timeout=self.load_timeout_s)
        except InferenceServerException as exc:
            raise TrialError(f"tritonserver refused to load the candidate: {exc.message()}") from None
        except Exception as exc:  # timeouts, broken connection when the server dies mid-load
            raise TrialError(f"loading the candidate failed: {type(exc).__name__}: {exc}") from None

    def unload(self, name: str) -> None:
        try:
            with self._client() as client:
                client.unload_model(name)
        except Exception:  # unloading a model that failed to load is not an error worth reporting
            pass

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
            except ProcessLookupError:
                pass
        # Stubs can outlive the server by a moment; they are in its group (and name the repository).
        self._end_leftovers()
        self.process = None

    def __enter__(self) -> "LocalServer":
        # `with server.start():` enters an already started server: start only once.
        return self if self.is_alive() else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

"""A tritonserver in a Docker container, one per search, in explicit model-control mode.

The container uses host networking (the engine here has no bridge network, and it keeps all
traffic on loopback) with tritonserver bound to 127.0.0.1 on free ports. The study's model
repository is staged on the host exactly as in local mode and mounted read-only; candidates
are loaded through the load API with their config override, so loading works as in local mode
(which this class reuses). The container carries labels naming the study and the search that
owns it; its output is streamed into the study's server.log; it is removed on success, error
and Ctrl-C, and a later search of the same study removes containers a killed search left behind.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path

import docker
import docker.errors
import docker.types

from tuner.errors import TunerError
from tuner.server.local import LocalServer, free_ports, log_tail

STUDY_LABEL = "tuner.study"
OWNER_PID_LABEL = "tuner.pid"
OWNER_HOST_LABEL = "tuner.host"
REPOSITORY_MOUNT = "/models"
LOCAL_IMAGE = "tuner-tritonserver:2.51-py311"
ENGINE_HINT = ("start one as root with `bash scripts/docker_engine.sh` (installs docker.io, starts dockerd), "
               "or use server.launch: local")


def engine() -> docker.DockerClient:
    """A client of the Docker engine ($DOCKER_HOST or the local socket); TunerError when none answers."""
    try:
        client = docker.from_env(timeout=30)
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "Permission denied" in reason:
            raise TunerError(f"no permission to use the Docker engine ({reason}): run as root or join the "
                             "docker group") from None
        raise TunerError(f"no Docker engine answers ({reason}); {ENGINE_HINT}") from None


def device_requests(gpus: str | None) -> list[docker.types.DeviceRequest]:
    """The spec's `gpus` ("all", a count "2", device ids "0,1", or None) as Docker device requests."""
    if gpus is None or not gpus.strip():
        return []
    gpus = gpus.strip()
    if gpus == "all":
        return [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if gpus.isdigit():
        return [docker.types.DeviceRequest(count=int(gpus), capabilities=[["gpu"]])]
    ids = [g.strip() for g in gpus.split(",")]
    if not all(ids):
        raise TunerError(f'server.gpus {gpus!r}: use "all", a count ("2") or device ids ("0,1")')
    return [docker.types.DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]


def _owner_gone(container) -> bool:
    """True when the search that started this container cannot be running any more."""
    if container.status in ("exited", "dead"):
        return True
    labels = container.labels
    if labels.get(OWNER_HOST_LABEL) != socket.gethostname():
        return False  # another machine's search, sharing this engine: not ours to judge
    try:
        os.kill(int(labels.get(OWNER_PID_LABEL, "0")), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


def remove_leftovers(client: docker.DockerClient, study: str, log_path: Path | None = None) -> list[str]:
    """Remove the study's containers whose search was killed (or that stopped); return their names.

    A container of a search still running (another worker on the same study) is left alone. The
    killed search streamed the container's output into the study's log until it died; the removal
    is noted there.
    """
    removed = []
    for container in client.containers.list(all=True, filters={"label": f"{STUDY_LABEL}={study}"}):
        if not _owner_gone(container):
            continue
        try:
            container.remove(force=True)
            removed.append(container.name)
        except docker.errors.NotFound:
            continue
        if log_path is not None:
            with open(log_path, "a") as log:
                log.write(f"\n# removed leftover container {container.name} (its search is gone)\n")
    return removed


def _container_name(study: str) -> str:
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", study).strip("-.")[:40] or "study"
    return f"tuner-{slug}-{os.getpid()}"


class DockerServer(LocalServer):
    """tritonserver in a container of `image`; loads, unloads and URLs as in local mode."""

    def __init__(self, image: str, repository: Path, log_path: Path, study: str, gpus: str | None = None,
                 shm_size: str = "1g", startup_timeout_s: float = 60.0, load_timeout_s: float = 180.0):
        super().__init__(repository, log_path, startup_timeout_s, load_timeout_s)
        self.image, self.study, self.gpus, self.shm_size = image, study, gpus, shm_size
        self.client: docker.DockerClient | None = None
        self.container = None
        self._log_thread: threading.Thread | None = None

    def start(self) -> "DockerServer":
        self.client = self.client or engine()
        self.stop()  # a restart after the server died: its container goes first
        self.repository.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.client, self.study, self.log_path)
        self._require_image()
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        command = [
            "tritonserver",
            f"--model-repository={REPOSITORY_MOUNT}",
            "--model-control-mode=explicit",
            "--http-address=127.0.0.1", f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true", "--allow-cpu-metrics=true",
            "--exit-on-error=false", "--log-verbose=0",
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"\n# docker: {self.image} {' '.join(command)}\n".encode())
        # Ctrl-C can land anywhere in here, even before the container's handle is known: stop()
        # finds the container by its labels.
        try:
            # create + start rather than run: run would try to pull a missing image from a registry.
            self.container = self.client.containers.create(
                self.image, command, name=_container_name(self.study), detach=True,
                network_mode="host", shm_size=self.shm_size, device_requests=device_requests(self.gpus),
                volumes={str(self.repository.resolve()): {"bind": REPOSITORY_MOUNT, "mode": "ro"}},
                labels=self._labels(),
            )
            self.container.start()
            self._log_thread = threading.Thread(target=self._copy_logs, args=(self.container,), daemon=True)
            self._log_thread.start()
            self._wait_live()
        except docker.errors.APIError as exc:
            self.stop()
            raise TunerError(f"docker could not start {self.image}: {exc.explanation or exc}"
                             f"{_gpu_hint(exc) if self.gpus else ''}") from None
        except BaseException:
            self.stop()
            raise
        return self

    def _labels(self) -> dict[str, str]:
        return {STUDY_LABEL: self.study, OWNER_PID_LABEL: str(os.getpid()), OWNER_HOST_LABEL: socket.gethostname()}

    def _require_image(self) -> None:
        try:
            self.client.images.get(self.image)
        except docker.errors.ImageNotFound:
            raise TunerError(
                f"docker image {self.image!r} is not on this machine (tuner never pulls). Get it with "
                f"`docker pull {self.image}` where a registry is reachable, or build the local python-backend "
                f"image with `bash scripts/build_triton_image.sh` and set server.image: {LOCAL_IMAGE}") from None

    def backends(self) -> list[str]:
        """Backends the server in the image has (the folders of its backend directory)."""
        result = self.container.exec_run(["ls", "/opt/tritonserver/backends"])
        return sorted(result.output.decode().split()) if result.exit_code == 0 else []

    def _copy_logs(self, container) -> None:
        """Stream the container's output into server.log until it stops (a daemon thread)."""
        try:
            with open(self.log_path, "ab") as log:
                for chunk in container.logs(stream=True, follow=True):
                    log.write(chunk)
                    log.flush()
        except (OSError, docker.errors.DockerException, ValueError):
            pass  # the container was removed under us: nothing more to copy

    def _wait_live(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if not self.is_alive():
                code = self.container.attrs.get("State", {}).get("ExitCode")
                time.sleep(0.5)  # let the log thread write the last lines
                raise TunerError(f"tritonserver in {self.image} exited with code {code} at start; its log "
                                 f"{self.log_path} ends with:\n{log_tail(self.log_path)}")
            try:
                with self._client() as client:
                    live = client.is_server_live(client_timeout=2.0)
                if live:
                    return
            except Exception:  # connection refused while it starts
                pass
            time.sleep(0.2)
        raise TunerError(f"tritonserver in {self.image} was not live after {self.startup_timeout_s:.0f} s; "
                         f"see {self.log_path}")

    def is_alive(self) -> bool:
        if self.container is None:
            return False
        try:
            self.container.reload()
        except docker.errors.DockerException:
            return False
        return self.container.status == "running"

    def stop(self) -> None:
        if self.client is None:
            return
        if self.container is not None:
            try:
                self.container.stop(timeout=10)  # tritonserver unloads its models and stops its stubs
            except docker.errors.DockerException:
                pass
        if self._log_thread is not None:
            self._log_thread.join(timeout=5)
            self._log_thread = None
        self.container = None
        mine = [f"{key}={value}" for key, value in self._labels().items()]
        for container in self.client.containers.list(all=True, filters={"label": mine}):
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.DockerException as exc:
                raise TunerError(f"could not remove container {container.name}: {exc}; "
                                 f"remove it with `docker rm -f {container.name}`") from None


def _gpu_hint(exc: docker.errors.APIError) -> str:
    if "device driver" in str(exc) or "gpu" in str(exc).lower():
        return ("; GPUs were requested (server.gpus): the engine needs the NVIDIA Container Toolkit "
                "(nvidia-container-toolkit) and a GPU driver, or leave server.gpus unset")
    return ""

"""Pick the server implementation the experiment asks for."""

from __future__ import annotations

from pathlib import Path

from tuner.experiment import ServerSpec
from tuner.server import Server


def make_server(spec: ServerSpec, repository: Path, log_path: Path, study_name: str) -> Server:
    """A not-yet-started server of the requested launch mode; `start()` it (or use `with`).

    local: a tritonserver process here; docker: one in a container of `spec.image`; remote: the
    running server at `spec.url` / `spec.grpc_url`. `repository` and `log_path` are the study's
    (remote mode sends files with each load and has no log of its own).
    """
    if spec.launch == "docker":
        from tuner.server.docker import DockerServer

        return DockerServer(spec.image, repository, log_path, study_name, spec.gpus, spec.shm_size,
                            spec.startup_timeout_s, spec.load_timeout_s)
    if spec.launch == "remote":
        from tuner.server.remote import RemoteServer

        return RemoteServer(spec.url, spec.grpc_url, study_name, spec.startup_timeout_s, spec.load_timeout_s,
                            spec.metrics_url)
    from tuner.server.local import LocalServer

    return LocalServer(repository, log_path, spec.startup_timeout_s, spec.load_timeout_s)

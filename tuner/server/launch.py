"""Pick the server implementation the experiment asks for."""

from __future__ import annotations

from pathlib import Path

from tuner.errors import TunerError
from tuner.experiment import ServerSpec
from tuner.server import Server
from tuner.server.local import LocalServer


def make_server(spec: ServerSpec, repository: Path, log_path: Path, study_name: str) -> Server:
    """A not-yet-started server of the requested launch mode; `start()` it (or use `with`)."""
    if spec.launch == "local":
        return LocalServer(repository, log_path, spec.startup_timeout_s, spec.load_timeout_s)
    raise TunerError(f"launch mode {spec.launch!r} is not available yet")

"""Where candidates are deployed. Every launch mode implements the small `Server` protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ModelPackage:
    """What one candidate needs on the server: its config and its files.

    `files` maps a path inside the model directory ("1/model.onnx", "warmup/speech") to its source.
    """

    name: str
    config_pbtxt: str
    files: dict[str, Path] = field(default_factory=dict)


class Server(Protocol):
    grpc_url: str  # host:port perf_analyzer and clients reach
    http_url: str
    metrics_url: str

    def start(self) -> "Server":
        """Start (or connect) and wait until ready; returns self, usable as a context manager."""

    def __enter__(self) -> "Server": ...

    def __exit__(self, *exc) -> None: ...

    def load(self, package: ModelPackage) -> None:
        """Deploy (or redeploy) the model with this config; returns once it is ready."""

    def unload(self, name: str) -> None: ...

    def is_alive(self) -> bool: ...

    def backends(self) -> list[str]:
        """Triton backends the server can run (decides native config or python-backend adapter)."""

    def stop(self) -> None: ...

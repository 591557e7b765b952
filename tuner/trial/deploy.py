"""Stage 3, deploy: load the rendered config on the server and time the cold start."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tuner import client
from tuner.errors import TrialError
from tuner.model_source import ModelSource
from tuner.server import ModelPackage, Server
from tuner.workspace import Sample


@dataclass(frozen=True)
class Deployed:
    load_s: float  # the server's load call
    first_request_ms: float  # the first inference after it (cold start)


def package(name: str, config: str, files: dict[str, Path], warmup_dir: Path) -> ModelPackage:
    """The model directory's content: config, model files, and the warmup inputs it may name."""
    warmup = {f"warmup/{f.name}": f for f in warmup_dir.iterdir()} if warmup_dir.is_dir() else {}
    return ModelPackage(name, config, files | warmup)


def deploy(server: Server, source: ModelSource, pkg: ModelPackage, sample: Sample) -> Deployed:
    started = time.monotonic()
    server.load(pkg)
    loaded = time.monotonic()
    try:
        client.infer(server.grpc_url, source.name, source.signature, sample, batched=source.signature.batched)
    except Exception as exc:
        raise TrialError(f"first request failed: {exc}".splitlines()[0]) from None
    return Deployed(round(loaded - started, 3), round((time.monotonic() - loaded) * 1000, 2))

"""Where a variant's exported files live, and exporting them once (numpy only until a cache miss)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from tuner.zoo.wenet.config import OPSET, get_config

log = logging.getLogger(__name__)

# Bump whenever the model code or the export settings change: it is part of the cache key.
EXPORTER_VERSION = "tuner-wenet-onnx-3"  # 3: pointwise convolutions as matmuls


@dataclass(frozen=True)
class ZooArtifacts:
    """The exported files of one model variant."""

    name: str
    directory: Path
    encoder: Path
    decoder: Path


def settings_hash(name: str) -> str:
    """Short sha256 of everything that determines the exported bytes."""
    settings = {"name": name, "exporter": EXPORTER_VERSION, "opset": OPSET, **asdict(get_config(name))}
    blob = json.dumps(settings, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def artifacts_for(name: str, cache_dir: Path) -> ZooArtifacts:
    """Where the files of ``name`` live under ``cache_dir`` (whether or not they exist yet)."""
    directory = Path(cache_dir) / f"{name}-{settings_hash(name)}"
    return ZooArtifacts(name, directory, directory / "encoder.onnx", directory / "decoder.onnx")


def export(name: str, cache_dir: Path) -> ZooArtifacts:
    """Export encoder and decoder of ``name`` to ONNX under ``cache_dir``, or reuse them.

    Files are written to a temporary name and renamed into place, so a killed export never
    leaves a truncated model that a later call would take for a cached one. The encoder is
    written last and is the completion marker. Exports are deterministic: the same settings
    give byte-identical files.
    """
    artifacts = artifacts_for(name, cache_dir)
    if artifacts.encoder.is_file() and artifacts.decoder.is_file():
        return artifacts
    from tuner.zoo.wenet import onnx_export  # imports torch

    artifacts.directory.mkdir(parents=True, exist_ok=True)
    # The full model takes a minute or two on a small CPU machine: say what is going on.
    log.info("exporting %s to %s (once; later runs reuse it)", name, artifacts.directory)
    onnx_export.export_models(name, artifacts.encoder, artifacts.decoder)
    log.info("exported %s", name)
    return artifacts

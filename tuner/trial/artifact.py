"""Stage 1, prepare: the candidate's model files for its runtime, precision and serving form."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tuner import backends
from tuner.backends import PrepareRequest
from tuner.candidate import Candidate
from tuner.experiment import Experiment
from tuner.model_source import ModelSource
from tuner.workspace import Sample, calibration_samples


@dataclass(frozen=True)
class Artifact:
    path: Path  # what the runtime loads (converted and cached by content, or the source itself)
    info: dict  # what the cache recorded about it (settings, quantization method...)
    files: dict[str, Path]  # {path inside the model directory: file}, config.pbtxt and warmup aside
    form: str  # "native" (the runtime's own Triton backend) or "adapter" (the python backend)
    prepare_s: float


def prepare(source: ModelSource, exp: Experiment, candidate: Candidate, samples: list[Sample],
            form: str) -> Artifact:
    """Convert the model for the candidate's runtime (cached) and list the files it is served from."""
    started = time.monotonic()
    backend = backends.get(candidate.backend)
    path = backend.prepare(PrepareRequest(
        onnx_path=source.onnx_path, precision=candidate.precision, cache_dir=exp.results_dir / "cache" / "artifacts",
        calibration_samples=calibration_samples(source, exp, candidate.precision), samples=samples,
        max_batch_size=max(exp.space.max_batch_size), torch_module=source.torch_module))
    files = backend.adapter_files(path) if form == "adapter" else backend.native_files(path)
    return Artifact(path, backends.artifact_info(path), files, form, round(time.monotonic() - started, 3))

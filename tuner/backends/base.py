"""The Backend every runtime family subclasses, the PrepareRequest its `prepare` takes, and the
artifact cache the families share."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tuner.candidate import Candidate
from tuner.errors import TrialError
from tuner.resources import ADAPTER_DIR

ADAPTER_HELPER = ADAPTER_DIR / "tuner_adapter.py"
ARTIFACT_INFO = "tuner-artifact.json"


@dataclass(frozen=True)
class Accelerator:
    """One entry of Triton's `optimization { execution_accelerators { ... } }` (onnxruntime backend)."""

    name: str
    parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PrepareRequest:
    """What `Backend.prepare` converts, and everything a conversion may need besides the model."""

    onnx_path: Path  # the source model
    precision: str
    cache_dir: Path  # where artifacts are cached by content
    calibration_samples: Sequence[Mapping[str, np.ndarray]] = ()  # int8 calibration inputs
    samples: Sequence[Mapping[str, np.ndarray]] = ()  # representative requests, without the batch dim
    max_batch_size: int = 1  # the largest batch the artifact must serve
    torch_module: str | None = None  # "module:name" of the model's PyTorch definition (zoo models only)


class Backend(ABC):
    """A complete runtime choice: which runtime, with which execution provider, on which device.

    `prepare` turns the source ONNX model into what the runtime loads (cached by content);
    `native_*` describe the config of the stock Triton image's backend, `adapter_*` the
    python-backend model that runs the same runtime in-process (the bundled server's only option).
    """

    name: str
    family: str  # the templates: templates/{family}.{form}.pbtxt.j2
    triton_backend: str  # the stock image's backend that runs the native form
    precisions: tuple[str, ...]
    native_precisions: tuple[str, ...]  # precisions the native config can express
    kinds: tuple[str, ...]  # instance kinds; the first is the default
    adapter_model_file: Path | None  # the python-backend model.py; None = no adapter exists

    @property
    def default_kind(self) -> str:
        return self.kinds[0]

    def unavailable_reason(self, kind: str | None = None, precision: str = "fp32") -> str | None:
        """Why this backend cannot run `precision` on `kind` instances here; None when it can."""
        if precision not in self.precisions:
            return f"{self.name} has no {precision} (it offers {', '.join(self.precisions)})"
        kind = kind or self.default_kind
        if kind not in self.kinds:
            return f"{self.name} runs on {' / '.join(self.kinds)} instances, not {kind}"
        return self.check(kind, precision)

    @abstractmethod
    def check(self, kind: str, precision: str) -> str | None:
        """Why this machine cannot run an offered (kind, precision), e.g. a missing runtime; None when it can."""

    @abstractmethod
    def prepare(self, request: PrepareRequest) -> Path:
        """The artifact the runtime loads (cached by content; the source itself when nothing changes)."""

    @abstractmethod
    def native_files(self, artifact: Path) -> dict[str, Path]:
        """{path in the model directory: file} of the native form, besides config.pbtxt and warmup files."""

    def adapter_files(self, artifact: Path) -> dict[str, Path]:
        """Everything the python-backend model directory needs besides config.pbtxt and warmup files."""
        if self.adapter_model_file is None:
            raise TrialError(f"{self.name} has no python-backend adapter: it needs a server with "
                             f"Triton's {self.triton_backend} backend")
        return self.native_files(artifact) | {"1/model.py": self.adapter_model_file,
                                              "1/tuner_adapter.py": ADAPTER_HELPER}

    @abstractmethod
    def adapter_parameters(self, candidate: Candidate) -> dict[str, str]:
        """The `parameters` of the python-backend adapter's config."""

    @abstractmethod
    def native_parameters(self, candidate: Candidate) -> dict[str, str]:
        """The `parameters` of the native config, as Triton's backend names them."""

    def gpu_accelerators(self, candidate: Candidate) -> tuple[Accelerator, ...]:
        return ()

    def cpu_accelerators(self, candidate: Candidate) -> tuple[Accelerator, ...]:
        return ()


# --- artifacts: converted models cached by the content of their source and their settings -----


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, remembered per (path, size, mtime) within the process."""
    stat = path.stat()
    return _file_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def samples_digest(samples: Sequence[Mapping[str, np.ndarray]]) -> str:
    digest = hashlib.sha256()
    for sample in samples:
        for name in sorted(sample):
            value = np.ascontiguousarray(sample[name])
            digest.update(f"{name}:{value.dtype.str}:{value.shape}".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


def cached_artifact(source: Path, cache_dir: Path, settings: Mapping[str, object], filename: str,
                    build: Callable[[Path], dict]) -> Path:
    """The artifact `filename` built from `source` with `settings`, built once and reused.

    `build(folder)` writes `folder/filename` (and any sibling files) and returns notes worth keeping
    (e.g. which quantization ran); they land in `folder/tuner-artifact.json` with the settings.
    The folder is built under a temporary name and renamed into place, so concurrent searches
    never see half-written files; the loser of a race keeps the winner's copy.
    """
    key = hashlib.sha256(json.dumps({"source": file_digest(source), **settings}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:20]
    folder = cache_dir / f"{source.stem}-{settings.get('backend', 'model')}-{settings.get('precision', '')}-{key}"
    if (folder / filename).exists():
        return folder / filename
    cache_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=cache_dir))
    try:
        notes = build(scratch) or {}
        if not (scratch / filename).exists():
            raise TrialError(f"preparing {filename} for {settings.get('backend')} wrote no file")
        info = {"settings": dict(settings), "source": str(source), **notes}
        (scratch / ARTIFACT_INFO).write_text(json.dumps(info, indent=2, default=str))
        try:
            os.rename(scratch, folder)
        except OSError:
            if not (folder / filename).exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder / filename


def artifact_info(artifact: Path) -> dict:
    """What `cached_artifact` recorded about an artifact (settings, quantization method...); {} for
    a source model used as is."""
    info = artifact.parent / ARTIFACT_INFO
    return json.loads(info.read_text()) if info.is_file() else {}


def batch_of_one(sample: Mapping[str, np.ndarray], input_ranks: Mapping[str, int],
                 batched: bool) -> dict[str, np.ndarray]:
    """A per-request sample (no batch dim) as a model feed of batch 1.

    Triton gives every batch element at least one dim, so samples of [B] inputs are [1]: those lose
    that dim again, as the adapters do (templates/python/tuner_adapter.py: model_input).
    """
    feed = {}
    for name, rank in input_ranks.items():
        value = np.asarray(sample[name])
        if batched:
            value = value[None]
        if value.ndim == rank + 1 and value.shape[-1] == 1:
            value = value.reshape(value.shape[:-1])
        feed[name] = value
    return feed

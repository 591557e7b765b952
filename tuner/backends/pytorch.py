"""PyTorch (Triton's libtorch backend, TorchScript model.pt) on GPU: declared, not yet runnable.

An ONNX model cannot be turned back into a torch module, so this backend needs the source model's
TorchScript export, which tuner does not produce yet (the GPU work adds it for zoo models). Until
then it reports itself unavailable with the reason and never yields a measurement. The native
config it would export is real: `platform: "pytorch_libtorch"`, inputs named after forward()'s
arguments, outputs in the order forward() returns them (Triton's STRICT_CONFIG_ORDERING).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from tuner.backends._base import Backend
from tuner.errors import TrialError

if TYPE_CHECKING:
    from tuner.space import Candidate

NOT_YET = "tuner has no TorchScript export of the source model yet (an ONNX file cannot be turned back into torch)"


@functools.cache
def _cuda_reason() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA GPU"
    return None


def _check(kind: str, precision: str) -> str | None:
    return _cuda_reason() or NOT_YET


def prepare(onnx_path: Path, precision: str, cache_dir: Path, calibration_samples=(), **_: object) -> Path:
    raise TrialError(f"pytorch: {NOT_YET}")


def _native_parameters(candidate: Candidate) -> dict[str, str]:
    params = {"INFERENCE_MODE": "true"}
    if candidate.threads:
        params["INTRA_OP_THREAD_COUNT"] = str(candidate.threads)
    return params


BACKENDS = (
    Backend(
        name="pytorch", family="pytorch", triton_backend="pytorch",
        precisions=("fp32", "fp16", "bf16"), native_precisions=("fp32", "fp16", "bf16"),
        kinds=("KIND_GPU",), check=_check, prepare=prepare,
        native_files=lambda artifact: {"1/model.pt": artifact},
        adapter_model_file=None, adapter_parameters=lambda c: {}, native_parameters=_native_parameters,
    ),
)

"""PyTorch on GPU: the model's own PyTorch definition run in fp32, tf32, fp16 or bf16 on the instance's GPU.

An ONNX file cannot be turned back into a torch module, so this backend serves models whose
PyTorch definition tuner has: the zoo models (`ModelSource.torch_module`, e.g.
"tuner.zoo.wenet:wenet", whose `serving_module(name)` builds the very module the ONNX file was
exported from, same seeded weights). The artifact is a small JSON file naming that definition;
the python-backend adapter (templates/python/pytorch_model.py) builds the module, moves it to
the GPU Triton assigned the instance, and casts it to the precision. The runtime knobs of the
pytorch family (tuner/knobs.py: attention, compile, length_buckets, cuda_graphs) reach the adapter
as parameters; docs/gpu.md describes the ladder they form.

Native form: Triton's pytorch backend runs TorchScript (`platform: "pytorch_libtorch"`, model.pt);
tuner does not script the zoo modules, so export this backend with `--form adapter`.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

from tuner.backends.base import Backend, PrepareRequest, cached_artifact
from tuner.candidate import Candidate
from tuner.errors import TrialError
from tuner.resources import ADAPTER_DIR

NEEDS_DEFINITION = "pytorch needs the model's PyTorch definition: built-in models only (e.g. wenet)"


@functools.cache
def _cuda_reason() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA GPU"
    return None


class PyTorchBackend(Backend):
    """The model's PyTorch definition in the python backend, on the instance's GPU."""

    name = "pytorch"
    family = "pytorch"
    triton_backend = "pytorch"
    precisions = ("fp32", "tf32", "fp16", "bf16")
    native_precisions = ()
    kinds = ("KIND_GPU",)
    adapter_model_file = ADAPTER_DIR / "pytorch_model.py"

    def check(self, kind: str, precision: str) -> str | None:
        if precision in ("bf16", "tf32") and _cuda_reason() is None:
            import torch

            if precision == "bf16" and not torch.cuda.is_bf16_supported():
                return "this GPU has no bf16"
            if precision == "tf32" and torch.cuda.get_device_capability() < (8, 0):
                return "this GPU has no TF32 tensor cores (compute capability 8.0 or newer)"
        return _cuda_reason()

    def prepare(self, request: PrepareRequest) -> Path:
        """model.json naming the model's PyTorch definition, which the adapter builds."""
        torch_module = request.torch_module
        if torch_module is None:
            raise TrialError(NEEDS_DEFINITION)
        settings = {"backend": "pytorch", "precision": request.precision, "torch_module": torch_module}

        def write(folder: Path) -> dict:
            (folder / "model.json").write_text(json.dumps({"torch_module": torch_module}))
            return {}

        return cached_artifact(request.onnx_path, request.cache_dir, settings, "model.json", write)

    def native_files(self, artifact: Path) -> dict[str, Path]:
        return {"1/model.json": artifact}

    def adapter_parameters(self, candidate: Candidate) -> dict[str, str]:
        return {"model_file": "model.json", "precision": candidate.precision}

    def native_parameters(self, candidate: Candidate) -> dict[str, str]:
        params = {"INFERENCE_MODE": "true"}
        if candidate.threads:
            params["INTRA_OP_THREAD_COUNT"] = str(candidate.threads)
        return params


BACKENDS = (PyTorchBackend(),)

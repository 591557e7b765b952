"""Runtime backends: what each runtime can run here, how the model is converted for it, and what
its config.pbtxt says, natively (the stock Triton image's backend) or through a python-backend
adapter (the runtime in-process in the python backend: all the bundled tritonserver can run).

A backend name is a complete runtime choice, execution provider included, and each is an instance
of a `Backend` subclass of its runtime family (tuner/backends/base.py):

| name | runtime | instances | precisions |
|---|---|---|---|
| onnxruntime | ONNX Runtime, CPU provider | KIND_CPU | fp32 fp16 int8 |
| onnxruntime-cuda | ONNX Runtime, CUDA provider | KIND_GPU | fp32 fp16 |
| onnxruntime-tensorrt | ONNX Runtime, TensorRT provider | KIND_GPU | fp32 fp16 int8 |
| onnxruntime-openvino | ONNX Runtime, OpenVINO provider | KIND_CPU | fp32 int8 |
| openvino | OpenVINO runtime (IR) | KIND_CPU | fp32 fp16 bf16 int8 |
| tensorrt | TensorRT engine (plan) | KIND_GPU | fp32 fp16 int8 |
| pytorch | PyTorch, the zoo model's own definition (adapter only) | KIND_GPU | fp32 fp16 bf16 |

Example::

    from tuner import backends
    from tuner.backends import PrepareRequest

    ov = backends.get("openvino")
    ov.unavailable_reason("KIND_CPU", "bf16")      # None where the CPU has bf16, else why not
    xml = ov.prepare(PrepareRequest(Path("model.onnx"), "bf16", Path("results/cache/artifacts")))
    ov.adapter_files(xml)  # {"1/model.xml": ..., "1/model.bin": ..., "1/model.py": ..., "1/tuner_adapter.py": ...}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from tuner.backends import onnxruntime, openvino, pytorch, tensorrt
from tuner.backends.base import Accelerator, Backend, PrepareRequest, artifact_info
from tuner.candidate import PRECISIONS, Candidate
from tuner.errors import TunerError

__all__ = ["PRECISIONS", "Accelerator", "Backend", "PrepareRequest", "artifact_info", "choices", "get", "names",
           "serving_form", "template_variables"]

_REGISTRY: dict[str, Backend] = {
    backend.name: backend for module in (onnxruntime, openvino, tensorrt, pytorch) for backend in module.BACKENDS
}


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str) -> Backend:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise TunerError(f"unknown backend {name!r}; known: {', '.join(_REGISTRY)}") from None


def serving_form(backend: Backend, precision: str, server_backends: Iterable[str]) -> str | None:
    """How a server with these Triton backends can run `precision` on `backend`: "native" when it has
    the runtime's own Triton backend and the native config can express the precision, else
    "adapter" when it has the python backend and an adapter exists; None when it cannot."""
    server_backends = set(server_backends)
    if backend.triton_backend in server_backends and precision in backend.native_precisions:
        return "native"
    if "python" in server_backends and backend.adapter_model_file is not None:
        return "adapter"
    return None


def choices(backend_names: Iterable[str], precisions: Iterable[str], server_backends: Iterable[str] = ("python",),
            ) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The (backend, precision) pairs this machine and server can run, and why each other pair of
    the requested ones cannot ({"openvino:bf16": "this CPU has no bf16 ..."})."""
    usable, skipped = [], {}
    server_backends = tuple(server_backends)
    for name in backend_names:
        backend = get(name)
        for precision in precisions:
            reason = backend.unavailable_reason(None, precision)
            if reason is None and serving_form(backend, precision, server_backends) is None:
                reason = (f"the server has neither Triton's {backend.triton_backend} backend"
                          + (" nor the python backend" if backend.adapter_model_file else
                             f" ({name} has no python-backend adapter)"))
            if reason is None:
                usable.append((name, precision))
            else:
                skipped[f"{name}:{precision}"] = reason
    return usable, skipped


def template_variables(candidate: Candidate, form: str, ragged_outputs: Mapping[str, str] | None = None) -> dict:
    """The backend-specific variables of templates/{family}.{form}.pbtxt.j2."""
    backend = get(candidate.backend)
    if form == "native" and candidate.precision not in backend.native_precisions:
        raise TunerError(f"{backend.name} {candidate.precision} has no native config (Triton's "
                         f"{backend.triton_backend} backend cannot express it); export it with --form adapter")
    return {
        "adapter_parameters": backend.adapter_parameters(candidate) | {"ragged_outputs": json.dumps(ragged_outputs or {})},
        "native_parameters": backend.native_parameters(candidate),
        "gpu_accelerators": backend.gpu_accelerators(candidate),
        "cpu_accelerators": backend.cpu_accelerators(candidate),
    }

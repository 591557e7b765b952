"""OpenVINO's own runtime on CPU: the ONNX model converted once to IR (model.xml + model.bin).

The precision is a compile-time hint (`INFERENCE_PRECISION_HINT` f32 / f16 / bf16) on one f32 IR;
the CPU plugin runs a hint only where the CPU has the instructions (OPTIMIZATION_CAPABILITIES) and
silently runs f32 elsewhere, so such precisions are reported unavailable rather than measured as
if they were different. int8 serves the statically quantized Q/DQ graph of the onnxruntime backend,
converted to IR (the plugin runs its FakeQuantize layers in int8).
"""

from __future__ import annotations

import functools
from pathlib import Path

from tuner.backends import onnxruntime
from tuner.backends.base import Backend, PrepareRequest, artifact_info, cached_artifact
from tuner.candidate import Candidate
from tuner.errors import TrialError
from tuner.resources import ADAPTER_DIR

PRECISION_HINT = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}
_CAPABILITY = {"fp16": "FP16", "bf16": "BF16", "int8": "INT8"}


@functools.cache
def cpu_capabilities() -> tuple[str, ...] | None:
    """The CPU plugin's OPTIMIZATION_CAPABILITIES (e.g. FP32, INT8, BF16); None without openvino."""
    try:
        import openvino as ov
    except ImportError:
        return None
    return tuple(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def _to_ir(source: Path, target: Path) -> dict:
    import openvino as ov

    try:
        model = ov.convert_model(str(source))
    except Exception as exc:  # the ONNX frontend raises OpConversionFailure, GeneralFailure, ...
        raise TrialError(f"OpenVINO could not convert the model: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    # save_model compresses weights to f16 by default: keep f32, the hint decides the precision.
    ov.save_model(model, str(target), compress_to_fp16=False)
    return {"method": "openvino.convert_model + save_model(compress_to_fp16=False)"}


class OpenVinoBackend(Backend):
    """OpenVINO's CPU plugin on the IR of the model."""

    name = "openvino"
    family = "openvino"
    triton_backend = "openvino"
    precisions = ("fp32", "fp16", "bf16", "int8")
    native_precisions = ("fp32", "bf16", "int8")
    kinds = ("KIND_CPU",)
    adapter_model_file = ADAPTER_DIR / "openvino_model.py"

    def check(self, kind: str, precision: str) -> str | None:
        capabilities = cpu_capabilities()
        if capabilities is None:
            return "openvino is not installed (pip install openvino)"
        needed = _CAPABILITY.get(precision)
        if needed and needed not in capabilities:
            return (f"this CPU has no {precision} in OpenVINO (capabilities: {', '.join(capabilities)}); "
                    f"the hint would run f32")
        return None

    def prepare(self, request: PrepareRequest) -> Path:
        """model.xml of the IR to serve (model.bin beside it), cached by content."""
        import openvino as ov

        source = request.onnx_path
        if request.precision == "int8":
            if not request.calibration_samples:
                raise TrialError("openvino int8 needs calibration samples (it serves a static Q/DQ graph)")
            # The same Q/DQ graph as the onnxruntime backend's int8 (shared in the cache).
            source = onnxruntime.prepare_model(request)
        # One IR serves f32, f16 and bf16: the precision is a compile-time hint.
        settings = {"backend": "openvino", "precision": "int8" if request.precision == "int8" else "float",
                    "openvino": ov.__version__}
        notes = {"int8": artifact_info(source).get("int8")} if request.precision == "int8" else {}
        return cached_artifact(source, request.cache_dir, settings, "model.xml",
                               lambda folder: _to_ir(source, folder / "model.xml") | notes)

    def native_files(self, artifact: Path) -> dict[str, Path]:
        return {"1/model.xml": artifact, "1/model.bin": artifact.with_suffix(".bin")}

    def adapter_parameters(self, candidate: Candidate) -> dict[str, str]:
        return {"model_file": "model.xml", "precision_hint": PRECISION_HINT[candidate.precision],
                "threads": str(candidate.threads), "performance_hint": "LATENCY"}

    def native_parameters(self, candidate: Candidate) -> dict[str, str]:
        """Triton's openvino backend parameters: it has HINT_BF16 but no f16 hint (fp16 is adapter-only)."""
        params = {"PERFORMANCE_HINT": "LATENCY"}  # one stream per instance: Triton's instances are the parallelism
        if candidate.threads:
            params["INFERENCE_NUM_THREADS"] = str(candidate.threads)
        if candidate.precision == "bf16":
            params["HINT_BF16"] = "YES"
        return params


BACKENDS = (OpenVinoBackend(),)

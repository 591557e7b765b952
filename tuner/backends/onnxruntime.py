"""ONNX Runtime with each of its execution providers, as four backends.

- `onnxruntime`: the CPU execution provider; fp32, fp16 (graph converted, inputs and outputs stay
  fp32), int8 (Q/DQ static quantization calibrated on sample requests; dynamic weight-only
  quantization of MatMul/Gemm when there are no samples or static quantization fails).
- `onnxruntime-cuda`: the CUDA provider (the default of Triton's onnxruntime backend on KIND_GPU).
- `onnxruntime-tensorrt`: the TensorRT provider; fp16 / int8 are TensorRT's precision_mode, int8
  reads a symmetric Q/DQ graph.
- `onnxruntime-openvino`: the OpenVINO provider (the `onnxruntime-openvino` package, which replaces
  `onnxruntime`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tuner.backends.base import Accelerator, Backend, PrepareRequest, batch_of_one, cached_artifact, samples_digest
from tuner.candidate import Candidate
from tuner.errors import TrialError
from tuner.resources import ADAPTER_DIR

# Where the TensorRT provider keeps engines and timing caches, on the serving machine.
TRT_CACHE_DIR = "/tmp/tuner_trt_cache"
TRT_WORKSPACE_BYTES = 4 << 30
_QUANTIZED_OPS = ["MatMul", "Gemm", "Conv"]

_INSTALL = {
    "CUDAExecutionProvider": "install onnxruntime-gpu on a machine with an NVIDIA GPU",
    "TensorrtExecutionProvider": "install onnxruntime-gpu and TensorRT on a machine with an NVIDIA GPU",
    "OpenVINOExecutionProvider": "install onnxruntime-openvino in place of onnxruntime "
                                 "(both provide the onnxruntime module: they cannot share an environment)",
}


@functools.cache
def _available_providers() -> tuple[str, ...]:
    try:
        import onnxruntime as ort
    except ImportError:
        return ()
    return tuple(ort.get_available_providers())


# --- preparing the model: fp16 conversion and int8 quantization --------------------------------


def prepare_model(request: PrepareRequest, *, target: str = "cpu", backend: str = "onnxruntime") -> Path:
    """The ONNX file to serve for `request.precision`; `target` "cpu" or "tensorrt" picks the int8 scheme.

    fp32 is the source itself. fp16 converts every float tensor but keeps fp32 inputs and outputs.
    int8 is static Q/DQ quantization of MatMul/Gemm/Conv, calibrated on the calibration samples (one
    at a time, batch of one: they may differ in length); with none, or when calibration fails, CPU
    targets get dynamic quantization (int8 weights of MatMul/Gemm, activations quantized per
    call) and the artifact info says so. For CPU the weights use 7 bits (`reduce_range`): x86
    without VNNI saturates 8-bit u8 x s8 products (measured: twice the error on AVX2).
    """
    source, precision = request.onnx_path, request.precision
    if precision == "fp32":
        return source
    settings: dict[str, object] = {"backend": backend, "precision": precision, "onnxruntime": _ort_version()}
    if precision == "fp16":
        return cached_artifact(source, request.cache_dir, settings, "model.onnx",
                               lambda folder: _to_fp16(source, folder / "model.onnx"))
    if precision == "int8":
        samples = request.calibration_samples
        settings |= {"target": target, "calibration": samples_digest(samples),
                     "ops": _QUANTIZED_OPS, "recipe": 2}  # bump when the quantization settings change
        return cached_artifact(source, request.cache_dir, settings, "model.onnx",
                               lambda folder: _to_int8(source, folder / "model.onnx", samples, target))
    raise TrialError(f"{backend} has no {precision}")


def _ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__


def _to_fp16(source: Path, target: Path) -> dict:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    except Exception as exc:  # the converter raises ValueError, KeyError, ... on graphs it cannot handle
        raise TrialError(f"fp16 conversion failed: {type(exc).__name__}: {exc}") from None
    onnx.save(model, str(target))
    return {"method": "convert_float_to_float16(keep_io_types=True)"}


class _Samples:
    """ONNX Runtime's CalibrationDataReader over per-request samples, fed one at a time."""

    def __init__(self, source: Path, samples: Sequence[Mapping[str, np.ndarray]]):
        import onnx

        from tuner.signature import read_signature

        graph = onnx.load(str(source), load_external_data=False).graph
        initializers = {i.name for i in graph.initializer}
        ranks = {i.name: len(i.type.tensor_type.shape.dim) for i in graph.input if i.name not in initializers}
        batched = read_signature(source).batched
        self._feeds = iter([batch_of_one(s, ranks, batched) for s in samples])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # part of CalibrationDataReader's interface; calibration reads once
        pass


@contextlib.contextmanager
def _quiet_quantizer():
    """onnxruntime.quantization logs advice ("consider pre-processing") on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _to_int8(source: Path, target: Path, samples: Sequence[Mapping[str, np.ndarray]], runtime: str) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    notes: dict[str, object] = {}
    if samples:
        cpu = runtime == "cpu"
        extra = {"MatMulConstBOnly": True}  # activation x activation products stay float
        if not cpu:  # TensorRT reads symmetric int8 Q/DQ only
            extra |= {"ActivationSymmetric": True, "WeightSymmetric": True}
        try:
            with _quiet_quantizer():
                quantize_static(
                    str(source), str(target), _Samples(source, samples),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=_QUANTIZED_OPS,
                    per_channel=False,  # measured worse than per-tensor on MatMul weights (ORT 1.31)
                    reduce_range=cpu, activation_type=QuantType.QUInt8 if cpu else QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax, extra_options=extra)
            return {"int8": "static", "calibration_samples": len(samples)}
        except Exception as exc:  # calibration runs the model: any runtime error can come out of it
            if not cpu:
                raise TrialError(f"int8 calibration failed: {type(exc).__name__}: {exc}".splitlines()[0]) from None
            notes["static_failed"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    elif runtime != "cpu":
        raise TrialError("int8 with TensorRT needs calibration samples (it reads an explicit Q/DQ graph)")
    try:
        with _quiet_quantizer():
            quantize_dynamic(str(source), str(target), op_types_to_quantize=["MatMul", "Gemm"],
                             weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True})
    except Exception as exc:  # the quantizer raises on graphs it cannot handle
        raise TrialError(f"int8 quantization failed: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    return {"int8": "dynamic", **notes}


# --- the backends -----------------------------------------------------------------------------


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime with `providers`, the first the one this backend is about, the others its fallbacks."""

    family = "onnxruntime"
    triton_backend = "onnxruntime"
    adapter_model_file = ADAPTER_DIR / "onnxruntime_model.py"
    int8_target = "cpu"  # prepare_model's int8 scheme

    def __init__(self, name: str, providers: tuple[str, ...], kind: str, precisions: tuple[str, ...]):
        self.name = name
        self.providers = providers
        self.kinds = (kind,)
        self.precisions = self.native_precisions = precisions

    def check(self, kind: str, precision: str) -> str | None:
        if not _available_providers():
            return "onnxruntime is not installed (pip install onnxruntime)"
        if self.providers[0] not in _available_providers():
            return f"this onnxruntime has no {self.providers[0]}: {_INSTALL[self.providers[0]]}"
        return None

    def prepare(self, request: PrepareRequest) -> Path:
        # Same artifacts for every provider (one cache entry), except TensorRT's symmetric int8.
        return prepare_model(request, target=self.int8_target)

    def native_files(self, artifact: Path) -> dict[str, Path]:
        return {"1/model.onnx": artifact}

    def native_parameters(self, candidate: Candidate) -> dict[str, str]:
        return {"intra_op_thread_count": str(candidate.threads)} if candidate.threads else {}

    def adapter_parameters(self, candidate: Candidate) -> dict[str, str]:
        params = {"onnx_file": "model.onnx", "intra_op_threads": str(candidate.threads),
                  "providers": ",".join(self.providers)}
        provider_options = self.provider_options(candidate)
        if any(provider_options):
            params["provider_options"] = json.dumps(provider_options)
        return params

    def provider_options(self, candidate: Candidate) -> list[dict[str, str]]:
        """The adapter's options per provider (onnxruntime.InferenceSession's provider_options)."""
        return []


_PRECISION_MODE = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}


class OnnxRuntimeTensorRtBackend(OnnxRuntimeBackend):
    """The TensorRT provider: fp16 / int8 are its precision_mode; int8 reads a symmetric Q/DQ graph."""

    int8_target = "tensorrt"

    def prepare(self, request: PrepareRequest) -> Path:
        # TensorRT gets fp16 from its precision_mode on the fp32 graph; the others serve a converted graph.
        if request.precision == "fp16":
            request = dataclasses.replace(request, precision="fp32")
        return super().prepare(request)

    def gpu_accelerators(self, candidate: Candidate) -> tuple[Accelerator, ...]:
        return (Accelerator("tensorrt", {
            "precision_mode": _PRECISION_MODE[candidate.precision],
            "max_workspace_size_bytes": str(TRT_WORKSPACE_BYTES),
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": TRT_CACHE_DIR,
            "trt_timing_cache_enable": "1",
            "trt_timing_cache_path": TRT_CACHE_DIR,
        }),)

    def provider_options(self, candidate: Candidate) -> list[dict[str, str]]:
        """The same settings as `gpu_accelerators`, under the provider's own option names."""
        trt = {
            "trt_fp16_enable": str(candidate.precision == "fp16"),
            "trt_int8_enable": str(candidate.precision == "int8"),
            "trt_max_workspace_size": str(TRT_WORKSPACE_BYTES),
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": TRT_CACHE_DIR,
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": TRT_CACHE_DIR,
        }
        return [trt, {}, {}]


class OnnxRuntimeOpenVinoBackend(OnnxRuntimeBackend):
    """The OpenVINO provider, on CPU."""

    def cpu_accelerators(self, candidate: Candidate) -> tuple[Accelerator, ...]:
        return (Accelerator("openvino"),)

    def provider_options(self, candidate: Candidate) -> list[dict[str, str]]:
        ov = {"device_type": "CPU"}
        if candidate.threads:
            ov["num_of_threads"] = str(candidate.threads)
        return [ov, {}]


BACKENDS = (
    OnnxRuntimeBackend("onnxruntime", ("CPUExecutionProvider",), "KIND_CPU", ("fp32", "fp16", "int8")),
    # Triton's onnxruntime backend uses the CUDA provider on KIND_GPU without being asked.
    OnnxRuntimeBackend("onnxruntime-cuda", ("CUDAExecutionProvider", "CPUExecutionProvider"), "KIND_GPU",
                       ("fp32", "fp16")),
    OnnxRuntimeTensorRtBackend("onnxruntime-tensorrt",
                               ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
                               "KIND_GPU", ("fp32", "fp16", "int8")),
    OnnxRuntimeOpenVinoBackend("onnxruntime-openvino", ("OpenVINOExecutionProvider", "CPUExecutionProvider"),
                               "KIND_CPU", ("fp32", "int8")),
)

"""TensorRT engines (model.plan) built from the ONNX model with TensorRT's Python API.

Used where `tensorrt` is importable (a machine with an NVIDIA GPU and TensorRT installed); the
engine is specific to that GPU and TensorRT version. One optimization profile covers batch 1 to
the largest max_batch_size of the space and, for variable dims, the range seen in the study's
sample requests (tuner.trial.artifact passes them; int8 calibration inputs stand in, and without
either the dim spans SIGNATURE_RANGE). Not yet run on real hardware: no machine at hand has
TensorRT (`tuner doctor` says so).
fp16 lets TensorRT pick fp16 kernels; int8 builds from the symmetric Q/DQ graph of the
onnxruntime backend (explicit quantization). A timing cache shared by all builds in the cache
folder makes rebuilds fast. Served natively only (`platform: "tensorrt_plan"`): there is no
python-backend adapter.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tuner.backends import onnxruntime
from tuner.backends.base import Backend, PrepareRequest, cached_artifact
from tuner.candidate import Candidate
from tuner.errors import TrialError

if TYPE_CHECKING:
    from tuner.signature import Signature

WORKSPACE_BYTES = 4 << 30

Profile = dict[str, tuple[list[int], list[int], list[int]]]  # input -> (min, opt, max) shapes


@functools.cache
def _tensorrt_version() -> str | None:
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return trt.__version__


# A variable dim no sample sizes (no samples reached `prepare`) spans this range: any length a
# request may plausibly have, at the price of kernels tuned for the longest.
SIGNATURE_RANGE = (1, 4096)


def shape_profile(signature: Signature, samples: Sequence[Mapping[str, np.ndarray]], max_batch_size: int) -> Profile:
    """(min, opt, max) shape of every input: batch 1..max_batch_size; a variable dim over the range
    the samples span, or SIGNATURE_RANGE where no sample has the input; fixed dims as declared.
    opt is the largest: the shape of a full padded batch under load."""
    profile: Profile = {}
    for t in signature.inputs:
        low, high = [], []
        for axis, size in enumerate(t.dims):
            if size != -1:
                seen = [size]
            else:
                seen = [np.shape(s[t.name])[axis] for s in samples if t.name in s] or list(SIGNATURE_RANGE)
            low.append(int(min(seen)))
            high.append(int(max(seen)))
        if signature.batched:
            low, high = [1, *low], [max(max_batch_size, 1), *high]
        profile[t.name] = (low, list(high), high)
    return profile


def _build(source: Path, target: Path, precision: str, profile: Profile, timing_cache: Path) -> dict:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch; 8.x needs the flag.
    flags = 0 if int(trt.__version__.split(".")[0]) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TrialError(f"TensorRT could not parse the model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # scales come from the graph's Q/DQ nodes
    shapes = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        shapes.set_shape(name, *profile[name])
    config.add_optimization_profile(shapes)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=True)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TrialError(f"TensorRT could not build a {precision} engine (its log above says why)")
    target.write_bytes(plan)
    scratch = timing_cache.with_name(f"{timing_cache.name}.{os.getpid()}")
    scratch.write_bytes(memoryview(cache.serialize()))
    os.replace(scratch, timing_cache)
    return {"profile": profile}


class TensorRtBackend(Backend):
    """A TensorRT engine served by Triton's tensorrt backend."""

    name = "tensorrt"
    family = "tensorrt"
    triton_backend = "tensorrt"
    precisions = ("fp32", "fp16", "int8")
    native_precisions = ("fp32", "fp16", "int8")
    kinds = ("KIND_GPU",)
    adapter_model_file = None

    def check(self, kind: str, precision: str) -> str | None:
        if _tensorrt_version() is None:
            return "TensorRT is not installed (pip install tensorrt, on a machine with an NVIDIA GPU)"
        return None

    def prepare(self, request: PrepareRequest) -> Path:
        """model.plan built for this machine's GPU, cached by content, precision and profile."""
        from tuner.signature import read_signature

        # int8 calibration inputs are requests too: they size the profile when no samples came.
        samples = list(request.samples) or list(request.calibration_samples)
        profile = shape_profile(read_signature(request.onnx_path), samples, max(request.max_batch_size, 1))
        source = request.onnx_path
        if request.precision == "int8":
            source = onnxruntime.prepare_model(request, target="tensorrt", backend="tensorrt")
        settings = {"backend": "tensorrt", "precision": request.precision, "tensorrt": _tensorrt_version(),
                    "profile": profile, "workspace": WORKSPACE_BYTES}
        timing_cache = request.cache_dir / "tensorrt.timing-cache"
        return cached_artifact(source, request.cache_dir, settings, "model.plan",
                               lambda folder: _build(source, folder / "model.plan", request.precision, profile,
                                                     timing_cache))

    def native_files(self, artifact: Path) -> dict[str, Path]:
        return {"1/model.plan": artifact}

    def adapter_parameters(self, candidate: Candidate) -> dict[str, str]:
        return {}  # no adapter to configure

    def native_parameters(self, candidate: Candidate) -> dict[str, str]:
        return {}


BACKENDS = (TensorRtBackend(),)

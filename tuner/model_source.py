"""Resolve `--model` (a zoo name, an .onnx file, or a Triton model directory) into an ONNX file,
its signature, a name to serve it under, and realistic sample inputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tuner import zoo
from tuner.errors import TunerError
from tuner.signature import Signature, read_signature

SampleFn = Callable[[np.random.Generator, int], list[dict[str, np.ndarray]]]


@dataclass(frozen=True)
class ModelSource:
    name: str  # the model's name in Triton
    onnx_path: Path
    signature: Signature
    sample_inputs: SampleFn  # per-request inputs without the batch dimension
    ragged_outputs: dict[str, str] = field(default_factory=dict)
    torch_module: str | None = None  # "module:name" with serving_module(name): the PyTorch definition


def generic_samples(signature: Signature, default_length: int = 16) -> SampleFn:
    """Random inputs for any ONNX model: variable dims get `default_length`, integers stay small."""

    def make(rng: np.random.Generator, n: int) -> list[dict[str, np.ndarray]]:
        samples = []
        for _ in range(n):
            sample = {}
            for t in signature.inputs:
                shape = tuple(default_length if d == -1 else d for d in t.config_dims)
                if np.issubdtype(np.dtype(t.numpy_type), np.floating):
                    sample[t.name] = rng.standard_normal(shape).astype(t.numpy_type)
                elif t.numpy_type == "bool":
                    sample[t.name] = rng.integers(0, 2, shape).astype(bool)
                else:
                    sample[t.name] = rng.integers(0, 8, shape).astype(t.numpy_type)
            samples.append(sample)
        return samples

    return make


def _safe_name(stem: str) -> str:
    name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stem)
    return name or "model"


def resolve(model: str, cache_dir: Path) -> ModelSource:
    zoo_model = zoo.get(model)
    if zoo_model is not None:
        onnx_path = zoo_model.export(cache_dir / "zoo")
        return ModelSource(model, onnx_path, read_signature(onnx_path), zoo_model.sample_inputs,
                           dict(zoo_model.ragged_outputs), zoo_model.torch_module)
    path = Path(model)
    if not path.exists():
        known = ", ".join([*zoo.PIPELINES, *zoo.names()])
        raise TunerError(f"model {model!r} is neither a built-in model ({known}) nor an existing path")
    if path.is_dir():
        found = sorted(path.glob("*/model.onnx")) or sorted(path.glob("model.onnx"))
        if not found:
            raise TunerError(f"{path} holds no <version>/model.onnx; give a Triton model directory of an ONNX model")
        path, name = found[-1], path.name
    else:
        if path.suffix.lower() != ".onnx":
            raise TunerError(f"{path} is not an .onnx file; give an ONNX model, a Triton model directory or a zoo name")
        name = path.stem
    signature = read_signature(path)
    if {t.name for t in signature.inputs} == {"speech", "speech_lengths"}:
        # A WeNet-style encoder export (yours): realistic utterances and its ragged outputs.
        wenet = zoo.encoder_of("wenet")
        outputs = {t.name for t in signature.outputs}
        ragged = {o: n for o, n in wenet.ragged_outputs.items() if o in outputs and n in outputs}
        return ModelSource(_safe_name(name), path.resolve(), signature, wenet.sample_inputs, ragged)
    return ModelSource(_safe_name(name), path.resolve(), signature, generic_samples(signature))

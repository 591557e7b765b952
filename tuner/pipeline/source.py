"""What a pipeline search needs besides the repository: the requests its accuracy guard sends,
the measurement's input data, the reference outputs, and the config parameters worth searching.

``resolve(model, cache_dir)`` turns ``--model`` into a :class:`PipelineSource` when it names a
pipeline: a zoo pipeline (``wenet``, ``wenet-tiny``, with GPU steps ``wenet-gpu``,
``wenet-tiny-gpu``: tuner.zoo.wenet.repository),
a model repository whose top model is an ensemble (``DIR``), or a repository and its top model
(``DIR:MODEL``, the way to name a python BLS model). Anything else is left to
tuner.model_source (None).

A user's repository gets seeded random requests made from its top model's config inputs, one set
for both the guard and perf_analyzer, and no reference: the search takes the as-given
deployment's outputs as the reference once, at its start.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import triton_to_np_dtype

from tuner import zoo
from tuner.errors import TunerError
from tuner.measure.perf_analyzer import write_input_data
from tuner.model_source import generic_samples
from tuner.pipeline.repository import PipelineRepository, is_pipeline, read, split_model_arg
from tuner.signature import Signature, Tensor

ZOO_PIPELINES = zoo.PIPELINES  # name -> (WeNet variant, device)
# Imported by name: that module builds a PipelineSource, so importing it here would be a cycle.
_ZOO_BUILDER = "tuner.zoo.wenet.repository"
USER_REQUESTS = 8
VARIABLE_DIM = 16  # a -1 dim of a user's input, as tuner.model_source.generic_samples sizes it


@dataclass(frozen=True)
class PipelineSource:
    name: str  # the study's default name: the zoo pipeline's, or the repository folder's
    repository: PipelineRepository
    requests: list[dict[str, np.ndarray]]  # the guard's inputs, one dict per request, no batch dimension
    input_data: Path  # perf_analyzer --input-data JSON of the measurement's inputs (per-request shapes)
    # Expected outputs per request; None: the as-given deployment's outputs are the reference
    # (taken once at the start of a search).
    reference: list[dict[str, np.ndarray]] | None
    parameters: dict[str, dict[str, tuple[str, ...]]]  # config parameters to search: {step: {key: values}}
    # The reference for a trial's searched parameters ({step: {key: value}}), where they change what
    # the right outputs are (WeNet's scoring method); None: `reference` for every trial.
    reference_for: Callable[[Mapping[str, Mapping[str, str]]], list[dict[str, np.ndarray]]] | None = None
    mean_seconds: float | None = None  # WeNet: mean utterance duration (audio s served = utt/s * this)


def resolve(model: str, cache_dir: Path, seed: int = 0) -> PipelineSource | None:
    """The pipeline ``model`` names, or None when it names none; files it writes (exports, the
    zoo's repository, input data) go under ``cache_dir``."""
    cache_dir = Path(cache_dir)
    if model in ZOO_PIPELINES:
        builder = importlib.import_module(_ZOO_BUILDER)
        variant, device = ZOO_PIPELINES[model]
        return builder.pipeline_source(variant, cache_dir / "zoo", seed, device)
    root, top = split_model_arg(model)
    if top is None and not is_pipeline(root):
        return None
    if top is not None and not root.is_dir():
        return None
    return _user_source(read(root, top), cache_dir / "pipelines", seed)


def _user_source(repo: PipelineRepository, cache_dir: Path, seed: int) -> PipelineSource:
    signature = input_signature(repo)
    requests = generic_samples(signature, VARIABLE_DIM)(np.random.default_rng(seed), USER_REQUESTS)
    name = repo.root.resolve().name
    # Named by what decides its content, so repositories and seeds never share one.
    key = hashlib.sha256(f"{seed}\n{text_format.MessageToString(repo.top_config)}".encode()).hexdigest()[:16]
    input_data = cache_dir / f"{name}-{repo.top}-{key}-input-data.json"
    if not input_data.is_file():
        # Written aside and renamed: a worker reading it never sees half a file.
        partial = input_data.with_name(f".{input_data.name}.{os.getpid()}")
        os.replace(write_input_data(partial, signature, requests), input_data)
    return PipelineSource(name, repo, requests, input_data, reference=None, parameters={})


def input_signature(repo: PipelineRepository) -> Signature:
    """The top model's inputs as tuner.signature tensors (dims without the batch dimension)."""
    tensors = []
    for t in repo.top_config.input:
        triton_type = model_config_pb2.DataType.Name(t.data_type)
        if triton_type == "TYPE_STRING":
            raise TunerError(f"input {t.name} of {repo.top} is TYPE_STRING: pipelines with string inputs "
                             "are not supported yet")
        numpy_type = np.dtype(triton_to_np_dtype(triton_type.removeprefix("TYPE_"))).name
        tensors.append(Tensor(t.name, triton_type, numpy_type, tuple(t.dims)))
    return Signature(tuple(tensors), (), batched=repo.top_config.max_batch_size > 0)

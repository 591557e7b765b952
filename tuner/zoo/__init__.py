"""Built-in models the tuner can export to ONNX and serve, so it can be tried without a model of one's own.

Importing this package is cheap (numpy only): torch is imported when a model is exported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tuner.zoo import wenet

__all__ = ["PIPELINES", "ZooModel", "get", "names"]

# Zoo pipeline name -> the WeNet variant it serves and the device its models run on. A variant's
# own name is its audio-to-text pipeline, as WeNet is deployed (tuner.zoo.wenet.repository); its
# encoder alone is the zoo model ``<variant>-encoder``.
PIPELINES = {
    "wenet": ("wenet", "cpu"),
    "wenet-tiny": ("wenet-tiny", "cpu"),
    "wenet-gpu": ("wenet", "gpu"),
    "wenet-tiny-gpu": ("wenet-tiny", "gpu"),
}


@dataclass(frozen=True)
class ZooModel:
    """A model of the zoo: how to export it and how to make realistic requests for it."""

    name: str
    description: str
    # cache_dir -> path of the ONNX model the tuner serves (exported on first use, then cached).
    export: Callable[[Path], Path]
    # (rng, n) -> n single requests, each input without the batch dim.
    sample_inputs: Callable[[np.random.Generator, int], list[dict[str, np.ndarray]]]
    # Outputs whose time axis (axis 1, counting the batch axis) is padded in a ragged batch,
    # mapped to the output that holds each item's valid length along that axis.
    ragged_outputs: dict[str, str] = field(hash=False)
    # "module:name" whose `serving_module(name)` builds the same model in PyTorch (the pytorch backend).
    torch_module: str | None = None


def encoder_name(variant: str) -> str:
    """The zoo name of a WeNet variant's encoder alone ("wenet" -> "wenet-encoder")."""
    return f"{variant}-encoder"


def _wenet_model(variant: str, description: str, min_seconds: float, max_seconds: float) -> ZooModel:
    """Registry entry of a WeNet variant's encoder alone (``<variant>-encoder``); the variant's
    name itself is its audio-to-text pipeline (tuner.pipeline.source.ZOO_PIPELINES)."""

    def export(cache_dir: Path) -> Path:
        return wenet.export(variant, cache_dir).encoder

    sample = functools.partial(
        wenet.sample_utterances, min_seconds=min_seconds, max_seconds=max_seconds
    )
    padded = ("encoder_out", "ctc_log_probs", "beam_log_probs", "beam_log_probs_idx")
    return ZooModel(
        name=encoder_name(variant),
        description=description,
        export=export,
        sample_inputs=sample,
        ragged_outputs={output: "encoder_out_lens" for output in padded},
        torch_module=f"tuner.zoo.wenet:{variant}",
    )


_MODELS: dict[str, ZooModel] = {
    model.name: model
    for model in (
        _wenet_model(
            "wenet",
            "WeNet conformer CTC encoder, AISHELL size (12 x 256-d blocks, 4233 chars, ~30M "
            "parameters, random weights); 2-16 s utterances of 80-bin fbank",
            min_seconds=2.0,
            max_seconds=16.0,
        ),
        _wenet_model(
            "wenet-tiny",
            "WeNet conformer CTC encoder, tiny (2 x 64-d blocks, 100 tokens, random weights) "
            "for tests; 0.5-3 s utterances",
            min_seconds=0.5,
            max_seconds=3.0,
        ),
    )
}


def get(name: str) -> ZooModel | None:
    """The zoo model called ``name``, or None."""
    return _MODELS.get(name)


def encoder_of(variant: str) -> ZooModel | None:
    """The zoo entry of a WeNet variant's encoder alone, or None for an unknown variant."""
    return get(encoder_name(variant))


def names() -> list[str]:
    """Names of all zoo models, sorted."""
    return sorted(_MODELS)

"""WeNet conformer ASR model, built in PyTorch and exported to ONNX the way WeNet's GPU export does.

The model follows WeNet's AISHELL conformer recipe (``examples/aishell/s0/conf/train_conformer.yaml``)
and the offline (non-streaming) ONNX export of ``wenet/bin/export_onnx_gpu.py``, which is what
WeNet's Triton model repository serves:

* ``encoder.onnx``: global CMVN, Conv2d subsampling x4, conformer blocks (macaron FFNs,
  relative-position self-attention, convolution module), final LayerNorm, CTC head.
  Inputs ``speech`` float32 [B, T, 80] and ``speech_lengths`` int32 [B]; outputs ``encoder_out``
  [B, T', d_model], ``encoder_out_lens`` int32 [B], ``ctc_log_probs`` [B, T', vocab] and the CTC
  top-``BEAM`` ``beam_log_probs`` / ``beam_log_probs_idx`` [B, T', BEAM], with
  ``T' = ((T - 1) // 2 - 1) // 2``.
* ``decoder.onnx``: attention rescoring of ``BEAM`` CTC hypotheses per utterance with WeNet's
  left-to-right transformer decoder; output ``best_index`` int64 [B].

One deliberate difference from WeNet: the convolution module zeroes padded frames right before
its depthwise conv (WeNet does it before the first pointwise conv, whose bias makes them
non-zero again), so a padded batch gives each utterance exactly what it gets alone.

No checkpoint can be downloaded, so weights are random with a fixed seed: the compute graph and
its cost are those of the real model, the transcripts are meaningless.

Modules: ``config`` (variants, graph shapes and names), ``audio`` (sample inputs), ``cache``
(where exports live), ``model`` (the torch modules) and ``onnx_export``. Torch takes seconds to
import and is an optional extra, so this package imports only the first three: ``model`` is
loaded when a model is built or served (``build``, ``build_from``, ``parameter_count`` and
``serving_module`` below resolve on first use), ``onnx_export`` when an export is not cached.
"""

from __future__ import annotations

from tuner.zoo.wenet.audio import collate, fbank_stats, sample_utterances
from tuner.zoo.wenet.cache import EXPORTER_VERSION, ZooArtifacts, artifacts_for, export, settings_hash
from tuner.zoo.wenet.config import (
    BEAM,
    CONFIGS,
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    EXPORT_MIN_FRAMES,
    EXPORT_MIN_HYP_LEN,
    FEATURE_DIM,
    FRAMES_PER_SECOND,
    MAX_BATCH,
    MAX_FRAMES,
    MAX_HYP_LEN,
    MIN_FRAMES,
    OPSET,
    WenetConfig,
    get_config,
    subsampled_frames,
)

_FROM_MODEL = ("build", "build_from", "parameter_count", "serving_module")

__all__ = [
    "BEAM",
    "CONFIGS",
    "DECODER_INPUTS",
    "DECODER_OUTPUTS",
    "ENCODER_INPUTS",
    "ENCODER_OUTPUTS",
    "EXPORTER_VERSION",
    "EXPORT_MIN_FRAMES",
    "EXPORT_MIN_HYP_LEN",
    "FEATURE_DIM",
    "FRAMES_PER_SECOND",
    "MAX_BATCH",
    "MAX_FRAMES",
    "MAX_HYP_LEN",
    "MIN_FRAMES",
    "OPSET",
    "WenetConfig",
    "ZooArtifacts",
    "artifacts_for",
    "collate",
    "export",
    "fbank_stats",
    "get_config",
    "sample_utterances",
    "settings_hash",
    "subsampled_frames",
    *_FROM_MODEL,
]


def __getattr__(name: str) -> object:
    # PEP 562: only an actual use of the torch modules imports torch.
    if name in _FROM_MODEL:
        from tuner.zoo.wenet import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

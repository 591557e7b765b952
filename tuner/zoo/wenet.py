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

Torch is imported lazily (it takes seconds and is an optional extra): sample inputs, cache look-ups
and the registry work without it; only building or exporting a model imports it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import onnx_ir
    import onnxruntime
    import torch

log = logging.getLogger(__name__)

# Bump whenever the model code or the export settings change: it is part of the cache key.
EXPORTER_VERSION = "tuner-wenet-onnx-2"
# The dynamo exporter emits opset 18 natively; onnxruntime >= 1.14 runs it.
OPSET = 18
FEATURE_DIM = 80  # log-mel fbank bins
FRAMES_PER_SECOND = 100  # 10 ms frame shift
BEAM = 10  # CTC prefix-beam width of WeNet's Triton pipeline (--beam_size default)
# Shortest input the two stride-2 3x3 convolutions accept: T' = ((7 - 1) // 2 - 1) // 2 = 1.
MIN_FRAMES = 7
# torch.export assumes dynamic sizes of at least 2 (T' >= 2 needs T >= 11, a hypothesis length of
# at least 3 tokens with <sos> and <eos>); the graphs also run below that, as the tests check.
EXPORT_MIN_FRAMES = 11
EXPORT_MIN_HYP_LEN = 3
# Largest sizes the exported graphs are declared for (100k frames: about 16 minutes of audio).
MAX_FRAMES = 100_000
MAX_BATCH = 4096
MAX_HYP_LEN = 4096

ENCODER_INPUTS = ("speech", "speech_lengths")
ENCODER_OUTPUTS = (
    "encoder_out",
    "encoder_out_lens",
    "ctc_log_probs",
    "beam_log_probs",
    "beam_log_probs_idx",
)
DECODER_INPUTS = (
    "encoder_out",
    "encoder_out_lens",
    "hyps_pad_sos_eos",
    "hyps_lens_sos",
    "ctc_score",
)
DECODER_OUTPUTS = ("best_index",)


@dataclass(frozen=True)
class WenetConfig:
    """Sizes and fixed settings of one model variant; every field goes into the cache key."""

    d_model: int
    attention_heads: int
    linear_units: int
    encoder_blocks: int
    decoder_blocks: int
    cnn_module_kernel: int
    vocab_size: int
    conv_norm: Literal["layer_norm", "batch_norm"] = "layer_norm"
    ctc_weight: float = 0.3  # model_conf.ctc_weight of the AISHELL recipe
    beam: int = BEAM
    feature_dim: int = FEATURE_DIM
    seed: int = 0


CONFIGS: dict[str, WenetConfig] = {
    # AISHELL-1 conformer: 12 x 256-d blocks, 4 heads, FFN 2048, kernel 15, 4233 chars, 6 decoder blocks.
    "wenet": WenetConfig(
        d_model=256,
        attention_heads=4,
        linear_units=2048,
        encoder_blocks=12,
        decoder_blocks=6,
        cnn_module_kernel=15,
        vocab_size=4233,
    ),
    # Same architecture, small enough to export and check in about half a minute.
    "wenet-tiny": WenetConfig(
        d_model=64,
        attention_heads=2,
        linear_units=128,
        encoder_blocks=2,
        decoder_blocks=1,
        cnn_module_kernel=15,
        vocab_size=100,
    ),
}


@dataclass(frozen=True)
class ZooArtifacts:
    """The exported files of one model variant."""

    name: str
    directory: Path
    encoder: Path
    decoder: Path


def get_config(name: str) -> WenetConfig:
    """The config of a variant; raises KeyError naming the known variants."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown WeNet variant {name!r}; known: {sorted(CONFIGS)}") from None


def subsampled_frames(frames: int) -> int:
    """Encoder output frames for ``frames`` input frames (two valid 3x3 convs with stride 2)."""
    return max(0, ((frames - 1) // 2 - 1) // 2)


# --------------------------------------------------------------------------------------------
# Realistic inputs (numpy only)
# --------------------------------------------------------------------------------------------


def fbank_stats(feature_dim: int = FEATURE_DIM) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean and std of Kaldi-style 80-bin log-mel fbank of 16 kHz speech (before CMVN).

    WeNet computes fbank on int16-scaled waveforms, so log energies sit around 8 to 14 with low
    bins louder than high ones. The model's global CMVN uses these same statistics, as a trained
    model's ``global_cmvn`` file would hold statistics of its training data.
    """
    mean = np.linspace(13.0, 9.0, feature_dim, dtype=np.float32)
    std = np.full(feature_dim, 3.0, dtype=np.float32)
    return mean, std


def _fake_fbank(rng: np.random.Generator, frames: int, feature_dim: int) -> np.ndarray:
    """Fbank-like features: bin profile + slowly varying loudness (syllables, pauses) + noise."""
    mean, std = fbank_stats(feature_dim)
    # White noise smoothed over 100 ms gives a speech-like energy envelope shared by all bins.
    envelope = np.convolve(rng.normal(0.0, 1.0, frames + 9), np.ones(10) / 10.0, mode="valid")
    envelope = envelope / max(float(envelope.std()), 1e-3) * 0.8 * std.mean()
    noise = rng.normal(0.0, 0.6, (frames, feature_dim)) * std
    feats = mean + envelope[:frames, None] + noise
    return feats.astype(np.float32)


def sample_utterances(
    rng: np.random.Generator,
    n: int,
    min_seconds: float = 2.0,
    max_seconds: float = 16.0,
) -> list[dict[str, np.ndarray]]:
    """``n`` utterances of encoder inputs without the batch dim.

    Each is ``{"speech": float32 [T, 80], "speech_lengths": int32 [1]}`` with ``T`` frames of
    10 ms. Durations are stratified over ``[min_seconds, max_seconds]`` (one per equal-width
    stratum, in random order) so even a small sample spans the range.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    # The epsilon keeps e.g. 0.57 s at 57 frames (0.57 * 100 == 57.00000000000001).
    lo = max(MIN_FRAMES, math.ceil(min_seconds * FRAMES_PER_SECOND - 1e-6))
    hi = max(lo, math.floor(max_seconds * FRAMES_PER_SECOND + 1e-6))
    strata = (rng.permutation(n) + rng.uniform(size=n)) / max(n, 1)
    frames = np.clip(np.round(lo + strata * (hi - lo)).astype(int), lo, hi)
    return [
        {
            "speech": _fake_fbank(rng, int(t), FEATURE_DIM),
            "speech_lengths": np.array([t], dtype=np.int32),
        }
        for t in frames
    ]


def collate(utterances: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Zero-pad utterances from :func:`sample_utterances` into one encoder batch."""
    frames = max(u["speech"].shape[0] for u in utterances)
    speech = np.zeros((len(utterances), frames, utterances[0]["speech"].shape[1]), np.float32)
    for i, u in enumerate(utterances):
        speech[i, : u["speech"].shape[0]] = u["speech"]
    lengths = np.concatenate([u["speech_lengths"] for u in utterances]).astype(np.int32)
    return {"speech": speech, "speech_lengths": lengths}


# --------------------------------------------------------------------------------------------
# Model (torch, defined on first use)
# --------------------------------------------------------------------------------------------


@functools.cache
def _nn() -> SimpleNamespace:
    """Define the torch modules; a function so that importing this module does not import torch.

    Module and parameter names follow WeNet's, so a WeNet checkpoint's state dict would map
    onto them with little renaming. Dropout is left out: these modules only run inference.
    """
    import torch
    from torch import nn

    def sinusoid(frames: int, d_model: int, like: torch.Tensor) -> torch.Tensor:
        """WeNet's sinusoidal table rows 0..frames-1, shape (1, frames, d_model), on ``like``'s
        device and in its dtype (the module also runs on GPU in fp16 / bf16).

        Computed on the fly rather than sliced from a 5000-row buffer: the ONNX graph then has
        no length limit and no 5 MB constant.
        """
        position = torch.arange(frames, dtype=torch.float32, device=like.device).unsqueeze(1)
        div_term = torch.exp(
            torch.arange(0, d_model, 2, dtype=torch.float32, device=like.device)
            * -(math.log(10000.0) / d_model)
        )
        angles = position * div_term
        # Interleave so that pe[:, 0::2] = sin and pe[:, 1::2] = cos, as WeNet fills its table.
        pe = torch.stack((torch.sin(angles), torch.cos(angles)), dim=-1).reshape(frames, d_model)
        return pe.unsqueeze(0).to(like.dtype)

    def length_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
        """(B, frames) bool, True on valid frames (WeNet's ``~make_pad_mask``)."""
        positions = torch.arange(frames, device=lengths.device)
        return positions.unsqueeze(0) < lengths.unsqueeze(1)

    class GlobalCMVN(nn.Module):
        """Global mean/variance normalisation with fixed statistics (WeNet's ``global_cmvn``)."""

        def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(mean.copy()))
            self.register_buffer("istd", torch.from_numpy((1.0 / std).astype(np.float32)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x - self.mean) * self.istd

    class Conv2dSubsampling4(nn.Module):
        """Two 3x3 stride-2 convolutions + linear: 4x fewer frames, ``idim`` -> ``odim`` features."""

        def __init__(self, idim: int, odim: int) -> None:
            super().__init__()
            self.conv = nn.Sequential(
                nn.Conv2d(1, odim, 3, 2),
                nn.ReLU(),
                nn.Conv2d(odim, odim, 3, 2),
                nn.ReLU(),
            )
            self.out = nn.Linear(odim * (((idim - 1) // 2 - 1) // 2), odim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.conv(x.unsqueeze(1))  # (B, C, T', F')
            b, c, t, f = x.size()
            return self.out(x.transpose(1, 2).reshape(b, t, c * f))

    class RelPositionalEncoding(nn.Module):
        """Scale by sqrt(d_model) and return the position table separately for the attention."""

        def __init__(self, d_model: int) -> None:
            super().__init__()
            self.d_model = d_model
            self.xscale = math.sqrt(d_model)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x * self.xscale, sinusoid(x.size(1), self.d_model, x)

    class PositionalEncoding(RelPositionalEncoding):
        """Absolute sinusoidal encoding added to the input (the decoder's)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return x * self.xscale + sinusoid(x.size(1), self.d_model, x)

    class PositionwiseFeedForward(nn.Module):
        """Linear -> activation -> linear."""

        def __init__(self, d_model: int, hidden: int, activation: nn.Module) -> None:
            super().__init__()
            self.w_1 = nn.Linear(d_model, hidden)
            self.activation = activation
            self.w_2 = nn.Linear(hidden, d_model)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.w_2(self.activation(self.w_1(x)))

    class MultiHeadedAttention(nn.Module):
        """Scaled dot-product multi-head attention with a boolean key mask."""

        def __init__(self, n_head: int, n_feat: int) -> None:
            super().__init__()
            assert n_feat % n_head == 0
            self.d_k = n_feat // n_head
            self.h = n_head
            self.linear_q = nn.Linear(n_feat, n_feat)
            self.linear_k = nn.Linear(n_feat, n_feat)
            self.linear_v = nn.Linear(n_feat, n_feat)
            self.linear_out = nn.Linear(n_feat, n_feat)

        def split_heads(self, x: torch.Tensor) -> torch.Tensor:
            """(B, T, d_model) -> (B, T, head, d_k)."""
            return x.reshape(x.size(0), x.size(1), self.h, self.d_k)

        def forward_attention(
            self, value: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor
        ) -> torch.Tensor:
            """Masked softmax over keys, then weighted values.

            ``mask`` is (B, 1, T2) or (B, T1, T2), True where the key may be attended. Masked
            probabilities are set to exactly 0 so padded keys contribute nothing, and a
            finite fill value keeps fully masked rows (empty utterances) free of NaN.
            """
            keep = mask.unsqueeze(1)  # (B, 1, *, T2)
            scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
            attn = torch.softmax(scores, dim=-1).masked_fill(~keep, 0.0)
            x = torch.matmul(attn, value)  # (B, head, T1, d_k)
            x = x.transpose(1, 2).reshape(x.size(0), x.size(2), self.h * self.d_k)
            return self.linear_out(x)

        def forward(
            self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor
        ) -> torch.Tensor:
            q = self.split_heads(self.linear_q(query)).transpose(1, 2)
            k = self.split_heads(self.linear_k(key)).transpose(1, 2)
            v = self.split_heads(self.linear_v(value)).transpose(1, 2)
            scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.d_k)
            return self.forward_attention(v, scores, mask)

    class RelPositionMultiHeadedAttention(MultiHeadedAttention):
        """WeNet's relative-position attention (Transformer-XL biases u and v).

        Like WeNet's own implementation, it scores against the position table without
        ``rel_shift`` (WeNet dropped it as useless for ASR and awkward for streaming).
        """

        def __init__(self, n_head: int, n_feat: int) -> None:
            super().__init__(n_head, n_feat)
            self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
            self.pos_bias_u = nn.Parameter(torch.empty(self.h, self.d_k))
            self.pos_bias_v = nn.Parameter(torch.empty(self.h, self.d_k))
            nn.init.xavier_uniform_(self.pos_bias_u)
            nn.init.xavier_uniform_(self.pos_bias_v)

        def forward(  # type: ignore[override]
            self, x: torch.Tensor, mask: torch.Tensor, pos_emb: torch.Tensor
        ) -> torch.Tensor:
            q = self.split_heads(self.linear_q(x))  # (B, T, head, d_k)
            k = self.split_heads(self.linear_k(x)).transpose(1, 2)
            v = self.split_heads(self.linear_v(x)).transpose(1, 2)
            p = self.split_heads(self.linear_pos(pos_emb)).transpose(1, 2)  # (1, head, T, d_k)
            q_with_bias_u = (q + self.pos_bias_u).transpose(1, 2)
            q_with_bias_v = (q + self.pos_bias_v).transpose(1, 2)
            matrix_ac = torch.matmul(q_with_bias_u, k.transpose(-2, -1))
            matrix_bd = torch.matmul(q_with_bias_v, p.transpose(-2, -1))
            scores = (matrix_ac + matrix_bd) / math.sqrt(self.d_k)
            return self.forward_attention(v, scores, mask)

    class ConvolutionModule(nn.Module):
        """Pointwise conv + GLU, depthwise conv, norm, swish, pointwise conv."""

        def __init__(self, channels: int, kernel_size: int, norm: str) -> None:
            super().__init__()
            assert kernel_size % 2 == 1, "a symmetric (non-causal) depthwise conv needs an odd kernel"
            self.pointwise_conv1 = nn.Conv1d(channels, 2 * channels, 1)
            self.depthwise_conv = nn.Conv1d(
                channels, channels, kernel_size, padding=(kernel_size - 1) // 2, groups=channels
            )
            self.use_layer_norm = norm == "layer_norm"
            self.norm = nn.LayerNorm(channels) if self.use_layer_norm else nn.BatchNorm1d(channels)
            self.activation = nn.SiLU()
            self.pointwise_conv2 = nn.Conv1d(channels, channels, 1)

        def forward(self, x: torch.Tensor, mask_pad: torch.Tensor) -> torch.Tensor:
            """``x`` (B, T, C), ``mask_pad`` (B, 1, T) True on valid frames."""
            x = x.transpose(1, 2)  # (B, C, T)
            x = nn.functional.glu(self.pointwise_conv1(x), dim=1)
            # WeNet zeroes padded frames before pointwise_conv1; its bias then makes them non-zero
            # again after the GLU, so valid frames near the end still see padding. Zeroing right
            # before the depthwise conv makes a padded batch match each utterance run alone.
            x = x.masked_fill(~mask_pad, 0.0)
            x = self.depthwise_conv(x)
            if self.use_layer_norm:
                x = self.norm(x.transpose(1, 2)).transpose(1, 2)
            else:
                x = self.norm(x)
            x = self.pointwise_conv2(self.activation(x))
            x = x.masked_fill(~mask_pad, 0.0)
            return x.transpose(1, 2)

    class ConformerEncoderLayer(nn.Module):
        """Macaron FFN/2, self-attention, convolution, FFN/2, final norm; all pre-norm."""

        def __init__(self, cfg: WenetConfig) -> None:
            super().__init__()
            d = cfg.d_model
            self.self_attn = RelPositionMultiHeadedAttention(cfg.attention_heads, d)
            self.feed_forward = PositionwiseFeedForward(d, cfg.linear_units, nn.SiLU())
            self.feed_forward_macaron = PositionwiseFeedForward(d, cfg.linear_units, nn.SiLU())
            self.conv_module = ConvolutionModule(d, cfg.cnn_module_kernel, cfg.conv_norm)
            self.norm_ff = nn.LayerNorm(d, eps=1e-5)
            self.norm_mha = nn.LayerNorm(d, eps=1e-5)
            self.norm_ff_macaron = nn.LayerNorm(d, eps=1e-5)
            self.norm_conv = nn.LayerNorm(d, eps=1e-5)
            self.norm_final = nn.LayerNorm(d, eps=1e-5)
            self.ff_scale = 0.5

        def forward(self, x: torch.Tensor, mask: torch.Tensor, pos_emb: torch.Tensor) -> torch.Tensor:
            x = x + self.ff_scale * self.feed_forward_macaron(self.norm_ff_macaron(x))
            x = x + self.self_attn(self.norm_mha(x), mask, pos_emb)
            x = x + self.conv_module(self.norm_conv(x), mask)
            x = x + self.ff_scale * self.feed_forward(self.norm_ff(x))
            return self.norm_final(x)

    class WenetEncoder(nn.Module):
        """Conformer encoder + CTC head with the inputs/outputs of WeNet's offline GPU export."""

        def __init__(self, cfg: WenetConfig) -> None:
            super().__init__()
            self.beam = cfg.beam
            self.global_cmvn = GlobalCMVN(*fbank_stats(cfg.feature_dim))
            self.embed = Conv2dSubsampling4(cfg.feature_dim, cfg.d_model)
            self.pos_enc = RelPositionalEncoding(cfg.d_model)
            self.encoders = nn.ModuleList(ConformerEncoderLayer(cfg) for _ in range(cfg.encoder_blocks))
            self.after_norm = nn.LayerNorm(cfg.d_model, eps=1e-5)
            self.ctc_lo = nn.Linear(cfg.d_model, cfg.vocab_size)

        @staticmethod
        def subsampled_mask(speech_lengths: torch.Tensor, frames: int) -> torch.Tensor:
            """(B, 1, frames) mask of the subsampled frames computed from valid input frames only.

            WeNet slices the input mask as ``mask[:, :, 2::2][:, :, 2::2]``: output frame i of a
            stride-2 3x3 conv reads inputs 2i..2i+2, so it is valid iff input 2i+2 is. Both
            masks are prefixes, so that equals ``i < ((length - 1) // 2 - 1) // 2``, which is
            what is computed here: torch.export cannot prove that the sliced mask is as long
            as the conv output and would otherwise add a guard on the input length.
            """
            lengths = ((speech_lengths - 1) // 2 - 1) // 2  # floors, like the conv output size
            return length_mask(lengths, frames).unsqueeze(1)

        def forward(
            self, speech: torch.Tensor, speech_lengths: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
            x = self.embed(self.global_cmvn(speech))
            mask = self.subsampled_mask(speech_lengths, x.size(1))
            x, pos_emb = self.pos_enc(x)
            for layer in self.encoders:
                x = layer(x, mask, pos_emb)
            encoder_out = self.after_norm(x)
            encoder_out_lens = mask.squeeze(1).sum(1).to(torch.int32)
            ctc_log_probs = torch.log_softmax(self.ctc_lo(encoder_out), dim=-1)
            beam_log_probs, beam_log_probs_idx = torch.topk(ctc_log_probs, self.beam, dim=2)
            return encoder_out, encoder_out_lens, ctc_log_probs, beam_log_probs, beam_log_probs_idx

    class DecoderLayer(nn.Module):
        """Pre-norm self-attention, source attention and ReLU FFN."""

        def __init__(self, cfg: WenetConfig) -> None:
            super().__init__()
            d = cfg.d_model
            self.self_attn = MultiHeadedAttention(cfg.attention_heads, d)
            self.src_attn = MultiHeadedAttention(cfg.attention_heads, d)
            self.feed_forward = PositionwiseFeedForward(d, cfg.linear_units, nn.ReLU())
            self.norm1 = nn.LayerNorm(d, eps=1e-5)
            self.norm2 = nn.LayerNorm(d, eps=1e-5)
            self.norm3 = nn.LayerNorm(d, eps=1e-5)

        def forward(
            self,
            tgt: torch.Tensor,
            tgt_mask: torch.Tensor,
            memory: torch.Tensor,
            memory_mask: torch.Tensor,
        ) -> torch.Tensor:
            y = self.norm1(tgt)
            x = tgt + self.self_attn(y, y, y, tgt_mask)
            y = self.norm2(x)
            x = x + self.src_attn(y, memory, memory, memory_mask)
            return x + self.feed_forward(self.norm3(x))

    class TransformerDecoder(nn.Module):
        """WeNet's left-to-right attention decoder: embedding, decoder layers, vocab projection."""

        def __init__(self, cfg: WenetConfig) -> None:
            super().__init__()
            self.embed = nn.Sequential(
                nn.Embedding(cfg.vocab_size, cfg.d_model), PositionalEncoding(cfg.d_model)
            )
            self.decoders = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_blocks))
            self.after_norm = nn.LayerNorm(cfg.d_model, eps=1e-5)
            self.output_layer = nn.Linear(cfg.d_model, cfg.vocab_size)

        def forward(
            self,
            memory: torch.Tensor,
            memory_mask: torch.Tensor,
            ys_in: torch.Tensor,
            ys_mask: torch.Tensor,
        ) -> torch.Tensor:
            x = self.embed(ys_in)
            for layer in self.decoders:
                x = layer(x, ys_mask, memory, memory_mask)
            return self.output_layer(self.after_norm(x))

    class AttentionRescorer(nn.Module):
        """Picks the best of ``beam`` CTC hypotheses per utterance, as WeNet's GPU export's decoder.

        Score = sum over tokens and <eos> of the decoder's log-probabilities
        + ``ctc_weight`` * ``ctc_score``; returns the argmax over the beam.

        The right-to-left decoder of U2++ (``r_hyps_pad_sos_eos``, ``reverse_weight``) is left out:
        the AISHELL conformer recipe these sizes come from has a left-to-right ``transformer``
        decoder, and WeNet's export drops that input when ``reverse_weight`` is 0.
        """

        def __init__(self, cfg: WenetConfig) -> None:
            super().__init__()
            self.decoder = TransformerDecoder(cfg)
            self.ctc_weight = cfg.ctc_weight
            self.sos_eos = cfg.vocab_size - 1  # WeNet's <sos/eos> is the last token

        def forward(
            self,
            encoder_out: torch.Tensor,
            encoder_out_lens: torch.Tensor,
            hyps_pad_sos_eos: torch.Tensor,
            hyps_lens_sos: torch.Tensor,
            ctc_score: torch.Tensor,
        ) -> torch.Tensor:
            b, t, f = encoder_out.shape
            beam, steps = hyps_pad_sos_eos.size(1), hyps_pad_sos_eos.size(2) - 1
            # Every hypothesis attends to its utterance's encoder output: repeat it beam times.
            memory = encoder_out.unsqueeze(1).expand(b, beam, t, f).reshape(b * beam, t, f)
            memory_mask = length_mask(encoder_out_lens, t).unsqueeze(1)
            memory_mask = memory_mask.unsqueeze(1).expand(b, beam, 1, t).reshape(b * beam, 1, t)

            hyps = hyps_pad_sos_eos.reshape(b * beam, steps + 1)
            valid = length_mask(hyps_lens_sos.reshape(b * beam), steps)  # (B*beam, steps)
            # Padding ids (WeNet pads with ignore_id = -1) must not reach the embedding table;
            # padded positions are masked out of attention and scores anyway.
            ys_in = torch.where(valid, hyps[:, :-1], self.sos_eos)
            ys_out = torch.where(valid, hyps[:, 1:], 0)
            positions = torch.arange(steps, device=hyps.device)
            causal = positions.unsqueeze(0) <= positions.unsqueeze(1)  # (steps, steps)
            ys_mask = valid.unsqueeze(1) & causal.unsqueeze(0)

            logits = self.decoder(memory, memory_mask, ys_in, ys_mask)
            log_probs = torch.log_softmax(logits, dim=-1)
            token_scores = log_probs.gather(2, ys_out.unsqueeze(2)).squeeze(2)
            token_scores = token_scores.masked_fill(~valid, 0.0)
            score = token_scores.sum(1).reshape(b, beam) + self.ctc_weight * ctc_score
            return torch.argmax(score, dim=1)

    return SimpleNamespace(WenetEncoder=WenetEncoder, AttentionRescorer=AttentionRescorer)


def build(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The (encoder, rescoring decoder) of a named variant; see :func:`build_from`."""
    return build_from(get_config(name))


def build_from(cfg: WenetConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The (encoder, rescoring decoder) of ``cfg``, with random weights from ``cfg.seed``, in eval mode.

    Seeding happens inside a forked RNG so the caller's torch random state is left untouched.
    """
    import torch

    modules = _nn()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        encoder = modules.WenetEncoder(cfg).eval()
        decoder = modules.AttentionRescorer(cfg).eval()
    return encoder, decoder


def parameter_count(module: torch.nn.Module) -> int:
    """Number of scalar parameters of a module."""
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------
# Export and cache
# --------------------------------------------------------------------------------------------


def settings_hash(name: str) -> str:
    """Short sha256 of everything that determines the exported bytes."""
    settings = {"name": name, "exporter": EXPORTER_VERSION, "opset": OPSET, **asdict(get_config(name))}
    blob = json.dumps(settings, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def artifacts_for(name: str, cache_dir: Path) -> ZooArtifacts:
    """Where the files of ``name`` live under ``cache_dir`` (whether or not they exist yet)."""
    directory = Path(cache_dir) / f"{name}-{settings_hash(name)}"
    return ZooArtifacts(name, directory, directory / "encoder.onnx", directory / "decoder.onnx")


def export(name: str, cache_dir: Path) -> ZooArtifacts:
    """Export encoder and decoder of ``name`` to ONNX under ``cache_dir``, or reuse them.

    Files are written to a temporary name and renamed into place, so a killed export never
    leaves a truncated model that a later call would take for a cached one. The encoder is
    written last and is the completion marker. Exports are deterministic: the same settings
    give byte-identical files.
    """
    artifacts = artifacts_for(name, cache_dir)
    if artifacts.encoder.is_file() and artifacts.decoder.is_file():
        return artifacts
    artifacts.directory.mkdir(parents=True, exist_ok=True)
    # The full model takes a minute or two on a small CPU machine: say what is going on.
    log.info("exporting %s to %s (once; later runs reuse it)", name, artifacts.directory)
    encoder, decoder = build(name)
    _export_decoder(decoder, get_config(name), artifacts.decoder)
    _export_encoder(encoder, artifacts.encoder)
    log.info("exported %s", name)
    return artifacts


def _encoder_example(batch: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic fbank-like encoder inputs with distinct lengths, the longest == frames."""
    import torch

    rng = np.random.default_rng(1234)
    lengths = np.linspace(frames, max(MIN_FRAMES, frames // 2), batch).round().astype(np.int32)
    utterances = [
        {"speech": _fake_fbank(rng, int(t), FEATURE_DIM), "speech_lengths": np.array([t], np.int32)}
        for t in lengths
    ]
    batch_inputs = collate(utterances)
    return torch.from_numpy(batch_inputs["speech"]), torch.from_numpy(batch_inputs["speech_lengths"])


def _decoder_example(
    cfg: WenetConfig, batch: int, frames: int, hyp_len: int, seed: int = 4321
) -> tuple[torch.Tensor, ...]:
    """Random rescoring inputs: hypotheses of varying length padded with WeNet's ignore_id -1."""
    import torch

    g = torch.Generator().manual_seed(seed)
    sos_eos = cfg.vocab_size - 1
    encoder_out = torch.randn(batch, frames, cfg.d_model, generator=g)
    encoder_out_lens = torch.randint(1, frames + 1, (batch,), generator=g, dtype=torch.int32)
    encoder_out_lens[0] = frames
    token_counts = torch.randint(0, hyp_len + 1, (batch, cfg.beam), generator=g)
    token_counts[0, 0] = hyp_len
    hyps = torch.full((batch, cfg.beam, hyp_len + 2), -1, dtype=torch.int64)
    for b in range(batch):
        for k in range(cfg.beam):
            n = int(token_counts[b, k])
            hyps[b, k, 0] = sos_eos
            hyps[b, k, 1 : n + 1] = torch.randint(1, sos_eos, (n,), generator=g)
            hyps[b, k, n + 1] = sos_eos
    hyps_lens_sos = (token_counts + 1).to(torch.int32)
    ctc_score = -torch.rand(batch, cfg.beam, generator=g) * 10.0
    return encoder_out, encoder_out_lens, hyps, hyps_lens_sos, ctc_score


def _export_encoder(encoder: torch.nn.Module, path: Path) -> None:
    """Export with dynamic batch and time, check it against torch at other shapes, save atomically."""
    import torch

    # Dim.DYNAMIC rather than named Dims: torch.export's solver cannot prove guards such as
    # "((T - 3) // 4) != 1" from T >= 11 and would reject named Dims; DYNAMIC records them as
    # range refinements instead. The axes get their names back in _name_dynamic_axes.
    batch = torch.export.Dim.DYNAMIC(min=1, max=MAX_BATCH)
    frames = torch.export.Dim.DYNAMIC(min=EXPORT_MIN_FRAMES, max=MAX_FRAMES)
    with _quiet_exporter():
        program = torch.onnx.export(
            encoder,
            _encoder_example(batch=2, frames=203),
            dynamo=True,
            dynamic_shapes={"speech": {0: batch, 1: frames}, "speech_lengths": {0: batch}},
            input_names=list(ENCODER_INPUTS),
            output_names=list(ENCODER_OUTPUTS),
            opset_version=OPSET,
            verbose=False,
        )
    _name_dynamic_axes(
        program.model, {"speech": {0: "batch", 1: "frames"}, "speech_lengths": {0: "batch"}}
    )
    _atomic_save(program, path, check=lambda p: _check_encoder(encoder, p))


def _export_decoder(decoder: torch.nn.Module, cfg: WenetConfig, path: Path) -> None:
    """Export with dynamic batch, encoder frames and hypothesis length; the beam stays fixed."""
    import torch

    batch = torch.export.Dim.DYNAMIC(min=1, max=MAX_BATCH)
    frames = torch.export.Dim.DYNAMIC(min=1, max=MAX_FRAMES)
    hyp_len = torch.export.Dim.DYNAMIC(min=EXPORT_MIN_HYP_LEN, max=MAX_HYP_LEN)
    with _quiet_exporter():
        program = torch.onnx.export(
            decoder,
            _decoder_example(cfg, batch=2, frames=37, hyp_len=9),
            dynamo=True,
            dynamic_shapes={
                "encoder_out": {0: batch, 1: frames},
                "encoder_out_lens": {0: batch},
                "hyps_pad_sos_eos": {0: batch, 2: hyp_len},
                "hyps_lens_sos": {0: batch},
                "ctc_score": {0: batch},
            },
            input_names=list(DECODER_INPUTS),
            output_names=list(DECODER_OUTPUTS),
            opset_version=OPSET,
            verbose=False,
        )
    _name_dynamic_axes(
        program.model,
        {
            "encoder_out": {0: "batch", 1: "frames"},
            "encoder_out_lens": {0: "batch"},
            "hyps_pad_sos_eos": {0: "batch", 2: "hyp_len"},
            "hyps_lens_sos": {0: "batch"},
            "ctc_score": {0: "batch"},
        },
    )
    _atomic_save(program, path, check=lambda p: _check_decoder(decoder, cfg, p))


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's known-harmless chatter (missing torchvision ops, deprecations)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r".*axis name.*", category=UserWarning)
            yield
    finally:
        logger.setLevel(level)


def _name_dynamic_axes(model: onnx_ir.Model, names: dict[str, dict[int, str]]) -> None:
    """Rename the exporter's shape symbols (``s37``) to readable names throughout the graph.

    ``names`` maps graph input -> axis -> name; derived sizes such as ``((s5 - 3)//4)`` on the
    outputs are rewritten too, so they read ``((frames - 3)//4)``.
    """
    import onnx_ir as ir

    mapping: dict[str, str] = {}
    for value in model.graph.inputs:
        for axis, name in names.get(value.name, {}).items():
            mapping[str(value.shape[axis])] = name
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, mapping)) + r")\b")

    def rename(dim: object) -> object:
        if isinstance(dim, ir.SymbolicDim) and dim.value is not None:
            return ir.SymbolicDim(pattern.sub(lambda m: mapping[m.group(0)], dim.value))
        return dim

    values = list(model.graph.inputs) + [out for node in model.graph for out in node.outputs]
    for value in values:
        if value.shape is not None:
            value.shape = ir.Shape([rename(dim) for dim in value.shape])


def _atomic_save(program: object, path: Path, check: Callable[[Path], None]) -> None:
    """Save an ONNXProgram with weights inline, run ``check`` on it, then rename into place."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # One self-contained file: Triton's onnxruntime backend loads model.onnx alone.
        program.save(tmp, external_data=False)  # type: ignore[attr-defined]
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a server in a container may run as another user
        check(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _session(path: Path, threads: int = 1) -> onnxruntime.InferenceSession:
    """A CPU onnxruntime session."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check_encoder(encoder: torch.nn.Module, path: Path) -> None:
    """Fail the export if onnxruntime disagrees with torch at a batch and length not exported with."""
    import torch

    speech, lengths = _encoder_example(batch=3, frames=331)
    with torch.no_grad():
        expected = [t.numpy() for t in encoder(speech, lengths)]
    got = _session(path).run(None, {"speech": speech.numpy(), "speech_lengths": lengths.numpy()})
    for name, e, g in zip(ENCODER_OUTPUTS, expected, got):
        if name == "beam_log_probs_idx":
            continue  # near-ties may swap order; beam_log_probs already checks the values
        np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-4, err_msg=f"encoder output {name}")


def _check_decoder(decoder: torch.nn.Module, cfg: WenetConfig, path: Path) -> None:
    """Fail the export if onnxruntime picks other hypotheses than torch at new shapes."""
    import torch

    inputs = _decoder_example(cfg, batch=3, frames=53, hyp_len=14, seed=99)
    with torch.no_grad():
        expected = decoder(*inputs).numpy()
    got = _session(path).run(None, dict(zip(DECODER_INPUTS, (t.numpy() for t in inputs))))[0]
    np.testing.assert_array_equal(got, expected, err_msg="decoder best_index")


def serving_module(name: str) -> tuple[torch.nn.Module, dict[str, int], tuple[str, ...]]:
    """The encoder of ``name`` as the PyTorch runtime adapter serves it: the same module (same
    seeded weights) the ONNX file is exported from, its input ranks and its outputs in forward()
    order. Used by templates/python/pytorch_model.py inside the server."""
    encoder, _ = build(name)
    return encoder, {"speech": 3, "speech_lengths": 1}, ENCODER_OUTPUTS

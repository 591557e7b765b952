"""The WeNet conformer encoder and attention-rescoring decoder as torch modules.

Module and parameter names follow WeNet's, so a WeNet checkpoint's state dict would map onto
them with little renaming. Dropout is left out: these modules only run inference.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from tuner.zoo.wenet.audio import fbank_stats
from tuner.zoo.wenet.config import ENCODER_OUTPUTS, WenetConfig, get_config, subsampled_frames


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
        if self.kernel == "sdpa":
            return self.fused(q_with_bias_u, q_with_bias_v, k, p, v, mask)
        matrix_ac = torch.matmul(q_with_bias_u, k.transpose(-2, -1))
        matrix_bd = torch.matmul(q_with_bias_v, p.transpose(-2, -1))
        scores = (matrix_ac + matrix_bd) / math.sqrt(self.d_k)
        return self.forward_attention(v, scores, mask)

    # "native" (the matmuls and masked softmax above) or "sdpa" (`fused`); set_attention sets it.
    kernel = "native"

    def fused(self, q_u: torch.Tensor, q_v: torch.Tensor, k: torch.Tensor, p: torch.Tensor,
              v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The same attention through torch's scaled_dot_product_attention kernels.

        The relative-position term rides along the keys: (q+u)k^T + (q+v)p^T is one product
        [q+u | q+v] [k | p]^T with a head size of 2 d_k, so no (B, head, T, T) score or bias
        tensor is materialised. The padding mask is an additive float bias, broadcast over
        heads and queries. A key-less row (an empty utterance) gives zeros, as natively.
        """
        b = q_u.size(0)
        query = torch.cat((q_u, q_v), dim=-1)
        key = torch.cat((k, p.expand(b, -1, -1, -1)), dim=-1)
        keep = mask.unsqueeze(1)  # (B, 1, 1 or T1, T2)
        bias = torch.zeros(keep.shape, dtype=query.dtype, device=query.device)
        bias = bias.masked_fill(~keep, torch.finfo(query.dtype).min)
        x = nn.functional.scaled_dot_product_attention(query, key, v, attn_mask=bias,
                                                       scale=1.0 / math.sqrt(self.d_k))
        x = x.masked_fill(~keep.any(dim=-1, keepdim=True), 0.0)  # (B, head, T1, d_k)
        x = x.transpose(1, 2).reshape(b, x.size(2), self.h * self.d_k)
        return self.linear_out(x)


ATTENTION_KERNELS = ("native", "sdpa")


class ConvolutionModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv, norm, swish, pointwise conv."""

    # fp16 depthwise convolutions run in fp32 (see `depthwise`); a class switch so the GPU
    # ladder benchmark can measure the cuDNN path it replaces (benchmarks/gpu_ladder.py).
    fp16_depthwise_in_fp32 = True

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

    @staticmethod
    def pointwise(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        """A kernel-1 Conv1d applied to (B, T, C) as the matmul it is.

        On a GPU, a convolution whose input length is new to cuDNN costs an execution-plan
        build (about a millisecond of CPU, more for fp16); with utterances of every length,
        each call is new. A matmul has no such per-shape cost, and needs no transposes.
        """
        return nn.functional.linear(x, conv.weight.squeeze(-1), conv.bias)

    def depthwise(self, x: torch.Tensor) -> torch.Tensor:
        """The depthwise conv of (B, C, T).

        PyTorch sends fp16 (and only fp16) depthwise convolutions to cuDNN, where each new
        input length builds a new execution plan: with utterances of every length that made
        fp16 calls about 8x slower than fp32 at batch 1 on an H200. fp32 and bf16 use
        PyTorch's own depthwise kernel, so fp16 runs this small, memory-bound conv in fp32.
        """
        conv = self.depthwise_conv
        if x.dtype == torch.float16 and self.fp16_depthwise_in_fp32:
            bias = None if conv.bias is None else conv.bias.float()
            x32 = nn.functional.conv1d(x.float(), conv.weight.float(), bias, conv.stride, conv.padding,
                                       conv.dilation, conv.groups)
            return x32.to(x.dtype)
        return conv(x)

    def forward(self, x: torch.Tensor, mask_pad: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, C), ``mask_pad`` (B, 1, T) True on valid frames."""
        x = nn.functional.glu(self.pointwise(self.pointwise_conv1, x), dim=-1)
        # WeNet zeroes padded frames before pointwise_conv1; its bias then makes them non-zero
        # again after the GLU, so valid frames near the end still see padding. Zeroing right
        # before the depthwise conv makes a padded batch match each utterance run alone.
        x = x.masked_fill(~mask_pad.transpose(1, 2), 0.0).transpose(1, 2)  # (B, C, T)
        x = self.depthwise(x)
        if self.use_layer_norm:
            x = self.norm(x.transpose(1, 2))
        else:
            x = self.norm(x).transpose(1, 2)
        x = self.pointwise(self.pointwise_conv2, self.activation(x))  # (B, T, C)
        return x.masked_fill(~mask_pad.transpose(1, 2), 0.0)


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
        self.feature_dim = cfg.feature_dim
        self.global_cmvn = GlobalCMVN(*fbank_stats(cfg.feature_dim))
        self.embed = Conv2dSubsampling4(cfg.feature_dim, cfg.d_model)
        self.pos_enc = RelPositionalEncoding(cfg.d_model)
        self.encoders = nn.ModuleList(ConformerEncoderLayer(cfg) for _ in range(cfg.encoder_blocks))
        self.after_norm = nn.LayerNorm(cfg.d_model, eps=1e-5)
        self.ctc_lo = nn.Linear(cfg.d_model, cfg.vocab_size)

    def set_attention(self, kernel: str) -> None:
        """Run every self-attention with ``kernel``: "native" or "sdpa" (the runtime's knob)."""
        if kernel not in ATTENTION_KERNELS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_KERNELS)}, not {kernel!r}")
        for layer in self.encoders:
            layer.self_attn.kernel = kernel

    @staticmethod
    def output_frames(frames: int) -> int:
        """Output time steps of ``frames`` input frames: what a runtime that pads the time axis
        further (length buckets) trims the time axis of the outputs back to."""
        return subsampled_frames(frames)

    def example_inputs(self, batch: int, frames: int) -> dict[str, np.ndarray]:
        """Inputs of ``batch`` utterances of ``frames`` feature frames: a shape for a runtime to
        compile and capture CUDA graphs for at load (zeros, not speech)."""
        return {"speech": np.zeros((batch, frames, self.feature_dim), np.float32),
                "speech_lengths": np.full(batch, frames, np.int32)}

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



def build(name: str) -> tuple[WenetEncoder, AttentionRescorer]:
    """The (encoder, rescoring decoder) of a named variant; see :func:`build_from`."""
    return build_from(get_config(name))


def build_from(cfg: WenetConfig) -> tuple[WenetEncoder, AttentionRescorer]:
    """The (encoder, rescoring decoder) of ``cfg``, with random weights from ``cfg.seed``, in eval mode.

    Seeding happens inside a forked RNG so the caller's torch random state is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        encoder = WenetEncoder(cfg).eval()
        decoder = AttentionRescorer(cfg).eval()
    return encoder, decoder


def parameter_count(module: nn.Module) -> int:
    """Number of scalar parameters of a module."""
    return sum(p.numel() for p in module.parameters())


def serving_module(name: str) -> tuple[nn.Module, dict[str, int], tuple[str, ...]]:
    """The encoder of ``name`` as the PyTorch runtime adapter serves it: the same module (same
    seeded weights) the ONNX file is exported from, its input ranks and its outputs in forward()
    order. Used by templates/python/pytorch_model.py inside the server."""
    encoder, _ = build(name)
    return encoder, {"speech": 3, "speech_lengths": 1}, ENCODER_OUTPUTS

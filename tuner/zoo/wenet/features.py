"""Kaldi-compatible log-mel filterbank features of 16 kHz waveforms, batched, in torch.

The algorithm is the one ``torchaudio.compliance.kaldi.fbank`` documents (and Kaldi's
``compute-fbank-feats`` runs) with the settings WeNet trains and serves with: 25 ms frames every
10 ms with ``snip_edges`` (``1 + (n - 400) // 160`` frames), no dither (deterministic), per-frame
DC offset removed, pre-emphasis 0.97, povey window (a Hann window raised to 0.85), a 512-point
FFT (the 400-sample frame zero-padded to a power of two), power spectrum, 80 triangular mel
filters from 20 Hz to the Nyquist frequency on the ``1127 ln(1 + f / 700)`` mel scale, and the
natural log floored at float32 machine epsilon.

WeNet feeds fbank with waveforms in int16 scale (samples in [-32768, 32767] as floats), which is
what the model's global CMVN statistics assume (see ``audio.fbank_stats``); so does this module.

A leaf module (torch and math only, nothing of tuner): the ensemble writer ships this file beside
the feature extractor's model.py, so a served repository does not need tuner installed.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

SAMPLE_RATE = 16_000
FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms
FFT_SIZE = 512  # Kaldi's round_to_power_of_two
NUM_MEL_BINS = 80
LOW_FREQ = 20.0
PREEMPHASIS = 0.97
# Kaldi floors energies at numeric_limits<float>::epsilon() before the log.
LOG_FLOOR = torch.finfo(torch.float32).eps


def num_frames(samples: int) -> int:
    """Frames of a waveform of ``samples`` samples (``snip_edges``: only whole frames)."""
    return 0 if samples < FRAME_LENGTH else 1 + (samples - FRAME_LENGTH) // FRAME_SHIFT


def mel_scale(freq: torch.Tensor | float) -> torch.Tensor | float:
    """Hz -> mel as Kaldi defines it."""
    if isinstance(freq, torch.Tensor):
        return 1127.0 * torch.log1p(freq / 700.0)
    return 1127.0 * math.log1p(freq / 700.0)


@lru_cache(maxsize=8)
def _mel_banks(num_bins: int, device: str) -> torch.Tensor:
    """(FFT_SIZE // 2 + 1, num_bins) triangular filters over the power spectrum's bins.

    Filter ``m`` rises linearly in mel from edge ``m`` to its centre ``m + 1`` and falls to edge
    ``m + 2``; the ``num_bins + 2`` edges are equally spaced in mel from LOW_FREQ to Nyquist.
    Built in float64 (once per size and device) and cast, so every dtype gets the same filters.
    The Nyquist bin gets weight 0, as in Kaldi, which builds its filters over FFT_SIZE // 2 bins.
    """
    mel_low, mel_high = mel_scale(LOW_FREQ), mel_scale(SAMPLE_RATE / 2)
    delta = (mel_high - mel_low) / (num_bins + 1)
    edges = mel_low + delta * torch.arange(num_bins + 2, dtype=torch.float64)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bin_mel = mel_scale(torch.arange(FFT_SIZE // 2, dtype=torch.float64) * (SAMPLE_RATE / FFT_SIZE))
    up = (bin_mel - left) / (centre - left)
    down = (right - bin_mel) / (right - centre)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)  # (num_bins, FFT_SIZE // 2)
    banks = torch.nn.functional.pad(banks, (0, 1))  # the Nyquist bin
    return banks.T.contiguous().to(device)


@lru_cache(maxsize=8)
def _povey_window(device: str) -> torch.Tensor:
    """Kaldi's povey window: a symmetric Hann window to the power 0.85 (float64)."""
    n = torch.arange(FRAME_LENGTH, dtype=torch.float64)
    hann = 0.5 - 0.5 * torch.cos(2.0 * math.pi * n / (FRAME_LENGTH - 1))
    return hann.pow(0.85).to(device)


def _frames(waveforms: torch.Tensor) -> torch.Tensor:
    """(B, samples) -> (B, frames, FRAME_LENGTH) overlapping frames, a view (no copy)."""
    return waveforms.unfold(1, FRAME_LENGTH, FRAME_SHIFT)


def fbank(
    waveforms: torch.Tensor, lengths: torch.Tensor, num_mel_bins: int = NUM_MEL_BINS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel fbank of a padded batch of waveforms.

    ``waveforms`` (B, samples) float, int16 scale, each row valid up to ``lengths`` (B,) int and
    padded after it with anything. Returns ``(features (B, F, num_mel_bins) in the waveforms'
    dtype, frames (B,) int32)`` with ``F = num_frames(max(lengths))``; a row's frames after its
    own count are zero. Every valid frame reads only valid samples, so a row's features do not
    depend on the padding or on the other rows.
    """
    if waveforms.dim() != 2:
        raise ValueError(f"waveforms must be (batch, samples), got shape {tuple(waveforms.shape)}")
    lengths = lengths.reshape(-1).to(torch.int64)
    if lengths.numel() != waveforms.size(0):
        raise ValueError(f"{waveforms.size(0)} waveforms but {lengths.numel()} lengths")
    frame_counts = torch.clamp(lengths - FRAME_LENGTH, min=-1).div(FRAME_SHIFT, rounding_mode="floor") + 1
    longest = num_frames(int(lengths.max())) if lengths.numel() else 0
    batch, dtype, device = waveforms.size(0), waveforms.dtype, waveforms.device
    if longest == 0:
        return torch.zeros(batch, 0, num_mel_bins, dtype=dtype, device=device), frame_counts.to(torch.int32)

    samples = FRAME_LENGTH + (longest - 1) * FRAME_SHIFT
    if waveforms.size(1) < samples:
        raise ValueError(f"lengths say {samples} samples but waveforms hold {waveforms.size(1)}")
    frames = _frames(waveforms[:, :samples])  # (B, F, 400)
    frames = frames - frames.mean(dim=2, keepdim=True)  # remove DC offset
    # Pre-emphasis; the first sample is emphasised against itself (Kaldi's convention).
    previous = torch.cat((frames[..., :1], frames[..., :-1]), dim=2)
    frames = frames - PREEMPHASIS * previous
    frames = frames * _povey_window(str(device)).to(dtype)
    spectrum = torch.fft.rfft(frames, n=FFT_SIZE, dim=2)  # zero-pads 400 -> 512
    power = spectrum.real.square() + spectrum.imag.square()  # (B, F, 257)
    energies = power @ _mel_banks(num_mel_bins, str(device)).to(dtype)
    features = torch.clamp(energies, min=LOG_FLOOR).log()

    valid = torch.arange(longest, device=device)[None, :] < frame_counts[:, None].to(device)
    features = features.masked_fill(~valid[..., None], 0.0)
    return features, frame_counts.to(torch.int32)

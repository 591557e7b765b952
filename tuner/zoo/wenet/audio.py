"""Realistic encoder inputs: fbank-like features of synthetic utterances (numpy only)."""

from __future__ import annotations

import math

import numpy as np

from tuner.zoo.wenet.config import FEATURE_DIM, FRAMES_PER_SECOND, MIN_FRAMES


def fbank_stats(feature_dim: int = FEATURE_DIM) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean and std of Kaldi-style 80-bin log-mel fbank of 16 kHz speech (before CMVN).

    WeNet computes fbank on int16-scaled waveforms, so log energies sit around 8 to 14 with low
    bins louder than high ones. The model's global CMVN uses these same statistics, as a trained
    model's ``global_cmvn`` file would hold statistics of its training data.
    """
    mean = np.linspace(13.0, 9.0, feature_dim, dtype=np.float32)
    std = np.full(feature_dim, 3.0, dtype=np.float32)
    return mean, std


def fake_fbank(rng: np.random.Generator, frames: int, feature_dim: int = FEATURE_DIM) -> np.ndarray:
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
        {"speech": fake_fbank(rng, int(t)), "speech_lengths": np.array([t], dtype=np.int32)}
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

"""The in-process fp32 reference of the served WeNet pipeline, its vocabulary and its sample audio.

``ReferencePipeline``: waveform -> fbank (features.py) -> the zoo's torch encoder in fp32 ->
scoring (decoding.py: greedy, prefix beam, or prefix beam + attention rescoring with the torch
decoder) -> token ids and text. Each utterance runs alone, so the reference never depends on how
a server happens to batch. The Triton ensemble (ensemble.py) is checked against it.

The zoo has no trained checkpoint and so no vocabulary: ``vocabulary`` makes a deterministic one
from the variant's seed (WeNet's layout: ``<blank>``, ``<unk>``, characters, ``<sos/eos>``).
Transcripts of the random-weight model are meaningless strings of characters; what matters is
that the served pipeline gives the same ones as the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tuner.zoo.wenet import decoding
from tuner.zoo.wenet.config import WenetConfig, get_config

SAMPLE_RATE = 16_000
# CJK Unified Ideographs: AISHELL's units are Chinese characters; this block has 20992 of them,
# enough for every variant's vocabulary.
_CJK_FIRST, _CJK_COUNT = 0x4E00, 0x5200


def vocabulary(cfg: WenetConfig) -> list[str]:
    """``cfg.vocab_size`` units, the same for the same seed: id 0 ``<blank>``, 1 ``<unk>``, the
    last ``<sos/eos>``, the others distinct CJK characters drawn by a seeded permutation."""
    if cfg.vocab_size - 3 > _CJK_COUNT:
        raise ValueError(f"a vocabulary of {cfg.vocab_size} needs more characters than the CJK block has")
    rng = np.random.default_rng(cfg.seed)
    codes = _CJK_FIRST + rng.permutation(_CJK_COUNT)[: cfg.vocab_size - 3]
    return ["<blank>", "<unk>", *(chr(int(c)) for c in codes), "<sos/eos>"]


def speech_like_waveform(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A synthetic utterance, float32 samples in int16 scale at 16 kHz (what WeNet's fbank reads).

    How it is made: the utterance is a sequence of syllables of 120-350 ms separated by pauses of
    40-250 ms. A syllable is voiced (85 %) or a fricative. Voiced: the harmonics (up to 4 kHz) of
    a pitch that wanders (a speaker's base of 90-240 Hz, a slow vibrato-like sway and a random
    walk), each harmonic weighted by three formant resonances (F1 300-900 Hz, F2 900-2600 Hz,
    F3 2400-3400 Hz) that glide from the syllable's start targets to its end targets, with the
    glottal source's tilt of -12 dB per octave. Fricative: white noise with a first difference
    (energy towards high frequencies), quieter than vowels. Every syllable gets a raised-cosine attack and decay and its own loudness;
    low background noise (about 70 dB below the speech peak) runs throughout. Peaks sit near
    -6 dBFS. Everything is drawn from ``rng``.
    """
    n = max(1, int(round(seconds * SAMPLE_RATE)))
    t = np.arange(n) / SAMPLE_RATE
    base_f0 = rng.uniform(90.0, 240.0)
    sway = 1.0 + 0.08 * np.sin(2 * math.pi * rng.uniform(2.0, 5.0) * t + rng.uniform(0, 2 * math.pi))
    walk = np.cumsum(rng.normal(0.0, 1.0, n // 160 + 1)) * 0.01
    f0 = base_f0 * sway * np.exp(np.clip(np.repeat(walk, 160)[:n], -0.3, 0.3))
    phase = 2 * math.pi * np.cumsum(f0) / SAMPLE_RATE

    signal = np.zeros(n)
    start = int(rng.uniform(0.05, 0.2) * SAMPLE_RATE)
    while start < n:
        length = min(int(rng.uniform(0.12, 0.35) * SAMPLE_RATE), n - start)
        span = slice(start, start + length)
        envelope = _attack_decay(length) * rng.uniform(0.3, 1.0)
        if rng.uniform() < 0.85:
            segment = _voiced(rng, f0[span], phase[span])
        else:
            segment = np.diff(rng.normal(0.0, 1.0, length + 1)) * 0.15
        signal[span] = segment * envelope
        start += length + int(rng.uniform(0.04, 0.25) * SAMPLE_RATE)

    peak = max(float(np.abs(signal).max()), 1e-9)
    signal = signal / peak * 16_000.0  # about -6 dBFS in int16 scale
    signal += rng.normal(0.0, 5.0, n)
    return np.clip(signal, -32768, 32767).astype(np.float32)


def _attack_decay(length: int) -> np.ndarray:
    """1 in the middle, raised-cosine ramps of up to 30 ms at both ends."""
    ramp = min(length // 2, int(0.03 * SAMPLE_RATE))
    envelope = np.ones(length)
    if ramp > 0:
        rise = 0.5 - 0.5 * np.cos(np.linspace(0, math.pi, ramp))
        envelope[:ramp], envelope[length - ramp :] = rise, rise[::-1]
    return envelope


def _voiced(rng: np.random.Generator, f0: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Harmonics of ``f0`` shaped by three formants gliding from start to end targets."""
    ranges = ((300.0, 900.0, 80.0), (900.0, 2600.0, 120.0), (2400.0, 3400.0, 180.0))
    glide = np.linspace(0.0, 1.0, f0.size)
    formants = [(rng.uniform(lo, hi) * (1 - glide) + rng.uniform(lo, hi) * glide, bw) for lo, hi, bw in ranges]
    out = np.zeros(f0.size)
    for k in range(1, int(4000.0 / f0.min()) + 1):
        freq = k * f0
        gain = sum(np.exp(-0.5 * ((freq - centre) / bw) ** 2) / (i + 1) for i, (centre, bw) in enumerate(formants))
        tilt = 1.0 / k**2  # the glottal source loses about 12 dB per octave
        out += np.where(freq < 4000.0, (gain + 0.05) * tilt, 0.0) * np.sin(k * phase)
    return out


def sample_waveforms(
    rng: np.random.Generator, n: int, min_seconds: float = 2.0, max_seconds: float = 16.0
) -> list[np.ndarray]:
    """``n`` speech-like utterances whose durations are stratified over [min_seconds, max_seconds]
    (one per equal-width stratum, in random order), as ``audio.sample_utterances`` does."""
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    strata = (rng.permutation(n) + rng.uniform(size=n)) / max(n, 1)
    durations = min_seconds + strata * (max_seconds - min_seconds)
    return [speech_like_waveform(rng, float(d)) for d in durations]


@dataclass(frozen=True)
class Transcript:
    ids: tuple[int, ...]
    text: str


class ReferencePipeline:
    """Audio to text in process, fp32, one utterance at a time (torch is imported here)."""

    def __init__(self, variant: str, method: str = "rescore", beam: int | None = None) -> None:
        import torch

        from tuner.zoo.wenet import features
        from tuner.zoo.wenet.model import build

        self.cfg = get_config(variant)
        self.method = method
        self.beam = self.cfg.beam if beam is None else beam
        check_scoring(self.cfg, method, self.beam)
        self.units = vocabulary(self.cfg)
        self.encoder, self.decoder = build(variant)
        self._torch, self._features = torch, features

    def _rescore(self, *arrays: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.decoder(*(self._torch.from_numpy(a) for a in arrays)).numpy()

    def __call__(self, waveform: np.ndarray) -> Transcript:
        torch = self._torch
        wav = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32)).reshape(1, -1)
        with torch.inference_mode():
            speech, speech_lengths = self._features.fbank(wav, torch.tensor([wav.size(1)]))
            enc_out, enc_lens, _, beam_lp, beam_idx = (x.numpy() for x in self.encoder(speech, speech_lengths))
        ids = decoding.decode(self.method, beam_lp, beam_idx, enc_lens, self.beam, encoder_out=enc_out,
                              rescorer=self._rescore, decoder_beam=self.cfg.beam,
                              sos_eos=self.cfg.vocab_size - 1)[0]
        return Transcript(tuple(ids), decoding.ids_to_text(ids, self.units))


def check_scoring(cfg: WenetConfig, method: str, beam: int) -> None:
    """Reject a scoring choice the exported graphs cannot serve."""
    if method not in decoding.METHODS:
        raise ValueError(f"unknown scoring method {method!r}; known: {', '.join(decoding.METHODS)}")
    # The encoder exports its top-cfg.beam tokens per frame and the decoder rescores a beam of
    # exactly cfg.beam hypotheses: a wider beam has nothing to search.
    if not 1 <= beam <= cfg.beam:
        raise ValueError(f"beam must be within 1..{cfg.beam} (the exported top-k), got {beam}")

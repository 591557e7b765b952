"""Kaldi-compatible fbank (tuner/zoo/wenet/features.py) and the synthetic speech it is fed."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tuner.zoo.wenet import features, pipeline  # noqa: E402


def _fbank(waveforms: list[np.ndarray], pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(w.size for w in waveforms)
    batch = torch.full((len(waveforms), longest), pad_value, dtype=torch.float32)
    for i, w in enumerate(waveforms):
        batch[i, : w.size] = torch.from_numpy(w)
    return features.fbank(batch, torch.tensor([w.size for w in waveforms]))


def _tone(freq: float, seconds: float = 0.5, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(int(seconds * features.SAMPLE_RATE)) / features.SAMPLE_RATE
    return (amplitude * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def _kaldi_fbank_one(waveform: np.ndarray) -> np.ndarray:
    """Kaldi's documented steps, frame by frame in float64 with numpy (an independent transcription
    of the algorithm; the module under test is vectorised over frames and batch in torch)."""
    n_fft, n_bins = features.FFT_SIZE, features.NUM_MEL_BINS
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 399)) ** 0.85

    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    lo, hi = mel(20.0), mel(8000.0)
    step = (hi - lo) / (n_bins + 1)
    banks = np.zeros((n_bins, n_fft // 2 + 1))
    for m in range(n_bins):
        left, centre, right = lo + m * step, lo + (m + 1) * step, lo + (m + 2) * step
        for k in range(n_fft // 2):  # Kaldi leaves the Nyquist bin out
            x = mel(k * 16000.0 / n_fft)
            if left < x < right:
                banks[m, k] = (x - left) / (centre - left) if x <= centre else (right - x) / (right - centre)
    rows = []
    for i in range(features.num_frames(waveform.size)):
        frame = waveform[i * 160 : i * 160 + 400].astype(np.float64)
        frame = frame - frame.mean()
        frame = frame - 0.97 * np.concatenate(([frame[0]], frame[:-1]))
        power = np.abs(np.fft.rfft(frame * window, n=n_fft)) ** 2
        rows.append(np.log(np.maximum(banks @ power, np.finfo(np.float32).eps)))
    return np.array(rows).reshape(-1, n_bins)


@pytest.mark.parametrize("samples", [0, 399, 400, 559, 560, 16_000, 16_159, 16_160])
def test_frame_count_is_kaldis_snip_edges_count(samples):
    expected = 0 if samples < 400 else 1 + (samples - 400) // 160
    assert features.num_frames(samples) == expected
    speech, frames = features.fbank(torch.zeros(1, max(samples, 1)), torch.tensor([samples]))
    assert speech.shape == (1, expected, 80)
    assert frames.tolist() == [expected] and frames.dtype == torch.int32


def test_matches_a_frame_by_frame_transcription_of_kaldis_algorithm():
    waveform = pipeline.speech_like_waveform(np.random.default_rng(0), 0.6)
    speech, _ = _fbank([waveform])
    # float32 against float64: log energies agree to a few millionths, except in the quietest bins
    # where float32 cancellation in the power spectrum shows (still within a hundredth).
    diff = np.abs(speech[0].numpy() - _kaldi_fbank_one(waveform))
    assert float(np.median(diff)) < 1e-5
    assert float(diff.max()) < 1e-2


@pytest.mark.parametrize("freq", [250.0, 1000.0, 3000.0, 6500.0])
def test_a_pure_tone_peaks_in_the_mel_bin_centred_nearest_its_frequency(freq):
    speech, _ = _fbank([_tone(freq)])
    centres = [features.mel_scale(20.0) + (m + 1) * (features.mel_scale(8000.0) - features.mel_scale(20.0)) / 81
               for m in range(80)]
    nearest = int(np.argmin(np.abs(np.array(centres) - features.mel_scale(freq))))
    peaks = speech[0].argmax(dim=1)
    assert (peaks == nearest).all(), f"{freq} Hz peaked in bins {sorted(set(peaks.tolist()))}, expected {nearest}"


def test_silence_and_a_constant_offset_sit_at_the_log_floor():
    floor = math.log(np.finfo(np.float32).eps)
    silence, _ = _fbank([np.zeros(4000, np.float32)])
    offset, _ = _fbank([np.full(4000, 1234.0, np.float32)])  # removed with the DC offset
    assert torch.allclose(silence, torch.full_like(silence, floor))
    assert torch.allclose(offset, torch.full_like(offset, floor))


def test_a_padded_batch_equals_each_waveform_alone_whatever_the_padding():
    rng = np.random.default_rng(1)
    waveforms = [pipeline.speech_like_waveform(rng, s) for s in (0.3, 1.7, 0.9, 2.4)]
    batch, frames = _fbank(waveforms, pad_value=12345.0)  # garbage after each length
    assert frames.tolist() == [features.num_frames(w.size) for w in waveforms]
    for i, waveform in enumerate(waveforms):
        alone, _ = _fbank([waveform])
        n = int(frames[i])
        torch.testing.assert_close(batch[i, :n], alone[0], rtol=0, atol=1e-5)
        assert (batch[i, n:] == 0).all(), "frames past a waveform's own count must be zero"


def test_sample_waveforms_are_seeded_speech_like_and_span_the_durations():
    a = pipeline.sample_waveforms(np.random.default_rng(3), 6, min_seconds=2.0, max_seconds=16.0)
    b = pipeline.sample_waveforms(np.random.default_rng(3), 6, min_seconds=2.0, max_seconds=16.0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    seconds = sorted(w.size / features.SAMPLE_RATE for w in a)
    assert 2.0 <= seconds[0] < 4.4 and 13.6 < seconds[-1] <= 16.0  # one per stratum of 2.33 s
    for w in a:
        assert w.dtype == np.float32 and np.abs(w).max() <= 32767
        speech, _ = _fbank([w])
        energy = speech[0].mean(dim=1)
        # Syllables and pauses: loud and quiet frames, tens of dB apart (natural log units).
        assert float(energy.quantile(0.9) - energy.quantile(0.1)) > 3.0
        # The spectrum changes over time (voiced syllables, fricatives, pauses) in every bin.
        assert float(speech[0].std(dim=0).min()) > 1.0

"""Realistic load for the WeNet ensemble: speech-like utterances as perf_analyzer input data.

Each utterance is one perf_analyzer data set with its own shapes (``WAV`` [samples],
``WAV_LENS`` [1]), so every request carries a real waveform of its real length instead of
perf_analyzer's random data of one fixed shape. The JSON is written by
``tuner.measure.perf_analyzer.write_input_data``, the same writer the single-model trials use for
ragged inputs; only the ensemble's input signature is defined here.

``measure`` runs the real perf_analyzer with that data and returns the end-to-end figures (from
its CSV) and each step's (from its stdout, tuner.measure.composing).
"""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuner import tools
from tuner.errors import TrialError
from tuner.experiment import MeasureSpec
from tuner.measure import composing, perf_analyzer
from tuner.processes import child_of_ours
from tuner.signature import Signature, Tensor
from tuner.zoo.wenet import pipeline
from tuner.zoo.wenet.ensemble import WAV, WAV_LENS

# The ensemble's inputs as perf_analyzer sees them (batched: shapes exclude the batch dimension).
SIGNATURE = Signature(
    inputs=(Tensor(WAV, "TYPE_FP32", "float32", (-1,)), Tensor(WAV_LENS, "TYPE_INT32", "int32", (1,))),
    outputs=(),
    batched=True,
)


def requests(waveforms: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """One request's inputs per waveform: the samples and their count."""
    return [{WAV: np.ascontiguousarray(w, dtype=np.float32).reshape(-1),
             WAV_LENS: np.array([w.size], np.int32)} for w in waveforms]


def write_input_data(path: Path, waveforms: list[np.ndarray]) -> Path:
    """perf_analyzer's --input-data JSON: one data set per waveform, each with its own shape."""
    return perf_analyzer.write_input_data(path, SIGNATURE, requests(waveforms))


def mean_seconds(waveforms: list[np.ndarray]) -> float:
    """Mean utterance duration. perf_analyzer sends the data sets in turn, so utterances per
    second times this is the audio seconds served per second (exactly so over whole rounds)."""
    return float(np.mean([w.size for w in waveforms])) / pipeline.SAMPLE_RATE


@dataclass(frozen=True)
class LoadResult:
    """One perf_analyzer run against the ensemble: end to end, and per step."""

    measurement: perf_analyzer.Measurement  # throughput in utterances/s, latencies end to end
    steps: dict[str, dict[str, float]]  # composing.step_shares: queue, compute, share per step
    audio_seconds_per_second: float  # throughput times the mean utterance duration
    report: str  # perf_analyzer's stdout, where the per-step figures come from


def measure(model: str, grpc_url: str, waveforms: list[np.ndarray], concurrency: int, seconds: float,
            workdir: Path, timeout_s: float | None = None) -> LoadResult:
    """perf_analyzer at one concurrency for ``seconds``, the waveforms as its input data.

    Three windows of ``seconds / 3`` each, whatever they measure: utterances of 2-16 s make
    consecutive windows disagree by more than any useful stability percentage on a small machine
    (20 % and 50 % both failed here), so stability is not asked for (a percentage of 1000); the
    figures are the three windows' together, as perf_analyzer reports them.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    data = write_input_data(workdir / "input-data.json", waveforms)
    csv_path = workdir / "perf_analyzer.csv"
    spec = MeasureSpec(interval_ms=max(100, int(seconds * 1000 / 3)), stability_percent=1000.0, max_windows=3)
    cmd = perf_analyzer.command(model, grpc_url, concurrency, spec, csv_path, data)
    timeout_s = timeout_s or seconds + 120.0  # reading the input data and the last requests take time
    csv_path.unlink(missing_ok=True)
    try:
        out = subprocess.run(**child_of_ours(cmd, signal.SIGKILL), capture_output=True, text=True, timeout=timeout_s,
                             env=tools.perf_analyzer_env())
    except subprocess.TimeoutExpired:
        raise perf_analyzer.Hung(f"perf_analyzer did not finish within {timeout_s:.0f} s") from None
    report = out.stdout + out.stderr
    (workdir / "perf_analyzer.txt").write_text(report)
    if out.returncode != 0 or not csv_path.exists():
        tail = " | ".join([l for l in report.splitlines() if l.strip()][-3:])
        raise TrialError(f"perf_analyzer failed (exit code {out.returncode}): {tail}")
    measurement = perf_analyzer.parse_csv(csv_path.read_text())
    return LoadResult(measurement, composing.step_shares(report, level=concurrency),
                      measurement.throughput * mean_seconds(waveforms), report)

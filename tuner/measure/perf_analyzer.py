"""Run the real perf_analyzer against a server and parse its CSV into a Measurement."""

from __future__ import annotations

import csv
import io
import json
import shlex
import signal
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tuner import tools
from tuner.processes import child_of_ours
from tuner.errors import TrialError
from tuner.experiment import MeasureSpec
from tuner.signature import Signature


# Arrivals are Poisson: at 100/s over three 1 s windows the served count alone varies by ~6 %, and
# at low rates perf_analyzer reads 12 % under the offered rate with p99 far from an overload's
# (measured here: 43.6, 42.7 and 43.8 infer/s at 50/s offered, p99 31-94 ms).
SUSTAINED = 0.85


class UnstableMeasurement(TrialError):
    """perf_analyzer's windows never agreed within the stability percentage."""


class WindowTooShort(TrialError):
    """No request completed within a measurement window (each takes longer than the window)."""


class Hung(TrialError):
    """perf_analyzer ran past its timeout and was killed: a fault of the load generator or the
    server rather than of the candidate, so the trial is tried once more."""


@dataclass(frozen=True)
class Measurement:
    """What perf_analyzer measured at one load level. Latencies in milliseconds."""

    concurrency: int  # closed loop: requests in flight (0 under a request rate)
    throughput: float  # inferences per second
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float
    # Server-side split of the average request (from the server's statistics, via perf_analyzer).
    queue_ms: float
    compute_input_ms: float
    compute_infer_ms: float
    compute_output_ms: float
    # Client-side overhead of the average request.
    client_send_ms: float
    client_recv_ms: float
    request_rate: float = 0.0  # open loop: offered inferences/s, Poisson arrivals (0 under a concurrency)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def load_level(self) -> float:
        return self.request_rate or self.concurrency

    @property
    def sustained(self) -> bool:
        """Under a request rate: the server kept up (served at least SUSTAINED of the offered rate);
        beyond that, requests queue without bound and the figures describe an overload."""
        return not self.request_rate or self.throughput >= SUSTAINED * self.request_rate


def write_input_data(path: Path, signature: Signature, samples: list[dict[str, np.ndarray]]) -> Path:
    """perf_analyzer's --input-data JSON: one entry per sample, each with its own shape, so
    variable-length inputs are sent at realistic lengths."""
    entries = []
    for sample in samples:
        entry = {}
        for t in signature.inputs:
            value = sample[t.name]
            shape = list(value.shape) or [1]
            entry[t.name] = {"content": value.reshape(-1).tolist(), "shape": shape}
        entries.append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": entries}))
    return path


def command(model: str, grpc_url: str, level: float, spec: MeasureSpec, csv_path: Path,
            input_data: Path | None) -> list[str]:
    """perf_analyzer at one load level: a concurrency, or a request rate (Poisson arrivals) when
    `spec.load` is "request_rate"."""
    # Asynchronous requests under a rate: the generator never waits on a slow reply (its 4
    # synchronous threads would cap the rate at 4 / latency and call that the server's limit).
    load = (["--request-rate-range", str(level), "--request-distribution", "poisson", "--async"]
            if spec.load == "request_rate" else ["--concurrency-range", str(int(level))])
    cmd = [
        str(tools.require_perf_analyzer()),
        "-m", model,
        "-i", "grpc",
        "-u", grpc_url,
        *load,
        "--measurement-mode", "time_windows",
        "--measurement-interval", str(spec.interval_ms),
        "--stability-percentage", str(spec.stability_percent),
        "--max-trials", str(spec.max_windows),
        # No --percentile: stability is then judged on average latency; p99 on a 2-core machine
        # swings too much between windows to ever agree. The CSV holds p99 either way.
        "-f", str(csv_path),
        "--verbose-csv",
    ]
    if input_data is not None:
        cmd += ["--input-data", str(input_data)]
    return cmd


def _ms(row: dict, key: str) -> float:
    return float(row.get(key) or 0) / 1000.0  # perf_analyzer writes microseconds


def parse_csv(text: str) -> Measurement:
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise TrialError("perf_analyzer wrote no measurement rows")
    row = rows[0]
    return Measurement(
        concurrency=int(float(row.get("Concurrency") or 0)),
        request_rate=float(row.get("Request Rate") or 0),
        throughput=float(row["Inferences/Second"]),
        p50_ms=_ms(row, "p50 latency"),
        p90_ms=_ms(row, "p90 latency"),
        p95_ms=_ms(row, "p95 latency"),
        p99_ms=_ms(row, "p99 latency"),
        avg_ms=_ms(row, "Avg latency"),
        queue_ms=_ms(row, "Server Queue"),
        compute_input_ms=_ms(row, "Server Compute Input"),
        compute_infer_ms=_ms(row, "Server Compute Infer"),
        compute_output_ms=_ms(row, "Server Compute Output"),
        client_send_ms=_ms(row, "Client Send"),
        client_recv_ms=_ms(row, "Client Recv"),
    )


def measure(cmd: list[str], csv_path: Path, timeout_s: float) -> Measurement:
    csv_path.unlink(missing_ok=True)
    try:
        out = subprocess.run(**child_of_ours(cmd, signal.SIGKILL), capture_output=True, text=True,  # never outlives tuner
                             timeout=timeout_s, env=tools.perf_analyzer_env())
    except subprocess.TimeoutExpired:
        raise Hung(f"perf_analyzer did not finish within {timeout_s:.0f} s") from None
    # Its report beside the CSV: an ensemble's per-step figures are in it only (tuner.measure.composing).
    report_path(csv_path).write_text(out.stdout + out.stderr)
    if out.returncode != 0 or not csv_path.exists():
        lines = [l for l in (out.stdout + out.stderr).splitlines() if l.strip()]
        reason = " | ".join(lines[-3:]) or f"exit code {out.returncode}"
        error = (UnstableMeasurement if "stable measurement" in reason
                 else WindowTooShort if "No valid requests" in reason else TrialError)
        raise error(f"perf_analyzer failed: {reason}")
    return parse_csv(csv_path.read_text())


def report_path(csv_path: Path) -> Path:
    """Where `measure` keeps perf_analyzer's printed report of the run whose CSV is `csv_path`."""
    return csv_path.with_suffix(".txt")


def as_shell(cmd: list[str]) -> str:
    return shlex.join(cmd)

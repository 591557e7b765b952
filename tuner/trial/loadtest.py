"""Stage 5, the load test: perf_analyzer at the candidate's concurrency, or up a concurrency ramp
on the one load; a new best is measured once more and kept as the mean of both runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tuner.experiment import MeasureSpec
from tuner.measure import perf_analyzer, ramp
from tuner.measure.metrics import MetricsSampler, ServerMetrics
from tuner.measure.perf_analyzer import Measurement


@dataclass(frozen=True)
class PerfRun:
    """One perf_analyzer run, with the server metrics sampled meanwhile."""

    measurement: Measurement
    metrics: ServerMetrics
    command: str  # the exact command line that produced it
    unstable: bool  # it needed the loose retry: read its figures with care


@dataclass(frozen=True)
class LoadResult:
    measurement: Measurement  # the trial's figures
    metrics: ServerMetrics
    command: str
    unstable: bool
    curve: list[Measurement] | None  # every ramp point, when the trial found its concurrency
    confirm: dict | None  # {"first": ..., "again": ...} when a new best was measured twice
    measure_s: float


Perf = Callable[[float, str], PerfRun]  # (load level, csv suffix) -> one run


def perf_runner(model: str, grpc_url: str, metrics_url: str, spec: MeasureSpec, input_data: Path,
                csv_path: Callable[[str], Path]) -> Perf:
    """perf_analyzer against one server. A run whose windows never agree (or complete no request)
    gets three more windows without a stability requirement (4x longer if none completed), rather
    than losing the candidate to noise; such a run is flagged unstable."""

    def once(level: float, suffix: str) -> PerfRun:
        path = csv_path(f"{'r' if spec.load == 'request_rate' else 'c'}{level:g}{suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)

        def run(settings: MeasureSpec) -> tuple[Measurement, ServerMetrics, str]:
            cmd = perf_analyzer.command(model, grpc_url, level, settings, path, input_data)
            sampler = MetricsSampler(metrics_url)
            with sampler:
                measurement = perf_analyzer.measure(cmd, path, spec.timeout_s)
            return measurement, sampler.result(), perf_analyzer.as_shell(cmd)

        try:
            return PerfRun(*run(spec), unstable=False)
        except (perf_analyzer.UnstableMeasurement, perf_analyzer.WindowTooShort) as exc:
            loose = spec.model_copy(update={"stability_percent": 1000.0, "max_windows": 3})
            if isinstance(exc, perf_analyzer.WindowTooShort):
                loose = loose.model_copy(update={"interval_ms": spec.interval_ms * 4})
            return PerfRun(*run(loose), unstable=True)

    return once


def load_test(perf: Perf, spec: MeasureSpec, level: float, ladder: Sequence[int], floor: int,
              max_p99_ms: float | None, best_so_far: float | None) -> LoadResult:
    """Measure at `level` (a concurrency or a request rate), or (when the spec ramps) up `ladder`
    from `floor` on; a result above `best_so_far` (the study's best within the SLA; None: no
    confirmation) is measured again."""
    started = time.monotonic()
    runs: dict[float, PerfRun] = {}

    def measure_at(at: float) -> Measurement:
        runs[at] = perf(at, "")
        return runs[at].measurement

    curve = None
    if spec.ramps:
        curve = ramp.ramp(measure_at, ladder, max_p99_ms, spec.ramp_min_gain, floor)
        measurement = ramp.pick(curve, max_p99_ms, spec.sla_headroom)
    else:
        measurement = measure_at(level)
    chosen = next(run for at, run in runs.items() if run.measurement is measurement)
    confirm = None
    if best_so_far is not None and _new_best(measurement, best_so_far, max_p99_ms):
        again = perf(next(at for at, run in runs.items() if run is chosen), "confirm")
        confirm = {"first": measurement.throughput, "again": again.measurement.throughput}
        measurement = ramp.mean([measurement, again.measurement])
        runs[-1] = again
    return LoadResult(measurement, chosen.metrics, chosen.command, any(r.unstable for r in runs.values()),
                      curve, confirm, round(time.monotonic() - started, 3))


def _new_best(measurement: Measurement, best: float, max_p99_ms: float | None) -> bool:
    """One noisy window can look 10 % better than the configuration is: a point that would be the
    study's new best (within the SLA) is measured again."""
    return ((max_p99_ms is None or measurement.p99_ms <= max_p99_ms) and measurement.sustained
            and measurement.throughput > best)


def warm_up(perf_at: Callable[[MeasureSpec], Perf], level: float, seconds: float) -> None:
    """Load a freshly loaded deployment for `seconds` at `level`, unmeasured: its first requests
    of each shape pay for kernel planning and graph capture, which no steady state pays."""
    if seconds <= 0:
        return
    spec = MeasureSpec(interval_ms=max(100, int(seconds * 1000 / 3)), stability_percent=1000.0, max_windows=3)
    perf_at(spec)(level, "warmup")

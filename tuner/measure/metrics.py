"""Server utilisation during a measurement, read from tritonserver's Prometheus endpoint.

A background thread polls the endpoint while perf_analyzer runs; the figures are averaged over
the window (utilisation, power) or taken at their peak (memory).
"""

from __future__ import annotations

import re
import threading
import urllib.request
from collections import defaultdict
from dataclasses import asdict, dataclass

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_GIB = 1024**3


def parse(text: str) -> dict[str, dict[str, float]]:
    """Prometheus text -> {metric: {labels: value}} (labels as their raw text, "" for none)."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        match = _SAMPLE.match(line)
        if match:
            try:
                out[match["name"]][match["labels"] or ""] = float(match["value"])
            except ValueError:
                continue
    return out


@dataclass(frozen=True)
class ServerMetrics:
    samples: int
    cpu_utilization: float | None  # 0..1, whole machine
    cpu_memory_gb: float | None  # peak
    gpu_utilization: float | None  # 0..1, mean over GPUs and time
    gpu_memory_gb: float | None  # peak, summed over GPUs
    gpu_power_w: float | None  # mean, summed over GPUs

    def as_dict(self) -> dict:
        return asdict(self)


class MetricsSampler:
    """`with MetricsSampler(url) as sampler: ...` then `sampler.result()`."""

    def __init__(self, url: str, interval_s: float = 0.5):
        self.url, self.interval_s = url, interval_s
        self.snapshots: list[dict[str, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    self.snapshots.append(parse(response.read().decode()))
            except OSError:
                pass  # a missed poll only thins the average
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "MetricsSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def result(self) -> ServerMetrics:
        return summarize(self.snapshots)


def _series(snapshots, name: str) -> list[float]:
    """One value per snapshot: the metric summed over its label sets (e.g. over GPUs)."""
    return [sum(s[name].values()) for s in snapshots if name in s and s[name]]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(snapshots: list[dict[str, dict[str, float]]]) -> ServerMetrics:
    gpus = max((len(s.get("nv_gpu_utilization", {})) for s in snapshots), default=0)
    gpu_util = _mean(_series(snapshots, "nv_gpu_utilization"))
    gpu_mem = _series(snapshots, "nv_gpu_memory_used_bytes")
    cpu_mem = _series(snapshots, "nv_cpu_memory_used_bytes")
    return ServerMetrics(
        samples=len(snapshots),
        cpu_utilization=_mean(_series(snapshots, "nv_cpu_utilization")),
        cpu_memory_gb=max(cpu_mem) / _GIB if cpu_mem else None,
        gpu_utilization=gpu_util / gpus if gpu_util is not None and gpus else None,
        gpu_memory_gb=max(gpu_mem) / _GIB if gpu_mem else None,
        gpu_power_w=_mean(_series(snapshots, "nv_gpu_power_usage")),
    )

"""Per-step figures of an ensemble from perf_analyzer's report: each composing model's server-side
queue and compute time, and its share of the pipeline's server latency.

Where perf_analyzer puts them (checked on a real run of perf_analyzer 2.48 against the served
WeNet ensemble; the captured output is tests/data/perf_analyzer_wenet_ensemble_stdout.txt):
only in its stdout, a "Composing models:" block per load level, one entry per step:

    Request concurrency: 2
      ...
      Composing models:
      encoder, version: 1
          Inference count: 124
          Execution count: 122
          Successful request count: 124
          Avg request latency: 32574 usec (overhead 7 usec + queue 1717 usec + compute input 112 usec + compute infer 30519 usec + compute output 219 usec)

The CSV it writes with ``-f`` and ``--verbose-csv`` has one row per load level with no
composing-model rows. (In that row, an ensemble's "Server Queue" is the ensemble's own queue,
a few microseconds: the steps' queueing is counted in "Network+Server Send/Recv" instead, while
the compute columns are the steps' sums.)

The figures are Triton's per-request averages over the measurement windows: each utterance
passes every step once, so the steps' latencies add up to the ensemble's server latency (the
ensemble's own overhead aside). A step's counts can differ from the ensemble's by a request or
two, which straddled a window boundary.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from tuner.errors import TrialError

# "Request concurrency: 2" (closed loop) or "Request Rate: 4 inference requests per seconds"
# (open loop) opens each load level's report.
_LEVEL = re.compile(r"^Request (?:concurrency|Rate): ([0-9.]+)", re.MULTILINE)
_STEP = re.compile(r"^\s+(\S+), version: (\S*)\s*$")
_COUNT = re.compile(r"^\s+(Inference count|Execution count|Successful request count): (\d+)\s*$")
_PART = re.compile(r"(overhead|queue|compute input|compute infer|compute output) (\d+) usec")


class ComposingStatsMissing(TrialError):
    """perf_analyzer's output has no composing-model statistics (not an ensemble, or no level measured)."""


@dataclass(frozen=True)
class StepStats:
    """One composing model at one load level. Times in microseconds, per request."""

    inference_count: int
    execution_count: int  # fewer than inference_count: the step batched requests
    latency_us: float  # Triton's average request latency of the step
    overhead_us: float
    queue_us: float
    compute_input_us: float
    compute_infer_us: float
    compute_output_us: float

    @property
    def compute_us(self) -> float:
        return self.compute_input_us + self.compute_infer_us + self.compute_output_us

    @property
    def busy_us(self) -> float:
        """Queue and compute: the step's part of an utterance's time in the server."""
        return self.queue_us + self.compute_us


def _read(report: str | Path) -> str:
    """A Path is a file of perf_analyzer's stdout; a str is that text itself."""
    return report.read_text(errors="replace") if isinstance(report, Path) else report


def _steps(section: str) -> dict[str, StepStats]:
    """The entries of one level's "Composing models:" block."""
    _, found, block = section.partition("Composing models:")
    if not found:
        return {}
    steps: dict[str, StepStats] = {}
    name, counts = None, {}
    for line in block.splitlines():
        if (m := _STEP.match(line)):
            name, counts = m.group(1), {}
        elif name and (m := _COUNT.match(line)):
            counts[m.group(1)] = int(m.group(2))
        elif name and "Avg request latency:" in line:
            parts = {k: float(v) for k, v in _PART.findall(line)}
            if "queue" not in parts or "compute infer" not in parts:
                raise ComposingStatsMissing(f"unexpected composing-model latency line: {line.strip()!r}")
            total = re.search(r"Avg request latency: (\d+) usec", line)
            steps[name] = StepStats(
                inference_count=counts.get("Inference count", 0),
                execution_count=counts.get("Execution count", 0),
                latency_us=float(total.group(1)) if total else sum(parts.values()),
                overhead_us=parts.get("overhead", 0.0),
                queue_us=parts["queue"],
                compute_input_us=parts.get("compute input", 0.0),
                compute_infer_us=parts["compute infer"],
                compute_output_us=parts.get("compute output", 0.0),
            )
            name = None
    return steps


def parse_levels(report: str | Path) -> dict[float, dict[str, StepStats]]:
    """Every load level's composing-model statistics, keyed by its concurrency or request rate,
    in the order perf_analyzer measured them. Levels it could not measure are absent."""
    text = _read(report)
    matches = list(_LEVEL.finditer(text))
    levels = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        steps = _steps(text[m.end():end])
        if steps:
            levels[float(m.group(1))] = steps
    return levels


def step_shares(report: str | Path, level: float | None = None) -> dict[str, dict[str, float]]:
    """{step: {"queue_us", "compute_us", "share", ...}} at one load level (the last measured one
    when ``level`` is None). ``share`` is the step's queue + compute over the sum of every step's
    queue + compute: its part of the pipeline's server latency; the shares sum to 1."""
    levels = parse_levels(report)
    if not levels:
        raise ComposingStatsMissing("perf_analyzer's output has no composing-model statistics")
    if level is None:
        level = list(levels)[-1]
    if level not in levels:
        raise ComposingStatsMissing(f"no composing-model statistics at load level {level}; "
                                    f"measured: {', '.join(f'{l:g}' for l in levels)}")
    steps = levels[level]
    total = sum(s.busy_us for s in steps.values())
    return {
        name: {**asdict(s), "compute_us": s.compute_us, "busy_us": s.busy_us,
               "share": s.busy_us / total if total > 0 else 0.0}
        for name, s in steps.items()
    }

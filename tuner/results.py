"""Read a study back: one row per trial, the Pareto front, the best trial under an SLA."""

from __future__ import annotations

import optuna
import pandas as pd

KNOBS = ["backend", "precision", "instances", "max_batch_size", "dynamic_batching", "max_queue_delay_us",
         "preferred_batch", "threads", "warmup", "concurrency"]
FIGURES = ["throughput", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "avg_ms", "queue_ms", "compute_input_ms",
           "compute_infer_ms", "compute_output_ms"]


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """Every trial as a row: state, knobs, measured figures, timings, and the reason for failures."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        row = {"number": t.number, "state": t.state.name, "baseline": bool(attrs.get("baseline", False))}
        row |= {k: attrs.get("candidate", {}).get(k) for k in KNOBS}
        measurement = attrs.get("measurement", {})
        row |= {k: measurement.get(k) for k in FIGURES}
        row |= {k: attrs.get(k) for k in ("load_s", "first_request_ms", "measure_s", "repeat_of", "error")}
        row["duration_s"] = t.duration.total_seconds() if t.duration else None
        rows.append(row)
    columns = ["number", "state", "baseline", *KNOBS, *FIGURES, "load_s", "first_request_ms", "measure_s",
               "repeat_of", "error", "duration_s"]
    return pd.DataFrame(rows, columns=columns)


def completed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame.state == "COMPLETE") & frame.throughput.notna()]


def best(frame: pd.DataFrame, max_p99_ms: float | None = None, baseline: bool | None = None) -> pd.Series | None:
    """The highest-throughput completed trial whose p99 is within the SLA (if one is given)."""
    done = completed(frame)
    if baseline is not None:
        done = done[done.baseline == baseline]
    if max_p99_ms is not None:
        done = done[done.p99_ms <= max_p99_ms]
    if done.empty:
        return None
    return done.sort_values(["throughput", "p99_ms"], ascending=[False, True]).iloc[0]


def pareto_front(frame: pd.DataFrame) -> pd.DataFrame:
    """Completed trials that no other beats on both throughput (higher) and p99 (lower)."""
    done = completed(frame).sort_values(["p99_ms", "throughput"], ascending=[True, False])
    front, best_throughput = [], float("-inf")
    for index, row in done.iterrows():
        if row.throughput > best_throughput:
            front.append(index)
            best_throughput = row.throughput
    return done.loc[front]

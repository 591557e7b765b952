"""Read a study back: one row per trial, the Pareto front, the best trial under an SLA."""

from __future__ import annotations

import optuna
import pandas as pd

from tuner import knobs
from tuner.cost import cost_per_million

KNOBS = ["backend", "precision", "kind", "family", *knobs.NAMES]  # the candidate's fields
METRICS = ["cpu_utilization", "gpu_utilization", "gpu_memory_gb", "gpu_power_w"]
FIGURES = ["throughput", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "avg_ms", "queue_ms", "compute_input_ms",
           "compute_infer_ms", "compute_output_ms"]
WHERE = ["worker", "host", "hardware"]  # which worker measured a trial (tuner.workers), on what


def study_price(study: optuna.Study) -> float | None:
    """The price per hour the study's experiment gives its machines (None when it gives none)."""
    return (study.user_attrs.get("experiment") or {}).get("price_per_hour")


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """Every trial as a row: state, knobs, measured figures, timings, the reason for failures, the
    worker that measured it, and what a million inferences cost at its throughput: its machine's
    price per hour (the trial's own, else the experiment's) over what it served in an hour."""
    rows = []
    default_price = study_price(study)
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        row = {"number": t.number, "state": t.state.name, "baseline": bool(attrs.get("baseline", False))}
        row |= {k: attrs.get("candidate", {}).get(k) for k in KNOBS}
        row["steps"] = attrs.get("candidate", {}).get("steps")  # a pipeline's step settings (tuner.pipeline)
        measurement = attrs.get("measurement", {})
        row |= {k: measurement.get(k) for k in FIGURES}
        checked = attrs.get("accuracy", {})
        errors = [v for v in (checked.get("max_rel_error") or {}).values() if v is not None]
        row["max_rel_error"] = max(errors) if errors else None
        row["ctc_agreement"] = checked.get("ctc_agreement")
        metrics = attrs.get("server_metrics", {})
        row |= {k: metrics.get(k) for k in METRICS}
        row |= {k: attrs.get(k) for k in ("load_s", "first_request_ms", "measure_s", "repeat_of", "error", "rejected",
                                          "retried")}
        # Whose fault a failure was (tuner.trial.record.failed); a killed search's trial has no reason of its own.
        row["failure"] = attrs.get("failure") or ("interrupted" if t.state.name == "FAIL" and "error" not in attrs
                                                  else None)
        row["duration_s"] = t.duration.total_seconds() if t.duration else None
        row |= {k: attrs.get(k) for k in WHERE}
        row["price_per_hour"] = attrs.get("price_per_hour", default_price)
        row["cost_per_million"] = cost_per_million(row["throughput"], row["price_per_hour"])
        rows.append(row)
    columns = ["number", "state", "baseline", *KNOBS, "steps", *FIGURES, *METRICS, "max_rel_error", "ctc_agreement",
               "load_s", "first_request_ms",
               "measure_s", "repeat_of", "error", "rejected", "retried", "failure", "duration_s", *WHERE,
               "price_per_hour", "cost_per_million"]
    return pd.DataFrame(rows, columns=columns)


def priced(frame: pd.DataFrame) -> bool:
    """Whether any completed trial has a cost (a price per hour was given)."""
    return bool(completed(frame).cost_per_million.notna().any())


def several_workers(frame: pd.DataFrame) -> bool:
    """Whether more than one worker measured the study's trials."""
    return frame.worker.dropna().nunique() > 1


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


def best_per_runtime(frame: pd.DataFrame, max_p99_ms: float | None = None) -> pd.DataFrame:
    """For each backend and precision tried: its best trial under the SLA (None where none meets it),
    with how many trials ran, failed, or were rejected by the accuracy guard."""
    rows = []
    for (backend, precision), group in frame.dropna(subset=["backend"]).groupby(["backend", "precision"]):
        chosen = best(group, max_p99_ms)
        rows.append({
            "backend": backend, "precision": precision, "trials": len(group),
            "failed": int((group.state == "FAIL").sum()), "rejected": int(group.rejected.notna().sum()),
            "best_trial": None if chosen is None else int(chosen.number),
            **{k: (None if chosen is None else chosen[k]) for k in ("throughput", "p99_ms", "cost_per_million", *METRICS)},
            # The accuracy guard's figures are per runtime: any checked trial of the group has them.
            "max_rel_error": group.max_rel_error.dropna().max() if group.max_rel_error.notna().any() else None,
            "ctc_agreement": group.ctc_agreement.dropna().min() if group.ctc_agreement.notna().any() else None,
        })
    return pd.DataFrame(rows).sort_values("throughput", ascending=False, na_position="last") if rows else pd.DataFrame()

"""Stage 6, record: what each stage returned, written as the trial's attributes, and the objective
values and constraints Optuna steers by. The study alone then holds everything about a trial."""

from __future__ import annotations

import optuna

from tuner.experiment import Experiment
from tuner.trial.artifact import Artifact
from tuner.trial.deploy import Deployed
from tuner.trial.loadtest import LoadResult

# What a repeat of a measured deployment copies from it.
REUSED = ("measurement", "config_pbtxt", "perf_analyzer_cmd", "accuracy", "server_metrics", "candidate", "curve",
          "confirm", "configs", "step_shares")  # the last two: a pipeline's (tuner.pipeline.runner)


def same_params(study: optuna.Study, params: dict) -> optuna.trial.FrozenTrial | None:
    """A completed, measured trial with exactly these params."""
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if t.params == params and "measurement" in t.user_attrs:
            return t
    return None


def reuse(trial: optuna.Trial, previous: optuna.trial.FrozenTrial, exp: Experiment) -> tuple[float, float]:
    for key in REUSED:
        if key in previous.user_attrs:
            trial.set_user_attr(key, previous.user_attrs[key])
    trial.set_user_attr("repeat_of", previous.number)
    constrain(trial, exp, previous.values[1], previous.user_attrs.get("server_metrics", {}).get("gpu_memory_gb"))
    return previous.values[0], previous.values[1]


def artifact(trial: optuna.Trial, a: Artifact) -> None:
    trial.set_user_attr("prepare_s", a.prepare_s)
    trial.set_user_attr("artifact", a.info)


def deployed(trial: optuna.Trial, d: Deployed) -> None:
    trial.set_user_attr("load_s", d.load_s)
    trial.set_user_attr("first_request_ms", d.first_request_ms)


def failed(trial: optuna.Trial, reason: str, kind: str) -> None:
    """A failed trial says why, and whose fault it was: "candidate", "server died",
    "perf_analyzer hung" (each infrastructure fault is retried once first) or "internal"."""
    trial.set_user_attr("error", reason)
    trial.set_user_attr("failure", kind)


def rejected(trial: optuna.Trial, verdict: dict) -> None:
    """An inaccurate candidate is never measured and never best."""
    trial.set_user_attr("accuracy", verdict)
    trial.set_user_attr("rejected", verdict["reason"])
    trial.set_user_attr("error", f"accuracy check failed: {verdict['reason']}")


def measured(trial: optuna.Trial, result: LoadResult, exp: Experiment) -> tuple[float, float]:
    if result.curve is not None:
        trial.set_user_attr("curve", [p.as_dict() for p in result.curve])
    if result.confirm is not None:
        trial.set_user_attr("confirm", result.confirm)
    if result.unstable:
        trial.set_user_attr("unstable", True)
    trial.set_user_attr("perf_analyzer_cmd", result.command)
    trial.set_user_attr("server_metrics", result.metrics.as_dict())
    trial.set_user_attr("measure_s", result.measure_s)
    trial.set_user_attr("measurement", result.measurement.as_dict())
    constrain(trial, exp, result.measurement.p99_ms, result.metrics.gpu_memory_gb)
    return result.measurement.throughput, result.measurement.p99_ms


def best_throughput(study: optuna.Study, max_p99_ms: float | None) -> float:
    """The study's best throughput so far within the SLA (0 when none)."""
    best = 0.0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if max_p99_ms is None or t.values[1] <= max_p99_ms:
            best = max(best, t.values[0])
    return best


def constrain(trial: optuna.Trial, exp: Experiment, p99_ms: float, gpu_memory_gb: float | None) -> None:
    """The SLA and the GPU memory cap as Optuna constraints (feasible when <= 0), so the sampler
    steers toward configurations that meet them."""
    if exp.max_p99_ms:
        trial.set_constraint("p99_over_sla_ms", p99_ms - exp.max_p99_ms)
    if exp.max_gpu_mem_gb and gpu_memory_gb is not None:
        trial.set_constraint("gpu_memory_over_gb", gpu_memory_gb - exp.max_gpu_mem_gb)

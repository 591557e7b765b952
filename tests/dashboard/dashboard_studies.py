"""Small hand-made studies, as `tuner search` leaves them, for the states a real search seldom does."""

from __future__ import annotations

import optuna

from tuner.verification import finalists


def make_study(storage: str, name: str, trials: list[dict]) -> optuna.Study:
    """A study as `tuner search` leaves it, without a server: each dict gives a trial's state, values and attrs."""
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"])
    study.set_user_attr("model", "mlp.onnx")
    study.set_user_attr("model_name", "mlp")
    study.set_user_attr("max_p99_ms", 10.0)
    study.set_user_attr("experiment", {"model": "mlp.onnx", "trials": len(trials)})
    for spec in trials:
        trial = study.ask()
        for key, value in spec.get("attrs", {}).items():
            trial.set_user_attr(key, value)
        study.tell(trial, spec.get("values"), state=spec.get("state", optuna.trial.TrialState.COMPLETE))
    return study


def measured(throughput: float, p99_ms: float, instances: int = 1, **attrs) -> dict:
    """A completed trial's spec for make_study, with the attributes a real measurement leaves."""
    candidate = {"instances": instances, "max_batch_size": 4, "dynamic_batching": False, "max_queue_delay_us": 0,
                 "preferred_batch": False, "threads": 0, "warmup": False, "concurrency": 2,
                 "backend": "onnxruntime", "precision": "fp32", "kind": "KIND_CPU"}
    figures = {"throughput": throughput, "p50_ms": p99_ms / 3, "p90_ms": p99_ms / 2, "p95_ms": p99_ms / 1.5,
               "p99_ms": p99_ms, "avg_ms": p99_ms / 2.5, "queue_ms": 0.1, "compute_input_ms": 0.05,
               "compute_infer_ms": 1.0, "compute_output_ms": 0.05, "client_send_ms": 0.01,
               "client_recv_ms": 0.01, "concurrency": 2}
    config = f'name: "mlp"\nbackend: "python"\nmax_batch_size: 4\ninstance_group [ {{ count: {instances} }} ]\n'
    return {"values": [throughput, p99_ms],
            "attrs": {"candidate": candidate, "measurement": figures, "config_pbtxt": config} | attrs}


def memory_study(trials: list[dict], max_p99_ms: float | None = 10.0) -> optuna.Study:
    """The same trials as make_study's specs, in an in-memory study built with create_trial."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("model", "mlp.onnx")
    study.set_user_attr("max_p99_ms", max_p99_ms)
    for spec in trials:
        state = spec.get("state", optuna.trial.TrialState.COMPLETE)
        study.add_trial(optuna.trial.create_trial(state=state, values=spec.get("values"),
                                                  user_attrs=spec.get("attrs", {})))
    return study


def verification(rounds: list[dict[int, tuple[float, float]]], max_p99_ms: float | None = 10.0,
                 default: int | None = None, stopped: str = "converged", trials_seen: int | None = None) -> dict:
    """The study attribute "verification" as tuner.verification.run stores it (JSON: trial numbers as
    strings), decided by the real finalists.decide from rounds of {trial: (throughput, p99_ms)}."""
    measured = [{n: {"throughput": t, "p99_ms": p, "p50_ms": p / 3, "command": f"perf_analyzer -m mlp # trial {n}",
                     "unstable": False} for n, (t, p) in r.items()} for r in rounds]
    decision = finalists.decide(measured, max_p99_ms, default)
    return decision | {"stopped": stopped, "seconds": 84.0, "max_p99_ms": max_p99_ms, "trials_seen": trials_seen,
                       "finalists": {str(n): v for n, v in decision["finalists"].items()},
                       "rounds_measured": [{str(n): v for n, v in r.items()} for r in measured]}

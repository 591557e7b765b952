"""The search space: Optuna suggestions -> Candidate, following the knob table (tuner.knobs).

Each model of a deployment draws its knobs under its own `prefix` ("" for a single model,
e.g. "encoder." for a step of an ensemble), so one study can hold a knob set per model.
"""

from __future__ import annotations

import optuna

from tuner import backends
from tuner.candidate import REFERENCE_RUNTIME, Candidate, split_runtime
from tuner.experiment import Space
from tuner.knobs import BY_NAME, KNOBS, Context


def context(runtime: str, batched: bool = True, sample_concurrency: bool = False, load: str = "concurrency") -> Context:
    """The knob context of a runtime choice ("backend:precision") for a model under a load model."""
    backend = backends.get(split_runtime(runtime)[0])
    return Context(batched=batched, kind=backend.default_kind, family=backend.family,
                   sample_concurrency=sample_concurrency, load=load)


def candidate(runtime: str, values: dict, ctx: Context) -> Candidate:
    """The Candidate of a runtime and the values of the knobs that exist (others stay off)."""
    backend, precision = split_runtime(runtime)
    return Candidate(backend=backend, precision=precision, kind=ctx.kind, family=ctx.family, **values)


def suggest(trial: optuna.Trial, space: Space, batched: bool = True, runtimes: list[str] | None = None,
            sample_concurrency: bool = True, prefix: str = "", load: str = "concurrency") -> Candidate:
    """Ask the trial for the runtime, then one value per knob that exists given the choices so far.

    `runtimes` are the "backend:precision" keys usable here (default: the reference, ONNX Runtime
    fp32). Without `sample_concurrency` the load level (concurrency, or request rate under the
    request-rate `load` model) stays 0: the trial finds it (a ramp).
    """
    runtime = trial.suggest_categorical(f"{prefix}runtime", runtimes or [REFERENCE_RUNTIME])
    ctx = context(runtime, batched, sample_concurrency, load)
    chosen: dict = {}
    for knob in KNOBS:
        if knob.exists(chosen, ctx):
            chosen[knob.name] = trial.suggest_categorical(f"{prefix}{knob.name}", getattr(space, knob.name))
    return candidate(runtime, chosen, ctx)


def triton_default_params(concurrency: int | None, batched: bool = True, runtime: str = REFERENCE_RUNTIME) -> dict:
    """Triton's default deployment as trial params: each knob that exists at its Triton default
    (one instance per GPU, max_batch_size 4, no dynamic batching, runtime default threads and
    graph optimization, no warmup). `concurrency` None: no client load in the params (a ramp finds it)."""
    ctx = context(runtime, batched)
    params: dict = {"runtime": runtime}
    for knob in KNOBS:
        if knob.triton_default is not None and knob.exists(params, ctx):
            params[knob.name] = knob.triton_default
    if concurrency is not None:
        params["concurrency"] = concurrency
    return params


def widen_for_baseline(space: Space, baseline_concurrency: list[int], batched: bool,
                       runtime: str = REFERENCE_RUNTIME) -> Space:
    """Make sure every value of the default config is a legal choice, so it can be enqueued."""
    need = triton_default_params(None, batched, runtime)
    updates = {}
    for name, value in need.items():
        if name in BY_NAME and value not in getattr(space, name):
            updates[name] = sorted({*getattr(space, name), value})
    missing = sorted(set(baseline_concurrency) - set(space.concurrency))
    if missing:
        updates["concurrency"] = sorted({*space.concurrency, *missing})
    return space.model_copy(update=updates) if updates else space


def grid(space: Space, batched: bool = True, runtime: str = REFERENCE_RUNTIME,
         sample_concurrency: bool = True) -> list[dict]:
    """Every combination of the space's values for one runtime, as trial params; knobs that do
    not exist for a combination are left out (the exhaustive sweep the benchmarks compare with)."""
    ctx = context(runtime, batched, sample_concurrency)
    points: list[dict] = [{"runtime": runtime}]
    for knob in KNOBS:
        grown = []
        for point in points:
            if knob.exists(point, ctx):
                grown += [point | {knob.name: value} for value in getattr(space, knob.name)]
            else:
                grown.append(point)
        points = grown
    return points

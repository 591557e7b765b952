"""The search space: Optuna suggestions -> Candidate, a frozen description of one deployment."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import optuna

from tuner.experiment import Space


REFERENCE_RUNTIME = "onnxruntime:fp32"


@dataclass(frozen=True)
class Candidate:
    """One Triton deployment of the model plus the client load it is measured under."""

    instances: int
    max_batch_size: int  # 0 = the model is not batched (Triton does not own the first dim)
    dynamic_batching: bool
    max_queue_delay_us: int
    preferred_batch: bool  # ask the dynamic batcher for batches of max_batch_size
    threads: int  # runtime intra-op threads per instance; 0 = runtime default
    warmup: bool
    concurrency: int
    backend: str = "onnxruntime"
    precision: str = "fp32"
    kind: str = "KIND_CPU"
    gpus: str = "all"  # KIND_GPU: "all" (count instances on every GPU) or device ids "0,1"

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def preferred_batch_sizes(self) -> list[int]:
        return [self.max_batch_size] if self.dynamic_batching and self.preferred_batch else []


def runtime_key(backend: str, precision: str) -> str:
    """One categorical knob for backend and precision: Optuna needs the same choices in every
    trial, and which precisions exist depends on the backend."""
    return f"{backend}:{precision}"


def suggest(trial: optuna.Trial, space: Space, batched: bool = True,
            runtimes: list[str] | None = None, sample_concurrency: bool = True) -> Candidate:
    """Ask the trial for one value per knob; batching knobs only where they mean something.

    `runtimes` are the "backend:precision" keys usable here (default: the reference, ONNX Runtime fp32).
    Without `sample_concurrency` the concurrency is left 0: the trial finds it (a ramp).
    """
    from tuner import backends

    pick = trial.suggest_categorical
    backend, precision = pick("runtime", runtimes or [REFERENCE_RUNTIME]).split(":")
    max_batch = pick("max_batch_size", space.max_batch_size) if batched else 0
    dynamic = batched and pick("dynamic_batching", space.dynamic_batching)
    return Candidate(
        instances=pick("instances", space.instances),
        max_batch_size=max_batch,
        dynamic_batching=dynamic,
        max_queue_delay_us=pick("max_queue_delay_us", space.max_queue_delay_us) if dynamic else 0,
        preferred_batch=pick("preferred_batch", space.preferred_batch) if dynamic else False,
        threads=pick("threads", space.threads),
        warmup=pick("warmup", space.warmup),
        concurrency=pick("concurrency", space.concurrency) if sample_concurrency else 0,
        backend=backend,
        precision=precision,
        kind=(kind := backends.get(backend).default_kind),
        gpus=pick("gpus", space.gpus) if kind == "KIND_GPU" else "all",
    )


def triton_default_params(concurrency: int | None, batched: bool = True, runtime: str = REFERENCE_RUNTIME) -> dict:
    """Triton's default deployment: one instance (per GPU), no dynamic batching, runtime default
    threads, max_batch_size 4 (tritonserver's --backend-config default-max-batch-size), no warmup.
    `concurrency` None: no client load in the params (a ramp finds it)."""
    from tuner import backends

    params = {"runtime": runtime, "instances": 1, "threads": 0, "warmup": False}
    if concurrency is not None:
        params["concurrency"] = concurrency
    if backends.get(runtime.split(":")[0]).default_kind == "KIND_GPU":
        params["gpus"] = "all"
    if batched:
        params |= {"max_batch_size": 4, "dynamic_batching": False}
    return params


def widen_for_baseline(space: Space, baseline_concurrency: list[int], batched: bool) -> Space:
    """Make sure every value of the default config is a legal choice, so it can be enqueued."""
    need = triton_default_params(0, batched)
    updates = {}
    for knob, value in need.items():
        if knob in ("concurrency", "runtime"):
            continue
        values = getattr(space, knob)
        if value not in values:
            updates[knob] = sorted({*values, value})
    missing = sorted(set(baseline_concurrency) - set(space.concurrency))
    if missing:
        updates["concurrency"] = sorted({*space.concurrency, *missing})
    return space.model_copy(update=updates) if updates else space


def strong_first_params(space: Space, batched: bool = True, runtime: str = REFERENCE_RUNTIME) -> list[dict]:
    """Shapes that usually win, measured right after Triton's default so the sampler starts from
    good ground: dynamic batching up to the largest batch with the shortest queue delay, on one
    instance with the runtime's own threads, and on two instances of one thread each (two
    requests in flight without the runtimes fighting over cores). Only values the space holds."""
    if not batched or True not in space.dynamic_batching:
        return []
    base = triton_default_params(None, batched, runtime) | {
        "max_batch_size": max(space.max_batch_size), "dynamic_batching": True,
        "max_queue_delay_us": min(space.max_queue_delay_us),
        "preferred_batch": False if False in space.preferred_batch else True,
        "warmup": False if False in space.warmup else True}
    shapes = [base | {"instances": min(space.instances), "threads": 0 if 0 in space.threads else min(space.threads)}]
    if 2 in space.instances:
        shapes.append(base | {"instances": 2, "threads": 1 if 1 in space.threads else shapes[0]["threads"]})
    legal = []
    for shape in shapes:
        if all(value in getattr(space, knob) for knob, value in shape.items() if knob not in ("runtime", "gpus")):
            legal.append(shape)
    return legal

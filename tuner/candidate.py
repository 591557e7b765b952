"""The Candidate: one deployment of one model plus the client load it is measured under, as plain
frozen data with a field per knob of tuner.knobs, and the runtime keys ("backend:precision").

A leaf: it imports nothing of tuner but the knob table.
"""

from __future__ import annotations

from dataclasses import asdict, field, fields, make_dataclass
from typing import Any

from tuner.knobs import BY_NAME, KNOBS, Context

PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")  # tf32: fp32 weights, TF32 tensor-core math (pytorch)
REFERENCE_RUNTIME = "onnxruntime:fp32"  # the runtime every other one is checked against


def runtime_key(backend: str, precision: str) -> str:
    """One categorical knob for backend and precision: Optuna needs the same choices in every
    trial, and which precisions exist depends on the backend."""
    return f"{backend}:{precision}"


def split_runtime(key: str) -> tuple[str, str]:
    backend, _, precision = key.partition(":")
    return backend, precision


def _as_dict(self) -> dict[str, Any]:
    return asdict(self)


def _context(self, sample_concurrency: bool = True) -> Context:
    """The knob context this candidate was chosen in (what decides which knobs exist)."""
    return Context(batched=self.max_batch_size > 0, kind=self.kind, family=self.family,
                   sample_concurrency=sample_concurrency, load=self.load)


def _load(self) -> str:
    """The load model this candidate is measured under: a request rate once one is set."""
    return "request_rate" if self.request_rate else "concurrency"


def _load_level(self) -> int:
    """Its concurrency, or its request rate (inferences/s) under the request-rate load model."""
    return self.request_rate or self.concurrency


def _preferred_batch_sizes(self) -> list[int]:
    return [self.max_batch_size] if self.dynamic_batching and self.preferred_batch else []


def _runtime(self) -> str:
    return runtime_key(self.backend, self.precision)


def _from_dict(cls, values: dict) -> "Candidate":
    """A stored candidate read back; fields it lacks (knobs added since) take their off value,
    fields no longer known are dropped."""
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


# What the runtime choice fixes, then one field per knob (a knob that does not exist for this
# candidate holds its `off` value, e.g. max_batch_size 0 for a model Triton does not batch).
Candidate = make_dataclass(
    "Candidate",
    [("backend", str, field(default="onnxruntime")),
     ("precision", str, field(default="fp32")),
     ("kind", str, field(default="KIND_CPU")),  # instance kind of the backend
     ("family", str, field(default="onnxruntime")),  # the backend's runtime family
     *[(k.name, k.type, field(default=k.off)) for k in KNOBS]],
    frozen=True,
    namespace={
        "as_dict": _as_dict,
        "context": _context,
        "preferred_batch_sizes": property(_preferred_batch_sizes),
        "runtime": property(_runtime),
        "load": property(_load),
        "load_level": property(_load_level),
        "from_dict": classmethod(_from_dict),
        "__module__": __name__,
        "__doc__": "One Triton deployment of one model plus the client load it is measured under.",
    },
)


def describe(c: dict | Candidate) -> str:
    """One line: runtime, then every knob that exists for this candidate, e.g.
    "onnxruntime/fp32 x2 mbs=32 db=on delay=0us nopref thr=1 opt=all warm=n conc=16"."""
    values = c if isinstance(c, dict) else c.as_dict()
    if values.get("steps"):  # a pipeline's candidate (tuner.pipeline): each step's settings
        return f"{describe_steps(values['steps'])} conc={values.get('concurrency') or 'ramp'}"
    rate = values.get("request_rate")
    ctx = Context(batched=bool(values.get("max_batch_size")), kind=values.get("kind") or "KIND_CPU",
                  family=values.get("family") or "onnxruntime", sample_concurrency=True,
                  load="request_rate" if rate and rate == rate else "concurrency")
    parts = [f"{values.get('backend')}/{values.get('precision')}"]
    for knob in KNOBS:
        value = values.get(knob.name, knob.off)
        if knob.exists(values, ctx) and value is not None and value == value:  # None / NaN: not set
            parts.append(knob.label(value))
    return " ".join(parts)


def describe_steps(steps: dict[str, dict]) -> str:
    """One line for a pipeline's step settings (tuner.pipeline.repository.StepSettings as dicts), a
    part per step with the knob table's labels: "pre x2 mbs=8 db=on delay=500us nopref | clf x1 method=greedy"."""
    step_knobs = ("instances", "max_batch_size", "dynamic_batching", "max_queue_delay_us", "preferred_batch")
    parts = []
    for name, values in steps.items():
        ctx = Context(batched=bool(values.get("max_batch_size")))
        labels = [BY_NAME[k].label(values[k]) for k in step_knobs if k in values and BY_NAME[k].exists(values, ctx)]
        parameters = values.get("parameters") or {}
        pairs = parameters.items() if isinstance(parameters, dict) else parameters
        parts.append(" ".join([name, *labels, *(f"{key}={value}" for key, value in pairs)]))
    return " | ".join(parts)

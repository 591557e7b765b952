"""The knob table: every setting tuner searches, declared once.

A knob says what it is called, which values it may take, when it exists (dynamic batching's
queue delay only with dynamic batching on), how it reaches the deployment (config.pbtxt, the
runtime inside the model, or the client load), its value in Triton's default deployment, and how
a one-line description shows it. Everything else is derived from this table: the experiment's
`space` section (tuner.experiment), the Optuna suggestions and the Candidate (tuner.candidate),
the templates' variables and config fragments (tuner.render), the terminal's and the dashboard's
descriptions and columns, and the benchmarks' grids.

Adding a knob: one `Knob(...)` below; a runtime knob also needs its runtime to read it (the
python-backend adapter gets `adapter_parameter`, the native config gets `native`).

This module is a leaf: it imports nothing of tuner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Context:
    """What decides whether a knob exists for one model of a deployment."""

    batched: bool = True  # the model has a batch dimension Triton owns
    kind: str = "KIND_CPU"  # instance kind of the chosen runtime
    family: str = "onnxruntime"  # runtime family of the chosen backend (templates/{family}.*)
    sample_concurrency: bool = False  # the sampler picks the client load level (else a ramp finds it)
    load: str = "concurrency"  # the load model: "concurrency" (closed loop) or "request_rate" (Poisson arrivals)


def _always(chosen: Mapping, ctx: Context) -> bool:
    return True


@dataclass(frozen=True)
class Knob:
    name: str  # Optuna param, Candidate field, experiment `space.<name>`, template `c.<name>`
    type: type
    values: tuple  # the space's default values (one value pins the knob)
    description: str
    reaches: Literal["config", "runtime", "load"]
    off: object  # the candidate's value where the knob does not exist
    triton_default: object = None  # its value in Triton's default deployment; None: not part of it
    exists: Callable[[Mapping, Context], bool] = _always  # given the knobs chosen before it
    label: Callable[[object], str] = str  # how a one-line description shows a value
    minimum: int | None = None
    choices: tuple | None = None  # the only values allowed (categorical knobs of a fixed set)
    native: Callable[[object], dict] | None = None  # ModelConfig fragment (JSON form) of a value
    adapter_parameter: str | None = None  # the python-backend parameter the adapter reads it from


# ONNX Runtime's graph optimization levels, as Triton's onnxruntime backend spells them in
# `optimization { graph { level } }`: unset (0) is ORT_ENABLE_ALL.
_ORT_GRAPH_LEVEL = {"all": 0, "extended": 1, "basic": -1, "disabled": 2}


def _graph_level_fragment(value: object) -> dict:
    level = _ORT_GRAPH_LEVEL[str(value)]
    return {"optimization": {"graph": {"level": level}}} if level else {}


def _batching(value: object) -> str:
    return "on" if value else "off"


KNOBS: tuple[Knob, ...] = (
    Knob("instances", int, (1, 2, 3), "model instances (instance_group count; per GPU on KIND_GPU)",
         "config", off=1, triton_default=1, label=lambda v: f"x{v}", minimum=1),
    Knob("max_batch_size", int, (1, 2, 4, 8, 16, 32), "Triton max_batch_size", "config", off=0,
         triton_default=4,  # tritonserver's --backend-config default-max-batch-size
         exists=lambda chosen, ctx: ctx.batched, label=lambda v: f"mbs={v}", minimum=1),
    Knob("dynamic_batching", bool, (False, True), "Triton's dynamic batcher", "config", off=False,
         triton_default=False, exists=lambda chosen, ctx: ctx.batched, label=lambda v: f"db={_batching(v)}"),
    Knob("max_queue_delay_us", int, (0, 100, 500, 2000), "dynamic batcher queue delay", "config", off=0,
         exists=lambda chosen, ctx: bool(chosen.get("dynamic_batching")), label=lambda v: f"delay={v}us",
         minimum=0),
    Knob("preferred_batch", bool, (False, True), "prefer batches of max_batch_size", "config", off=False,
         exists=lambda chosen, ctx: bool(chosen.get("dynamic_batching")),
         label=lambda v: "pref" if v else "nopref"),
    Knob("threads", int, (0, 1, 2), "runtime intra-op threads per instance; 0 = runtime default", "runtime",
         off=0, triton_default=0, label=lambda v: f"thr={v}", minimum=0),
    Knob("graph_optimization", str, ("all",),
         "ONNX Runtime graph optimization level: all, extended, basic or disabled (onnxruntime backends)",
         "runtime", off=None, triton_default="all", exists=lambda chosen, ctx: ctx.family == "onnxruntime",
         label=lambda v: f"opt={v}", choices=tuple(_ORT_GRAPH_LEVEL), native=_graph_level_fragment,
         adapter_parameter="graph_optimization_level"),
    # The pytorch backend's runtime ladder (templates/python/pytorch_model.py reads them; docs/gpu.md).
    # Their default values are today's runtime; compile, buckets and CUDA graphs cost load time
    # (compiles, captures) a short search rarely wins back, so an experiment widens them
    # (experiments/wenet-gpu-ladder.yaml).
    Knob("attention", str, ("native", "sdpa"),
         "PyTorch attention kernel: native (the model's matmuls) or sdpa (scaled_dot_product_attention)",
         "runtime", off=None, triton_default="native", exists=lambda chosen, ctx: ctx.family == "pytorch",
         label=lambda v: f"attn={v}", choices=("native", "sdpa"), adapter_parameter="attention"),
    Knob("compile", str, ("off",),
         "torch.compile of the PyTorch module: off, default or max-autotune-no-cudagraphs (minutes at load)",
         "runtime", off=None, triton_default="off", exists=lambda chosen, ctx: ctx.family == "pytorch",
         label=lambda v: f"compile={v}", choices=("off", "default", "max-autotune-no-cudagraphs"),
         adapter_parameter="compile"),
    Knob("length_buckets", str, ("off",),
         'PyTorch: pad a batch\'s time axis to the next of these input lengths ("256,512,1024,1600") '
         "rather than to its longest request; off = the longest",
         "runtime", off=None, triton_default="off", exists=lambda chosen, ctx: ctx.family == "pytorch",
         label=lambda v: f"buckets={v}", adapter_parameter="length_buckets"),
    Knob("cuda_graphs", bool, (False,), "PyTorch: replay CUDA graphs captured per batch size and length bucket",
         "runtime", off=False, triton_default=False,
         exists=lambda chosen, ctx: ctx.family == "pytorch" and chosen.get("length_buckets") not in (None, "off"),
         label=lambda v: f"graphs={'on' if v else 'off'}", adapter_parameter="cuda_graphs"),
    Knob("warmup", bool, (False, True), "model_warmup at batch 1 and max_batch_size", "config", off=False,
         triton_default=False, label=lambda v: f"warm={'y' if v else 'n'}"),
    Knob("gpus", str, ("all",), 'KIND_GPU placement: "all" GPUs (count per GPU) or ids "0,1"', "config",
         off="all", triton_default="all", exists=lambda chosen, ctx: ctx.kind == "KIND_GPU",
         label=lambda v: f"gpus={v}"),
    Knob("concurrency", int, (1, 2, 4, 8, 16, 32), "perf_analyzer concurrent requests (closed loop)", "load", off=0,
         exists=lambda chosen, ctx: ctx.sample_concurrency and ctx.load == "concurrency",
         label=lambda v: f"conc={v or 'ramp'}", minimum=1),
    Knob("request_rate", int, (10, 25, 50, 100, 200, 400, 800, 1600),
         "perf_analyzer request rate, inferences/s with Poisson arrivals (open loop; measure.load: request_rate)",
         "load", off=0, exists=lambda chosen, ctx: ctx.sample_concurrency and ctx.load == "request_rate",
         label=lambda v: f"rate={v}/s", minimum=1),
)
BY_NAME: dict[str, Knob] = {k.name: k for k in KNOBS}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def active(chosen: Mapping, ctx: Context) -> list[Knob]:
    """The knobs that exist for these choices (each knob sees the choices of the knobs before it)."""
    return [k for k in KNOBS if k.exists(chosen, ctx)]


def by_reach(reaches: str) -> list[str]:
    """Names of the knobs that reach the deployment one way: "config", "runtime" or "load"."""
    return [k.name for k in KNOBS if k.reaches == reaches]

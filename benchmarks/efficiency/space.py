"""The benchmark's space: its presets, the knobs it can narrow, and the table it prints.

The grid itself is tuner's: `tuner.space.grid` enumerates every combination of a space's values
from the knob table (tuner.knobs), exactly as `tuner.space.suggest` asks for them.
"""

from __future__ import annotations

from tuner.candidate import REFERENCE_RUNTIME
from tuner.experiment import Space
from tuner.knobs import KNOBS, Knob
from tuner.space import grid

RUNTIME = REFERENCE_RUNTIME  # the benchmark searches one runtime: the reference, ONNX Runtime fp32 on CPU

# Each knob's values (a knob left out keeps the knob table's default values, e.g.
# graph_optimization: all). Triton's default config (1 instance, max batch 4, no dynamic
# batching, threads 0) is in every preset: the search measures it first, so it must be a grid point too.
GRID_SPACES: dict[str, dict[str, list]] = {
    "default": {  # 3 x 4 x (1 + 2) x 3 x 6 = 648 configurations
        "instances": [1, 2, 3],
        "max_batch_size": [1, 4, 16, 32],
        "dynamic_batching": [False, True],
        "max_queue_delay_us": [0, 2000],
        "preferred_batch": [False],
        "threads": [0, 1, 2],
        "warmup": [False],
        "concurrency": [1, 2, 4, 8, 16, 32],
    },
    "small": {  # 2 x 2 x (1 + 2) x 2 x 3 = 72 configurations
        "instances": [1, 2],
        "max_batch_size": [4, 32],
        "dynamic_batching": [False, True],
        "max_queue_delay_us": [0, 2000],
        "preferred_batch": [False],
        "threads": [0, 1],
        "warmup": [False],
        "concurrency": [1, 4, 16],
    },
}
KNOB_NOTES = {
    "warmup": "pinned off: model_warmup changes the cold start (load time), not steady-state throughput, "
              "and perf_analyzer measures only after the first request",
    "preferred_batch": "pinned off by default (preferred_batch_size = max_batch_size); it would double the "
                       "dynamic-batching half of the grid",
    "max_queue_delay_us": "asked only when dynamic batching is on",
    "graph_optimization": "pinned at ONNX Runtime's default level by default",
}


def benchmark_space(preset: str = "default", **overrides: list | None) -> Space:
    """The preset's space with the given knobs replaced; backend and precision pinned."""
    values = dict(GRID_SPACES[preset])
    values |= {k: v for k, v in overrides.items() if v is not None}
    return Space(**values, backends=["onnxruntime"], precisions=["fp32"])


def grid_knobs() -> list[Knob]:
    """The knobs of the benchmark's runtime, in the knob table's order: those its grid can hold."""
    names = set().union(*grid(benchmark_space("default"), True, RUNTIME))
    return [k for k in KNOBS if k.name in names]


def baseline_concurrency(space: Space) -> list[int]:
    """The concurrencies at which the search measures Triton's default first: tuner's default [1, 4]
    where the space has them, else the space's lowest, so the search never leaves the grid."""
    inside = [c for c in (1, 4) if c in space.concurrency]
    return inside or [min(space.concurrency)]


def describe_space(space: Space, batched: bool = True) -> str:
    lines = ["| knob | values | note |", "|---|---|---|"]
    for knob in grid_knobs():
        values = ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in getattr(space, knob.name))
        lines.append(f"| {knob.name} | {values} | {KNOB_NOTES.get(knob.name, '')} |")
    lines.append(f"| runtime | {RUNTIME} | pinned |")
    lines.append("")
    lines.append(f"{len(grid(space, batched, RUNTIME))} distinct configurations")
    return "\n".join(lines)

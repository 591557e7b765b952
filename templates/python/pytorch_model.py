"""Python-backend adapter: runs a model's PyTorch definition on the instance's GPU.

Request padding (tuner_adapter.gather, here into pinned buffers) and output trimming are
tuner_adapter.py's. `TorchRunner` below is the runtime ladder of the pytorch backend (precision,
attention kernel, torch.compile, length buckets, CUDA graphs, pinned host memory); it runs
without Triton (tests/unit/test_wenet_accel.py, benchmarks/gpu_ladder.py). Parameters
(config.pbtxt `parameters`, from tuner/knobs.py):
- model_file: JSON naming the definition, "module:name", whose `serving_module(name)` returns
  (module, {input: rank}, output names);
- precision: fp32, tf32 (fp32 weights, TF32 matmuls), fp16, bf16: the module's weights and float
  inputs are cast; float outputs come back as fp32;
- attention: native or sdpa (the module's `set_attention(kernel)`);
- compile: off, default or max-autotune-no-cudagraphs (torch.compile, dynamic shapes);
- length_buckets: off, or input lengths "256,512,1024,1600": a batch's time axis (axis 1 of the
  inputs of rank >= 2) is padded to the next one, and the outputs' time axis trimmed back with the
  module's `output_frames(frames)`, so the results are those of the unbucketed batch;
- cuda_graphs: True/False: one CUDA graph per (batch size, bucket), captured at load (`warm`);
  ignored without length_buckets (see Settings.from_parameters). A graphed batch is padded to the
  next power of two (its first item repeated) and its outputs cut back: each graph keeps its
  static outputs, and one graph per batch size 1-64 at four buckets held ~33 GB per wenet encoder
  instance (four instances ran an H200 out of memory at 3daa05e). A compiled module never runs
  a batch of one (it is padded to two): Dynamo specialises a dimension of size 1, so batch 1
  cost a second trace of the whole encoder at each instance's load;
- ragged_outputs.
Outputs no request of a batch wants (tuner_adapter.BatchingModel.needed_outputs: an ensemble asks
only for those it maps) stay on the device: no cast, no device->host copy.
"""

import importlib
import json
import os
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tuner_adapter.py ships beside this file

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tuner_adapter import BatchingModel, gather, model_path, padded_shape  # noqa: E402

DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
COMPILE_MODES = ("off", "default", "max-autotune-no-cudagraphs")


def parse_buckets(text):
    """The sorted bucket boundaries of a length_buckets value; () for "off"."""
    if text is None or str(text).strip().lower() in ("", "off", "none"):
        return ()
    try:
        bounds = tuple(sorted({int(part) for part in str(text).split(",")}))
    except ValueError:
        raise ValueError(f"length_buckets must be off or input lengths like 256,512,1024, not {text!r}") from None
    if bounds[0] < 1:
        raise ValueError(f"length_buckets must be positive lengths, not {text!r}")
    return bounds


def bucket(frames, bounds):
    """The length a batch of `frames` is padded to: the first boundary >= frames; a batch longer
    than the last boundary keeps its own length (and runs without a CUDA graph)."""
    for bound in bounds:
        if frames <= bound:
            return bound
    return frames


@dataclass(frozen=True)
class Settings:
    precision: str = "fp32"
    attention: str = "native"
    compile: str = "off"
    length_buckets: tuple = ()
    cuda_graphs: bool = False

    @classmethod
    def from_parameters(cls, params):
        buckets = parse_buckets(params.get("length_buckets", "off"))
        graphs = str(params.get("cuda_graphs", "False")).lower() in ("true", "1", "on")
        # Config parameters searched one by one (a pipeline step's categorical knobs) can ask for
        # graphs without buckets; that combination runs eagerly instead of failing the load, as the
        # knob table does by leaving cuda_graphs out without buckets. A runner built directly still
        # refuses it (refusal below).
        return cls(precision=params.get("precision", "fp32"), attention=params.get("attention", "native"),
                   compile=params.get("compile", "off"), length_buckets=buckets,
                   cuda_graphs=graphs and bool(buckets))


def refusal(settings, device, module):
    """Why these settings cannot run this module on `device`; None when they can."""
    if settings.precision not in DTYPES:
        return f"precision must be one of {', '.join(DTYPES)}, not {settings.precision!r}"
    if settings.compile not in COMPILE_MODES:
        return f"compile must be one of {', '.join(COMPILE_MODES)}, not {settings.compile!r}"
    if settings.attention != "native" and not hasattr(module, "set_attention"):
        return f"{type(module).__name__} has no attention kernel choice (no set_attention)"
    if settings.length_buckets and not hasattr(module, "output_frames"):
        return f"length_buckets: {type(module).__name__} does not say how its outputs' time axis follows the input's"
    if settings.cuda_graphs and torch.device(device).type != "cuda":
        return f"cuda_graphs: CUDA graphs need a CUDA device; this instance runs on {device}"
    if settings.cuda_graphs and not settings.length_buckets:
        return "cuda_graphs needs length_buckets: a graph replays one shape, buckets bound how many there are"
    return None


class TorchRunner:
    """One module on one device with the runtime settings: numpy feed in, numpy outputs out."""

    def __init__(self, module, input_ranks, outputs, device, settings):
        reason = refusal(settings, device, module)
        if reason is not None:
            raise ValueError(reason)
        self.input_ranks, self.outputs, self.settings = dict(input_ranks), list(outputs), settings
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if cuda:
            # Process-wide, and every Triton instance is its own process. fp32 keeps PyTorch's
            # defaults (cuDNN convolutions already use TF32, matmuls do not); tf32 adds matmuls.
            torch.backends.cuda.matmul.allow_tf32 = settings.precision == "tf32"
        if hasattr(module, "set_attention"):
            module.set_attention(settings.attention)
        self.dtype = DTYPES[settings.precision]
        self.module = module.to(device=self.device, dtype=self.dtype).eval()
        self.forward = self.module
        if settings.compile != "off":
            mode = None if settings.compile == "default" else settings.compile
            # Compare the compiled module with `is`, never by truth value: torch.compile's
            # OptimizedModule defines a __len__ that raises for a module without one, so
            # `bool(compiled)` (`if model:`, `compiled or module`) is the TypeError
            # "WenetEncoder does not support len()".
            self.forward = torch.compile(self.module, dynamic=True, mode=mode)
        # Pinned host buffers (PyTorch's caching host allocator reuses them) make the copies real
        # DMA that overlaps other instances' work, and one synchronize per call replaces one
        # per output. Always on: a pageable copy stages through a pinned buffer anyway.
        self.pinned = cuda
        self.staging = {}  # input name -> pinned host buffer (_host_buffer)
        self.graphs = {}  # input shapes -> (graph, static inputs, static outputs)
        # Batches padded to graph_batch sizes without graphs too: only tests set it, so that the
        # CPU checks the padding the graphed path does.
        self.pad_batches = False
        self.pool = torch.cuda.graph_pool_handle() if settings.cuda_graphs else None

    def __call__(self, feed, outputs=None):
        """The module's outputs for one batch, as numpy on the host; `outputs` names those to
        return (None: all), the others are never copied off the device. `feed` holds each
        input's batch array, or its list of per-request arrays (tuner_adapter.parts), which go
        padded straight into this runner's host buffer: one copy, no stacked batch in between."""
        feed = {n: v if isinstance(v, list) else [v] for n, v in feed.items()}
        first = next(iter(self.input_ranks))
        items = sum(len(a) for a in feed[first])
        frames = next((max(a.shape[1] for a in feed[n]) for n, r in self.input_ranks.items() if r >= 2), None)
        target = frames
        if self.settings.length_buckets and frames is not None:
            target = bucket(frames, self.settings.length_buckets)
        graphed = self.settings.cuda_graphs and frames is not None and frames <= self.settings.length_buckets[-1]
        compiled = self.settings.compile != "off"
        rows = graph_batch(items) if graphed or self.pad_batches else max(items, 2) if compiled else items
        tensors = [self._to_device(name, feed[name], rows, target if rank >= 2 else None)
                   for name, rank in self.input_ranks.items()]
        with torch.inference_mode():
            results = self._replay(tensors) if graphed else self.forward(*tensors)
            host = self._to_host(results, self.outputs if outputs is None else outputs)
        if rows != items:
            host = {n: v[:items] for n, v in host.items()}
        if target != frames:
            keep, padded = self.module.output_frames(frames), self.module.output_frames(target)
            host = {n: v[:, :keep] if v.ndim >= 2 and v.shape[1] == padded else v for n, v in host.items()}
        return host

    def warm(self, max_batch):
        """Compile and capture every shape this runner can meet, before the first request: each
        length bucket at each batch size a graphed call runs at (powers of two up to
        `max_batch`'s), with the module's own `example_inputs(batch, frames)`. Otherwise the
        first requests of each shape wait for torch.compile (about a minute cold) and the graph
        captures, inside someone's measurement. Returns each shape's (batch, frames, seconds) in
        the order run (the first holds the compile); [] when there is nothing to warm: neither
        compile nor graphs is on, the shapes are unbounded without buckets, or the module cannot
        make example inputs."""
        if not (self.settings.length_buckets and (self.settings.cuda_graphs or self.settings.compile != "off")
                and hasattr(self.module, "example_inputs")):
            return []
        top = graph_batch(max(1, max_batch))
        sizes = [1 << i for i in range(1, top.bit_length())]  # from 2: batch 1 runs padded to 2
        timings = []
        for frames in self.settings.length_buckets:
            for rows in sizes:
                started = time.monotonic()
                self(self.module.example_inputs(rows, frames), outputs=())
                timings.append((rows, frames, time.monotonic() - started))
        return timings

    def _to_device(self, name, arrays, rows, frames):
        """One input's arrays as a `rows`-item batch on the device, time axis padded to `frames`."""
        host = self._host_buffer(name, padded_shape(arrays, rows, frames), arrays[0].dtype)
        gather(arrays, host.numpy())
        tensor = host.to(self.device, non_blocking=True)
        return tensor.to(self.dtype) if tensor.is_floating_point() else tensor

    def _host_buffer(self, name, shape, dtype):
        """A host tensor of `shape` to gather an input into: on a GPU a view of this input's
        pinned buffer, kept between calls (grown when a batch needs more), so the copy to the
        device is real DMA and no page is faulted in again; each call ends synchronised
        (_to_host), so the next may overwrite it."""
        dtype = torch.from_numpy(np.empty(0, dtype)).dtype
        if not self.pinned:
            return torch.empty(shape, dtype=dtype)
        size = int(np.prod(shape)) * dtype.itemsize
        buffer = self.staging.get(name)
        if buffer is None or buffer.numel() < size:
            buffer = self.staging[name] = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        return buffer[:size].view(dtype).view(shape)

    def _to_host(self, results, wanted):
        host = {}
        for name, value in zip(self.outputs, results):
            if name not in wanted:
                continue
            if value.is_floating_point() and value.dtype != torch.float32:
                value = value.float()
            if self.pinned:
                buffer = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
                host[name] = buffer.copy_(value, non_blocking=True)
            else:
                host[name] = value
        if self.pinned:
            torch.cuda.current_stream(self.device).synchronize()
        return {name: value.numpy() for name, value in host.items()}

    def _replay(self, tensors):
        key = tuple(tuple(t.shape) for t in tensors)
        if key not in self.graphs:
            self.graphs[key] = self._capture(tensors)
        graph, static_inputs, static_outputs = self.graphs[key]
        for static, tensor in zip(static_inputs, tensors):
            static.copy_(tensor)
        graph.replay()
        # The graphs share one memory pool: these outputs are valid until the next replay, and
        # _to_host copies them out before this call returns.
        return static_outputs

    def _capture(self, tensors):
        static_inputs = [t.clone() for t in tensors]
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):  # warm-up outside the graph: cuDNN plans, compiled kernels
            for _ in range(2):
                self.forward(*static_inputs)
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads' instances (benchmarks/gpu_ladder.py) keep running meanwhile.
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            static_outputs = self.forward(*static_inputs)
        return graph, static_inputs, static_outputs


def graph_batch(items):
    """The batch size a graphed call runs at: the next power of two, at least 2 (a compiled
    module's batch of one would be a second trace; see the module's docstring)."""
    return 1 << max(items - 1, 1).bit_length()


def warm_summary(timings):
    """One line on a warm-up: how many shapes, what the first (with the compile) took, the rest."""
    (rows, frames, first), rest = timings[0], [seconds for _, _, seconds in timings[1:]]
    line = f"warmed {len(timings)} shapes: the first ({rows}x{frames}, with the compile) {first:.1f} s"
    if rest:
        line += f", the other {len(rest)} {sum(rest):.1f} s (slowest {max(rest):.1f} s)"
    return line


def load_definition(torch_module):
    """(module, input ranks, output names) of a "module:name" definition."""
    module_path, name = torch_module.split(":")
    return importlib.import_module(module_path).serving_module(name)


class TritonPythonModel(BatchingModel):
    gathers_itself = True  # TorchRunner pads the requests into its pinned buffers

    def initialize(self, args):
        params = self.configure(args)
        with open(model_path(args, params.get("model_file", "model.json"))) as f:
            module, self.input_ranks, outputs = load_definition(json.load(f)["torch_module"])
        self.outputs = list(outputs)
        if args.get("model_instance_kind") == "GPU":
            device = torch.device(f"cuda:{args['model_instance_device_id']}")
            # This stub process serves one instance: its GPU is the process's current device, where
            # torch.cuda.graph captures (an instance on GPU 1 captured on GPU 0's stream and failed
            # with "operation failed due to a previous error during capture" on a 2-GPU H200 host).
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        self.runner = TorchRunner(module, self.input_ranks, self.outputs, device, Settings.from_parameters(params))
        # Triton reports the model ready after initialize: the compile and the captures belong to
        # its load time, not to the first requests' latency.
        started = time.monotonic()
        timings = self.runner.warm(self.max_batch_size)
        if timings:
            print(f"{args['model_name']} instance {args['model_instance_name']}: {warm_summary(timings)}; "
                  f"{time.monotonic() - started:.1f} s in all", flush=True)

    def infer(self, feed):
        return self.runner(feed, self.needed_outputs)

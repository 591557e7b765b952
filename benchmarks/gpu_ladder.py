"""The acceleration ladder of the pytorch backend: raw in-process throughput of each runtime variant.

    python benchmarks/gpu_ladder.py --model wenet --device cuda --out ladder.md        # one H200: ~4 min
    python benchmarks/gpu_ladder.py --model wenet-tiny --device cpu --seconds 2 --compile off   # smoke

Runs the zoo encoder through the pytorch backend's own runner (templates/python/pytorch_model.py:
TorchRunner, what each Triton instance runs) with no server: `--streams` workers, each with its
own runner and CUDA stream as Triton's instances have their own (threads here, processes there),
feed batches of `--batch` random utterances (the zoo's sample inputs: 2-16 s for wenet, padded to
the longest, or to a bucket) back to back for `--seconds`, host<->device copies included. Steps,
each built on the one before: fp32 -> tf32 -> fp16 / bf16 (the faster goes on) -> sdpa attention
-> length buckets -> torch.compile -> CUDA graphs; plus fp16 with the cuDNN depthwise path the
fp16 fix replaced, to show that fix. Throughput is utterances/s and the useful TFLOP/s: the FLOPs
of every utterance alone (torch.utils.flop_counter on the eager fp32 model, fitted over length),
so padding counts as overhead ("padded / useful"). Then the latency of single calls per batch
size, one stream. A step that fails or cannot run here is a row that says why.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from tuner import zoo
from tuner.resources import ADAPTER_DIR
from tuner.zoo.wenet import collate, model as wenet_model


def adapter_module():
    """templates/python/pytorch_model.py, imported as the server imports it (beside tuner_adapter.py)."""
    if str(ADAPTER_DIR) not in sys.path:
        sys.path.insert(0, str(ADAPTER_DIR))
    spec = importlib.util.spec_from_file_location("tuner_pytorch_model", ADAPTER_DIR / "pytorch_model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


pm = adapter_module()


@dataclass(frozen=True)
class Variant:
    name: str
    settings: object  # pm.Settings
    cudnn_fp16_depthwise: bool = False  # the path the fp16 fix replaced (benchmark only)


@dataclass
class Row:
    variant: Variant
    utt_per_s: float = 0.0
    useful_tflops: float = 0.0
    padded_ratio: float = 0.0  # FLOPs of the padded batches / FLOPs of the utterances alone
    ms_per_batch: float = 0.0
    warmup_s: float = 0.0
    skipped: str = ""  # why it did not run


class Flops:
    """FLOPs of one utterance of `frames` input frames: counted at three lengths with
    FlopCounterMode on the meta device (shapes only, instant), fitted by a quadratic (attention
    is quadratic in length, everything else linear)."""

    def __init__(self, model: str, lengths: tuple[int, int, int]):
        from torch.utils.flop_counter import FlopCounterMode

        module = wenet_model.serving_module(model)[0].to("meta")
        counted = []
        for frames in lengths:
            with FlopCounterMode(display=False) as counter, torch.inference_mode():
                module(torch.zeros(1, frames, 80, device="meta"),
                       torch.tensor([frames], dtype=torch.int32, device="meta"))
            counted.append(counter.get_total_flops())
        self.poly = np.polyfit(np.array(lengths, float), np.array(counted, float), 2)

    def __call__(self, frames) -> float:
        return float(np.sum(np.polyval(self.poly, np.asarray(frames, float))))


def batches(pool: list[dict], size: int, count: int, rng: np.random.Generator) -> list[dict]:
    """`count` batches of `size` utterances drawn at random from `pool`, padded to the longest."""
    return [collate([pool[i] for i in rng.integers(0, len(pool), size)]) for _ in range(count)]


def padded_frames(feed: dict, settings) -> int:
    return pm.bucket(feed["speech"].shape[1], settings.length_buckets)


@contextlib.contextmanager
def cudnn_fp16_depthwise(on: bool):
    """Run fp16 depthwise convolutions through cuDNN, as before the fix (model.py: depthwise)."""
    saved = wenet_model.ConvolutionModule.fp16_depthwise_in_fp32
    wenet_model.ConvolutionModule.fp16_depthwise_in_fp32 = not on
    try:
        yield
    finally:
        wenet_model.ConvolutionModule.fp16_depthwise_in_fp32 = saved


def stream_context(device: torch.device, stream):
    return torch.cuda.stream(stream) if device.type == "cuda" else contextlib.nullcontext()


def warm(runner, feeds: list[dict], settings) -> None:
    """Run until every shape the timed loop meets is warm: one batch per bucket with graphs
    (each captures its graph), else two batches (compiles, cuDNN plans, allocator)."""
    if settings.cuda_graphs:
        seen = {}
        for feed in feeds:
            seen.setdefault((feed["speech"].shape[0], padded_frames(feed, settings)), feed)
        for feed in seen.values():
            runner(feed)
    else:
        for feed in feeds[:2]:
            runner(feed)


def new_runners(model: str, variant: Variant, device: torch.device, count: int) -> list:
    """`count` runners sharing one module's weights (each Triton instance holds its own copy;
    sharing here keeps memory down without changing the work)."""
    module, ranks, outputs = wenet_model.serving_module(model)
    return [pm.TorchRunner(module, ranks, outputs, device, variant.settings) for _ in range(count)]


def throughput(args, variant: Variant, pool: list[dict], flops: Flops, device: torch.device) -> Row:
    reason = pm.refusal(variant.settings, device, wenet_model.WenetEncoder)
    if reason is not None:
        return Row(variant, skipped=reason)
    rng = np.random.default_rng(args.seed)
    streams = [torch.cuda.Stream(device) if device.type == "cuda" else None for _ in range(args.streams)]
    feeds = [batches(pool, args.batch, args.batches_per_stream, rng) for _ in range(args.streams)]
    done = [[0, 0.0, 0.0, 0] for _ in range(args.streams)]  # utterances, useful, padded FLOPs, calls
    with cudnn_fp16_depthwise(variant.cudnn_fp16_depthwise):
        started = time.perf_counter()
        runners = new_runners(args.model, variant, device, args.streams)
        for runner, stream, own in zip(runners, streams, feeds):  # one at a time: compiles, captures
            with stream_context(device, stream):
                warm(runner, own, variant.settings)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        warmup_s = time.perf_counter() - started

        def work(k: int, deadline: float) -> None:
            with stream_context(device, streams[k]):
                i = 0
                while time.perf_counter() < deadline:
                    feed = feeds[k][i % len(feeds[k])]
                    runners[k](feed)
                    lengths = feed["speech_lengths"]
                    done[k][0] += len(lengths)
                    done[k][1] += flops(lengths)
                    done[k][2] += flops(padded_frames(feed, variant.settings)) * len(lengths)
                    done[k][3] += 1
                    i += 1

        started = time.perf_counter()
        deadline = started + args.seconds
        threads = [threading.Thread(target=work, args=(k, deadline)) for k in range(args.streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
    utterances, useful, padded, calls = (sum(d[i] for d in done) for i in range(4))
    return Row(variant, utt_per_s=utterances / elapsed, useful_tflops=useful / elapsed / 1e12,
               padded_ratio=padded / max(useful, 1.0), ms_per_batch=elapsed * args.streams / max(calls, 1) * 1000,
               warmup_s=warmup_s)


def latency(args, variant: Variant, pool: list[dict], device: torch.device) -> list[dict]:
    """Per batch size: single calls back to back on one stream, for `--latency-seconds`."""
    rows = []
    rng = np.random.default_rng(args.seed + 1)
    with cudnn_fp16_depthwise(variant.cudnn_fp16_depthwise):
        runner = new_runners(args.model, variant, device, 1)[0]
        for size in args.latency_batches:
            feeds = batches(pool, size, 8, rng)
            warm(runner, feeds, variant.settings)
            times = []
            deadline = time.perf_counter() + args.latency_seconds
            while time.perf_counter() < deadline or not times:
                started = time.perf_counter()
                runner(feeds[len(times) % len(feeds)])  # returns host arrays: synchronised
                times.append(time.perf_counter() - started)
            ms = np.array(times) * 1000
            rows.append({"variant": variant.name, "batch": size, "calls": len(ms), "mean": ms.mean(),
                         "p50": np.percentile(ms, 50), "p99": np.percentile(ms, 99),
                         "utt_per_s": size * len(ms) / (ms.sum() / 1000)})
    return rows


def run_step(args, variant: Variant, pool, flops, device, started: float) -> Row:
    if time.perf_counter() - started > args.budget_s:
        return Row(variant, skipped=f"time budget ({args.budget_s:.0f} s) spent")
    try:
        return throughput(args, variant, pool, flops, device)
    except Exception as exc:  # a step that fails is a row that says why; the ladder goes on
        return Row(variant, skipped=f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}")


class Rows(list):
    """The ladder's rows; with `--out`, the table so far is written after every step, so a run cut
    short by its time limit still leaves what it measured."""

    def __init__(self, out: str | None):
        super().__init__()
        self.out = out

    def append(self, row: Row) -> None:
        super().append(row)
        if self.out:
            with open(self.out, "w") as f:
                f.write(ladder_table(self) + "\n\n(partial: the run is still going or was cut short)\n")


def ladder(args, pool, flops, device) -> list[Row]:
    """Each step from the last one that ran: fp32, tf32, fp16 (before/after the fix), bf16, then
    the faster half precision with sdpa, buckets, compile, CUDA graphs."""
    started = time.perf_counter()
    s = pm.Settings
    rows = Rows(args.out)
    for name, settings, cudnn in (("fp32", s("fp32"), False), ("tf32", s("tf32"), False),
                                  ("fp16, cuDNN depthwise (before the fix)", s("fp16"), True),
                                  ("fp16", s("fp16"), False), ("bf16", s("bf16"), False)):
        variant = Variant(name, settings, cudnn)
        if settings.precision in ("fp16", "bf16") and settings.precision not in args.halves:
            rows.append(Row(variant, skipped="not requested (--halves)"))
        else:
            rows.append(run_step(args, variant, pool, flops, device, started))
    halves = [r for r in rows[3:] if not r.skipped]
    base = max(halves, key=lambda r: r.utt_per_s).variant.settings if halves else s("fp32")
    steps = [("+ sdpa attention", {"attention": "sdpa"}),
             ("+ length buckets", {"length_buckets": pm.parse_buckets(args.buckets)})]
    if args.compile != "off":
        steps.append((f"+ compile ({args.compile})", {"compile": args.compile}))
    steps.append(("+ CUDA graphs", {"cuda_graphs": True}))
    for name, change in steps:
        settings = dataclasses.replace(base, **change)
        row = run_step(args, Variant(name, settings), pool, flops, device, started)
        rows.append(row)
        if not row.skipped:
            base = settings
    return rows


def describe_settings(settings) -> list[str]:
    buckets = ",".join(map(str, settings.length_buckets)) or "off"
    return [settings.precision, settings.attention, buckets, settings.compile, "on" if settings.cuda_graphs else "off"]


def ladder_table(rows: list[Row]) -> str:
    lines = ["| step | precision | attention | buckets | compile | graphs | utt/s | gain vs previous step | "
             "vs fp32 | useful TFLOP/s | padded / useful | ms per batch | warm-up s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fp32 = rows[0].utt_per_s if rows and not rows[0].skipped else 0.0
    previous = fp32
    for i, r in enumerate(rows):
        cells = [r.variant.name, *describe_settings(r.variant.settings)]
        if r.skipped:
            lines.append("| " + " | ".join(cells + [f"skipped: {r.skipped}"] + [""] * 6) + " |")
            continue
        # the half precisions are each measured against tf32; later steps against the step before
        ref = rows[1].utt_per_s if 2 <= i <= 4 and not rows[1].skipped else previous
        gain = f"{r.utt_per_s / ref:.2f}x" if ref else "-"
        lines.append("| " + " | ".join(cells + [f"{r.utt_per_s:.1f}", gain, f"{r.utt_per_s / fp32:.2f}x" if fp32 else "-",
                                               f"{r.useful_tflops:.3g}", f"{r.padded_ratio:.2f}", f"{r.ms_per_batch:.1f}",
                                               f"{r.warmup_s:.1f}"]) + " |")
        if i < 2 or i > 4:
            previous = r.utt_per_s
    return "\n".join(lines)


def latency_table(rows: list[dict]) -> str:
    lines = ["| variant | batch | calls | mean ms | p50 ms | p99 ms | utt/s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['batch']} | {r['calls']} | {r['mean']:.1f} | {r['p50']:.1f} | "
                     f"{r['p99']:.1f} | {r['utt_per_s']:.1f} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="wenet", help="WeNet variant (wenet, wenet-tiny): its encoder is measured")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--seconds", type=float, default=6.0, help="timed seconds per ladder step")
    p.add_argument("--streams", type=int, default=4, help="concurrent runners (Triton instances)")
    p.add_argument("--batch", type=int, default=16, help="utterances per call in the ladder")
    p.add_argument("--batches-per-stream", type=int, default=12, help="distinct random batches each runner cycles")
    p.add_argument("--halves", default="fp16,bf16", help="half precisions to measure (the faster goes on)")
    p.add_argument("--buckets", default="256,512,1024,1600", help="length_buckets of the bucket steps (input frames)")
    p.add_argument("--compile", default="default", choices=pm.COMPILE_MODES, help="compile mode of that step; off skips it")
    p.add_argument("--latency-batches", default="1,4,16,64", help="batch sizes of the latency table")
    p.add_argument("--latency-seconds", type=float, default=1.5, help="seconds per batch size and variant")
    p.add_argument("--pool", type=int, default=256, help="sample utterances to draw batches from")
    p.add_argument("--budget-s", type=float, default=200.0, help="no new ladder step starts after this many seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the markdown here")
    args = p.parse_args(argv)
    args.latency_batches = [int(b) for b in args.latency_batches.split(",") if b]
    return args


def main(argv=None) -> str:
    args = parse_args(argv)
    device = torch.device(args.device)
    source = zoo.encoder_of(args.model)
    if source is None:
        raise SystemExit(f"unknown WeNet variant {args.model!r}: wenet or wenet-tiny")
    pool = source.sample_inputs(np.random.default_rng(args.seed), args.pool)
    lengths = sorted(int(u["speech_lengths"][0]) for u in pool)
    flops = Flops(args.model, (lengths[0], lengths[len(lengths) // 2], lengths[-1]))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    rows = ladder(args, pool, flops, device)
    ran = [r for r in rows if not r.skipped]
    chosen = [r.variant for r in (rows[0], rows[2], rows[3]) if not r.skipped] + ([ran[-1].variant] if ran else [])
    latencies = []
    for variant in dict.fromkeys(chosen):  # keeps order, drops repeats
        try:
            latencies += latency(args, variant, pool, device)
        except Exception as exc:
            latencies.append({"variant": f"{variant.name} (failed: {type(exc).__name__}: {exc})"[:200], "batch": "-",
                              "calls": 0, "mean": float("nan"), "p50": float("nan"), "p99": float("nan"),
                              "utt_per_s": float("nan")})
    text = "\n".join([
        f"# Acceleration ladder: {args.model} on {name}",
        "",
        f"torch {torch.__version__}; {args.streams} streams x batch {args.batch}, {args.seconds:g} s per step; "
        f"utterances {lengths[0]}-{lengths[-1]} frames; {flops(900) / 1e9:.1f} GFLOP per 9 s utterance; "
        f"command: `python benchmarks/gpu_ladder.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        "",
        ladder_table(rows),
        "",
        "## Latency per batch size (one stream, single calls, host copies included)",
        "",
        latency_table(latencies),
        "",
    ])
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return text


if __name__ == "__main__":
    main()

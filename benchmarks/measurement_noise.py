"""How much one configuration's measured throughput moves between perf_analyzer runs, per
measurement setting: the floor under any "within 5 %" claim.

    python benchmarks/measurement_noise.py --model results/bench/mlp.onnx [--runs 5]
    python benchmarks/measurement_noise.py --host [--seconds 90]
    python benchmarks/measurement_noise.py --model results/bench/mlp.onnx --loads 12 [--runs 3]

Loads one configuration (2 instances, max batch 32, dynamic batching, concurrency 16: the
winners of docs/search-efficiency.md) on the bundled tritonserver and measures it --runs times
with each setting, printing mean, coefficient of variation and min/max relative to the mean.

--host measures the machine instead of the server: one thread summing integers in plain Python
for --seconds, counted per second, and the spread of 1, 3, 5 and 10 s averages. No server, no
client, no other process of ours: what is left is the machine's own variation, the floor under
any comparison of two measurements taken at different times.

--loads N separates where the spread comes from: N rounds, each reloading the configuration (a
new python-backend process, as a new trial gets) and measuring it --runs times back to back, with
another configuration loaded and measured in between, and one second of the --host probe before
each round. Within-load spread is what repeated windows can average out; the spread of the round
means is what a new load or the passing minutes add; the probe tells the machine's part.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tuner import backends, model_source
from tuner.experiment import MeasureSpec
from tuner.measure import perf_analyzer
from tuner.render import render
from tuner.server import ModelPackage
from tuner.server.local import LocalServer
from tuner.candidate import Candidate

SETTINGS = {  # name -> (window ms, stability %, max windows)
    "1 s windows, 20 % (tuner default)": (1000, 20.0, 6),
    "1 s windows, 10 %": (1000, 10.0, 10),
    "3 s windows, 10 %": (3000, 10.0, 10),
}


def host_noise(seconds: int) -> None:
    counts = []
    for _ in range(seconds):
        started, n = time.perf_counter(), 0
        while time.perf_counter() - started < 1.0:
            sum(range(20000))  # plain Python: one thread, no BLAS thread pool
            n += 1
        counts.append(n)
    print(f"one thread, sum(range(20000)) per second over {seconds} s: min {min(counts)}, "
          f"max {max(counts)}, mean {statistics.mean(counts):.0f}")
    print("| averaged over | CV | min / mean | max / mean |")
    print("|---|---|---|---|")
    for k in (1, 3, 5, 10):
        means = [statistics.mean(counts[i:i + k]) for i in range(0, len(counts) - k + 1, k)]
        m = statistics.mean(means)
        print(f"| {k} s | {statistics.stdev(means) / m:.1%} | {min(means) / m:.3f} | {max(means) / m:.3f} |")


def _probe() -> int:
    started, n = time.perf_counter(), 0
    while time.perf_counter() - started < 1.0:
        sum(range(20000))
        n += 1
    return n


def loads_noise(args, source, samples, inputs, files, work) -> None:
    spec = MeasureSpec(interval_ms=500, stability_percent=1000.0, max_windows=3)  # always 3 windows: none dropped

    def config(candidate):
        return render("adapter", source.name, source.signature, candidate, samples[0])

    a = Candidate(instances=1, max_batch_size=32, dynamic_batching=True, max_queue_delay_us=0,
                  preferred_batch=False, threads=1, warmup=False, concurrency=16)
    b = Candidate(instances=2, max_batch_size=4, dynamic_batching=False, max_queue_delay_us=0,
                  preferred_batch=False, threads=0, warmup=False, concurrency=4)

    def measure(server, concurrency):
        csv = work / "run.csv"
        cmd = perf_analyzer.command(source.name, server.grpc_url, concurrency, spec, csv, inputs)
        try:
            return perf_analyzer.measure(cmd, csv, 300).throughput
        except perf_analyzer.UnstableMeasurement:
            return None

    rounds, started = [], time.monotonic()
    print(f"{source.name}: x1 mbs=32 db=on/0us thr=1 conc=16, reloaded {args.loads} times, {args.runs} runs per load "
          "(3 windows of 0.5 s, no stability criterion); x2 mbs=4 db=off conc=4 loaded and measured between rounds")
    print("| round | s | host probe | runs (infer/s) | mean |")
    print("|---|---|---|---|---|")
    with LocalServer(work / "repo", work / "server.log") as server:
        for i in range(1, args.loads + 1):
            server.load(ModelPackage(source.name, config(b), files))
            measure(server, 4)
            probe = _probe()
            server.load(ModelPackage(source.name, config(a), files))
            runs = [v for v in (measure(server, 16) for _ in range(args.runs)) if v]
            if not runs:
                continue
            rounds.append((probe, runs))
            print(f"| {i} | {time.monotonic() - started:.0f} | {probe} | {' / '.join(f'{v:.0f}' for v in runs)} | "
                  f"{statistics.mean(runs):.0f} |", flush=True)
    within = [statistics.stdev(r) / statistics.mean(r) for _, r in rounds if len(r) >= 2]
    means = [statistics.mean(r) for _, r in rounds]
    probes = [p for p, _ in rounds]
    if len(means) >= 2:
        grand = statistics.mean(means)
        print(f"within one load: CV {statistics.mean(within):.1%} (mean over rounds); between loads: CV of the round "
              f"means {statistics.stdev(means) / grand:.1%}, min {min(means) / grand:.3f}, max {max(means) / grand:.3f}; "
              f"host probe CV {statistics.stdev(probes) / statistics.mean(probes):.1%}; correlation of round mean with "
              f"host probe {statistics.correlation(means, probes):+.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--host", action="store_true", help="measure the machine's own variation instead")
    parser.add_argument("--seconds", type=int, default=90)
    parser.add_argument("--loads", type=int, default=0, help="reload the configuration this many times (see above)")
    args = parser.parse_args()
    if args.host:
        host_noise(args.seconds)
        return
    if not args.model:
        parser.error("--model is required (or --host)")
    work = Path(tempfile.mkdtemp(prefix="noise-"))
    source = model_source.resolve(args.model, work / "cache")
    import numpy as np

    samples = source.sample_inputs(np.random.default_rng(0), 8)
    inputs = perf_analyzer.write_input_data(work / "inputs.json", source.signature, samples)
    files = backends.get("onnxruntime").adapter_files(source.onnx_path)
    if args.loads:
        loads_noise(args, source, samples, inputs, files, work)
        return
    candidate = Candidate(instances=2, max_batch_size=32, dynamic_batching=True, max_queue_delay_us=0,
                          preferred_batch=False, threads=1, warmup=False, concurrency=16)
    config = render("adapter", source.name, source.signature, candidate, samples[0])
    with LocalServer(work / "repo", work / "server.log") as server:
        server.load(ModelPackage(source.name, config, files))
        print(f"{source.name}: x2 mbs=32 db=on/0us thr=1 conc=16, {args.runs} runs per setting")
        print("| setting | mean infer/s | CV | min / mean | max / mean | s per run |")
        print("|---|---|---|---|---|---|")
        for name, (interval, stability, windows) in SETTINGS.items():
            spec = MeasureSpec(interval_ms=interval, stability_percent=stability, max_windows=windows)
            values, started = [], time.monotonic()
            for run in range(args.runs):
                csv = work / f"run{run}.csv"
                cmd = perf_analyzer.command(source.name, server.grpc_url, 16, spec, csv, inputs)
                try:
                    values.append(perf_analyzer.measure(cmd, csv, 300).throughput)
                except perf_analyzer.UnstableMeasurement:
                    pass  # counted below: runs that never met the stability criterion
            per_run = (time.monotonic() - started) / args.runs
            if len(values) < 2:
                print(f"| {name} | {len(values)} of {args.runs} runs stable | | | | {per_run:.1f} |")
                continue
            mean = statistics.mean(values)
            print(f"| {name} ({len(values)}/{args.runs} stable) | {mean:.1f} | {statistics.stdev(values) / mean:.1%} | "
                  f"{min(values) / mean:.3f} | {max(values) / mean:.3f} | {per_run:.1f} |")


if __name__ == "__main__":
    main()

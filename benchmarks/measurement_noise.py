"""How much one configuration's measured throughput moves between perf_analyzer runs, per
measurement setting: the floor under any "within 5 %" claim.

    python benchmarks/measurement_noise.py --model results/bench/mlp.onnx [--runs 5]

Loads one configuration (2 instances, max batch 32, dynamic batching, concurrency 16: the
winners of docs/search-efficiency.md) on the bundled tritonserver and measures it --runs times
with each setting, printing mean, coefficient of variation and min/max relative to the mean.
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
from tuner.space import Candidate

SETTINGS = {  # name -> (window ms, stability %, max windows)
    "1 s windows, 20 % (tuner default)": (1000, 20.0, 6),
    "1 s windows, 10 %": (1000, 10.0, 10),
    "3 s windows, 10 %": (3000, 10.0, 10),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="noise-"))
    source = model_source.resolve(args.model, work / "cache")
    import numpy as np

    samples = source.sample_inputs(np.random.default_rng(0), 8)
    inputs = perf_analyzer.write_input_data(work / "inputs.json", source.signature, samples)
    candidate = Candidate(instances=2, max_batch_size=32, dynamic_batching=True, max_queue_delay_us=0,
                          preferred_batch=False, threads=1, warmup=False, concurrency=16)
    config = render("adapter", source.name, source.signature, candidate, samples[0])
    files = backends.get("onnxruntime").adapter_files(source.onnx_path)
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

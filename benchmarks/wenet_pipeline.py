"""WeNet as deployed, under realistic load: the audio-to-text ensemble on a real tritonserver,
driven by the real perf_analyzer with speech-like waveforms of 2-16 s.

    .venv/bin/python benchmarks/wenet_pipeline.py [--variant wenet-tiny|wenet] \\
        [--method greedy|prefix_beam|rescore] [--concurrency 2] [--seconds 12] [--utterances 8]

Writes the ensemble repository with every step at its default scheduling (ensemble.default_step:
one CPU instance, dynamic batching up to 8, 1 ms queue delay), loads it from disk, sends each
utterance once (first calls pay ONNX Runtime's and torch's one-time costs), then measures
`--seconds` at `--concurrency` and prints end-to-end throughput (utterances/s and audio seconds
per second), p50/p99 and each step's queue, compute and share of the server latency as markdown.
perf_analyzer's stdout and CSV, the input data and the server log stay under --out. Run it on an
otherwise idle machine; the full `wenet` variant exports once (minutes) and wants longer windows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from tuner.server.local import LocalServer
from tuner.zoo import wenet
from tuner.zoo.wenet import decoding, ensemble, load, pipeline


def warm_up(url: str, model: str, waveforms: list[np.ndarray]) -> None:
    """Each utterance through the ensemble once, one at a time."""
    client = grpcclient.InferenceServerClient(url)
    try:
        for request in load.requests(waveforms):
            inputs = []
            for name, value in request.items():
                tensor = grpcclient.InferInput(name, [1, *value.shape], "FP32" if name == ensemble.WAV else "INT32")
                tensor.set_data_from_numpy(value.reshape(1, *value.shape))
                inputs.append(tensor)
            client.infer(model, inputs, client_timeout=300)
    finally:
        client.close()


def table(result: load.LoadResult) -> str:
    m = result.measurement
    lines = [
        "| end to end | |",
        "|---|---|",
        f"| utterances/s | {m.throughput:.2f} |",
        f"| audio seconds per second | {result.audio_seconds_per_second:.1f} |",
        f"| p50 latency | {m.p50_ms:.0f} ms |",
        f"| p99 latency | {m.p99_ms:.0f} ms |",
        "",
        "| step | queue ms | compute ms | share of server latency | requests per execution |",
        "|---|---|---|---|---|",
    ]
    for step in ensemble.STEPS:
        s = result.steps[step]
        per_execution = s["inference_count"] / s["execution_count"] if s["execution_count"] else float("nan")
        lines.append(f"| {step} | {s['queue_us'] / 1000:.1f} | {s['compute_us'] / 1000:.1f} | "
                     f"{s['share']:.0%} | {per_execution:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="wenet-tiny", choices=["wenet-tiny", "wenet"])
    parser.add_argument("--method", default="rescore", choices=list(decoding.METHODS))
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=12.0, help="measurement time (three windows)")
    parser.add_argument("--utterances", type=int, default=8, help="distinct waveforms, 2-16 s, sent in turn")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--cache", type=Path, default=Path("results/cache"), help="where the ONNX export is kept")
    parser.add_argument("--out", type=Path, default=Path("results/bench/wenet-pipeline"))
    args = parser.parse_args()

    started = time.monotonic()
    artifacts = wenet.export(args.variant, args.cache / "zoo")
    spec = ensemble.EnsembleSpec(args.variant, method=args.method)
    shutil.rmtree(args.out / "repo", ignore_errors=True)  # no file of an earlier --method lingers
    repository = ensemble.write_repository(args.out / "repo", ensemble.packages(spec, artifacts, args.out / "work"))
    waveforms = pipeline.sample_waveforms(np.random.default_rng(args.seed), args.utterances)
    seconds = [w.size / pipeline.SAMPLE_RATE for w in waveforms]

    with LocalServer(repository, args.out / "server.log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            client.load_model(spec.model_name, client_timeout=300)  # loads the composing models too
        finally:
            client.close()
        warm_up(server.grpc_url, spec.model_name, waveforms)
        result = load.measure(spec.model_name, server.grpc_url, waveforms, args.concurrency, args.seconds,
                              args.out / "perf")

    print(f"{args.variant} ensemble, {args.method} (beam {spec.beam_width}), every step at its default "
          f"scheduling; concurrency {args.concurrency}, {args.seconds:g} s measured; {len(waveforms)} utterances "
          f"of {min(seconds):.1f}-{max(seconds):.1f} s (mean {load.mean_seconds(waveforms):.1f} s); "
          f"{os.cpu_count()} CPU cores; {time.monotonic() - started:.0f} s in all")
    print()
    print(table(result))
    print(f"\nperf_analyzer's output: {args.out / 'perf'}", file=sys.stderr)


if __name__ == "__main__":
    main()

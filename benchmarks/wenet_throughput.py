"""WeNet throughput: the in-process ONNX Runtime ceiling, Triton's default config, and the tuned best.

    python benchmarks/wenet_throughput.py [--study wenet-encoder] [--storage sqlite:///results/tuner.db]

Reads the study `tuner search --model wenet-encoder` wrote, then measures raw ONNX Runtime
on this machine with the study's own sample utterances, padded into batches of each size (the
ceiling: no server, no scheduling, no RPC), and prints one table. Run it on an otherwise idle
machine: the figures are only comparable when nothing else competes for the cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
import optuna

from tuner import model_source, results
from tuner.experiment import Experiment
from tuner.workspace import load_samples


def padded_batch(samples: list[dict[str, np.ndarray]], start: int, size: int) -> dict[str, np.ndarray]:
    """`size` utterances from `start` (cycling), zero-padded to the longest, with their lengths."""
    chosen = [samples[(start + i) % len(samples)] for i in range(size)]
    frames = max(s["speech"].shape[0] for s in chosen)
    speech = np.zeros((size, frames, chosen[0]["speech"].shape[1]), np.float32)
    for i, s in enumerate(chosen):
        speech[i, : s["speech"].shape[0]] = s["speech"]
    lengths = np.concatenate([s["speech_lengths"] for s in chosen]).astype(np.int32)
    return {"speech": speech, "speech_lengths": lengths}


def raw_throughput(session: ort.InferenceSession, samples, batch: int, seconds: float) -> tuple[float, float]:
    """Utterances per second and mean latency (ms) of back-to-back session calls for `seconds`."""
    session.run(None, padded_batch(samples, 0, batch))  # warm-up
    done, calls, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, padded_batch(samples, done, batch))
        done += batch
        calls += 1
    elapsed = time.perf_counter() - started
    return done / elapsed, elapsed / calls * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="wenet-encoder")
    parser.add_argument("--storage", default="sqlite:///results/tuner.db")
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--seconds", type=float, default=15.0, help="measurement time per batch size")
    args = parser.parse_args()

    study = optuna.load_study(study_name=args.study, storage=args.storage)
    exp = Experiment.model_validate(study.user_attrs["experiment"])
    source = model_source.resolve(exp.model, exp.results_dir / "cache")
    samples = load_samples(source, exp)
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1  # intra-op threads: ONNX Runtime's default, every core
    session = ort.InferenceSession(str(source.onnx_path), options, providers=["CPUExecutionProvider"])

    print(f"raw ONNX Runtime, {len(samples)} utterances of "
          f"{min(s['speech'].shape[0] for s in samples) / 100:.1f}-{max(s['speech'].shape[0] for s in samples) / 100:.1f} s")
    raw = {}
    for batch in (int(b) for b in args.batches.split(",")):
        raw[batch] = raw_throughput(session, samples, batch, args.seconds)
        print(f"  batch {batch:2d}: {raw[batch][0]:7.2f} utt/s, {raw[batch][1]:7.1f} ms per call")
    best_batch = max(raw, key=lambda b: raw[b][0])
    ceiling = raw[best_batch][0]

    frame = results.trials_frame(study)
    sla = exp.max_p99_ms
    tuned = results.best(frame, sla)
    default = results.best(frame, sla, baseline=True)
    print()
    print(f"| {args.study} on this machine (SLA p99 <= {sla} ms) | infer/s | p99 ms | vs raw ceiling |")
    print("|---|---|---|---|")
    print(f"| raw ONNX Runtime in-process, batch {best_batch} (ceiling) | {ceiling:.2f} | - | 1.00 |")
    for label, row in (("Triton default config", default), ("tuned best", tuned)):
        if row is None:
            print(f"| {label} | none under the SLA | - | - |")
        else:
            print(f"| {label}: trial {row.number} | {row.throughput:.2f} | {row.p99_ms:.1f} | "
                  f"{row.throughput / ceiling:.2f} |")
    if tuned is not None and default is not None:
        print(f"\ntuned / default: {tuned.throughput / default.throughput:.2f}x   "
              f"tuned / raw: {tuned.throughput / ceiling:.2f}")
        print(f"tuned config: {tuned.backend}/{tuned.precision} x{tuned.instances} "
              f"max_batch_size={tuned.max_batch_size} dynamic_batching={tuned.dynamic_batching} "
              f"delay={tuned.max_queue_delay_us}us threads={tuned.threads} concurrency={tuned.concurrency}")


if __name__ == "__main__":
    main()

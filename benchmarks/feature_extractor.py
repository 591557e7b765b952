"""Where a batch of the WeNet feature extractor's time goes, in process (no server).

    python benchmarks/feature_extractor.py --device cuda      # a GPU machine: ~30 s
    python benchmarks/feature_extractor.py --device cpu --batches 4 --reps 3   # smoke

The ensemble's feature_extractor step (templates/python/wenet_features_model.py) turns a batch of
2-16 s waveforms (float32, int16 scale) into 80-bin fbank features. Per batch size, each part of
what one instance does for one batch, timed alone (median of --reps after a warm-up, the device
synchronised around each part): stacking the requests' arrays into one padded array (numpy), the
host-to-device copy (from pageable memory, as the model does it, and from a reused pinned buffer),
fbank itself, the device-to-host copy of the features, and splitting them per request. What Triton
adds around this (its copies of inputs and outputs to the python stub's shared memory) is not here:
the search's per-step "compute input/output" figures hold that.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from tuner.resources import ADAPTER_DIR
from tuner.zoo.wenet.features import fbank

sys.path.insert(0, str(ADAPTER_DIR))
from tuner_adapter import split, stack  # noqa: E402  (the adapter's own functions, as served)


def timed(fn, reps: int, device: torch.device) -> tuple[float, object]:
    """Median milliseconds of fn() over reps calls after one warm-up, and its last result."""
    result = fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


def breakdown(batch: int, reps: int, device: torch.device, rng: np.random.Generator) -> dict[str, float]:
    lengths = rng.integers(2 * 16_000, 16 * 16_000, batch)
    requests = [(rng.standard_normal((1, n)) * 3000).astype(np.float32) for n in lengths]
    lens = torch.from_numpy(lengths.astype(np.int64))
    row = {}
    row["stack"], wav = timed(lambda: stack(requests), reps, device)
    host = torch.from_numpy(wav)
    row["h2d pageable"], on_device = timed(lambda: host.to(device), reps, device)
    if device.type == "cuda":
        pinned = torch.empty(host.shape, dtype=host.dtype).pin_memory()
        row["copy into pinned"], _ = timed(lambda: pinned.copy_(host), reps, device)
        row["h2d pinned"], _ = timed(lambda: on_device.copy_(pinned, non_blocking=True), reps, device)
    with torch.inference_mode():
        row["fbank"], (speech, frames) = timed(lambda: fbank(on_device, lens), reps, device)
    row["d2h"], features = timed(lambda: speech.cpu().numpy(), reps, device)
    results = {"speech": features, "speech_lengths": frames.numpy()}
    row["split"], _ = timed(lambda: split(results, [1] * batch, True, {"speech": "speech_lengths"}), reps, device)
    row["MB in"] = wav.nbytes / 1e6
    row["MB out"] = features.nbytes / 1e6
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 32, 64])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the model's default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    rows = {batch: breakdown(batch, args.reps, device, rng) for batch in args.batches}
    parts = list(next(iter(rows.values())))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"feature extractor, {name}, torch {torch.__version__}, {args.threads} thread(s); "
          f"ms per batch, median of {args.reps} (2-16 s utterances, seed 0)")
    print("| batch | " + " | ".join(parts) + " | sum ms | utt/s (sum) |")
    print("|---" * (len(parts) + 3) + "|")
    for batch, row in rows.items():
        total = sum(v for k, v in row.items() if not k.startswith("MB") and k not in ("copy into pinned", "h2d pinned"))
        print(f"| {batch} | " + " | ".join(f"{row[p]:.2f}" for p in parts) + f" | {total:.2f} | {batch / total * 1000:.0f} |")


if __name__ == "__main__":
    main()

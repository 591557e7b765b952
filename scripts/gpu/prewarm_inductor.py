"""Fill Inductor's on-disk cache for the pytorch adapter's compiled encoder before a search, so that
each Triton instance's compile at load (TorchRunner.warm) is a cache hit instead of a minute of
codegen per process; several instances compiling cold at once also share the host's cores.

Builds the runner as the adapter does (same module, settings and device) and warms it: every
length bucket at every graphed batch size up to --max-batch. The cache is where the server's stubs
look, so run it with the same TORCHINDUCTOR_CACHE_DIR as the server (scripts/gpu/session_pipeline.sh).

    python scripts/gpu/prewarm_inductor.py --precision tf32 --max-batch 32
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from gpu_ladder import pm  # noqa: E402  (templates/python/pytorch_model.py, imported as the server does)

from tuner.zoo.wenet import model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="wenet")
    parser.add_argument("--precision", default="tf32")
    parser.add_argument("--attention", default="sdpa")
    parser.add_argument("--compile", default="default")
    parser.add_argument("--buckets", default="256,512,1024,1600")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--device", default="cuda:0")
    args = parser.parse_args()
    settings = pm.Settings.from_parameters({"precision": args.precision, "attention": args.attention,
                                            "compile": args.compile, "length_buckets": args.buckets,
                                            "cuda_graphs": "true" if args.device.startswith("cuda") else "false"})
    module, ranks, outputs = model.serving_module(args.variant)
    started = time.monotonic()
    runner = pm.TorchRunner(module, ranks, outputs, args.device, settings)
    timings = runner.warm(args.max_batch)
    print(f"{args.variant} {args.precision} {args.attention} compile={args.compile}: {pm.warm_summary(timings)}; "
          f"{time.monotonic() - started:.1f} s in all", flush=True)


if __name__ == "__main__":
    main()

"""Does polling Triton's metrics endpoint during a measurement move the measured figure?

    .venv/bin/python benchmarks/metrics_polling.py EXPORT_DIR [--pairs 4]

Serves a tuner export (its claim's models, on a fresh local tritonserver, loaded once and warmed
up), then runs the claim's own perf_analyzer command in pairs, in alternating order: once alone
and once while tuner.measure.metrics.MetricsSampler polls the server's metrics every 0.5 s (what
every trial and the search's verification do, and `tuner verify` does not). Prints each run and
the paired ratio (with polling / without) with its spread. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuner import reproduce  # noqa: E402
from tuner.measure import perf_analyzer  # noqa: E402
from tuner.measure.metrics import MetricsSampler  # noqa: E402
from tuner.server.local import LocalServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("--pairs", type=int, default=4)
    args = parser.parse_args()
    claim = reproduce.read_claim(args.export)
    timeout = float(claim["measure"]["timeout_s"])
    with tempfile.TemporaryDirectory(prefix="metrics-polling-") as tmp:
        work = Path(tmp)
        packages = reproduce.copy_models(args.export, claim, work / "repository")
        input_data = reproduce.copy_inputs(args.export, claim, work)
        with LocalServer(work / "repository", work / "server.log") as server:
            for package in packages:
                server.load(package)
            reproduce.warm_up(claim, server.grpc_url, work / "warmup.csv", input_data)
            ratios = []
            for pair in range(args.pairs):
                figures = {}
                for polled in ([False, True] if pair % 2 == 0 else [True, False]):
                    csv = work / f"p{pair}-{int(polled)}.csv"
                    cmd = reproduce.fill(claim["perf_analyzer"]["retry_args"], server.grpc_url, csv, input_data)
                    if polled:
                        with MetricsSampler(server.metrics_url) as sampler:
                            m = perf_analyzer.measure(cmd, csv, timeout)
                        polls = len(sampler.snapshots)
                    else:
                        m, polls = perf_analyzer.measure(cmd, csv, timeout), 0
                    figures[polled] = m.throughput
                    print(f"pair {pair + 1} {'polled' if polled else 'alone '}: {m.throughput:.2f} infer/s, "
                          f"p99 {m.p99_ms:.1f} ms ({polls} polls)", flush=True)
                ratios.append(figures[True] / figures[False])
    print(f"with polling / without, paired: median {statistics.median(ratios):.3f}, "
          f"min {min(ratios):.3f}, max {max(ratios):.3f} over {len(ratios)} pairs")


if __name__ == "__main__":
    main()

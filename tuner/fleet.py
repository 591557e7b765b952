"""`tuner search --workers N`: N workers on one host, each with its own GPUs (or CPUs) and server.

The study is prepared here once (so first trials are enqueued once), then N `tuner search`
processes run on it as workers (tuner.workers), their output prefixed by their number. Workers
get disjoint GPUs when the host has at least N (CUDA_VISIBLE_DEVICES), else disjoint CPU sets
(their tritonserver and perf_analyzer inherit the affinity); they end with this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tuner.errors import TunerError
from tuner.processes import child_of_ours
from tuner.workers import visible_gpu_ids


WORKER_ENV = "TUNER_FLEET_WORKER"  # set in each worker: its number (it then leaves the summary to the parent)


@dataclass(frozen=True)
class Share:
    """What one worker of the host gets: GPU ids, or CPU ids."""

    gpus: tuple[str, ...] = ()
    cpus: tuple[int, ...] = ()

    def describe(self) -> str:
        return f"GPU {','.join(self.gpus)}" if self.gpus else f"CPU {','.join(map(str, self.cpus))}"


def split(count: int, gpu_ids: Sequence[str], cpu_ids: Sequence[int]) -> list[Share]:
    """Disjoint shares for `count` workers: the GPUs dealt out when there are enough of them,
    else the CPUs in contiguous blocks (neighbouring cores share caches)."""
    if count < 1:
        raise TunerError("--workers must be at least 1")
    if len(gpu_ids) >= count:
        return [Share(gpus=tuple(gpu_ids[k::count])) for k in range(count)]
    cpus = sorted(cpu_ids)
    if len(cpus) < count:
        raise TunerError(f"--workers {count} needs at least {count} CPUs (or GPUs); this host offers {len(cpus)} CPUs "
                         f"and {len(gpu_ids)} GPUs")
    size, extra = divmod(len(cpus), count)
    shares, start = [], 0
    for k in range(count):
        end = start + size + (1 if k < extra else 0)
        shares.append(Share(cpus=tuple(cpus[start:end])))
        start = end
    return shares


def host_shares(count: int) -> list[Share]:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    return split(count, visible_gpu_ids(), cpus)


def _relay(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, ""):
        out.write(prefix + line)
        out.flush()


def run_workers(args: Sequence[str], shares: Sequence[Share], note: Callable[[str], None]) -> int:
    """Run one `tuner search ARGS` per share and wait for all; the worst exit code."""
    procs = []
    for k, share in enumerate(shares):
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{WORKER_ENV: str(k)})
        if share.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(share.gpus)
        note(f"worker {k}: {share.describe()}")
        cmd = [sys.executable, "-m", "tuner", "search", *args]
        proc = subprocess.Popen(**child_of_ours(cmd, cpus=share.cpus or None), env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        relay = threading.Thread(target=_relay, args=(proc.stdout, f"[w{k}] ", sys.stdout), daemon=True)
        relay.start()
        procs.append((proc, relay))
    try:
        codes = [proc.wait() for proc, _ in procs]
    except KeyboardInterrupt:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            proc.wait()
        raise
    finally:
        for _, relay in procs:
            relay.join(timeout=5)
    return max(codes, key=abs)

"""Samples the host's CPU while a GPU search runs: every --every seconds one line with the whole
machine's busy share and the processes that used the most CPU over that interval (in cores),
grouped by name (tritonserver, each python stub by its model, perf_analyzer, tuner's python).
Stops when killed.  usage: python scripts/gpu/cpu_sampler.py [--every 5] > cpu.txt"""

import argparse
import collections
import time

import psutil


def label(proc: psutil.Process) -> str:
    name = proc.name()
    if name.startswith("triton_python"):  # the stub's args: shm key, model path, ...
        model = next((a.split("/")[-3] for a in proc.cmdline() if a.endswith("model.py")), "?")
        return f"stub:{model}"
    return name


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--every", type=float, default=5.0)
    args = parser.parse_args()
    cores = psutil.cpu_count()
    previous: dict[int, tuple[str, float]] = {}
    psutil.cpu_percent()
    while True:
        time.sleep(args.every)
        busy = psutil.cpu_percent() / 100 * cores
        current, used = {}, collections.Counter()
        for proc in psutil.process_iter():
            try:
                times = proc.cpu_times()
                total = times.user + times.system
                name = previous.get(proc.pid, (None,))[0] or label(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            current[proc.pid] = (name, total)
            if proc.pid in previous:
                used[name] += (total - previous[proc.pid][1]) / args.every
        previous = current
        top = ", ".join(f"{name} {cores_used:.1f}" for name, cores_used in used.most_common(8) if cores_used >= 0.05)
        print(f"{time.strftime('%H:%M:%S')} busy {busy:.1f}/{cores} cores: {top}", flush=True)


if __name__ == "__main__":
    main()

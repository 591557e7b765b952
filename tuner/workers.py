"""Several workers on one study: who they are, how they share its budget, and which one verifies.

Every `tuner search` on a study is a worker. Started several times against one storage (one
PostgreSQL URL from several hosts, or `--workers N` on one host), they form one search:

- each worker announces itself in the study (user attribute `worker:<id>`: host, hardware,
  price, state) and refreshes a `seen` time while it runs, so the others know it is alive;
- the time budget counts from the start of the earliest live worker, the trial budget is the
  study's (tuner.study.counted), and a trial started beyond it is given back (`surplus`);
- after sampling, the verification stage runs once: when every live worker has finished
  sampling, the first of them by id verifies, the others stop (tuner.search).

Plain attributes in the study rather than a lock server: the study's storage is the one thing
all workers share, on one host or many.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import asdict, dataclass

import optuna

PREFIX = "worker:"  # study user attributes of the workers, one per worker
SEEN_EVERY_S = 10.0  # a live worker refreshes its `seen` this often...
GONE_AFTER_S = 45.0  # ...and one not seen for this long has died


@dataclass(frozen=True)
class Worker:
    """One `tuner search` process on a study."""

    id: str  # "<host>/w<slot>": unique per host by its workspace slot
    host: str
    slot: int
    hardware: str  # what it measures on; figures of workers of different hardware are not comparable
    price_per_hour: float | None = None

    @property
    def trial_attrs(self) -> dict:
        """What each of its trials records about where it was measured."""
        attrs = {"worker": self.id, "host": self.host, "hardware": self.hardware}
        return attrs | ({"price_per_hour": self.price_per_hour} if self.price_per_hour is not None else {})


def hardware() -> str:
    """The CPU model and the CPUs this process may use, and the GPUs it sees."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"{_cpu_model()} x{cpus} CPUs"
    gpus = _gpu_names()
    return text + (f", {len(gpus)}x {gpus[0]}" if gpus else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[tuple[str, str]]:
    """(id, name) of the GPUs nvidia-smi lists, narrowed to CUDA_VISIBLE_DEVICES (ids) when set."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [tuple(part.strip() for part in line.split(",", 1)) for line in out.splitlines() if "," in line]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        wanted = [v.strip() for v in visible.split(",") if v.strip()]
        rows = [r for r in rows if r[0] in wanted]
    return rows


def visible_gpu_ids() -> list[str]:
    return [gpu_id for gpu_id, _ in _gpus()]


def _gpu_names() -> list[str]:
    return [name for _, name in _gpus()]


def make(slot: int, price_per_hour: float | None) -> Worker:
    host = socket.gethostname()
    return Worker(id=f"{host}/w{slot}", host=host, slot=slot, hardware=hardware(), price_per_hour=price_per_hour)


def workers(study: optuna.Study) -> dict[str, dict]:
    """Every worker the study has known, by id, with its last state."""
    attrs = study.user_attrs
    return {key.removeprefix(PREFIX): value for key, value in attrs.items() if key.startswith(PREFIX)}


def alive(info: dict, now: float) -> bool:
    return info.get("state") != "stopped" and now - float(info.get("seen", 0)) < GONE_AFTER_S


def live(study: optuna.Study, now: float | None = None) -> dict[str, dict]:
    now = time.time() if now is None else now
    return {wid: info for wid, info in workers(study).items() if alive(info, now)}


def session_start(study: optuna.Study, me: str, now: float | None = None) -> float:
    """When this search began: the start of the earliest live worker (this one included), so that
    workers joining a running search share its time budget instead of starting their own."""
    found = live(study, now)
    return min(float(info["started"]) for info in found.values()) if found else (now or time.time())


def elected_verifier(study: optuna.Study, me: str, now: float | None = None) -> bool | None:
    """Whether this worker (done sampling) verifies: True when every live worker is done and it is
    the first of them by id; False when another one is; None while some still sample."""
    found = live(study, now)
    if any(info.get("state") == "sampling" for wid, info in found.items() if wid != me):
        return None
    done = sorted(wid for wid, info in found.items() if info.get("state") == "sampled") or [me]
    return done[0] == me


class Registration:
    """A worker announced in its study while it runs: its attribute refreshed by a daemon thread
    every SEEN_EVERY_S seconds, and marked stopped when the search ends (or fails)."""

    def __init__(self, study: optuna.Study, worker: Worker):
        self.study, self.worker = study, worker
        self.started = time.time()
        self.state = "sampling"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="tuner-worker-seen", daemon=True)

    def __enter__(self) -> "Registration":
        self._write()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.set_state("stopped")

    def set_state(self, state: str) -> None:
        self.state = state
        self._write()

    def _write(self) -> None:
        info = asdict(self.worker) | {"pid": os.getpid(), "started": self.started, "seen": time.time(),
                                      "state": self.state}
        self.study.set_user_attr(PREFIX + self.worker.id, info)

    def _beat(self) -> None:
        while not self._stop.wait(SEEN_EVERY_S):
            try:
                self._write()
            except Exception:  # a storage hiccup: the next beat tries again (GONE_AFTER_S spans several)
                pass

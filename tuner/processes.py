"""Child processes that do not outlive tuner, and the end of those that did.

`child_of_ours` gives the Popen arguments of a child that asks Linux for a signal when its parent
dies (PR_SET_PDEATHSIG), so a tuner killed with SIGKILL still takes its tritonserver, perf_analyzer
and dashboard with it. util-linux's `setpriv --pdeathsig` sets it and execs the command, so Python
starts the child with vfork: a `preexec_fn` (`die_with_parent`, the fallback) forces a real fork,
which runs every library's fork handlers, and gRPC's hung the fork of a process whose gRPC client
had been used (seen in CI: `tuner verify` stuck in fork). Linux sends the signal when the *thread*
that started the child ends: start children from a thread that lives as long as they should.

`end_processes_naming` finds what an earlier, killed run left behind (an orphaned tritonserver,
python-backend stubs that ignore SIGTERM once their server is gone) by the path their command
line names, and ends them: SIGTERM, then SIGKILL for those still there after a grace period.
It never touches a process whose command line does not name that path.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import psutil

_PR_SET_PDEATHSIG = 1


def child_of_ours(cmd: list[str], sig: signal.Signals = signal.SIGTERM, cpus: Iterable[int] | None = None) -> dict:
    """Popen's `args` and `preexec_fn` for `cmd`: the child gets `sig` when this process dies and,
    with `cpus`, runs on those CPUs only (inherited by its own children)."""
    setpriv, taskset = shutil.which("setpriv"), shutil.which("taskset")
    cpus = list(cpus) if cpus is not None else None
    if setpriv is None or (cpus and taskset is None):
        die = die_with_parent(sig)

        def preexec() -> None:
            if die is not None:
                die()
            if cpus:
                os.sched_setaffinity(0, cpus)

        return {"args": cmd, "preexec_fn": preexec}
    prefix = [setpriv, f"--pdeathsig={signal.Signals(sig).name.removeprefix('SIG')}", "--"]
    if cpus:
        prefix += [taskset, "--cpu-list", ",".join(map(str, cpus))]
    return {"args": prefix + list(cmd), "preexec_fn": None}


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child receive `sig` when this process dies, however it
    dies; None off Linux (Popen then starts the child as usual)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it
    parent = os.getpid()
    number = int(sig)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, number, 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl: no signal will come
            os.kill(os.getpid(), number)

    return preexec


def names_path(cmdline: Iterable[str], path: Path) -> bool:
    """Whether one argument is `path`, lies under it, or is an option set to either
    (`--model-repository=<path>`). `path` is compared as an absolute path, textually, as it is
    spelled and with its symbolic links resolved."""
    roots = {os.path.abspath(path), os.path.realpath(path)}
    unders = tuple(root.rstrip("/") + "/" for root in roots)
    for arg in cmdline:
        for value in (arg, arg.partition("=")[2]):
            if value in roots or value.startswith(unders):
                return True
    return False


def _own_line() -> set[int]:
    """This process and its ancestors: never ended, whatever their command lines say."""
    pids = {os.getpid()}
    try:
        pids |= {p.pid for p in psutil.Process().parents()}
    except psutil.Error:
        pass
    return pids


def processes_naming(path: Path, programs: Iterable[str] | None = None) -> list[psutil.Process]:
    """Running processes whose command line names `path` (see `names_path`); with `programs`,
    only those whose executable's file name is one of them. Zombies are left out: they have ended."""
    programs = set(programs) if programs is not None else None
    own = _own_line()
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        info = proc.info
        cmdline = info.get("cmdline") or []
        if info["pid"] in own or not cmdline or info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        if programs is not None and os.path.basename(cmdline[0]) not in programs:
            continue
        if names_path(cmdline, path):
            found.append(proc)
    return found


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_ended(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Those of `procs` still running after up to `timeout_s` (a zombie has ended: its parent,
    not us, may be the one to reap it, so psutil.wait_procs would wait on it in vain)."""
    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if _running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _running(p)]
    return alive


def end_processes(procs: list[psutil.Process], grace_s: float = 3.0) -> list[psutil.Process]:
    """SIGTERM each, SIGKILL those still running after `grace_s`; returns those that needed SIGKILL."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:  # gone already, or not ours to signal
            pass
    stubborn = _wait_ended(procs, grace_s)
    for proc in stubborn:
        try:
            proc.kill()
        except psutil.Error:
            pass
    _wait_ended(stubborn, 5.0)
    return stubborn


def end_processes_naming(path: Path, programs: Iterable[str] | None = None,
                         grace_s: float = 3.0) -> list[psutil.Process]:
    """End every process naming `path` (optionally only of these `programs`); returns those found."""
    procs = processes_naming(path, programs)
    if procs:
        end_processes(procs, grace_s)
    return procs


"""Measuring on a real tritonserver, through tuner's public API only.

The grid's points (and the re-measurements of its near-best ones, and a search's winner) are
fixed Optuna trials of tuner's own `TrialRunner`, the objective `tuner search` optimizes: same
artifact, render, load, first request and perf_analyzer path as a search trial. The searches are
`tuner.search.run`. `trial_rows` reads any of these studies back as plain dicts.
"""

from __future__ import annotations

import contextlib
import random
import time
import warnings
from collections.abc import Sequence

import optuna

from tuner import model_source
from tuner.candidate import Candidate, describe
from tuner.errors import TrialError, TunerError
from tuner.experiment import Experiment
from tuner.search import Reporter
from tuner.search import run as search_run
from tuner.server.launch import make_server
from tuner.trial import TrialRunner
from tuner.verification import Verifier
from tuner.workspace import Workspace, prepare_inputs

from .report import repeat_table
from .stats import params_key, rounded


class LineReporter:
    """tuner's Reporter protocol as one plain line per trial (logs stay readable)."""

    def __init__(self, label: str):
        self.label = label
        self.total = 0
        self.count = 0
        self.started = time.monotonic()

    def note(self, message: str) -> None:
        print(f"[{self.label}] {message}", flush=True)

    def search_started(self, study: optuna.Study, total: int, done: int) -> None:
        self.total, self.count, self.started = total - done, 0, time.monotonic()

    def trial_started(self, number: int, candidate: Candidate) -> None:
        pass

    def trial_finished(self, trial: optuna.trial.FrozenTrial) -> None:
        self.count += 1
        attrs = trial.user_attrs
        what = describe(attrs["candidate"]) if "candidate" in attrs else ""
        m = attrs.get("measurement")
        if trial.state.name == "COMPLETE" and m:
            how = (f"repeat of {attrs['repeat_of']}" if "repeat_of" in attrs
                   else f"load {attrs.get('load_s', 0):.1f} s, measure {attrs.get('measure_s', 0):.1f} s")
            result = f"{m['throughput']:.1f} infer/s p99 {m['p99_ms']:.2f} ms ({how})"
        else:
            result = f"{trial.state.name}: {attrs.get('error', 'no reason recorded')}"
        elapsed = time.monotonic() - self.started
        print(f"[{self.label} {self.count}/{self.total} {elapsed:.0f}s] #{trial.number} {what} -> {result}",
              flush=True)


def delete_study(storage: optuna.storages.BaseStorage, name: str) -> None:
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=name, storage=storage)


def _point_done(trial: optuna.trial.FrozenTrial) -> bool:
    """Measured (complete) or failed for a reason of its own: not an interrupted trial."""
    return trial.state.name == "COMPLETE" or (trial.state.name == "FAIL" and "error" in trial.user_attrs)


class FixedRunner:
    """One server and one tuner TrialRunner, measuring given params through Optuna trials: the grid
    (one study, every point enqueued) and the winner's repeats (a fresh one-trial study each)."""

    def __init__(self, exp: Experiment | None, storage: optuna.storages.BaseStorage):
        self.exp, self.storage = exp, storage

    def __enter__(self) -> "FixedRunner":
        self.source = model_source.resolve(self.exp.model, self.exp.results_dir / "cache")
        self.ws = ws = Workspace(self.exp.results_dir / "grid")
        self.samples = samples = prepare_inputs(self.source, ws, self.exp)  # seeded by exp.measure.data_seed
        self.server = make_server(self.exp.server, ws.repository, ws.server_log, "grid")
        self.server.start()
        try:
            self.reporter = LineReporter("grid")
            self.objective = TrialRunner(self.exp, self.source, self.server, ws, samples, note=self.reporter.note,
                                         on_start=self.reporter.trial_started)
        except BaseException:
            self.server.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()

    def measure(self, study_name: str, points: Sequence[dict], label: str, fresh: bool = False,
                order_seed: int = 0) -> optuna.Study:
        """Measure every point not yet done in the study (resuming it), deployments in a seeded
        random order (drift of the machine over the run spreads over all knobs instead of following
        one), the concurrencies of each deployment one after the other on its one load."""
        if fresh:
            delete_study(self.storage, study_name)
        # The sampler is never consulted: every param of every trial is fixed.
        study = optuna.create_study(study_name=study_name, storage=self.storage, load_if_exists=True,
                                    sampler=optuna.samplers.RandomSampler(seed=order_seed),
                                    directions=["maximize", "minimize"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # trials of a killed run: failed, then measured again
        trials = study.get_trials(deepcopy=False)
        have = {params_key(t.params) for t in trials if _point_done(t)}
        # An enqueued trial holds its params as "fixed_params" until it runs.
        waiting = {params_key(t.system_attrs.get("fixed_params", t.params)) for t in trials
                   if t.state.name == "WAITING"}
        todo = by_deployment([p for p in points if params_key(p) not in have | waiting], order_seed)
        for p in todo:
            study.enqueue_trial(p, skip_if_exists=False)
        remaining = len(todo) + len(waiting)
        if remaining:
            if have:
                print(f"[{label}] resuming: {len(have)} of {len(points)} configurations already measured", flush=True)
            self.reporter.label = label
            self.reporter.search_started(study, remaining, 0)
            study.optimize(self.objective, n_trials=remaining, catch=(TrialError,),
                           callbacks=[lambda _s, t: self.reporter.trial_finished(t)])
        return study


def by_deployment(points: Sequence[dict], order_seed: int = 0) -> list[dict]:
    """Points grouped by deployment (everything but the concurrency), the groups shuffled (seeded),
    each group's concurrencies ascending: an exhaustive sweep that loads each deployment once, as
    Triton keeps a model whose config is unchanged (tuner's TrialRunner then skips the reload)."""
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault(params_key({k: v for k, v in p.items() if k != "concurrency"}), []).append(p)
    order = list(groups.values())
    random.Random(order_seed).shuffle(order)
    return [p for group in order for p in sorted(group, key=lambda p: p.get("concurrency", 0))]


def measure_truth(runner: FixedRunner, targets: dict[tuple, tuple[optuna.Study, int]], rounds: int,
                  seed: int = 0) -> tuple[list[dict[tuple, dict | None]], float]:
    """The truth's candidates measured the way tuner's verification stage measures its finalists, with tuner's own
    Verifier: `rounds` rounds, each measuring every candidate once in a seeded shuffled order, each measurement an
    unload, a deploy of the config and model files its trial measured, and perf_analyzer at its trial's concurrency.
    `targets`: point -> (the study and trial that measured it: the grid's, or a search's for a pick outside the
    grid). A failed measurement is None in its round (the candidate's truth rests on its other rounds).
    Returns the rounds and their wall-clock."""
    verifiers: dict[str, Verifier] = {}
    for study, _n in targets.values():
        if study.study_name not in verifiers:
            verifiers[study.study_name] = Verifier(study, runner.exp, runner.source, runner.server, runner.ws,
                                                   runner.samples)
    order = random.Random(seed)
    keys = list(targets)
    out: list[dict[tuple, dict | None]] = []
    started = time.monotonic()
    for r in range(rounds):
        shuffled = keys[:]
        order.shuffle(shuffled)
        measured: dict[tuple, dict | None] = {}
        for i, key in enumerate(shuffled, 1):
            study, number = targets[key]
            try:
                m = verifiers[study.study_name](number, r)
                measured[key] = {"throughput": m["throughput"], "p99_ms": m["p99_ms"], "unstable": m.get("unstable")}
                what = f"{m['throughput']:.1f} infer/s p99 {m['p99_ms']:.2f} ms"
            except (TrialError, TunerError) as exc:  # one failed reload or run: that measurement only
                measured[key] = None
                what = f"failed: {exc}"
            print(f"[truth round {r + 1}/{rounds} {i}/{len(keys)} {time.monotonic() - started:.0f}s] "
                  f"{study.study_name} #{number} -> {what}", flush=True)
        out.append(measured)
    return out, time.monotonic() - started


def run_search(exp: Experiment, storage: optuna.storages.BaseStorage, reporter: Reporter) -> optuna.Study:
    """A fresh `tuner search` study (what `tuner search` runs, minus its printing)."""
    delete_study(storage, exp.study)
    return search_run(exp, reporter)


def measure_winner(runner: FixedRunner, search: dict, repeats: int, tolerance: float = 0.05) -> dict:
    """A search's final pick (overall) unloaded, reloaded and measured again, `repeats` times, each in
    a fresh study (in the search's study tuner would reuse the stored figures instead), against the
    figure the search stored for it."""
    pick = search["objectives"]["overall"]
    params = {k: v for k, v in pick["best_key"]}
    runs = []
    for i in range(1, repeats + 1):
        # Triton keeps a model whose config is unchanged (the load returns at once), so unload it
        # first: every repeat is a real reload, as the stored trial was.
        runner.server.unload(runner.source.name)
        label = f"seed {search['seed']} winner {i}/{repeats}"
        study = runner.measure(f"winner-seed{search['seed']}-{i}", [params], label, fresh=True)
        t = trial_rows(study)[-1]
        ratio = t["throughput"] / pick["best_measured"] if t["throughput"] else None
        runs.append({"throughput": t["throughput"], "p99_ms": t["p99_ms"], "ratio": rounded(ratio)})
    rep = {"seed": search["seed"], "trial": pick["best_trial"], "config": t["config"],
           "stored": pick["best_measured"], "tolerance": tolerance, "runs": runs}
    print(repeat_table(rep), flush=True)
    return rep


def trial_rows(study: optuna.Study) -> list[dict]:
    """The study's finished trials as plain dicts, times relative to its first trial's start."""
    finished = [t for t in study.get_trials(deepcopy=False)
                if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
                and t.datetime_start is not None and t.datetime_complete is not None]
    if not finished:
        return []
    origin = min(t.datetime_start for t in finished)
    rows = []
    for t in sorted(finished, key=lambda t: t.datetime_start):
        attrs = t.user_attrs
        m = attrs.get("measurement") if t.state == optuna.trial.TrialState.COMPLETE else None
        rows.append({
            "number": t.number,
            "state": t.state.name,
            "params": dict(t.params),
            "config": describe(attrs["candidate"]) if "candidate" in attrs else "",
            "start_s": round((t.datetime_start - origin).total_seconds(), 3),
            "end_s": round((t.datetime_complete - origin).total_seconds(), 3),
            "duration_s": round((t.datetime_complete - t.datetime_start).total_seconds(), 3),
            "throughput": m["throughput"] if m else None,
            "p99_ms": m["p99_ms"] if m else None,
            "compute_infer_ms": m.get("compute_infer_ms") if m else None,
            "load_s": attrs.get("load_s"),
            "first_request_ms": attrs.get("first_request_ms"),
            "measure_s": attrs.get("measure_s"),
            "prepare_s": attrs.get("prepare_s"),
            "repeat_of": attrs.get("repeat_of"),
            "baseline": bool(attrs.get("baseline", False)),
            "unstable": bool(attrs.get("unstable", False)),
            "error": attrs.get("error"),
            "concurrency": (attrs.get("candidate") or {}).get("concurrency"),
            "curve": [{k: p[k] for k in ("concurrency", "throughput", "p99_ms")} for p in attrs.get("curve", [])],
            "confirm": attrs.get("confirm"),
        })
    return rows

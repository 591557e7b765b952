"""One trial of a pipeline search: every composing model's settings deployed together, the
pipeline's outputs checked against the reference, then perf_analyzer end to end on the top model
with each step's share of the time taken from its composing-model statistics.

The trial's bookkeeping (budget, reuse of identical params, retries, recorded failures) is the
single-model trial's (tuner.trial.TrialObjective); only suggesting and measuring differ.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import optuna

from tuner import sampling
from tuner.errors import TunerError
from tuner.experiment import Experiment
from tuner.measure import composing, perf_analyzer, ramp
from tuner.pipeline import repository, space
from tuner.pipeline.guard import PipelineGuard
from tuner.pipeline.source import PipelineSource
from tuner.server import ModelPackage, Server
from tuner.trial import TrialObjective, record
from tuner.trial.guard import Rejected
from tuner.trial.loadtest import PerfRun, load_test, perf_runner, warm_up
from tuner.workers import Worker
from tuner.workspace import Workspace


def spaces_of(exp: Experiment, source: PipelineSource) -> dict[str, space.StepSpace]:
    """Each step's space: the experiment's knob values (or its `steps` overrides), the source's
    own parameters, and the repository's as-given settings (its baseline) always among them."""
    return space.widen(listed_spaces(exp, source), source.repository)


def listed_spaces(exp: Experiment, source: PipelineSource) -> dict[str, space.StepSpace]:
    """Each step's space as the experiment and the source list it (no as-given values added)."""
    overrides = {name: o.model_dump(exclude_none=True) for name, o in exp.steps.items()}
    return space.step_spaces(source.repository, exp.space, overrides, source.parameters)


def concurrency_ladder(exp: Experiment) -> list[int]:
    return sorted({*exp.space.concurrency, *exp.baseline_concurrency})


def as_given(exp: Experiment, source: PipelineSource, concurrency: int) -> space.PipelineCandidate:
    """The repository as its author wrote it (the searched parameters at their given values): the
    bar every trial is measured against."""
    return space.baseline(source.repository, spaces_of(exp, source), concurrency)


def check_supported(exp: Experiment) -> None:
    if exp.measure.load != "concurrency":
        raise TunerError("a pipeline is measured under concurrency only for now: remove measure.load: request_rate")


def deploy(server: Server, source: PipelineSource, candidate: space.PipelineCandidate, workdir: Path,
           reload: bool = False) -> tuple[list[ModelPackage], float]:
    """Every model of the pipeline with the candidate's settings, composing models first; with
    `reload` every model is unloaded first (Triton keeps a model whose config is unchanged).
    Returns the packages and the seconds the load took."""
    models = repository.packages(source.repository, candidate.steps, workdir=workdir)
    if not server.is_alive():
        server.start()
    if reload:
        for package in reversed(models):
            server.unload(package.name)
    started = time.monotonic()
    for package in models:
        server.load(package)
    return models, round(time.monotonic() - started, 3)


class PipelineTrialRunner(TrialObjective):
    """Measures one pipeline candidate per call on the running server."""

    def __init__(self, exp: Experiment, source: PipelineSource, server: Server, ws: Workspace,
                 note: Callable[[str], None] = lambda message: None,
                 on_start: Callable[[int, object], None] = lambda number, candidate: None,
                 worker: Worker | None = None):
        check_supported(exp)
        self.exp, self.source, self.server, self.ws = exp, source, server, ws
        self.on_start, self.worker = on_start, worker
        self.spaces = spaces_of(exp, source)
        self.ladder = concurrency_ladder(exp)
        self.guard = PipelineGuard(source, exp.accuracy.max_cer, exp.accuracy.max_rel_error)
        self.workdir = ws.root / "pipeline"
        if source.reference is None:
            # A user's repository: its own outputs, as written, are what every candidate must give.
            note("taking the reference outputs from the repository as given")
            deploy(server, source, as_given(exp, source, 1), self.workdir)
            self.guard.take_reference(server.grpc_url)

    def sampled_within(self) -> dict[str, tuple]:
        """The params whose as-given values were added to their choices, with the values the
        experiment listed: the only ones a sampled trial may take (tuner.sampling)."""
        listed = space.param_choices(listed_spaces(self.exp, self.source), self.exp.space.concurrency)
        return sampling.added_values(listed, space.param_choices(self.spaces, self.ladder))

    def _suggest(self, trial: optuna.Trial) -> space.PipelineCandidate:
        levels = [] if self.exp.measure.ramps else self.ladder  # none asked: the ramp finds the concurrency
        return space.suggest(trial, self.spaces, levels)

    def _run(self, trial: optuna.Trial, candidate: space.PipelineCandidate) -> tuple[float, float]:
        if not self.server.is_alive():
            trial.set_user_attr("server_restarted", True)
        models, load_s = deploy(self.server, self.source, candidate, self.workdir)
        trial.set_user_attr("configs", {p.name: p.config_pbtxt for p in models})
        trial.set_user_attr("load_s", load_s)

        started = time.monotonic()
        verdict = self.guard.check(self.server.grpc_url,
                                   {name: dict(s.parameters) for name, s in candidate.steps.items()})
        trial.set_user_attr("first_request_ms", round((time.monotonic() - started) * 1000, 1))
        trial.set_user_attr("accuracy", verdict)
        if not verdict["ok"]:
            failing = [f"{name} {o['metric']} {o['value']:.4g} > {o['limit']:g}" for name, o in verdict["outputs"].items()
                       if o.get("limit") is not None and o["value"] > o["limit"]]
            raise Rejected(verdict | {"reason": "; ".join(failing) or "outputs differ from the reference"})

        result, shares = self._load_test(trial, candidate)
        if result.curve is not None:
            trial.set_user_attr("candidate", replace(candidate, concurrency=result.measurement.concurrency).as_dict())
        trial.set_user_attr("step_shares", shares.get(result.measurement.concurrency, {}))
        return record.measured(trial, result, self.exp)

    def _load_test(self, trial: optuna.Trial, candidate: space.PipelineCandidate):
        """The single-model load test on the top model, with each run's per-step figures kept."""
        csv = lambda suffix: self.ws.csv(trial.number, suffix)  # noqa: E731
        perf = perf_runner(self.source.repository.top, self.server.grpc_url, self.server.metrics_url,
                           self.exp.measure, self.source.input_data, csv)
        shares: dict[int, dict] = {}

        def perf_with_steps(level: float, suffix: str) -> PerfRun:
            run = perf(level, suffix)
            shares[int(level)] = step_shares(csv(f"c{level:g}{suffix}"), int(level))
            return run

        best = record.best_throughput(trial.study, self.exp.max_p99_ms) if self.exp.measure.confirm_best else None
        floor = max((ramp.batching_floor(s.instances, s.max_batch_size, s.dynamic_batching)
                     for s in candidate.steps.values()), default=1)
        return load_test(perf_with_steps, self.exp.measure, candidate.concurrency, self.ladder, floor,
                         self.exp.max_p99_ms, best), shares

    def verify_measure(self, study: optuna.Study) -> Callable[[int, int], dict]:
        """The verification stage's measurement of one finalist (tuner.verification.run): the
        whole pipeline reloaded from scratch, then perf_analyzer at the concurrency its trial found."""

        def measure(number: int, round_number: int) -> dict:
            attrs = study.trials[number].user_attrs
            candidate = space.PipelineCandidate.from_dict(attrs["candidate"])
            deploy(self.server, self.source, candidate, self.workdir, reload=True)
            path = lambda suffix: self.ws.root / "verify" / f"r{round_number}_t{number}_{suffix}.csv"  # noqa: E731

            def perf_at(spec):
                return perf_runner(self.source.repository.top, self.server.grpc_url, self.server.metrics_url,
                                   spec, self.source.input_data, path)

            warm_up(perf_at, candidate.concurrency, self.exp.verify.warmup_s)
            run = perf_at(self.exp.measure)(candidate.concurrency, "")
            return {"throughput": run.measurement.throughput, "p99_ms": run.measurement.p99_ms,
                    "p50_ms": run.measurement.p50_ms, "command": run.command, "unstable": run.unstable,
                    "step_shares": step_shares(path(f"c{candidate.concurrency:g}"), candidate.concurrency)}

        return measure


def step_shares(csv_path: Path, level: int) -> dict:
    """Each step's queue and compute time and share of the pipeline's, from the report
    perf_analyzer printed for the run whose CSV is `csv_path` ({} when it holds none)."""
    report = perf_analyzer.report_path(csv_path)
    if not report.exists():
        return {}
    try:
        return composing.step_shares(report.read_text(), level=level)
    except composing.ComposingStatsMissing:
        return {}



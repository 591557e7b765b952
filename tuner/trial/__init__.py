"""One trial as a pipeline of small stages with plain data between them:

    prepare artifact -> render config -> deploy + cold start -> accuracy guard -> load test -> record

Each stage is a module of this package (artifact, tuner.render, deploy, guard, loadtest) that can be
tested without a server; `TrialRunner` runs them in order for an Optuna trial and records what each
returned as the trial's attributes (record.py), so the study alone holds everything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import optuna

from tuner import backends, sampling
from tuner.candidate import Candidate, runtime_key
from tuner.errors import TrialError, TunerError
from tuner.experiment import Experiment
from tuner.measure import ramp
from tuner.measure.perf_analyzer import Hung
from tuner.model_source import ModelSource
from tuner.render import render
from tuner.server import Server
from tuner.knobs import KNOBS
from tuner.space import suggest, widen_for_baseline
from tuner.trial import record
from tuner.trial.artifact import prepare
from tuner.trial.deploy import deploy, package
from tuner.trial.guard import AccuracyGuard, Rejected
from tuner.trial.loadtest import load_test, perf_runner
from tuner.study import give_back_reason
from tuner.workers import Worker
from tuner.workspace import Sample, Workspace

__all__ = ["TrialObjective", "TrialRunner", "usable_runtimes"]


def usable_runtimes(exp: Experiment, source: ModelSource, server_backends: tuple[str, ...]
                    ) -> tuple[list[str], dict[str, str]]:
    """The "backend:precision" keys this server and machine can run for this model (the baseline's
    always among them), and why each other requested one is skipped."""
    usable, skipped = backends.choices(exp.space.backends, exp.space.precisions, server_backends)
    if source.torch_module is None:
        skipped |= {runtime_key(b, p): backends.pytorch.NEEDS_DEFINITION for b, p in usable if b == "pytorch"}
        usable = [(b, p) for b, p in usable if b != "pytorch"]
    return sorted({exp.baseline_runtime, *(runtime_key(b, p) for b, p in usable)}), skipped


class TrialObjective:
    """What every trial does around its own stages (an Optuna objective): give back a trial beyond
    the study's budget, reuse the measurement of identical params, record the candidate, retry an
    infrastructure fault once, and turn every failure into a recorded reason. Subclasses say how a
    candidate is suggested (`_suggest`) and measured (`_run`); `server`, `exp`, `worker` and
    `on_start` are theirs to set."""

    exp: Experiment
    server: Server
    worker: Worker | None
    on_start: Callable[[int, object], None]

    def _suggest_in_study(self, trial: optuna.Trial):
        try:
            return self._suggest(trial)
        except ValueError as exc:
            if "dynamic value space" not in str(exc):
                raise
            # The study's earlier trials chose from other values (the experiment's space or
            # steps, or the runtimes usable here, changed): Optuna cannot mix them.
            raise TunerError(f"study {trial.study.study_name!r} was searched over other values than this "
                             f"search offers (its space, its steps or the runtimes usable here changed); use "
                             f"--study NEW_NAME, or --fresh to start this study again") from None

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        reason = give_back_reason(trial.study, trial.number, self.exp.trials)
        if reason is not None:
            # Another worker took this part of the budget between our look and our ask.
            trial.set_user_attr("surplus", True)
            record.failed(trial, f"not measured: {reason}", "surplus")
            raise TrialError(reason)
        for key, value in (self.worker.trial_attrs if self.worker else {}).items():
            trial.set_user_attr(key, value)
        candidate = self._suggest_in_study(trial)
        trial.set_user_attr("candidate", candidate.as_dict())
        self.on_start(trial.number, candidate)
        previous = record.same_params(trial.study, trial.params)
        if previous is not None:
            # Same deployment and load as an earlier trial: reuse its measurement instead of
            # spending minutes on it again; the trial says where its figures come from.
            return record.reuse(trial, previous, self.exp)
        for attempt in (1, 2):
            try:
                return self._run(trial, candidate)
            except Rejected as exc:
                record.rejected(trial, exc.verdict)
                # PRUNED rather than FAIL: TPE counts pruned trials as worse than every completed
                # one and steers away from the runtime, where it would ignore a failed one.
                raise optuna.TrialPruned(str(exc)) from None
            except TrialError as exc:
                cause = self._infrastructure(exc)
                if cause is not None and attempt == 1:
                    # The server or the load generator failed, not the candidate: once more.
                    trial.set_user_attr("retried", f"{cause}: {exc}")
                    continue
                record.failed(trial, str(exc), cause or "candidate")
                raise
            except TunerError:  # the user's input or machine: stop the search with its one line
                raise
            except Exception as exc:  # a fault in a stage itself: this trial fails, the study goes on
                message = f"{type(exc).__name__}: {exc}".splitlines()[0]
                record.failed(trial, message, "internal")
                raise TrialError(message) from exc
        raise AssertionError("unreachable")

    def _suggest(self, trial: optuna.Trial):
        raise NotImplementedError

    def _run(self, trial: optuna.Trial, candidate) -> tuple[float, float]:
        raise NotImplementedError

    def _infrastructure(self, exc: TrialError) -> str | None:
        """Which infrastructure fault caused a failure: the server died, or perf_analyzer hung."""
        if not self.server.is_alive():
            return "server died"
        if isinstance(exc, Hung):
            return "perf_analyzer hung"
        return None


class TrialRunner(TrialObjective):
    """Measures one candidate per call (an Optuna objective) on the running server."""

    def __init__(self, exp: Experiment, source: ModelSource, server: Server, ws: Workspace, samples: list[Sample],
                 note: Callable[[str], None] = lambda message: None,
                 on_start: Callable[[int, Candidate], None] = lambda number, candidate: None,
                 worker: Worker | None = None):
        """`server` is running; `note` hears which requested runtimes it cannot run and why,
        `on_start` each trial's candidate as it starts; each trial records `worker`, where it was
        measured."""
        self.exp, self.source, self.server, self.ws, self.samples = exp, source, server, ws, samples
        self.on_start, self.worker = on_start, worker
        # A server with a runtime's own Triton backend gets its native config; the bundled one
        # has only the python backend, which serves the adapters.
        self.server_backends = tuple(server.backends())
        self.runtimes, skipped = usable_runtimes(exp, source, self.server_backends)
        for key, reason in skipped.items():
            note(f"skipping {key}: {reason}")
        self.space = widen_for_baseline(exp.space, exp.baseline_concurrency, source.signature.batched,
                                        exp.baseline_runtime)
        self.guard = AccuracyGuard(source, exp.accuracy.spec(), samples[: exp.accuracy.samples])
        self._loaded_config: str | None = None

    def sampled_within(self) -> dict[str, tuple]:
        """The knobs to which Triton's default added values, with the values the experiment
        listed: the only ones a sampled trial may take (tuner.sampling)."""
        names = [knob.name for knob in KNOBS]
        return sampling.added_values({n: getattr(self.exp.space, n) for n in names},
                                     {n: getattr(self.space, n) for n in names})

    def _suggest(self, trial: optuna.Trial) -> Candidate:
        return suggest(trial, self.space, self.source.signature.batched, self.runtimes,
                       sample_concurrency=not self.exp.measure.ramps, load=self.exp.measure.load)

    def _run(self, trial: optuna.Trial, candidate: Candidate) -> tuple[float, float]:
        known = self.guard.known_failure(candidate)
        if known is not None:
            raise Rejected(known)
        if not self.server.is_alive():
            trial.set_user_attr("server_restarted", True)
            self.server.start()
            self._loaded_config = None

        form = backends.serving_form(backends.get(candidate.backend), candidate.precision, self.server_backends)
        artifact = prepare(self.source, self.exp, candidate, self.samples, form)
        record.artifact(trial, artifact)
        config = render(form, self.source.name, self.source.signature, candidate, self.samples[0],
                        self.source.ragged_outputs)
        trial.set_user_attr("config_pbtxt", config)
        if config == self._loaded_config:
            # Triton keeps a model whose config is unchanged (only the client load differs):
            # this trial's load and first request are no cold start.
            trial.set_user_attr("config_unchanged", True)
        deployed = deploy(self.server, self.source, package(self.source.name, config, artifact.files,
                                                             self.ws.warmup_dir), self.samples[0])
        self._loaded_config = config
        record.deployed(trial, deployed)

        verdict = self.guard.check(candidate, self.server.grpc_url)
        if verdict is not None:
            trial.set_user_attr("accuracy", verdict)

        result = self._load_test(trial, candidate)
        if result.curve is not None:
            found = result.measurement
            trial.set_user_attr("candidate", replace(candidate, concurrency=found.concurrency,
                                                     request_rate=round(found.request_rate)).as_dict())
        return record.measured(trial, result, self.exp)

    def _load_test(self, trial: optuna.Trial, candidate: Candidate):
        spec = self.exp.measure
        perf = perf_runner(self.source.name, self.server.grpc_url, self.server.metrics_url, spec,
                           self.ws.input_data, lambda suffix: self.ws.csv(trial.number, suffix))
        best = record.best_throughput(trial.study, self.exp.max_p99_ms) if spec.confirm_best else None
        if spec.load == "request_rate":  # an offered rate does not wait for batches to fill: no floor
            return load_test(perf, spec, candidate.request_rate, self.space.request_rate, 0, self.exp.max_p99_ms, best)
        floor = ramp.batching_floor(candidate.instances, candidate.max_batch_size, candidate.dynamic_batching)
        return load_test(perf, spec, candidate.concurrency, self.space.concurrency, floor, self.exp.max_p99_ms, best)

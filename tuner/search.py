"""The Optuna loop: ask for a candidate, deploy it, measure it, tell the study.

Every trial stores everything needed to read it back without this process: its candidate,
rendered config, measurement, timings, the perf_analyzer command, and on failure the reason.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import optuna

from tuner import accuracy, backends, client, model_source, zoo
from tuner.errors import TrialError, TunerError
from tuner.experiment import Experiment
from tuner.measure import perf_analyzer, ramp
from tuner.measure.metrics import MetricsSampler
from tuner.model_source import ModelSource
from tuner.render import render
from tuner.server import ModelPackage, Server
from tuner.server.launch import make_server
from tuner.space import (REFERENCE_RUNTIME, Candidate, runtime_key, strong_first_params, suggest,
                         triton_default_params, widen_for_baseline)

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)


class Reporter(Protocol):
    def note(self, message: str) -> None: ...
    def search_started(self, study: optuna.Study, total: int, done: int) -> None: ...
    def trial_started(self, number: int, candidate: Candidate) -> None: ...
    def trial_finished(self, trial: optuna.trial.FrozenTrial) -> None: ...


@dataclass(frozen=True)
class Workspace:
    """Files of one study: the model repository the server reads, logs, load inputs."""

    root: Path

    @property
    def repository(self) -> Path:
        return self.root / "repository"

    @property
    def server_log(self) -> Path:
        return self.root / "server.log"

    @property
    def input_data(self) -> Path:
        return self.root / "perf_inputs.json"

    @property
    def warmup_dir(self) -> Path:
        return self.root / "warmup"

    def csv(self, number: int, suffix: str = "") -> Path:
        return self.root / "perf" / f"trial_{number:04d}{'_' + suffix if suffix else ''}.csv"


def open_study(exp: Experiment, study_name: str, create: bool = True) -> optuna.Study:
    """Open (or create) the study; storage problems become one clear line."""
    url = exp.storage_url
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    sampler = optuna.samplers.TPESampler(
        seed=exp.seed,
        multivariate=True,
        group=True,  # the batching knobs exist only when dynamic batching is on
        # Triton's default and the strong first shapes count among these: a few random trials
        # more, then TPE. Searches are short (a ninth of a sweep), so model-guided steps pay.
        n_startup_trials=max(3, min(6, exp.trials // 3)),
    )
    try:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.RDBStorage(url, heartbeat_interval=10, grace_period=30)
        if create:
            return optuna.create_study(study_name=study_name, storage=storage, sampler=sampler,
                                       directions=["maximize", "minimize"], load_if_exists=True)
        return optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
    except KeyError:
        raise TunerError(f"no study named {study_name!r} in {url}; `tuner search` creates it") from None
    except Exception as exc:  # sqlalchemy errors: bad URL, missing driver, unreachable database
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TunerError(f"cannot open study storage {url!r}: {first}") from None


def _package(source: ModelSource, ws: Workspace, config: str, files: dict[str, Path]) -> ModelPackage:
    warmup = {f"warmup/{f.name}": f for f in ws.warmup_dir.iterdir()}
    return ModelPackage(source.name, config, files | warmup)


def load_samples(source: ModelSource, exp: Experiment) -> list[dict[str, np.ndarray]]:
    """The study's fixed sample inputs (seeded): perf_analyzer's data; the first one warms up."""
    return source.sample_inputs(np.random.default_rng(exp.seed or 0), exp.measure.samples)


def calibration_samples(source: ModelSource, exp: Experiment, precision: str) -> list[dict[str, np.ndarray]]:
    """int8 calibration inputs, from their own seed so they are not the accuracy-check inputs."""
    if precision != "int8":
        return []
    return source.sample_inputs(np.random.default_rng((exp.seed or 0) + 1), exp.accuracy.calibration_samples)


def prepare_artifact(source: ModelSource, exp: Experiment, candidate: Candidate) -> Path:
    """The candidate's model file(s) for its runtime and precision (cached by content)."""
    return backends.get(candidate.backend).prepare(
        source.onnx_path, candidate.precision, exp.results_dir / "cache" / "artifacts",
        calibration_samples(source, exp, candidate.precision), max_batch_size=max(exp.space.max_batch_size),
        torch_module=source.torch_module)


def write_warmup_files(folder: Path, sample: dict[str, np.ndarray]) -> None:
    """model_warmup's input_data_file per input: the raw bytes of one request's tensor."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in sample.items():
        (folder / name).write_bytes(np.ascontiguousarray(value).tobytes())


def _prepare(source: ModelSource, ws: Workspace, exp: Experiment) -> list[dict[str, np.ndarray]]:
    """Write the load inputs and the warmup files (from the first sample); return the samples."""
    samples = load_samples(source, exp)
    perf_analyzer.write_input_data(ws.input_data, source.signature, samples)
    write_warmup_files(ws.warmup_dir, samples[0])
    return samples


def _same_params(study: optuna.Study, params: dict) -> optuna.trial.FrozenTrial | None:
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if t.params == params and "measurement" in t.user_attrs:
            return t
    return None


class Objective:
    """Measures one candidate per call on the running server: prepare its model artifact, deploy
    it, check its accuracy against the reference, then load-test it."""

    def __init__(self, exp: Experiment, source: ModelSource, server: Server, ws: Workspace,
                 samples: list[dict[str, np.ndarray]], reporter: Reporter, server_backends: tuple[str, ...]):
        self.exp, self.source, self.server, self.ws = exp, source, server, ws
        self.sample, self.reporter = samples[0], reporter  # warms up and times the first request
        self.server_backends = server_backends
        self.space = widen_for_baseline(exp.space, exp.baseline_concurrency, source.signature.batched)
        usable, skipped = backends.choices(self.space.backends, self.space.precisions, server_backends)
        if source.torch_module is None:
            skipped |= {runtime_key(b, p): backends.pytorch.NEEDS_DEFINITION for b, p in usable if b == "pytorch"}
            usable = [(b, p) for b, p in usable if b != "pytorch"]
        for key, reason in skipped.items():
            reporter.note(f"skipping {key}: {reason}")
        self.runtimes = sorted({exp.baseline_runtime, *(runtime_key(b, p) for b, p in usable)})
        self.accuracy_spec = exp.accuracy.spec()
        self.accuracy_samples = samples[: exp.accuracy.samples]
        self._reference: list[dict[str, np.ndarray]] | None = None
        self._verdicts: dict[str, dict] = {}  # runtime key -> accuracy report, checked once per search
        self._loaded_config: str | None = None

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        candidate = suggest(trial, self.space, self.source.signature.batched, self.runtimes,
                            sample_concurrency=not self.exp.measure.ramps)
        trial.set_user_attr("candidate", candidate.as_dict())
        self.reporter.trial_started(trial.number, candidate)
        previous = _same_params(trial.study, trial.params)
        if previous is not None:
            # Same deployment and load as an earlier trial: reuse its measurement instead of
            # spending minutes on it again; the trial says where its figures come from.
            for key in ("measurement", "config_pbtxt", "perf_analyzer_cmd", "accuracy", "server_metrics",
                        "candidate", "curve", "confirm"):
                if key in previous.user_attrs:
                    trial.set_user_attr(key, previous.user_attrs[key])
            trial.set_user_attr("repeat_of", previous.number)
            self._constrain(trial, previous.values[1],
                            previous.user_attrs.get("server_metrics", {}).get("gpu_memory_gb"))
            return tuple(previous.values)
        try:
            return self._measure(trial, candidate)
        except TrialError as exc:
            trial.set_user_attr("error", str(exc))
            raise

    def _measure(self, trial: optuna.Trial, candidate: Candidate) -> tuple[float, float]:
        key = runtime_key(candidate.backend, candidate.precision)
        if key in self._verdicts and not self._verdicts[key]["passed"]:
            self._reject(trial, self._verdicts[key])
        if not self.server.is_alive():
            trial.set_user_attr("server_restarted", True)
            self.server.start()
        self._deploy(trial, candidate)
        if key != REFERENCE_RUNTIME:  # every other runtime and precision is checked against it
            self._check_accuracy(trial, key)
        return self._load_test(trial, candidate)

    def _deploy(self, trial: optuna.Trial, candidate: Candidate) -> None:
        """Convert the model for the candidate's runtime, render its config, load it, time the cold start."""
        backend = backends.get(candidate.backend)
        name, sig = self.source.name, self.source.signature
        started = time.monotonic()
        artifact = prepare_artifact(self.source, self.exp, candidate)
        trial.set_user_attr("prepare_s", round(time.monotonic() - started, 3))
        trial.set_user_attr("artifact", backends.artifact_info(artifact))
        form = backends.serving_form(backend, candidate.precision, self.server_backends)
        files = backend.adapter_files(artifact) if form == "adapter" else backend.native_files(artifact)
        config = render(form, name, sig, candidate, self.sample, self.source.ragged_outputs)
        trial.set_user_attr("config_pbtxt", config)

        if config == self._loaded_config:
            # Triton keeps a model whose config is unchanged (only the client load differs):
            # this trial's load and first request are no cold start.
            trial.set_user_attr("config_unchanged", True)
        started = time.monotonic()
        self.server.load(_package(self.source, self.ws, config, files))
        loaded = time.monotonic()
        self._loaded_config = config
        try:
            client.infer(self.server.grpc_url, name, sig, self.sample, batched=sig.batched)
        except Exception as exc:
            raise TrialError(f"first request failed: {exc}".splitlines()[0]) from None
        trial.set_user_attr("load_s", round(loaded - started, 3))
        trial.set_user_attr("first_request_ms", round((time.monotonic() - loaded) * 1000, 2))

    def _check_accuracy(self, trial: optuna.Trial, key: str) -> None:
        """Outputs on the fixed samples against fp32 ONNX Runtime; a failing runtime never gets measured."""
        if key not in self._verdicts:
            if self._reference is None:
                self._reference = accuracy.reference_outputs(self.source.onnx_path, self.accuracy_samples)
            sig = self.source.signature
            outputs = [client.infer(self.server.grpc_url, self.source.name, sig, s, batched=sig.batched)
                       for s in self.accuracy_samples]
            self._verdicts[key] = accuracy.check(self._reference, outputs, self.accuracy_spec).as_dict()
        verdict = self._verdicts[key]
        trial.set_user_attr("accuracy", verdict)
        if not verdict["passed"]:
            self._reject(trial, verdict)

    def _reject(self, trial: optuna.Trial, verdict: dict) -> None:
        """An inaccurate candidate is never measured and never best. It ends PRUNED rather than
        FAIL: TPE counts pruned trials as worse than every completed one and steers away from
        the runtime, where it would ignore a failed trial and keep proposing it."""
        trial.set_user_attr("accuracy", verdict)
        trial.set_user_attr("rejected", verdict["reason"])
        trial.set_user_attr("error", f"accuracy check failed: {verdict['reason']}")
        raise optuna.TrialPruned(f"accuracy check failed: {verdict['reason']}")

    def _load_test(self, trial: optuna.Trial, candidate: Candidate) -> tuple[float, float]:
        """perf_analyzer at the candidate's concurrency, or up a concurrency ramp on this one load;
        a new best is measured once more and stored as the mean of both runs."""
        started = time.monotonic()
        spec = self.exp.measure
        if spec.ramps:
            measured: dict[int, tuple] = {}

            def measure_at(concurrency: int) -> perf_analyzer.Measurement:
                measured[concurrency] = self._perf(trial, concurrency)
                return measured[concurrency][0]

            floor = ramp.batching_floor(candidate.instances, candidate.max_batch_size, candidate.dynamic_batching)
            curve = ramp.ramp(measure_at, self.space.concurrency, self.exp.max_p99_ms, spec.ramp_min_gain, floor)
            trial.set_user_attr("curve", [p.as_dict() for p in curve])
            measurement = ramp.pick(curve, self.exp.max_p99_ms)
            candidate = replace(candidate, concurrency=measurement.concurrency)
            trial.set_user_attr("candidate", candidate.as_dict())
            metrics = measured[measurement.concurrency][1]
        else:
            measurement, metrics = self._perf(trial, candidate.concurrency)
        if spec.confirm_best and self._beats_best(trial.study, measurement):
            again, _ = self._perf(trial, measurement.concurrency, suffix="confirm")
            trial.set_user_attr("confirm", {"first": measurement.throughput, "again": again.throughput})
            measurement = ramp.mean([measurement, again])
        trial.set_user_attr("server_metrics", metrics.as_dict())
        trial.set_user_attr("measure_s", round(time.monotonic() - started, 3))
        trial.set_user_attr("measurement", measurement.as_dict())
        self._constrain(trial, measurement.p99_ms, metrics.gpu_memory_gb)
        return measurement.throughput, measurement.p99_ms

    def _beats_best(self, study: optuna.Study, measurement: perf_analyzer.Measurement) -> bool:
        """Would this measurement be the study's new best (within the SLA)? One noisy window can
        look 10 % better than the configuration is; such a point is measured again."""
        if self.exp.max_p99_ms is not None and measurement.p99_ms > self.exp.max_p99_ms:
            return False
        best = 0.0
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if self.exp.max_p99_ms is None or t.values[1] <= self.exp.max_p99_ms:
                best = max(best, t.values[0])
        return measurement.throughput > best

    def _perf(self, trial: optuna.Trial, concurrency: int, suffix: str = ""):
        """One perf_analyzer run at `concurrency`, with server metrics sampled meanwhile."""
        spec = self.exp.measure
        csv_path = self.ws.csv(trial.number, f"c{concurrency}{suffix}")
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = perf_analyzer.command(self.source.name, self.server.grpc_url, concurrency, spec, csv_path,
                                    self.ws.input_data)
        trial.set_user_attr("perf_analyzer_cmd", perf_analyzer.as_shell(cmd))
        sampler = MetricsSampler(self.server.metrics_url)
        try:
            with sampler:
                measurement = perf_analyzer.measure(cmd, csv_path, spec.timeout_s)
        except (perf_analyzer.UnstableMeasurement, perf_analyzer.WindowTooShort) as exc:
            # Keep the candidate rather than lose it to noise or to requests slower than a window:
            # three more windows (4x longer if none completed), no stability requirement, and the
            # trial is flagged so its figures are read with care.
            loose = spec.model_copy(update={"stability_percent": 1000.0, "max_windows": 3})
            if isinstance(exc, perf_analyzer.WindowTooShort):
                loose = loose.model_copy(update={"interval_ms": spec.interval_ms * 4})
            cmd = perf_analyzer.command(self.source.name, self.server.grpc_url, concurrency, loose,
                                        csv_path, self.ws.input_data)
            trial.set_user_attr("perf_analyzer_cmd", perf_analyzer.as_shell(cmd))
            sampler = MetricsSampler(self.server.metrics_url)
            with sampler:
                measurement = perf_analyzer.measure(cmd, csv_path, spec.timeout_s)
            trial.set_user_attr("unstable", True)
        return measurement, sampler.result()

    def _constrain(self, trial: optuna.Trial, p99_ms: float, gpu_memory_gb: float | None) -> None:
        """The SLA and the GPU memory cap as Optuna constraints (feasible when <= 0), so the
        sampler steers toward configurations that meet them."""
        if self.exp.max_p99_ms:
            trial.set_constraint("p99_over_sla_ms", p99_ms - self.exp.max_p99_ms)
        if self.exp.max_gpu_mem_gb and gpu_memory_gb is not None:
            trial.set_constraint("gpu_memory_over_gb", gpu_memory_gb - self.exp.max_gpu_mem_gb)


def enqueue_first_trials(study: optuna.Study, exp: Experiment, batched: bool) -> None:
    """Triton's default config goes first (at each baseline concurrency, or once with a ramp): the
    bar to beat. Then a few shapes that usually win, so that the sampler starts from good ground;
    never more first trials than the study's budget of trials."""
    ramping = exp.measure.ramps
    first = [(triton_default_params(c, batched, exp.baseline_runtime), {"baseline": True})
             for c in ([None] if ramping else exp.baseline_concurrency)]
    space = widen_for_baseline(exp.space, exp.baseline_concurrency, batched)
    middle = sorted(space.concurrency)[len(space.concurrency) // 2]
    first += [(params if ramping else params | {"concurrency": middle}, None)
              for params in strong_first_params(space, batched, exp.baseline_runtime)]
    for params, attrs in first[:max(exp.trials, 1)]:
        study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=True)


def run(exp: Experiment, reporter: Reporter) -> optuna.Study:
    """Search until the study holds `exp.trials` finished trials (or the timeout)."""
    # The reporter tells what happens, failed trials with their reason; Optuna's own log lines
    # (and its tracebacks of caught failures) would repeat it.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if zoo.get(exp.model) is not None:
        reporter.note(f"preparing built-in model {exp.model} (exported to ONNX on first use, then cached)")
    source = model_source.resolve(exp.model, exp.results_dir / "cache")
    study_name = exp.study or source.name
    study = open_study(exp, study_name)
    optuna.storages.fail_stale_trials(study)  # trials of a killed search: failed, not lost
    study.set_user_attr("model", exp.model)
    study.set_user_attr("model_name", source.name)
    study.set_user_attr("max_p99_ms", exp.max_p99_ms)
    study.set_user_attr("experiment", exp.model_dump(mode="json"))
    if not study.trials:
        enqueue_first_trials(study, exp, source.signature.batched)
    done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
    remaining = exp.trials - done
    reporter.search_started(study, exp.trials, done)
    if remaining <= 0:
        return study

    ws = Workspace(exp.results_dir / study_name)
    samples = _prepare(source, ws, exp)
    server = make_server(exp.server, ws.repository, ws.server_log, study_name)
    with server.start():
        # A server with a runtime's own Triton backend gets its native config; the bundled one
        # has only the python backend, which serves the adapters.
        objective = Objective(exp, source, server, ws, samples, reporter, tuple(server.backends()))
        study.optimize(objective, n_trials=remaining, timeout=exp.timeout_s, catch=(TrialError,),
                       callbacks=[lambda _s, t: reporter.trial_finished(t)])
    return study

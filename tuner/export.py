"""Write the chosen trial as a ready Triton model repository plus a report of its figures."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd

from tuner import model_source, results
from tuner.candidate import Candidate
from tuner.errors import TunerError
from tuner.experiment import Experiment
from tuner.render import render
from tuner.trial.artifact import prepare
from tuner.workspace import Workspace, load_samples, write_warmup_files


@dataclass(frozen=True)
class Exported:
    directory: Path
    model_dir: Path
    trial: pd.Series


def choose(study: optuna.Study, max_p99_ms: float | None, trial_number: int | None) -> pd.Series:
    frame = results.trials_frame(study)
    if trial_number is not None:
        rows = results.completed(frame)[lambda f: f.number == trial_number]
        if rows.empty:
            raise TunerError(f"trial {trial_number} of study {study.study_name!r} did not complete; pick a completed one")
        return rows.iloc[0]
    chosen = results.best(frame, max_p99_ms)
    if chosen is None:
        done = results.completed(frame)
        if done.empty:
            raise TunerError(f"study {study.study_name!r} has no completed trial yet; run `tuner search` first")
        raise TunerError(f"no completed trial has p99 <= {max_p99_ms} ms (the lowest measured is "
                         f"{done.p99_ms.min():.1f} ms); raise --max-p99-ms or search longer")
    return chosen


def perf_analyzer_command(model: str, concurrency: int, exp: Experiment, url: str = "127.0.0.1:8001") -> str:
    m = exp.measure
    return (f"perf_analyzer -m {model} -i grpc -u {url} --concurrency-range {concurrency} "
            f"--measurement-mode time_windows --measurement-interval {m.interval_ms} "
            f"--stability-percentage {m.stability_percent} --max-trials {m.max_windows} --percentile 99 "
            f"--input-data perf_inputs.json")


def _report(trial: pd.Series, model: str, form: str, command: str, max_p99_ms: float | None) -> str:
    knobs = "\n".join(f"| {k} | {trial[k]} |" for k in results.KNOBS)
    figures = "\n".join(f"| {k} | {trial[k]:.2f} |" for k in results.FIGURES)
    sla = f"p99 <= {max_p99_ms} ms" if max_p99_ms else "none (highest throughput)"
    return f"""# {model}: exported configuration (trial {int(trial.number)})

Chosen under SLA: {sla}. Config form: {form}.

| knob | value |
|---|---|
{knobs}

Measured by perf_analyzer (latencies in ms, throughput in inferences/s):

| figure | value |
|---|---|
{figures}

Cold start: load {trial.load_s} s, first request {trial.first_request_ms} ms.

Reproduce (serve this folder with `tritonserver --model-repository=<this folder>`, then):

    {command}
"""


def export(study: optuna.Study, out_dir: Path, max_p99_ms: float | None = None, trial_number: int | None = None,
           form: str = "native") -> Exported:
    """Write out_dir/<model>/config.pbtxt and out_dir/<model>/1/<model files>, REPORT.md and the load inputs.

    `native` is the config the stock tritonserver image runs (onnxruntime backend); `adapter` is the
    python-backend form that the bundled tritonserver runs, as measured.
    """
    if form not in ("native", "adapter"):
        raise TunerError(f"--form must be native or adapter, not {form!r}")
    exp = Experiment.model_validate(study.user_attrs["experiment"])
    trial = choose(study, max_p99_ms, trial_number)
    source = model_source.resolve(study.user_attrs["model"], exp.results_dir / "cache")
    candidate = Candidate.from_dict(study.trials[int(trial.number)].user_attrs["candidate"])
    samples = load_samples(source, exp)
    sample = samples[0]
    config = render(form, source.name, source.signature, candidate, sample, source.ragged_outputs)
    files = prepare(source, exp, candidate, samples, form).files

    model_dir = out_dir / source.name
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(config)
    for relative, file in files.items():
        (model_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, model_dir / relative)
    if candidate.warmup:
        write_warmup_files(model_dir / "warmup", sample)
    ws = Workspace(exp.results_dir / study.study_name)
    if ws.input_data.exists():
        shutil.copy2(ws.input_data, out_dir / "perf_inputs.json")
    command = perf_analyzer_command(source.name, candidate.concurrency, exp)
    (out_dir / "REPORT.md").write_text(_report(trial, source.name, form, command, max_p99_ms))
    (out_dir / "trial.json").write_text(json.dumps(study.trials[int(trial.number)].user_attrs, indent=2, default=str))
    return Exported(out_dir, model_dir, trial)

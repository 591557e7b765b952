"""The `tuner` command line: search, export, doctor.

Errors the user can fix print one line and exit with code 2; no traceback.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from tuner import __version__, experiment
from tuner.errors import TunerError
from tuner.storage import mask
from tuner.report import RichReporter, console, results_table, steps_table, summary

app = typer.Typer(
    help="Find the best Triton Inference Server configuration of a model, measured on a real server "
         "under real perf_analyzer load.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(2)


def _sigterm_as_interrupt(*_):
    raise KeyboardInterrupt


@app.callback(invoke_without_command=True)
def main(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        console.print(f"tuner {__version__}")
        raise typer.Exit()


@app.command()
def search(
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Built-in model (wenet: the audio-to-text pipeline, wenet-gpu: the same on GPUs, wenet-encoder: its encoder alone; -tiny forms for quick runs), an .onnx file, a Triton model directory, or a model repository whose top model is an ensemble (DIR) or a BLS model (DIR:MODEL)."),
    experiment_file: Optional[Path] = typer.Option(None, "--experiment", "-e",
                                                   help="Experiment YAML (model, space, SLA, budget); flags override it. "
                                                        "Default: experiments/<model>.yaml when it exists."),
    study: Optional[str] = typer.Option(None, help="Study name (default: the model's name). The same name resumes."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default: sqlite:///results/tuner.db)."),
    trials: Optional[int] = typer.Option(None, help="Total trials in the study, old ones included."),
    timeout: Optional[float] = typer.Option(None, help="Stop starting trials after this many seconds."),
    max_p99_ms: Optional[float] = typer.Option(None, help="SLA: p99 latency limit in ms."),
    max_gpu_mem_gb: Optional[float] = typer.Option(None, help="Constraint: GPU memory in use while measured, in GiB."),
    launch: Optional[str] = typer.Option(None, help="Where candidates run: local, docker or remote (docs/launch-modes.md)."),
    seed: Optional[int] = typer.Option(None, help="Sampler and sample-input seed."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete the study of this name first and start it again "
                                                      "(tuner resumes a study only on its own model and space)."),
    workers: int = typer.Option(1, "--workers", min=1,
                                help="Run N workers on this host, each on its own GPUs (or CPUs) with its own "
                                     "server, sharing the study's budgets (docs/scale-out.md)."),
    price_per_hour: Optional[float] = typer.Option(None, help="This machine's price per hour: each trial gets a "
                                                              "cost per million inferences."),
    objective: Optional[str] = typer.Option(None, help="throughput (default) or cost: the cheapest verified "
                                                       "configuration within the SLA (needs --price-per-hour)."),
    min_throughput: Optional[float] = typer.Option(None, help="Floor: a pick serves at least this many inferences/s."),
) -> None:
    """Search Triton configurations of MODEL on a real tritonserver, measured with perf_analyzer.

    Example: tuner search --model wenet --max-p99-ms 500 --trials 30
    """
    from tuner import fleet, results, search as search_mod
    from tuner.verification import stored as stored_verification

    if experiment_file is None and model is not None:
        default = Path("experiments") / f"{model}.yaml"
        experiment_file = default if default.is_file() else None
    overrides = {"model": model, "study": study, "storage": storage, "trials": trials, "timeout_s": timeout,
                 "max_p99_ms": max_p99_ms, "max_gpu_mem_gb": max_gpu_mem_gb, "seed": seed,
                 "price_per_hour": price_per_hour, "objective": objective, "min_throughput": min_throughput}
    reporter = None
    try:
        exp = experiment.load(experiment_file, overrides, launch)
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
        reporter = RichReporter(exp.max_p99_ms)
        if workers > 1:
            study_obj = _search_with_workers(exp, experiment_file, overrides, launch, workers, fresh, reporter)
        else:
            study_obj = search_mod.run(exp, reporter, fresh=fresh)
        reporter.close()
        if os.environ.get(fleet.WORKER_ENV):
            return  # one worker of `--workers N`: the parent prints the study's results once
        frame = results.trials_frame(study_obj)
        console.print(results_table(frame, exp.max_p99_ms))
        steps = steps_table(study_obj, frame, exp.max_p99_ms, stored_verification(study_obj))
        if steps is not None:
            console.print(steps)
        console.print(summary(frame, exp.max_p99_ms, stored_verification(study_obj)), highlight=False)
        console.print(f"study [bold]{study_obj.study_name}[/] in {mask(exp.storage_url)}; "
                      f"export with: tuner export --study {study_obj.study_name} --out exported/", highlight=False)
    except TunerError as exc:
        if reporter:
            reporter.close()
        _fail(str(exc))
    except KeyboardInterrupt:
        if reporter:
            reporter.close()
        console.print("[yellow]interrupted[/]: the server is stopped; finished trials are kept in the study. "
                      "Run the same command again to resume.")
        raise typer.Exit(130)


_FLAGS = {"model": "--model", "study": "--study", "storage": "--storage", "trials": "--trials",
          "timeout_s": "--timeout", "max_p99_ms": "--max-p99-ms", "max_gpu_mem_gb": "--max-gpu-mem-gb",
          "seed": "--seed", "price_per_hour": "--price-per-hour", "objective": "--objective",
          "min_throughput": "--min-throughput"}


def _search_with_workers(exp, experiment_file: Optional[Path], overrides: dict, launch: Optional[str], count: int,
                         fresh: bool, reporter):
    """Prepare the study once, then run `count` workers of it on this host (tuner.fleet)."""
    from tuner import fleet, search as search_mod
    from tuner.study import open_study

    shares = fleet.host_shares(count)
    source = search_mod.resolve_source(exp, reporter)
    study_name = exp.study or source.name
    search_mod.prepare_study(exp, source, study_name, reporter, fresh)
    args = [flag for key, flag in _FLAGS.items() if overrides.get(key) is not None and key != "study"
            for flag in (flag, str(overrides[key]))] + ["--study", study_name]
    args += ["--experiment", str(experiment_file)] if experiment_file is not None else []
    args += ["--launch", launch] if launch is not None else []
    code = fleet.run_workers(args, shares, reporter.note)
    if code != 0:
        raise TunerError(f"a worker ended with exit code {code} (its lines above, prefixed [wN]); the study keeps "
                         "every finished trial: run the same command again to resume")
    return open_study(exp, study_name, create=False)


@app.command()
def export(
    study: str = typer.Option(..., help="Study to export from."),
    out: Path = typer.Option(..., help="Folder to write the model repository into."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default: sqlite:///results/tuner.db)."),
    max_p99_ms: Optional[float] = typer.Option(None, help="SLA in ms (default: the study's): the verified winner "
                                                          "under it, else the best single draw within it."),
    trial: Optional[int] = typer.Option(None, help="Export this trial instead of the best."),
    form: str = typer.Option("measured", help="measured: the form the trial was measured in (the python-backend "
                                              "adapter on the bundled tritonserver); native: the stock Triton "
                                              "image's backend config; adapter: the python-backend form."),
    html: bool = typer.Option(True, help="Write REPORT.html (its charts need plotly; --no-html where only the "
                                         "server's tools are, as on a GPU machine)."),
) -> None:
    """Write the best configuration as a Triton model repository: OUT/<model>/config.pbtxt and its
    model files, with REPORT.md and REPORT.html (verified figures, the perf_analyzer command that
    reproduces them) and tuner-claim.json, which `tuner verify OUT` checks.
    """
    from tuner.export import export as export_study
    from tuner.study import open_study
    from tuner.verification.stats import figure_text

    try:
        if max_p99_ms is not None and max_p99_ms <= 0:
            raise TunerError("--max-p99-ms must be a positive number of milliseconds")
        exp = experiment.build({"model": "-", "storage": storage})
        study_obj = open_study(exp, study, create=False)
        exported = export_study(study_obj, out, max_p99_ms, trial, form, html)
    except TunerError as exc:
        _fail(str(exc))
    claim = exported.claim
    figures = claim["figures"]
    t, p = figures["throughput"], figures["p99_ms"]
    if figures["verified"]:
        what = (f"verified {'winner' if figures['winner'] else 'finalist'}: {figure_text(t, 'infer/s')}, "
                f"p99 {figure_text(p, 'ms')}, {figures['rounds']} rounds")
    else:
        what = f"not verified: single draw: {t['median']:.1f} infer/s, p99 {p['median']:.1f} ms"
    measured = "the form it was measured in" if claim["form_measured"] else "[yellow]not measured on this server[/]"
    console.print(f"exported trial {claim['trial']} ({what}) to {escape(str(exported.model_dir))}, "
                  f"form {exported.form} ({measured})", highlight=False)
    for note in exported.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    reports = escape(str(exported.directory / "REPORT.md")) + (" and REPORT.html" if html else "")
    console.print(f"figures in {reports}; the claim in tuner-claim.json; check it with: "
                  f"tuner verify {escape(str(exported.directory))}", highlight=False)


@app.command()
def verify(
    directory: Path = typer.Argument(..., help="A folder `tuner export` wrote (it holds tuner-claim.json)."),
    rounds: int = typer.Option(5, min=1, help="Rounds: each reloads the model and runs perf_analyzer once."),
    tolerance: float = typer.Option(0.07, min=0.0, help="Largest accepted gap between the verified and the "
                                                        "claimed median throughput, as a share (0.07 = 7 %)."),
    url: Optional[str] = typer.Option(None, help="HTTP host:port of a running tritonserver (explicit model-control "
                                                 "mode) to verify on; default: a fresh local one."),
    grpc_url: Optional[str] = typer.Option(None, help="gRPC host:port of that server (perf_analyzer uses it)."),
) -> None:
    """Measure an export again and compare with its claim (tuner-claim.json): exit 0 when the
    verified median throughput is within --tolerance of the claimed one and the SLA is met, else 1.

    Example: tuner verify exported/ --rounds 5
    """
    from tuner.reproduce import reproduce

    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        outcome = reproduce(directory, rounds, tolerance, url, grpc_url,
                            note=lambda message: console.print(message, highlight=False))
    except TunerError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: the server is stopped; nothing was verified.")
        raise typer.Exit(130)
    for line in outcome.lines:
        console.print(line, highlight=False)
    raise typer.Exit(0 if outcome.holds else 1)


@app.command()
def report(
    study: str = typer.Option(..., help="Study to report on."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default: sqlite:///results/tuner.db)."),
    max_p99_ms: Optional[float] = typer.Option(None, help="SLA in ms (default: the study's)."),
) -> None:
    """Print a study's results: best trials, best per backend and precision, tuned against default."""
    from tuner import results
    from tuner.verification import stored as stored_verification
    from tuner.report import runtime_table
    from tuner.study import open_study

    try:
        study_obj = open_study(experiment.build({"model": "-", "storage": storage}), study, create=False)
    except TunerError as exc:
        _fail(str(exc))
    sla = max_p99_ms if max_p99_ms is not None else study_obj.user_attrs.get("max_p99_ms")
    frame = results.trials_frame(study_obj)
    console.print(results_table(frame, sla))
    steps = steps_table(study_obj, frame, sla, stored_verification(study_obj))
    if steps is not None:
        console.print(steps)
    else:
        console.print(runtime_table(frame, sla))
    console.print(summary(frame, sla, stored_verification(study_obj)), highlight=False)


@app.command()
def dashboard(
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default: sqlite:///results/tuner.db)."),
    port: int = typer.Option(8501, help="Port to serve on (bound to 127.0.0.1)."),
    address: str = typer.Option("127.0.0.1", help="Address to bind; keep loopback unless you mean it."),
) -> None:
    """Serve the Streamlit dashboard over the study storage: Pareto front, trials, export."""
    import subprocess
    import sys

    url = storage or experiment.build({"model": "-"}).storage_url
    from tuner.resources import DASHBOARD_APP

    console.print(f"dashboard on http://{address}:{port} reading {mask(url)} (Ctrl-C stops it)", highlight=False)
    # The URL goes in TUNER_STORAGE, not on the command line that any user of the machine can read.
    cmd = [sys.executable, "-m", "streamlit", "run", str(DASHBOARD_APP), "--server.address", address,
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    # Streamlit ends with tuner: on Ctrl-C and SIGTERM subprocess.call kills it (KeyboardInterrupt),
    # and when tuner is killed Linux sends it SIGTERM (parent-death signal).
    from tuner.processes import child_of_ours

    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        child = child_of_ours(cmd, signal.SIGTERM)
        raise typer.Exit(subprocess.call(child.pop("args"), **child, env={**os.environ, "TUNER_STORAGE": url}))
    except KeyboardInterrupt:
        raise typer.Exit(130)


@app.command()
def doctor() -> None:
    """Show what this machine can do: tritonserver, perf_analyzer, Docker, GPUs, runtimes."""
    from tuner.doctor import run_checks

    # SIGTERM stops the server the tritonserver check starts, as Ctrl-C does.
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        checks = run_checks()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        raise typer.Exit(130)
    for c in checks:
        mark = "[green]ok     [/]" if c.ok else "[red]missing[/]"
        console.print(f"{mark} [bold]{c.name}[/]: {c.detail}", highlight=False, soft_wrap=True)
        if not c.ok and c.fix:
            console.print(f"        how to get it: {c.fix}", highlight=False, soft_wrap=True)
    essential = [c for c in checks if c.name in ("tritonserver", "perf_analyzer")]
    if not all(c.ok for c in essential):
        raise typer.Exit(1)

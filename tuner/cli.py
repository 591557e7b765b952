"""The `tuner` command line: search, export, doctor.

Errors the user can fix print one line and exit with code 2; no traceback.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Optional

import typer

from tuner import __version__, experiment
from tuner.errors import TunerError
from tuner.report import RichReporter, console, results_table, summary

app = typer.Typer(
    help="Find the best Triton Inference Server configuration of a model, measured on a real server "
         "under real perf_analyzer load.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
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
                                        help="Built-in model (wenet, wenet-tiny), an .onnx file, or a Triton model directory."),
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
) -> None:
    """Search Triton configurations of MODEL on a real tritonserver, measured with perf_analyzer.

    Example: tuner search --model wenet --max-p99-ms 500 --trials 30
    """
    from tuner import results, search as search_mod

    if experiment_file is None and model is not None:
        default = Path("experiments") / f"{model}.yaml"
        experiment_file = default if default.is_file() else None
    overrides = {"model": model, "study": study, "storage": storage, "trials": trials, "timeout_s": timeout,
                 "max_p99_ms": max_p99_ms, "max_gpu_mem_gb": max_gpu_mem_gb, "seed": seed}
    reporter = None
    try:
        exp = experiment.load(experiment_file, overrides, launch)
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
        reporter = RichReporter(exp.max_p99_ms)
        study_obj = search_mod.run(exp, reporter)
        reporter.close()
        frame = results.trials_frame(study_obj)
        console.print(results_table(frame, exp.max_p99_ms))
        console.print(summary(frame, exp.max_p99_ms), highlight=False)
        console.print(f"study [bold]{study_obj.study_name}[/] in {exp.storage_url}; "
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


@app.command()
def export(
    study: str = typer.Option(..., help="Study to export from."),
    out: Path = typer.Option(..., help="Folder to write the model repository into."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default: sqlite:///results/tuner.db)."),
    max_p99_ms: Optional[float] = typer.Option(None, help="Pick the best trial with p99 under this many ms."),
    trial: Optional[int] = typer.Option(None, help="Export this trial instead of the best."),
    form: str = typer.Option("native", help="native: the stock Triton image's backend config; "
                                            "adapter: the python-backend form the bundled tritonserver runs."),
) -> None:
    """Write the best configuration as a Triton model repository: OUT/<model>/config.pbtxt and
    OUT/<model>/1/model.onnx, with REPORT.md holding its measured figures and the perf_analyzer
    command that reproduces them.
    """
    from tuner.export import export as export_study
    from tuner.study import open_study

    try:
        if max_p99_ms is not None and max_p99_ms <= 0:
            raise TunerError("--max-p99-ms must be a positive number of milliseconds")
        exp = experiment.build({"model": "-", "storage": storage})
        study_obj = open_study(exp, study, create=False)
        exported = export_study(study_obj, out, max_p99_ms, trial, form)
    except TunerError as exc:
        _fail(str(exc))
    t = exported.trial
    console.print(f"exported trial {int(t.number)} ({t.throughput:.1f} infer/s, p99 {t.p99_ms:.1f} ms) "
                  f"to {exported.model_dir}; figures in {exported.directory / 'REPORT.md'}", highlight=False)


@app.command()
def report(
    study: str = typer.Option(..., help="Study to report on."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default: sqlite:///results/tuner.db)."),
    max_p99_ms: Optional[float] = typer.Option(None, help="SLA in ms (default: the study's)."),
) -> None:
    """Print a study's results: best trials, best per backend and precision, tuned against default."""
    from tuner import results
    from tuner.report import runtime_table
    from tuner.study import open_study

    try:
        study_obj = open_study(experiment.build({"model": "-", "storage": storage}), study, create=False)
    except TunerError as exc:
        _fail(str(exc))
    sla = max_p99_ms if max_p99_ms is not None else study_obj.user_attrs.get("max_p99_ms")
    frame = results.trials_frame(study_obj)
    console.print(results_table(frame, sla))
    console.print(runtime_table(frame, sla))
    console.print(summary(frame, sla), highlight=False)


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

    console.print(f"dashboard on http://{address}:{port} reading {url} (Ctrl-C stops it)", highlight=False)
    cmd = [sys.executable, "-m", "streamlit", "run", str(DASHBOARD_APP), "--server.address", address,
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--", "--storage", url]
    try:
        raise typer.Exit(subprocess.call(cmd))
    except KeyboardInterrupt:
        raise typer.Exit(130)


@app.command()
def doctor() -> None:
    """Show what this machine can do: tritonserver, perf_analyzer, Docker, GPUs, runtimes."""
    from tuner.doctor import run_checks

    checks = run_checks()
    for c in checks:
        mark = "[green]ok     [/]" if c.ok else "[red]missing[/]"
        console.print(f"{mark} [bold]{c.name}[/]: {c.detail}", highlight=False, soft_wrap=True)
        if not c.ok and c.fix:
            console.print(f"        how to get it: {c.fix}", highlight=False, soft_wrap=True)
    essential = [c for c in checks if c.name in ("tritonserver", "perf_analyzer")]
    if not all(c.ok for c in essential):
        raise typer.Exit(1)

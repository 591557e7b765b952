"""`tuner verify DIR`: measure an export again and hold it against its claim (DIR/tuner-claim.json).

A fresh tritonserver (or a running one, given its URLs) loads a copy of DIR's model folder, so DIR
is never touched; then `rounds` rounds each unload and reload the model and run perf_analyzer with
the claim's own arguments (and its retry when the windows never agree). The verified figure is the
median of the rounds with its 95 % interval, as the verification stage computes it (stats.interval).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape

from tuner import tools
from tuner.errors import TrialError, TunerError
from tuner.export import CLAIM, CSV, INPUT, MARKER, URL, load_text, with_setting
from tuner.measure import perf_analyzer
from tuner.measure.perf_analyzer import Measurement
from tuner.server import ModelPackage
from tuner.server.local import LocalServer
from tuner.verification.stats import Interval, figure_text, interval


@dataclass(frozen=True)
class Outcome:
    holds: bool  # within the tolerance and the SLA
    lines: list[str]  # the verdict, for the terminal (rich markup)
    throughput: Interval
    p99_ms: Interval
    rounds: list[Measurement]


def read_claim(directory: Path) -> dict:
    """The export's claim, checked enough to run; one-line errors for anything else."""
    if not directory.is_dir():
        raise TunerError(f"{directory} is not a folder; give the folder `tuner export --out` wrote")
    path = directory / CLAIM
    if not path.is_file():
        raise TunerError(f"{directory} is not a tuner export: it has no {CLAIM} (`tuner export` writes one)")
    try:
        claim = json.loads(path.read_text())
        model, model_dir = claim["model"], claim["model_dir"]
        pa = claim["perf_analyzer"]
        for key in ("args", "retry_args"):
            if not (isinstance(pa[key], list) and all(isinstance(a, str) for a in pa[key])):
                raise ValueError(f"perf_analyzer.{key} is not a list of arguments")
        for figure in ("throughput", "p99_ms"):
            if float(claim["figures"][figure]["median"]) <= 0:
                raise ValueError(f"figures.{figure}.median is not positive")
        float(claim["measure"]["timeout_s"])
        claim.setdefault("max_p99_ms", None)
    except (OSError, ValueError, TypeError) as exc:
        raise TunerError(f"{path} is not a valid claim: {exc}".splitlines()[0]) from None
    except KeyError as exc:
        raise TunerError(f"{path} is not a valid claim: it lacks {exc}") from None
    if not isinstance(model_dir, str) or "/" in model_dir or model_dir in ("", ".", ".."):
        raise TunerError(f"{path} is not a valid claim: model_dir {model_dir!r} is not a folder name")
    if not (directory / model_dir / "config.pbtxt").is_file():
        raise TunerError(f"{directory} is not a complete tuner export: {model_dir}/config.pbtxt is missing")
    models = claim.get("models") or []
    if not isinstance(models, list) or any(not isinstance(m, str) or "/" in m or m in ("", ".", "..") for m in models):
        raise TunerError(f"{path} is not a valid claim: models {models!r} are not folder names")
    for name in models:
        if name != model and not (directory / name / "config.pbtxt").is_file():
            raise TunerError(f"{directory} is not a complete tuner export: {name}/config.pbtxt is missing")
    if not isinstance(model, str) or not model:
        raise TunerError(f"{path} is not a valid claim: no model name")
    return claim


def copy_models(directory: Path, claim: dict, repository: Path) -> list[ModelPackage]:
    """The claim's models copied from the export into `repository`, as packages to load: a copy,
    so the server (and anything it writes) never touches the export itself. A pipeline's claim
    names every model of it (composing models first, the top model last)."""
    packages = []
    for name in claim.get("models") or [claim["model"]]:
        folder = repository / name
        shutil.copytree(directory / (claim["model_dir"] if name == claim["model"] else name), folder,
                        ignore=shutil.ignore_patterns(MARKER))
        files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
                 if p.is_file() and p.relative_to(folder).as_posix() != "config.pbtxt"}
        packages.append(ModelPackage(name, (folder / "config.pbtxt").read_text(), files))
    return packages


def input_data_of(directory: Path, claim: dict) -> Path:
    """The export's perf_analyzer input data (perf_inputs.json unless its claim names another)."""
    return directory / claim["perf_analyzer"].get("input_data", "perf_inputs.json")


def copy_inputs(directory: Path, claim: dict, work: Path) -> Path:
    """The export's input data copied into `work`, so that nothing reads or writes the export
    itself; the export's own path when it has none (a model without inputs to send)."""
    source = input_data_of(directory, claim)
    return Path(shutil.copy2(source, work / source.name)) if source.is_file() else source


def fill(args: list[str], url: str, csv: Path, input_data: Path) -> list[str]:
    """A stored perf_analyzer command with this server, CSV file and input data in place."""
    filled = {URL: url, CSV: str(csv), INPUT: str(input_data)}
    cmd = [filled.get(a, a) for a in args]
    if cmd[0] == "perf_analyzer":
        cmd[0] = str(tools.require_perf_analyzer())
    return cmd


def _value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args[:-1] else None


def _longer_windows(args: list[str]) -> list[str]:
    args = list(args)
    if "--measurement-interval" in args[:-1]:
        i = args.index("--measurement-interval") + 1
        args[i] = str(int(float(args[i]) * 4))
    return args


def warm_up(claim: dict, url: str, csv: Path, input_data: Path) -> None:
    """Load the freshly loaded model unmeasured for the claim's warm-up, as its verification did
    (tuner.trial.loadtest.warm_up): the retry's arguments (no stability asked) with three windows
    of a third of it. Nothing when the claim has none; a failure shows in the measured run."""
    seconds = float(claim["measure"].get("warmup_s") or 0)
    if seconds <= 0:
        return
    args = with_setting(claim["perf_analyzer"]["retry_args"], "--measurement-interval",
                       str(max(100, int(seconds * 1000 / 3))))
    try:
        perf_analyzer.measure(fill(args, url, csv, input_data), csv, float(claim["measure"]["timeout_s"]))
    except TrialError:
        pass


def _measure(claim: dict, url: str, csv: Path, input_data: Path) -> tuple[Measurement, bool]:
    """One run with the claim's arguments; a run whose windows never agree (or complete no request)
    is run once more with the retry arguments, as the search and the verification did."""
    pa, timeout = claim["perf_analyzer"], float(claim["measure"]["timeout_s"])
    try:
        return perf_analyzer.measure(fill(pa["args"], url, csv, input_data), csv, timeout), False
    except (perf_analyzer.UnstableMeasurement, perf_analyzer.WindowTooShort) as exc:
        retry = pa["retry_args"]
        if isinstance(exc, perf_analyzer.WindowTooShort) and _value(retry, "--measurement-interval") == \
                _value(pa["args"], "--measurement-interval"):
            retry = _longer_windows(retry)  # no request completed: the retry also needs longer windows
        return perf_analyzer.measure(fill(retry, url, csv, input_data), csv, timeout), True


def reproduce(directory: Path, rounds: int = 5, tolerance: float = 0.07, url: str | None = None,
              grpc_url: str | None = None, note: Callable[[str], None] = lambda message: None) -> Outcome:
    """Measure the export in `directory` again in `rounds` rounds and compare with its claim."""
    if rounds < 1:
        raise TunerError("--rounds must be at least 1")
    if (url is None) != (grpc_url is None):
        raise TunerError("a running server needs both --url (HTTP host:port) and --grpc-url (gRPC host:port)")
    claim = read_claim(directory)
    model = claim["model"]
    input_data = input_data_of(directory, claim)
    if INPUT in claim["perf_analyzer"]["args"] and not input_data.is_file():
        raise TunerError(f"{directory} is not a complete tuner export: {input_data.name} is missing")
    figures = claim["figures"]
    if not claim.get("form_measured", True):
        note(f"[yellow]note:[/] this export's form ({claim.get('form')}) was not measured where the claim was made; "
             f"its figures are of the {claim.get('measured_form')} form")

    with tempfile.TemporaryDirectory(prefix="tuner-verify-") as tmp:
        work = Path(tmp)
        repository = work / "repository"
        packages = copy_models(directory, claim, repository)
        input_data = copy_inputs(directory, claim, work)
        if url is None:
            server = LocalServer(repository, work / "server.log")
            where = "a fresh local tritonserver"
        else:
            from tuner.server.remote import RemoteServer  # tritonclient.http: only for a running server
            server = RemoteServer(url, grpc_url, study="tuner-verify")
            where = f"the tritonserver at {escape(url)}"
        load = load_text(claim) if claim.get("load") else f"concurrency {claim.get('concurrency')}"
        note(f"verifying trial {claim.get('trial')} of study {escape(str(claim.get('study')))} ({escape(model)}, "
             f"form {claim.get('form')}) at {load} on {where}: {rounds} rounds, each a reload and a perf_analyzer run")
        measured: list[Measurement] = []
        failures = 0
        with server:
            while len(measured) < rounds:
                number = len(measured) + 1
                for package in reversed(packages):  # Triton keeps a model whose config is unchanged: a round reloads it
                    server.unload(package.name)
                started = time.monotonic()
                try:
                    for package in packages:
                        server.load(package)
                except TrialError as exc:
                    hint = ("" if claim.get("form_measured", True) else
                            f"; this form ({claim.get('form')}) needs a server with its runtime's own backend")
                    raise TunerError(f"{model} did not load on {where}: {exc}{hint}".splitlines()[0]) from None
                load_s = time.monotonic() - started
                warm_up(claim, server.grpc_url, work / f"warmup{number}.csv", input_data)
                try:
                    m, retried = _measure(claim, server.grpc_url, work / f"round{number}.csv", input_data)
                except TrialError as exc:
                    failures += 1
                    if failures > rounds:
                        raise TunerError(f"perf_analyzer failed {failures} times; the last: {exc}"
                                         .splitlines()[0]) from None
                    note(f"  round {number}: {exc}; repeating the round".splitlines()[0])
                    continue
                measured.append(m)
                retry = ", windows never agreed: retried without a stability requirement" if retried else ""
                note(f"  round {number}/{rounds}: {m.throughput:.1f} infer/s, p99 {m.p99_ms:.2f} ms "
                     f"(load {load_s:.1f} s{retry})")

    throughput = interval([m.throughput for m in measured])
    p99 = interval([m.p99_ms for m in measured])
    claimed_t, claimed_p = figures["throughput"]["median"], figures["p99_ms"]["median"]
    gap = throughput.median / claimed_t - 1
    sla = claim["max_p99_ms"]
    kind = (f"verified, {figures.get('rounds')} rounds" if figures.get("verified") else "not verified: single draw")
    lines = [f"claimed ({kind}): {figure_text(figures['throughput'], 'infer/s')}, "
             f"p99 {figure_text(figures['p99_ms'], 'ms', '.2f')}",
             f"verified here ({len(measured)} rounds, medians with 95 % intervals): {figure_text(throughput, 'infer/s')}, "
             f"p99 {figure_text(p99, 'ms', '.2f')}"]
    reasons = []
    within = abs(gap) <= tolerance
    lines.append(f"throughput: {gap * 100:+.1f} % from the claimed median (tolerance +-{tolerance * 100:.0f} %): "
                 + ("[green]holds[/]" if within else "[red]does not hold[/]"))
    if not within:
        reasons.append(f"the verified median throughput {throughput.median:.1f} infer/s is {abs(gap) * 100:.1f} % "
                       f"{'below' if gap < 0 else 'above'} the claimed {claimed_t:.1f} infer/s "
                       f"(tolerance {tolerance * 100:.0f} %)")
    if sla is None:
        lines.append(f"p99: {p99.median:.2f} ms (claimed {claimed_p:.2f} ms); the claim has no SLA")
    else:
        meets = p99.median <= sla
        lines.append(f"p99: {p99.median:.2f} ms against the SLA p99 <= {sla} ms: "
                     + ("[green]met[/]" if meets else "[red]missed[/]"))
        if not meets:
            reasons.append(f"the verified median p99 {p99.median:.2f} ms misses the SLA p99 <= {sla} ms")
    if reasons:
        lines.append("[bold red]the claim does not hold:[/] " + "; ".join(reasons))
    else:
        lines.append("[bold green]the claim holds[/] on this machine")
    return Outcome(not reasons, lines, throughput, p99, measured)

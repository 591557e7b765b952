"""Write the chosen trial as a ready Triton model repository, with what was measured of it:
REPORT.md, REPORT.html and tuner-claim.json (the claim `tuner verify` checks).

By default the export is the verified winner (tuner.verification) in the form it was measured in;
anything else (another form, a study without verification) is exported too, and says so.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import optuna
import pandas as pd

from tuner import __version__, backends, model_source, results, verification, zoo
from tuner.candidate import Candidate, describe, describe_steps
from tuner.cost import cost_per_million
from tuner.errors import TunerError
from tuner.experiment import Experiment
from tuner.render import render
from tuner.trial.artifact import prepare
from tuner.workspace import Workspace, load_samples, write_warmup_files

FORMS = ("measured", "native", "adapter")
CLAIM = "tuner-claim.json"
INPUT_DATA = "perf_inputs.json"
# Placeholders of the claim's perf_analyzer arguments, filled in by whoever runs them.
URL, CSV, INPUT = "{url}", "{csv}", "{input_data}"
# The retry of a run whose windows never agree (tuner.trial.loadtest.perf_runner: no stability
# requirement, three windows; four times longer windows when none completed a request).
LOOSE = {"--stability-percentage": "1000.0", "--max-trials": "3"}


@dataclass(frozen=True)
class Choice:
    """The trial to export, under which SLA, with its verified figures when it has them."""

    trial: pd.Series
    sla: float | None
    verified: dict | None  # the study's verification, when it was made under this SLA
    figures: dict | None  # the chosen trial's verified figures (one of the verification's finalists)
    unverified_because: str | None  # why the figures are a single draw

    @property
    def number(self) -> int:
        return int(self.trial.number)


@dataclass(frozen=True)
class Exported:
    directory: Path
    model_dir: Path
    trial: pd.Series
    form: str = "adapter"
    measured_form: str | None = None
    claim: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what the user must know: not verified, form not measured


def choose(study: optuna.Study, max_p99_ms: float | None, trial_number: int | None) -> Choice:
    """The verified winner under the SLA (`max_p99_ms`, default: the study's); `trial_number`
    picks any completed trial; without a verification for this SLA, the best single draw."""
    frame = results.trials_frame(study)
    done = results.completed(frame)
    sla = max_p99_ms if max_p99_ms is not None else study.user_attrs.get("max_p99_ms")
    found = verification.stored(study)
    verified = found if found is not None and found.get("max_p99_ms") == sla else None
    if trial_number is not None:
        rows = done[done.number == trial_number]
        if rows.empty:
            raise TunerError(f"trial {trial_number} of study {study.study_name!r} did not complete; pick a completed one")
        chosen = rows.iloc[0]
    elif verified is not None and verified["winner"] is not None and (done.number == verified["winner"]).any():
        chosen = done[done.number == verified["winner"]].iloc[0]
    else:
        chosen = results.best(frame, sla)
        if chosen is None:
            if done.empty:
                raise TunerError(f"study {study.study_name!r} has no completed trial yet; run `tuner search` first")
            raise TunerError(f"no completed trial has p99 <= {sla} ms (the lowest measured is "
                             f"{done.p99_ms.min():.1f} ms); raise --max-p99-ms or search longer")
    number = int(chosen.number)
    figures = verified["finalists"].get(number) if verified is not None else None
    why = None
    if figures is None:
        if found is None:
            why = "the study has no verification (a search of this version of tuner ends with one)"
        elif verified is None:
            why = (f"the verification was made for p99 <= {found.get('max_p99_ms')} ms, not "
                   f"{'no SLA' if sla is None else f'p99 <= {sla} ms'}")
        elif verified["winner"] is None and trial_number is None:
            why = "no finalist met the SLA on its verified p99"
        else:
            why = f"trial {number} was not among the verified finalists"
    return Choice(chosen, sla, verified, figures, why)


def measured_form(config_pbtxt: str | None) -> str | None:
    """The serving form a trial was measured in, read from its stored config: a python-backend
    config is the adapter, anything else the runtime's own backend (native)."""
    if not config_pbtxt:
        return None
    return "adapter" if re.search(r'^\s*backend:\s*"python"', config_pbtxt, re.MULTILINE) else "native"


def _with_placeholders(command: str) -> list[str]:
    """A stored perf_analyzer command line as arguments, with the binary's path, the server URL,
    the CSV path and the input data path replaced by placeholders."""
    args = shlex.split(command)
    args[0] = "perf_analyzer"
    for flag, placeholder in (("-u", URL), ("-f", CSV), ("--input-data", INPUT)):
        if flag in args[:-1]:
            args[args.index(flag) + 1] = placeholder
    return args


def with_setting(args: list[str], flag: str, value: str) -> list[str]:
    """The arguments with `flag`'s value replaced (unchanged when the flag is absent)."""
    args = list(args)
    if flag in args[:-1]:
        args[args.index(flag) + 1] = value
    return args


def _loose(args: list[str]) -> bool:
    try:
        return float(args[args.index("--stability-percentage") + 1]) >= float(LOOSE["--stability-percentage"])
    except (ValueError, IndexError):
        return False


def perf_analyzer_args(commands: list[str], exp: Experiment) -> dict:
    """What perf_analyzer ran for the claimed figures (the stored commands of its runs): the
    arguments of a run, and those of the retry a run gets when its windows never agree."""
    m = exp.measure
    runs = [_with_placeholders(c) for c in commands]
    stable = [a for a in runs if not _loose(a)]
    loose = [a for a in runs if _loose(a)]
    args = stable[0] if stable else loose[0]
    if not stable:  # every run needed the retry: the first attempt's arguments are the study's settings
        for flag, value in (("--stability-percentage", m.stability_percent), ("--max-trials", m.max_windows),
                            ("--measurement-interval", m.interval_ms)):
            args = with_setting(args, flag, str(value))
    retry = loose[0] if loose else args
    if not loose:
        for flag, value in LOOSE.items():
            retry = with_setting(retry, flag, value)
    return {"args": args, "retry_args": retry, "runs": len(runs), "runs_retried": len(loose),
            "placeholders": {URL: "the server's gRPC host:port", CSV: "a CSV file perf_analyzer writes",
                             INPUT: f"{INPUT_DATA} of the export"}}


def shell_command(args: list[str]) -> str:
    """The claim's arguments as one command line to copy (placeholders in angle brackets)."""
    shown = {URL: "<url>", CSV: "perf.csv", INPUT: INPUT_DATA}
    return " ".join(shown.get(a, shlex.quote(a)) for a in args)


def _claimed_figures(choice: Choice, attrs: dict) -> dict:
    if choice.figures is not None:
        v = choice.verified  # one round: no interval, no P(best), no paired ratio (stats.Interval)
        paired = v["vs_default"] is not None and v["vs_default"]["low"] is not None
        return {"verified": True, "rounds": v["rounds"], "stopped": v["stopped"],
                "throughput": choice.figures["throughput"], "p99_ms": choice.figures["p99_ms"],
                "meets_sla": choice.figures["meets_sla"], "winner": v["winner"] == choice.number,
                "p_best": v["p_best"] if v["winner"] == choice.number else None,
                "default_trial": v["default"],
                "vs_default": v["vs_default"] if v["winner"] == choice.number and paired else None}
    m = attrs["measurement"]
    confirm = attrs.get("confirm")
    return {"verified": False, "note": f"not verified: single draw ({choice.unverified_because})",
            "runs": 2 if confirm else 1,  # a confirmed best stores the mean of its two runs
            "throughput": {"median": m["throughput"], "low": None, "high": None, "half_width": None},
            "p99_ms": {"median": m["p99_ms"], "low": None, "high": None, "half_width": None}}


def _cost(price_per_hour, throughput: dict) -> dict | None:
    """What a million inferences cost at the claimed throughput (its interval inverted: the high
    throughput is the low cost); None without a price per hour."""
    if price_per_hour is None or pd.isna(price_per_hour):
        return None
    return {"price_per_hour": float(price_per_hour),
            "per_million_inferences": {"median": cost_per_million(throughput["median"], price_per_hour),
                                       "low": cost_per_million(throughput["high"], price_per_hour),
                                       "high": cost_per_million(throughput["low"], price_per_hour)}}


def _measured_on(trial: pd.Series) -> dict | None:
    """The worker, host and hardware the trial was measured on (tuner.workers), when recorded."""
    where = {k: trial.get(k) for k in results.WHERE if isinstance(trial.get(k), str)}
    return where or None


def _load(candidate: dict) -> dict:
    """The load the figures were measured under: a concurrency, or a request rate (open loop)."""
    rate = candidate.get("request_rate")
    if rate:
        return {"load": "request_rate", "concurrency": None, "request_rate": rate}
    return {"load": "concurrency", "concurrency": int(candidate["concurrency"]), "request_rate": None}


def load_text(claim: dict) -> str:
    if claim["load"] == "request_rate":
        return f"request rate {claim['request_rate']} inferences/s (Poisson arrivals)"
    return f"concurrency {claim['concurrency']} (requests in flight)"


def _claim(choice: Choice, study: optuna.Study, exp: Experiment, model: str, form: str, measured: str | None,
           attrs: dict) -> dict:
    if choice.figures is not None:
        commands = [r[choice.number]["command"] for r in choice.verified["rounds_measured"] if choice.number in r]
    else:
        commands = [attrs["perf_analyzer_cmd"]]
    m = exp.measure
    figures = _claimed_figures(choice, attrs)
    return {
        "claim_of": "tuner export", "tuner_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "study": study.study_name, "model": model, "model_dir": model, "trial": choice.number,
        "baseline": bool(choice.trial.baseline),
        "form": form, "measured_form": measured, "form_measured": form == measured,
        **_load(attrs["candidate"]), "max_p99_ms": choice.sla,
        "measure": {"interval_ms": m.interval_ms, "stability_percent": m.stability_percent,
                    "max_windows": m.max_windows, "timeout_s": m.timeout_s,
                    # each verification round loaded the model this long unmeasured first
                    "warmup_s": exp.verify.warmup_s},
        "perf_analyzer": perf_analyzer_args(commands, exp) | {"input_data": INPUT_DATA},
        "figures": figures,
        "cost": _cost(choice.trial.get("price_per_hour"), figures["throughput"]),
        "measured_on": _measured_on(choice.trial),
    }


def _iv(figure: dict, spec: str = ".1f") -> str:
    if figure["low"] is None:
        return f"{figure['median']:{spec}} | one round: none | -"
    return (f"{figure['median']:{spec}} | [{figure['low']:{spec}}, {figure['high']:{spec}}] | "
            f"+-{figure['half_width'] * 100:.1f} %")


def _report(choice: Choice, claim: dict, notes: list[str], attrs: dict, charts: bool = True) -> str:
    trial, model, form = choice.trial, claim["model"], claim["form"]
    figures = claim["figures"]
    knobs = "\n".join(f"| {k} | {trial[k]} |" for k in results.KNOBS)
    single = "\n".join(f"| {k} | {trial[k]:.2f} |" for k in results.FIGURES)
    sla = f"p99 <= {choice.sla} ms" if choice.sla else "none (highest throughput)"
    pa = claim["perf_analyzer"]
    lines = [f"# {model}: exported configuration (trial {choice.number})", ""]
    if figures["verified"]:
        how = "the verified winner" if figures["winner"] else "a verified finalist (picked with --trial)"
        lines.append(f"Chosen: {how} under the SLA {sla}.")
    else:
        lines.append(f"Chosen under the SLA {sla}: **{figures['note']}**.")
    if claim["form_measured"]:
        lines.append(f"Config form: {form}, the form its figures were measured in.")
    else:
        lines.append(f"Config form: {form}: **not measured on this server**; the figures below are of the "
                     f"{claim['measured_form']} form.")
    lines += [f"Load: {load_text(claim)}.", *(f"\n> {n}" for n in notes if n != figures.get("note")), ""]
    if isinstance(trial.get("steps"), dict):  # a pipeline: each composing model's settings
        lines += ["| model | settings |", "|---|---|",
                  *(f"| {name} | {describe_steps({name: s})[len(name) + 1:]} |" for name, s in trial["steps"].items()),
                  f"| (client) | concurrency {trial['concurrency']} |", ""]
        shares = attrs.get("step_shares") or {}
        if shares:
            lines += ["Where the time goes (perf_analyzer's composing-model statistics, the search's run):", "",
                      "| model | queue us | compute us | share |", "|---|---|---|---|",
                      *(f"| {n} | {v['queue_us']:.0f} | {v['compute_us']:.0f} | {v['share'] * 100:.0f} % |"
                        for n, v in shares.items()), ""]
    else:
        lines += ["| knob | value |", "|---|---|", knobs, ""]
    if figures["verified"]:
        lines += [f"## Verified figures ({figures['rounds']} interleaved rounds, {figures['stopped']})", "",
                  "Each round reloaded the model and measured it with perf_analyzer (the command below); the figure "
                  "is the median of the rounds, with a 95 % interval (Student's t on the logs of the rounds).", "",
                  "| figure | median | 95 % interval | half width |", "|---|---|---|---|",
                  f"| throughput (infer/s) | {_iv(figures['throughput'])} |",
                  f"| p99 latency (ms) | {_iv(figures['p99_ms'], '.2f')} |", ""]
        if figures["winner"] and figures["p_best"] is not None:
            lines.append(f"P(best) among the finalists, over resampled rounds: {figures['p_best']:.2f}.")
            ratio = figures["vs_default"]
            if ratio is not None:
                verdict = ("significant" if ratio["significant"] else
                           "**no significant gain on this machine** (the interval holds 1.00x)")
                lines.append(f"Tuned / Triton's default (trial {figures['default_trial']}), paired rounds: "
                             f"{ratio['median']:.2f}x [{ratio['low']:.2f}, {ratio['high']:.2f}]: {verdict}.")
            elif figures["default_trial"] == choice.number:
                lines.append("Triton's default configuration is the verified winner: no configuration beat it on "
                             "this machine.")
        lines.append("")
    else:
        runs = "the mean of two runs" if figures["runs"] == 2 else "one run"
        lines += [f"## Figures: {figures['note']}", "",
                  f"The search's own measurement of this trial ({runs}); on a small machine one run can read "
                  f"10 to 20 % high. `tuner verify` measures it again.", ""]
    if claim.get("cost"):
        cost = claim["cost"]["per_million_inferences"]
        interval = "" if cost["low"] is None else f" [{cost['low']:.4g}, {cost['high']:.4g}]"
        lines += ["## Cost", "",
                  f"At {claim['cost']['price_per_hour']:g} per hour for the machine, a million inferences at the "
                  f"claimed throughput cost {cost['median']:.4g}{interval} (same currency as the price).", ""]
    if claim.get("measured_on"):
        lines += ["Measured on: " + ", ".join(f"{k} {v}" for k, v in claim["measured_on"].items()) + ".", ""]
    lines += ["Single draw of the search (latencies in ms, throughput in inferences/s):", "",
              "| figure | value |", "|---|---|", single, "",
              f"Cold start: load {trial.load_s} s, first request {trial.first_request_ms} ms.", "",
              "## Reproduce", "",
              f"Serve this folder (`tritonserver --model-repository=<this folder> --model-control-mode=explicit "
              f"--load-model={model}`{'; loading the ensemble loads its composing models' if claim.get('models') else ''}"
              f"), then, with `<url>` its gRPC host:port:", "",
              f"    {shell_command(pa['args'])}", "",
              f"A run whose windows never agree within {claim['measure']['stability_percent']} % is repeated without "
              f"a stability requirement ({pa['runs_retried']} of the {pa['runs']} runs behind these figures were):", "",
              f"    {shell_command(pa['retry_args'])}", ""]
    if figures["verified"]:
        warm = claim["measure"].get("warmup_s") or 0
        lines += [f"Each claimed figure is the median of {figures['rounds']} such runs, the model reloaded "
                  "before each" + (f" and loaded for {warm:g} s unmeasured (the retry's arguments, shorter "
                                   "windows) before the measured run." if warm else "."), ""]
    lines += ["## Verify", "",
              "`tuner-claim.json` holds this claim; `tuner verify` starts a fresh tritonserver on a copy of "
              f"`{'/`, `'.join(claim.get('models') or [model])}/`, measures it again in rounds and compares:", "",
              "    tuner verify <this folder>                 # 5 rounds, tolerance 7 %",
              "    tuner verify <this folder> --url HOST:8000 --grpc-url HOST:8001   # a running server", "",
              "The charts (Pareto front, verified finalists, latency percentiles, config diff) are in REPORT.html."
              if charts else "REPORT.html was left out (`--no-html`): `tuner export` where plotly is installed "
                             "writes it, with the charts (Pareto front, verified finalists, latency percentiles)."]
    return "\n".join(lines) + "\n"


MARKER = ".tuner-export"  # in every folder tuner export writes: what it wrote, of which study and trial
TOP_FILES = ("REPORT.md", "perf_inputs.json", "trial.json", CLAIM, "REPORT.html")


def _html(study: optuna.Study, choice: Choice, headline: str, notes: list[str], wanted: bool = True) -> str | None:
    """REPORT.html's text (None when not `wanted`). plotly is imported here, not with this module:
    `tuner verify` (which reads this module's names) then runs where only the server's tools are,
    as on a GPU machine, and `tuner export --no-html` there too."""
    if not wanted:
        return None
    try:
        from tuner.report_html import report_html
    except ImportError as exc:
        package = (exc.name or "plotly").split(".")[0]
        raise TunerError(f"REPORT.html needs {package}, which is not installed here: "
                         f"run `bash scripts/setup.sh` (or pip install {package})") from None
    return report_html(study, choice.number, choice.sla, choice.verified, headline, notes)


def _written_by_tuner(folder: Path) -> list[str] | None:
    """The files tuner export wrote into `folder` (from its marker); None when tuner did not write it."""
    try:
        files = json.loads((folder / MARKER).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return None
    return files if isinstance(files, list) else None


def _files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()} - {MARKER}


def _source_paths(study: optuna.Study, source: model_source.ModelSource) -> list[Path]:
    """What the study was searched on, as it lies on disk: the --model path and the ONNX file served."""
    model = str(study.user_attrs.get("model", ""))
    given = [Path(model)] if model and zoo.get(model) is None else []  # a zoo name is no path
    return [p.resolve() for p in (*given, source.onnx_path) if p.exists()]


def check_out(out_dir: Path, model_name: str, sources: list[Path]) -> None:
    """Refuse, before anything is written, an export that would touch what tuner did not write:
    the study's source model, a model folder or a top-level file of someone else."""
    if out_dir.exists() and not out_dir.is_dir():
        raise TunerError(f"--out {out_dir} is a file; give a folder (new, or one tuner export wrote)")
    model_dir = out_dir / model_name
    target = model_dir.resolve()
    for src in sources:
        if target == src or src.is_relative_to(target) or target.is_relative_to(src):
            how = ("is the study's source model" if target == src else
                   f"holds the study's source model {src}" if src.is_relative_to(target) else
                   f"is inside the study's source model {src}")
            raise TunerError(f"{model_dir} {how}; export never writes over the model it searched: choose another --out")
    if model_dir.is_symlink() or (model_dir.exists() and not model_dir.is_dir()):
        raise TunerError(f"{model_dir} already exists and tuner export did not write it; it is left as it is: "
                         f"choose another --out")
    if model_dir.exists():
        own = _written_by_tuner(model_dir)
        if own is None:
            raise TunerError(f"{model_dir} already exists and tuner export did not write it (no {MARKER} in it); "
                             f"it is left as it is: choose another --out")
        foreign = sorted(_files_under(model_dir) - set(own))
        if foreign:
            raise TunerError(f"{model_dir} holds files tuner export did not write ({', '.join(foreign[:3])}"
                             f"{', ...' if len(foreign) > 3 else ''}); it is left as it is: choose another --out")
    own_top = (_written_by_tuner(out_dir) or []) if out_dir.is_dir() else []
    for name in (*TOP_FILES, MARKER):
        path = out_dir / name
        # A link is never written through, whoever made it; the marker itself is rewritten.
        if path.is_symlink() or (path.exists() and name not in (*own_top, MARKER)):
            raise TunerError(f"{path} already exists and tuner export did not write it; it is left as it is: "
                             f"choose another --out")


def _write_marker(folder: Path, files: list[str], **about) -> None:
    (folder / MARKER).write_text(json.dumps({"written_by": "tuner export", **about, "files": sorted(files)}, indent=2))


def export(study: optuna.Study, out_dir: Path, max_p99_ms: float | None = None, trial_number: int | None = None,
           form: str = "measured", html: bool = True) -> Exported:
    """Write out_dir/<model>/config.pbtxt and out_dir/<model>/1/<model files>, the load inputs,
    REPORT.md, REPORT.html (unless not `html`: it needs plotly) and tuner-claim.json.

    `measured` (the default) is the form the trial was measured in, read from its stored config;
    `native` is the config the stock tritonserver image runs (the runtime's own backend); `adapter`
    is the python-backend form that the bundled tritonserver runs.

    It writes only where nothing is, or over what an earlier export wrote (a `.tuner-export`
    marker lists it): never over the study's source model nor over anybody else's files.
    """
    if form not in FORMS:
        raise TunerError(f"--form must be {', '.join(FORMS[:-1])} or {FORMS[-1]}, not {form!r}")
    exp = Experiment.model_validate(study.user_attrs["experiment"])
    choice = choose(study, max_p99_ms, trial_number)
    trial = choice.trial
    if study.trials[choice.number].user_attrs.get("candidate", {}).get("steps"):
        return _export_pipeline(study, out_dir, choice, exp, form, html)
    source = model_source.resolve(study.user_attrs["model"], exp.results_dir / "cache")
    check_out(out_dir, source.name, _source_paths(study, source))
    attrs = study.trials[choice.number].user_attrs
    candidate = Candidate.from_dict(attrs["candidate"])
    measured = measured_form(attrs.get("config_pbtxt"))
    if form == "measured":
        if measured is None:
            raise TunerError(f"trial {choice.number} has no stored config, so its measured form is unknown; "
                             f"pass --form native or --form adapter")
        form = measured
    samples = load_samples(source, exp)
    sample = samples[0]
    # The measured form is exported as it was measured: the very config the trial stored.
    config = attrs["config_pbtxt"] if form == measured else render(form, source.name, source.signature, candidate,
                                                                   sample, source.ragged_outputs)
    files = prepare(source, exp, candidate, samples, form).files
    claim = _claim(choice, study, exp, source.name, form, measured, attrs)
    notes = []
    if not claim["figures"]["verified"]:
        notes.append(claim["figures"]["note"])
    if form != measured:
        own = backends.get(candidate.backend).triton_backend
        notes.append(f"form {form}: not measured on this server; the figures are of the {measured} form. "
                     + (f"The native form is measured where the server has Triton's {own} backend "
                        f"(docker mode with a stock Triton image)." if form == "native" else
                        "The adapter form is measured on a server with the python backend (the bundled one)."))
    about = {"study": study.study_name, "trial": choice.number, "form": form}
    headline = (f"{source.name}: trial {choice.number} ({describe(trial.to_dict())}), form {form}"
                + ("" if form == measured else " (not measured on this server)"))
    page = _html(study, choice, headline, notes, html)  # before any file: it may say that plotly is missing

    model_dir = out_dir / source.name
    if model_dir.exists():  # checked above: an earlier export's, holding only its own files
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(config)
    for relative, file in files.items():
        (model_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, model_dir / relative)
    if candidate.warmup:
        write_warmup_files(model_dir / "warmup", sample)
    _write_marker(model_dir, sorted(_files_under(model_dir)), model=source.name, **about)
    top = _write_reports(out_dir, choice, claim, notes, attrs, page)
    ws = Workspace.of(exp.results_dir, study.study_name)
    if ws.input_data.exists():
        shutil.copy2(ws.input_data, out_dir / INPUT_DATA)
        top.append(INPUT_DATA)
    _write_marker(out_dir, sorted(set(top) | set(_written_by_tuner(out_dir) or [])), **about)
    return Exported(out_dir, model_dir, trial, form, measured, claim, tuple(notes))


def _write_reports(out_dir: Path, choice: Choice, claim: dict, notes: list[str], attrs: dict,
                   page: str | None) -> list[str]:
    """The claim, REPORT.md, REPORT.html (when there is a `page`) and trial.json; their names."""
    (out_dir / CLAIM).write_text(json.dumps(claim, indent=2) + "\n")
    (out_dir / "REPORT.md").write_text(_report(choice, claim, notes, attrs, charts=page is not None))
    (out_dir / "trial.json").write_text(json.dumps(attrs, indent=2, default=str))
    written = ["REPORT.md", "trial.json", CLAIM]
    if page is not None:
        (out_dir / "REPORT.html").write_text(page)
        written.append("REPORT.html")
    return written


def _export_pipeline(study: optuna.Study, out_dir: Path, choice: Choice, exp: Experiment, form: str,
                     html: bool = True) -> Exported:
    """A pipeline's export: every model of the repository with the trial's settings (the form
    it was measured in, the only one a pipeline has), the measurement's inputs, the reports and
    the claim, which names every model so that `tuner verify` serves them all."""
    from tuner.pipeline import repository, source as pipeline_source
    from tuner.pipeline.space import PipelineCandidate

    if form not in ("measured", "adapter"):
        raise TunerError("a pipeline is exported in the form it was measured in: drop --form")
    attrs = study.trials[choice.number].user_attrs
    source = pipeline_source.resolve(study.user_attrs["model"], exp.results_dir / "cache", exp.seed or 0)
    if source is None:
        raise TunerError(f"the study's model {study.user_attrs['model']} is no longer a pipeline repository")
    candidate = PipelineCandidate.from_dict(attrs["candidate"])
    ws = Workspace.of(exp.results_dir, study.study_name)
    models = repository.packages(source.repository, candidate.steps, workdir=ws.root / "pipeline")
    sources = [p.resolve() for p in (source.repository.root, Path(str(study.user_attrs.get("model", ""))))
               if p.exists()]
    for package in models:
        check_out(out_dir, package.name, sources)
    top = source.repository.top
    claim = _claim(choice, study, exp, top, "measured", "measured", attrs) | {
        "models": [p.name for p in models], "form": "pipeline", "measured_form": "pipeline"}
    notes = [] if claim["figures"]["verified"] else [claim["figures"]["note"]]
    about = {"study": study.study_name, "trial": choice.number, "form": "pipeline"}
    headline = f"{top}: trial {choice.number} ({describe(choice.trial.to_dict())})"
    page = _html(study, choice, headline, notes, html)  # before any file: it may say that plotly is missing
    for package in models:
        model_dir = out_dir / package.name
        if model_dir.exists():  # checked above: an earlier export's, holding only its own files
            shutil.rmtree(model_dir)
        model_dir.mkdir(parents=True)
        (model_dir / "config.pbtxt").write_text(package.config_pbtxt)
        for relative, file in package.files.items():
            (model_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, model_dir / relative)
        _write_marker(model_dir, sorted(_files_under(model_dir)), model=package.name, **about)
    shutil.copy2(source.input_data, out_dir / INPUT_DATA)
    top_files = _write_reports(out_dir, choice, claim, notes, attrs, page) + [INPUT_DATA]
    _write_marker(out_dir, sorted(set(top_files) | set(_written_by_tuner(out_dir) or [])), **about)
    return Exported(out_dir, out_dir / top, choice.trial, "pipeline", "pipeline", claim, tuple(notes))

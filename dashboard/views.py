"""What the dashboard shows, computed from the study storage alone: frames, figures, diffs, downloads.

Plain functions without Streamlit, so app.py stays layout and these stay testable.
"""

from __future__ import annotations

import difflib
import io
import tempfile
import warnings
import zipfile
from pathlib import Path

import optuna
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from tuner import export, knobs, results
from tuner.errors import TunerError
from tuner.candidate import describe

DEFAULT_STORAGE = "sqlite:///results/tuner.db"
UNFINISHED = ("RUNNING", "WAITING")
# Trial status, from the study and the SLA: what the Pareto chart and the tables colour by.
OK, OVER_SLA, REJECTED, FAILED, RUNNING = "ok", "over SLA", "rejected", "failed", "running"
# The average request latency split, in the order a request goes through (client -> server -> client).
TIME_SPLIT = {"client_send_ms": "client send", "queue_ms": "queue", "compute_input_ms": "compute input",
              "compute_infer_ms": "compute infer", "compute_output_ms": "compute output",
              "client_recv_ms": "client receive"}
HOVER_KNOBS = list(knobs.NAMES)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Open an existing study storage. A missing SQLite file is an error: the dashboard creates nothing."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise TunerError(f"cannot open study storage {url!r}: there is no file {path}; "
                             f"`tuner search --storage {url}` creates it")
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # sqlalchemy errors: bad URL, missing driver, not a database, unreachable
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TunerError(f"cannot open study storage {url!r}: {first}") from None


def load_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def planned_trials(study: optuna.Study) -> int | None:
    """The study's trial budget, from the experiment spec its search stored (None for foreign studies)."""
    return (study.user_attrs.get("experiment") or {}).get("trials")


def settings(row: dict) -> str:
    """One line of knobs, like the terminal's; '-' while the trial has not picked its candidate yet."""
    return "-" if pd.isna(row.get("backend")) else describe(row)


def _status(row: dict, max_p99_ms: float | None) -> str:
    if row["state"] in UNFINISHED:
        return RUNNING
    if pd.notna(row["rejected"]):
        return REJECTED
    if row["state"] != "COMPLETE" or pd.isna(row["throughput"]):
        return FAILED
    if max_p99_ms and row["p99_ms"] > max_p99_ms:
        return OVER_SLA
    return OK


def annotate(study: optuna.Study, max_p99_ms: float | None) -> pd.DataFrame:
    """results.trials_frame plus what the dashboard adds: status, settings, rejected reason, unstable flag."""
    frame = results.trials_frame(study)
    attrs = {t.number: t.user_attrs for t in study.get_trials(deepcopy=False)}
    frame["rejected"] = [_reason(attrs[n].get("rejected")) for n in frame.number]
    frame["unstable"] = [bool(attrs[n].get("unstable")) for n in frame.number]
    records = frame.to_dict("records")
    frame["settings"] = [settings(r) for r in records]
    frame["status"] = [_status(r, max_p99_ms) for r in records]
    return frame


def _reason(rejected: object) -> str | None:
    return str(rejected) if rejected else None


def eligible(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials that may be chosen: a candidate rejected by the accuracy check never is."""
    return frame[frame.rejected.isna()]


def best(frame: pd.DataFrame, max_p99_ms: float | None, baseline: bool | None = None) -> pd.Series | None:
    return results.best(eligible(frame), max_p99_ms, baseline)


def study_overview(storage: optuna.storages.BaseStorage) -> pd.DataFrame:
    """One row per study, newest first: model, trials finished of planned, best throughput under its SLA."""
    rows = []
    for name in reversed(optuna.study.get_all_study_names(storage)):
        study = load_study(storage, name)
        sla = study.user_attrs.get("max_p99_ms")
        frame = annotate(study, sla)
        top = best(frame, sla)
        rows.append({
            "study": name,
            "model": study.user_attrs.get("model_name") or study.user_attrs.get("model") or "?",
            "finished": int((frame.status != RUNNING).sum()),
            "planned": planned_trials(study),
            "running": int((frame.status == RUNNING).sum()),
            "failed": int((frame.status == FAILED).sum()),
            "sla_p99_ms": sla,
            "best_throughput": None if top is None else round(float(top.throughput), 1),
            "best_p99_ms": None if top is None else round(float(top.p99_ms), 2),
        })
    columns = ["study", "model", "finished", "planned", "running", "failed", "sla_p99_ms", "best_throughput",
               "best_p99_ms"]
    return pd.DataFrame(rows, columns=columns).astype({"planned": "Int64"})


def describe_study(row: pd.Series) -> str:
    """The study picker's label: name, model, progress and best so far."""
    planned = "" if pd.isna(row.planned) else f"/{int(row.planned)}"
    top = "no result yet" if pd.isna(row.best_throughput) else f"best {row.best_throughput:.1f} infer/s"
    return f"{row.study} · {row.model} · {row.finished}{planned} trials · {top}"


def pareto_figure(frame: pd.DataFrame, max_p99_ms: float | None) -> go.Figure:
    """Throughput against p99: one marker per measured trial, the Pareto front as a line, the SLA as a rule.

    Trials within the SLA are coloured by backend and shaped by precision; those over it or
    rejected are grey crosses. Every marker carries its trial number as customdata[0].
    """
    measured = frame[frame.status.isin([OK, OVER_SLA, REJECTED])]
    measured = measured.assign(trial="trial " + measured.number.astype(str))
    hover = {k: True for k in HOVER_KNOBS} | {"backend": True, "precision": True, "p50_ms": ":.2f",
                                               "p99_ms": ":.2f", "throughput": ":.1f"}
    labels = {"p99_ms": "p99 latency (ms)", "throughput": "throughput (infer/s)"}
    feasible = measured[measured.status == OK]
    fig = go.Figure()
    if not feasible.empty:
        fig = px.scatter(feasible, x="p99_ms", y="throughput", color="backend", symbol="precision",
                         hover_name="trial", custom_data=["number"], hover_data=hover, labels=labels)
        fig.update_traces(marker_size=11)
    for status, colour in ((OVER_SLA, "#9e9e9e"), (REJECTED, "#616161")):
        apart = measured[measured.status == status]
        if not apart.empty:
            fig.add_trace(_grey_crosses(apart, status, colour))
    front = results.pareto_front(eligible(frame))
    fig.add_trace(go.Scatter(x=front.p99_ms, y=front.throughput, mode="lines", name="Pareto front",
                             line={"color": "#1f77b4", "dash": "dash", "width": 1.5}, hoverinfo="skip"))
    if max_p99_ms and max_p99_ms > 2 * measured.p99_ms.max():
        # Drawn, the rule would squeeze every point against the left edge.
        fig.update_layout(title_text=f"SLA p99 ≤ {max_p99_ms:g} ms: every trial is well within it")
    elif max_p99_ms:
        fig.add_vline(x=max_p99_ms, line_dash="dot", line_color="#d62728",
                      annotation_text=f"SLA p99 ≤ {max_p99_ms:g} ms", annotation_position="top left")
    fig.update_layout(xaxis_title=labels["p99_ms"], yaxis_title=labels["throughput"], legend_title_text="",
                      height=480, margin={"t": 30, "b": 10})
    return fig


def _grey_crosses(trials: pd.DataFrame, status: str, colour: str) -> go.Scatter:
    why = trials.rejected if status == REJECTED else trials.p99_ms.map(lambda p: f"p99 {p:.2f} ms over the SLA")
    text = [f"<b>trial {n}</b> ({reason})<br>{s}<br>{t:.1f} infer/s, p99 {p:.2f} ms"
            for n, reason, s, t, p in zip(trials.number, why, trials.settings, trials.throughput, trials.p99_ms)]
    return go.Scatter(x=trials.p99_ms, y=trials.throughput, mode="markers", name=status,
                      marker={"symbol": "x", "color": colour, "size": 10}, customdata=trials[["number"]].to_numpy(),
                      hovertext=text, hovertemplate="%{hovertext}<extra></extra>")


def clicked_trial(figure: go.Figure, point: dict) -> int | None:
    """The trial behind a clicked marker of pareto_figure, found by trace and index.

    The point's own customdata is no help: plotly sends numeric arrays as typed arrays,
    whose rows come back from the browser as objects rather than lists.
    """
    customdata = figure.data[point["curve_number"]].customdata
    return None if customdata is None else int(customdata[point["point_index"]][0])


def latency_figure(trial: pd.Series, max_p99_ms: float | None) -> go.Figure:
    """perf_analyzer's client-side latency percentiles of one trial."""
    names = ["p50_ms", "p90_ms", "p95_ms", "p99_ms"]
    fig = go.Figure(go.Bar(x=[n.removesuffix("_ms") for n in names], y=[trial[n] for n in names],
                           text=[f"{trial[n]:.2f}" for n in names], marker_color="#1f77b4"))
    if max_p99_ms:
        fig.add_hline(y=max_p99_ms, line_dash="dot", line_color="#d62728", annotation_text="SLA")
    fig.update_layout(yaxis_title="ms", height=320, margin={"t": 30, "b": 10})
    return fig


def time_split_figure(measurement: dict) -> go.Figure:
    """Where the average request's time goes: client, server queue, and the three compute phases.

    What the parts do not cover (network, gRPC) is shown as 'other' so the bar adds up to avg_ms.
    """
    parts = {label: measurement[key] for key, label in TIME_SPLIT.items() if measurement.get(key) is not None}
    rest = measurement.get("avg_ms", 0.0) - sum(parts.values())
    if rest > 0:
        parts["other"] = rest
    fig = go.Figure([go.Bar(y=["avg request"], x=[ms], name=label, orientation="h",
                            hovertemplate=f"{label}: %{{x:.3f}} ms<extra></extra>") for label, ms in parts.items()])
    fig.update_layout(barmode="stack", xaxis_title="ms", height=240, margin={"t": 30, "b": 10},
                      legend={"orientation": "h", "y": -0.45})
    return fig


def default_config_trial(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """The study's first trial of Triton's default config that got as far as rendering its config."""
    for t in trials:
        if t.user_attrs.get("baseline") and "config_pbtxt" in t.user_attrs:
            return t
    return None


def config_diff(default: optuna.trial.FrozenTrial, trial: optuna.trial.FrozenTrial) -> str:
    """Unified diff of the trial's config.pbtxt against Triton's default config ('' when identical)."""
    lines = difflib.unified_diff(default.user_attrs["config_pbtxt"].splitlines(),
                                 trial.user_attrs.get("config_pbtxt", "").splitlines(),
                                 fromfile=f"Triton's default config (trial {default.number})",
                                 tofile=f"trial {trial.number}", lineterm="")
    return "\n".join(lines)


def param_importances(study: optuna.Study) -> dict[str, float]:
    """How much each knob matters for reaching high throughput; empty when the trials cannot tell.

    PED-ANOVA (Optuna's default evaluator) compares the top trials with all of them and
    needs at least three completed trials; it ranks low targets, hence the negated throughput.
    """
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(completed) < 3:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its notes on the target's direction and on tiny studies
        importances = optuna.importance.get_param_importances(study, target=lambda t: -t.values[0])
    return importances if sum(importances.values()) > 0 else {}


def importance_figure(importances: dict[str, float]) -> go.Figure:
    names = list(importances)[::-1]  # the most important on top
    fig = go.Figure(go.Bar(x=[importances[n] for n in names], y=names, orientation="h", marker_color="#1f77b4",
                           hovertemplate="%{y}: %{x:.2f}<extra></extra>"))
    fig.update_layout(xaxis_title="importance for throughput (share of 1)", height=60 + 28 * len(names),
                      margin={"t": 10, "b": 10})
    return fig


def export_zip(study: optuna.Study, trial_number: int, max_p99_ms: float | None, form: str) -> bytes:
    """The trial as `tuner export` writes it (model repository, REPORT.md, load inputs), zipped."""
    with tempfile.TemporaryDirectory(prefix="tuner-dashboard-") as tmp:
        out = Path(tmp)
        export.export(study, out, max_p99_ms, trial_number, form)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(out.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(out).as_posix())
    return buffer.getvalue()

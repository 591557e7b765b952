"""What the dashboard shows, computed from the study storage alone: frames, figures, diffs, downloads.

Plain functions without Streamlit, so app.py stays layout and these stay testable.
"""

from __future__ import annotations

import difflib
import io
import math
import tempfile
import warnings
import zipfile
from pathlib import Path

import optuna
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tuner import export, knobs, results, verification
from tuner import storage as tuner_storage
from tuner.candidate import describe, describe_steps
from tuner.cost import cost_per_million
from tuner.verification.stats import error_bar, figure_text

DEFAULT_STORAGE = "sqlite:///results/tuner.db"
UNFINISHED = ("RUNNING", "WAITING")
# Trial status, from the study and the SLA: what the Pareto chart and the tables colour by.
OK, OVER_SLA, REJECTED, FAILED, RUNNING = "ok", "over SLA", "rejected", "failed", "running"
# The average request latency split, in the order a request goes through (client -> server -> client).
TIME_SPLIT = {"client_send_ms": "client send", "queue_ms": "queue", "compute_input_ms": "compute input",
              "compute_infer_ms": "compute infer", "compute_output_ms": "compute output",
              "client_recv_ms": "client receive"}
HOVER_KNOBS = list(knobs.NAMES)
# How the verification stage ended (tuner.verification.run's `stopped`), in words.
STOPPED = {"converged": "converged: the winner's interval is as narrow as asked",
           "budget": "stopped by the stage's time budget", "max_rounds": "stopped after its most rounds"}


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Open an existing study storage, read-only in spirit: a missing SQLite file is an error and
    the dashboard creates nothing (no file, no schema, no study, no trial); SQLite waits for a
    search's write instead of failing (tuner.storage)."""
    return tuner_storage.open_storage(url, read_only=True)


def load_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def planned_trials(study: optuna.Study) -> int | None:
    """The study's trial budget, from the experiment spec its search stored (None for foreign studies)."""
    return (study.user_attrs.get("experiment") or {}).get("trials")


def settings(row: dict) -> str:
    """One line of knobs, like the terminal's; '-' while the trial has not picked its candidate yet."""
    if isinstance(row.get("steps"), dict):  # a pipeline's trial: each step's settings
        return describe(row)
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


def extra_columns(frame: pd.DataFrame) -> list[str]:
    """What the trial tables and the hover add when the study has it: the cost per million
    inferences (a price per hour was given), and the worker and host when several workers measured."""
    return ["cost_per_million"] * results.priced(frame) + ["worker", "host"] * results.several_workers(frame)


def hidden_columns(frame: pd.DataFrame) -> list[str]:
    """Columns of the frame the full trial table leaves out: who measured, when one worker did all."""
    return [] if results.several_workers(frame) else list(results.WHERE)


def cost_text(trial: pd.Series, figures: dict | None) -> str | None:
    """What a million inferences of the trial cost at its machine's price per hour (at the verified
    median throughput when `figures` gives one); None without a price."""
    price = trial.get("price_per_hour")
    if price is None or pd.isna(price):
        return None
    throughput = figures["throughput"]["median"] if figures else trial.throughput
    which = "verified median" if figures else "single draw"
    cost = cost_per_million(throughput, price)
    return f"{cost:.4g} per million inferences at {throughput:.1f} infer/s ({which}), machine priced {price:g}/hour"


def eligible(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials that may be chosen: a candidate rejected by the accuracy check never is."""
    return frame[frame.rejected.isna()]


def best(frame: pd.DataFrame, max_p99_ms: float | None, baseline: bool | None = None) -> pd.Series | None:
    return results.best(eligible(frame), max_p99_ms, baseline)


def verified(study: optuna.Study) -> dict | None:
    """The study's verification (tuner.verification.stored): None while its search runs, or for an old study."""
    return verification.stored(study)


def verified_for(found: dict | None, max_p99_ms: float | None) -> bool:
    """Whether the verification was made for this SLA (the one picked on the page): only then do
    its winner and figures answer "the best under the SLA"."""
    if found is None:
        return False
    sla = found.get("max_p99_ms")
    if sla is None or max_p99_ms is None:
        return sla is None and max_p99_ms is None
    return math.isclose(float(sla), float(max_p99_ms), rel_tol=1e-9)


def chosen(frame: pd.DataFrame, found: dict | None, max_p99_ms: float | None) -> tuple[int | None, bool]:
    """The trial the page offers as the best under the SLA, and whether that is the verified winner
    (else it is the best single draw, `best`)."""
    if verified_for(found, max_p99_ms) and found["winner"] is not None:
        return int(found["winner"]), True
    top = best(frame, max_p99_ms)
    return (None if top is None else int(top.number)), False


def role(found: dict, number: int) -> str:
    """A finalist's role: winner, default (Triton's default config), both, or ''."""
    return " & ".join(r for r, n in (("winner", found["winner"]), ("default", found["default"])) if n == number)


def _span(figure: dict, digits: int) -> str:
    return figure_text(figure, spec=f".{digits}f")


def interval_text(figure: dict, digits: int) -> str | None:
    """"[low, high]" under a verified metric; None for a figure with no interval (one round)."""
    return None if figure["low"] is None else f"[{figure['low']:.{digits}f}, {figure['high']:.{digits}f}]"


def verified_table(frame: pd.DataFrame, found: dict) -> pd.DataFrame:
    """One row per finalist, the highest verified throughput first: its config, the median of the
    rounds with the 95 % interval, how wide that is, and whether its p99 meets the SLA."""
    described = {int(r["number"]): settings(r) for r in frame.to_dict("records")}
    rows = []
    for number, f in sorted(found["finalists"].items(), key=lambda item: -item[1]["throughput"]["median"]):
        rows.append({"trial": number, "role": role(found, number),
                     "throughput (infer/s) median [95 % interval]": _span(f["throughput"], 1),
                     "± %": None if f["throughput"]["half_width"] is None else round(f["throughput"]["half_width"] * 100, 1),
                     "p99 (ms) median [95 % interval]": _span(f["p99_ms"], 2),
                     "meets SLA": bool(f["meets_sla"]), "settings": described.get(number, "?")})
    # The figures before the settings, whose long line would push them out of sight.
    return pd.DataFrame(rows, columns=["trial", "role", "throughput (infer/s) median [95 % interval]", "± %",
                                       "p99 (ms) median [95 % interval]", "meets SLA", "settings"])


def rounds_text(found: dict) -> str:
    """How many rounds measured the finalists and why they stopped."""
    stopped = STOPPED.get(found.get("stopped"), found.get("stopped") or "?")
    return (f"{found['rounds']} interleaved rounds over {len(found['finalists'])} finalists "
            f"({stopped}; {found.get('seconds', 0):.0f} s)")


def vs_default_text(found: dict) -> str:
    """The winner against Triton's default config as the paired ratio of the rounds, or why there is none."""
    ratio = found.get("vs_default")
    if found["winner"] is None:
        return "no finalist meets the SLA on its verified p99 (the upper bound of its interval)"
    if ratio is None:
        if found["winner"] == found["default"]:
            return "Triton's default is the verified winner: no configuration beat it on this machine"
        return "Triton's default config was not among the finalists"
    if ratio["low"] is None:
        return f"tuned / default {ratio['median']:.2f}× (one round: untested for significance)"
    span = f"{ratio['median']:.2f}× [{ratio['low']:.2f}, {ratio['high']:.2f}]"
    if not ratio["significant"]:
        return f"no significant gain on this machine (tuned / default {span}: the interval holds 1.00×)"
    return f"tuned / default {span} (paired rounds, 95 % interval)"


def verified_p50(found: dict, number: int) -> float | None:
    """The median over the rounds of a finalist's p50 (the verification keeps each round's)."""
    draws = [r[number]["p50_ms"] for r in found["rounds_measured"] if r.get(number, {}).get("p50_ms") is not None]
    return float(pd.Series(draws).median()) if draws else None


def verified_figure(found: dict) -> go.Figure:
    """Each finalist's verified throughput and p99: the median with its 95 % interval as error bars,
    and every round's draw as a dot beside it, left to right in round order (so a drift shows as a slope).

    The finalists are in the order of verified_table (highest verified throughput first); the SLA
    drawn is the one the verification judged them by.
    """
    numbers = sorted(found["finalists"], key=lambda n: -found["finalists"][n]["throughput"]["median"])
    ticks = [f"trial {n}" + (f" ({role(found, n)})" if role(found, n) else "") for n in numbers]
    rounds = found["rounds_measured"]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("throughput (infer/s)", "p99 latency (ms)"))
    colours = {"winner": "#2ca02c", "default": "#7f7f7f"}
    for col, key, digits in ((1, "throughput", 1), (2, "p99_ms", 2)):
        figures = [found["finalists"][n][key] for n in numbers]
        bars = [error_bar(f) for f in figures]
        fig.add_trace(go.Scatter(
            x=list(range(len(numbers))), y=[f["median"] for f in figures], mode="markers", name="verified median",
            legendgroup="median", showlegend=col == 1,
            marker={"symbol": "diamond", "size": 13,
                    "color": [colours.get(role(found, n).split(" & ")[0], "#1f77b4") for n in numbers]},
            error_y={"type": "data", "symmetric": False, "array": [above for above, _ in bars],
                     "arrayminus": [below for _, below in bars], "thickness": 2, "width": 8},
            customdata=numbers, hovertext=[f"<b>{t}</b><br>median {_span(f, digits)}" for t, f in zip(ticks, figures)],
            hovertemplate="%{hovertext}<extra></extra>"), row=1, col=col)
        xs, ys, text, order = [], [], [], []
        for r, measured in enumerate(rounds):
            offset = 0.0 if len(rounds) == 1 else -0.3 + 0.6 * r / (len(rounds) - 1)
            for i, n in enumerate(numbers):
                if n in measured and measured[n].get(key) is not None:
                    xs.append(i + offset)
                    ys.append(measured[n][key])
                    order.append(r + 1)
                    text.append(f"trial {n}, round {r + 1}: {measured[n][key]:.{digits}f}"
                                + (" (unstable)" if measured[n].get("unstable") else ""))
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="markers", name="each round's draw", legendgroup="rounds", showlegend=col == 1,
            marker={"size": 6, "color": order, "colorscale": "Viridis", "opacity": 0.8,
                    "cmin": 1, "cmax": max(len(rounds), 2),
                    "showscale": col == 1, "colorbar": {"title": {"text": "round"}, "len": 0.8, "dtick": 1}},
            hovertext=text, hovertemplate="%{hovertext}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(tickvals=list(range(len(numbers))), ticktext=ticks, range=[-0.6, len(numbers) - 0.4],
                         row=1, col=col)
    sla = found.get("max_p99_ms")
    if sla:
        fig.add_hline(y=sla, line_dash="dot", line_color="#d62728", annotation_text=f"SLA p99 ≤ {sla:g} ms",
                      annotation_position="top left", row=1, col=2)
    fig.update_layout(height=420, margin={"t": 40, "b": 10}, legend={"orientation": "h", "y": -0.2})
    return fig


def study_overview(storage: optuna.storages.BaseStorage) -> pd.DataFrame:
    """One row per study, newest first: model, trials finished of planned, best throughput under its SLA."""
    rows = []
    for name in reversed(optuna.study.get_all_study_names(storage)):
        study = load_study(storage, name)
        sla = study.user_attrs.get("max_p99_ms")
        frame = annotate(study, sla)
        top = best(frame, sla)
        found = verified(study)
        won = verified_for(found, sla) and found["winner"] is not None
        winner = found["finalists"][found["winner"]] if won else None
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
            "verified_throughput": None if winner is None else round(float(winner["throughput"]["median"]), 1),
        })
    columns = ["study", "model", "finished", "planned", "running", "failed", "sla_p99_ms", "best_throughput",
               "best_p99_ms", "verified_throughput"]
    return pd.DataFrame(rows, columns=columns).astype({"planned": "Int64"})


def describe_study(row: pd.Series) -> str:
    """The study picker's label: name, model, progress and best so far."""
    planned = "" if pd.isna(row.planned) else f"/{int(row.planned)}"
    top = ("no result yet" if pd.isna(row.best_throughput) else f"best {row.best_throughput:.1f} infer/s"
           if pd.isna(row.verified_throughput) else f"verified {row.verified_throughput:.1f} infer/s")
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
    hover |= {k: (":.4g" if k == "cost_per_million" else True) for k in extra_columns(frame)}
    labels = {"p99_ms": "p99 latency (ms)", "throughput": "throughput (infer/s)",
              "cost_per_million": "cost per million inferences"}
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
    cost = trials.cost_per_million.map(lambda c: "" if pd.isna(c) else f", {c:.4g} per million inferences")
    worker = trials.worker.map(lambda w: f"<br>measured by {w}" if isinstance(w, str) else "")
    text = [f"<b>trial {n}</b> ({reason})<br>{s}<br>{t:.1f} infer/s, p99 {p:.2f} ms{c}{w}"
            for n, reason, s, t, p, c, w in zip(trials.number, why, trials.settings, trials.throughput,
                                                trials.p99_ms, cost, worker)]
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


def step_table(attrs: dict) -> pd.DataFrame | None:
    """A pipeline trial's steps: each one's settings, how many requests an execution joined, and
    where the time went (perf_analyzer's composing-model statistics); None for a single model."""
    steps = (attrs.get("candidate") or {}).get("steps")
    if not steps:
        return None
    shares = attrs.get("step_shares") or {}
    rows = []
    for name, settings_of_step in steps.items():
        found = shares.get(name) or {}
        executions = found.get("execution_count")
        rows.append({"step": name, "settings": describe_steps({name: settings_of_step})[len(name) + 1:],
                     "requests per execution": found["inference_count"] / executions if executions else None,
                     "queue ms": found["queue_us"] / 1000 if found else None,
                     "compute ms": found["compute_us"] / 1000 if found else None,
                     "share of the time %": found["share"] * 100 if found else None})
    return pd.DataFrame(rows)


def default_pipeline_trial(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """A pipeline study's first trial of the repository as given that got as far as deploying."""
    return next((t for t in trials if t.user_attrs.get("baseline") and "configs" in t.user_attrs), None)


def text_diff(before: str, after: str, before_name: str, after_name: str) -> str:
    """Unified diff of two config texts ('' when identical)."""
    return "\n".join(difflib.unified_diff(before.splitlines(), after.splitlines(), fromfile=before_name,
                                          tofile=after_name, lineterm=""))


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

"""The tuner dashboard: a Streamlit app over one Optuna study storage, and nothing else.

Served by `tuner dashboard [--storage URL]`, which runs `streamlit run <this file>` with the URL in the
environment variable TUNER_STORAGE, off the command line where anyone could read its password
(the file is the module tuner.dashboard.app, tuner.resources.DASHBOARD_APP). See docs/dashboard.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import optuna
import pandas as pd
import streamlit as st

from tuner import results
from tuner.dashboard import views
from tuner.errors import TunerError
from tuner.storage import mask

STORAGE_ENV = "TUNER_STORAGE"  # how `tuner dashboard` passes the storage URL
REFRESH_S = 5
NEWEST = 5
# Trial attributes the trial view shows in their own place; it lists whatever else a trial recorded.
SHOWN_ATTRS = {"candidate", "config_pbtxt", "measurement", "perf_analyzer_cmd", "error", "rejected", "baseline",
               "repeat_of", "unstable", "configs", "step_shares"}


def storage_url(argv: list[str]) -> str:
    """The storage URL: `--storage URL` after `--` on the streamlit command line when given, else the
    environment variable TUNER_STORAGE (as `tuner dashboard` passes it), else the default."""
    parser = argparse.ArgumentParser(prog="tuner dashboard")
    parser.add_argument("--storage", default=None)
    return parser.parse_known_args(argv)[0].storage or os.environ.get(STORAGE_ENV) or views.DEFAULT_STORAGE


@st.cache_resource(show_spinner=False)
def open_storage(url: str) -> optuna.storages.RDBStorage:
    return views.open_storage(url)


@st.cache_data(show_spinner="Writing the model repository…", max_entries=16)
def export_zip(url: str, study_name: str, trial_number: int, max_p99_ms: float | None, form: str) -> bytes:
    """Cached per trial and form: a live page reruns every few seconds and a trial never changes once done."""
    return views.export_zip(views.load_study(open_storage(url), study_name), trial_number, max_p99_ms, form)


def main() -> None:
    st.set_page_config(page_title="tuner dashboard", layout="wide")
    st.title("tuner: Triton configuration search")
    url = storage_url(sys.argv[1:])
    shown = mask(url)  # the page never shows a password
    st.caption(f"study storage: `{shown}`")
    try:
        storage = open_storage(url)
    except TunerError as exc:
        st.error(str(exc))
        return
    overview = views.study_overview(storage)
    if overview.empty:
        st.info(f"No studies in `{shown}` yet. Start one with `tuner search --model MODEL --storage {shown}`; "
                "it shows up here as soon as it starts.")
        return
    row = pick_study(overview)
    searching = bool(row.running) or (pd.notna(row.planned) and row.finished < row.planned)
    live = st.sidebar.toggle(f"Live (reread every {REFRESH_S} s)", value=searching, key=f"live-{row.study}",
                             help="On by default while the search is still running.")
    st.fragment(show_study, run_every=REFRESH_S if live else None)(url, row.study)


def pick_study(overview: pd.DataFrame) -> pd.Series:
    """Sidebar picker over every study (newest first) and the table of all of them."""
    labels = {row.study: views.describe_study(row) for _, row in overview.iterrows()}
    name = st.sidebar.selectbox("Study", list(labels), format_func=labels.get)
    with st.expander(f"All studies in this storage ({len(overview)})"):
        st.dataframe(overview, hide_index=True)
    return overview.set_index("study", drop=False).loc[name]


def show_study(url: str, name: str) -> None:
    study = views.load_study(open_storage(url), name)
    attrs = study.user_attrs
    st.header(f"Study {name}")
    st.caption(f"model `{attrs.get('model', '?')}`")
    if attrs.get("experiment"):
        with st.expander("Experiment spec"):
            experiment = attrs["experiment"]
            if isinstance(experiment, dict) and isinstance(experiment.get("storage"), str):
                experiment = experiment | {"storage": mask(experiment["storage"])}  # a study stored before masking
            st.json(experiment)
    sla = attrs.get("max_p99_ms")
    max_p99_ms = st.number_input("SLA: p99 latency limit (ms)", min_value=0.001,
                                 value=None if sla is None else float(sla), key=f"sla-{name}",
                                 placeholder="none: the highest throughput wins",
                                 help="Picks the best trial, marks trials over it; starts at the study's own SLA.")
    frame = views.annotate(study, max_p99_ms)
    show_progress(study, frame)
    if frame.empty:
        st.info("This study has no trials yet; they appear here as the search runs.")
        return
    trials = study.get_trials(deepcopy=False)  # indexed by trial number
    found = views.verified(study)
    show_verified(frame, found, max_p99_ms)
    show_best(url, name, trials, frame, found, max_p99_ms)
    show_pareto(frame, max_p99_ms, name)
    show_trials(frame)
    show_importance(study)
    show_trial(name, trials, frame, found, max_p99_ms)


def show_progress(study: optuna.Study, frame: pd.DataFrame) -> None:
    finished = int((frame.status != views.RUNNING).sum())
    planned = views.planned_trials(study)
    if planned:
        st.progress(min(finished / planned, 1.0), text=f"{finished} of {planned} trials finished")
    counts = frame.status.value_counts()
    columns = st.columns(4)
    columns[0].metric("within the SLA", int(counts.get(views.OK, 0)))
    columns[1].metric("over the SLA", int(counts.get(views.OVER_SLA, 0)))
    columns[2].metric("failed or rejected", int(counts.get(views.FAILED, 0) + counts.get(views.REJECTED, 0)))
    columns[3].metric("running", int(counts.get(views.RUNNING, 0)))
    if not frame.empty:
        st.subheader("Newest trials")
        newest = frame.sort_values("number", ascending=False).head(NEWEST)
        table(newest[["number", "status", "settings", "throughput", "p99_ms", *views.extra_columns(frame), "error"]])


def table(frame: pd.DataFrame, key: str | None = None) -> None:
    """A read-only table without the columns that hold nothing (no errors yet, no rejections...)."""
    st.dataframe(frame.dropna(axis="columns", how="all").round(3), hide_index=True, key=key)


def show_pareto(frame: pd.DataFrame, max_p99_ms: float | None, name: str) -> None:
    st.subheader("Throughput against p99 latency")
    if not frame.status.isin([views.OK, views.OVER_SLA, views.REJECTED]).any():
        st.info("No trial has completed a measurement yet, so there is nothing to plot.")
    else:
        st.caption("Coloured by backend, shaped by precision; grey crosses are over the SLA or rejected; "
                   "the dashed line links the Pareto front. Click a point to open it below.")
        figure = views.pareto_figure(frame, max_p99_ms)

        def open_clicked_trial() -> None:
            # Runs before the next rerun, with the figure the user clicked on.
            points = st.session_state[f"pareto-{name}"].selection.points
            number = views.clicked_trial(figure, points[0]) if points else None
            if number is not None:
                st.session_state[f"trial-{name}"] = number

        st.plotly_chart(figure, key=f"pareto-{name}", on_select=open_clicked_trial, selection_mode="points")
    failed = frame[frame.status.isin([views.FAILED, views.REJECTED])]
    if not failed.empty:
        st.markdown("**Failed and rejected trials**")
        table(failed[["number", "state", "settings", "rejected", "error"]])


def show_verified(frame: pd.DataFrame, found: dict | None, max_p99_ms: float | None) -> None:
    """The verification stage's finalists, measured again in interleaved rounds: the figures to trust."""
    st.subheader("Verified finalists")
    if found is None:
        st.info("Not verified yet: figures below are single draws.")
        return
    sla = found.get("max_p99_ms")
    st.caption(f"{views.rounds_text(found)}, judged by the SLA p99 ≤ {sla:g} ms; medians with 95 % intervals."
               if sla else f"{views.rounds_text(found)}, without an SLA; medians with 95 % intervals.")
    if not views.verified_for(found, max_p99_ms):
        st.caption("The SLA picked above differs from the one verified: the best trial below is a single draw.")
    seen = found.get("trials_seen")
    finished = int((frame.status != views.RUNNING).sum())
    if seen is not None and seen != finished:
        st.caption(f"Verified after {seen} trials; the study has {finished} finished now.")
    columns = st.columns([1, 3])
    columns[0].metric("P(winner is best)", "-" if found["p_best"] is None else f"{found['p_best']:.2f}",
                      help="How often the winner has the highest median when whole rounds are resampled.")
    ratio = found.get("vs_default")
    text = views.vs_default_text(found)
    if ratio is not None and ratio["significant"]:
        columns[1].success(text)
    elif found["winner"] is None:
        columns[1].warning(text)
    else:
        columns[1].info(text)
    st.dataframe(views.verified_table(frame, found), hide_index=True, key="verified")
    st.plotly_chart(views.verified_figure(found), key="verified-figure")


def show_best(url: str, name: str, trials: list[optuna.trial.FrozenTrial], frame: pd.DataFrame,
              found: dict | None, max_p99_ms: float | None) -> None:
    st.subheader("Best trial under the SLA" if max_p99_ms else "Best trial (no SLA)")
    chosen, is_verified = views.chosen(frame, found, max_p99_ms)
    if chosen is None:
        done = results.completed(views.eligible(frame))
        st.info("No completed trial yet." if done.empty else
                f"No completed trial has p99 ≤ {max_p99_ms:g} ms; the lowest measured is {done.p99_ms.min():.2f} ms.")
        return
    number = chosen
    top = frame.set_index("number", drop=False).loc[number]
    columns = st.columns(5)
    columns[0].metric("trial", number)
    if is_verified:
        figures = found["finalists"][number]
        t, p99, p50 = figures["throughput"], figures["p99_ms"], views.verified_p50(found, number)
        st.caption(f"The verified winner: medians of {found['rounds']} interleaved rounds, with 95 % intervals.")
        # The 95 % intervals under the medians, grey and without an arrow: they are no change.
        interval = {"delta_color": "off", "delta_arrow": "off"}
        columns[1].metric("infer/s (verified)", f"{t['median']:.1f}", views.interval_text(t, 1),
                          help="Median of the rounds, 95 % interval (none from one round).", **interval)
        columns[2].metric("p99 ms (verified)", f"{p99['median']:.2f}", views.interval_text(p99, 2),
                          help="Median of the rounds, 95 % interval (none from one round).", **interval)
        columns[3].metric("p50 ms (verified)", "-" if p50 is None else f"{p50:.2f}",
                          help="Median of the rounds.")
        ratio = found.get("vs_default")
        columns[4].metric("vs Triton's default", "-" if ratio is None else f"{ratio['median']:.2f}×",
                          None if ratio is None or ratio["low"] is None else views.interval_text(ratio, 2)
                          + ("" if ratio["significant"] else " not significant"),
                          help=views.vs_default_text(found), **interval)
    else:
        if views.verified_for(found, max_p99_ms):  # verified for this SLA, but no finalist met it
            st.warning(f"Verified: {views.vs_default_text(found)}. Below, the best single draw.")
        else:
            st.caption("Single draw: the trial's own measurement, not verified.")
        default = views.best(frame, max_p99_ms, baseline=True)
        columns[1].metric("infer/s (single draw)", f"{top.throughput:.1f}")
        columns[2].metric("p99 ms (single draw)", f"{top.p99_ms:.2f}")
        columns[3].metric("p50 ms (single draw)", f"{top.p50_ms:.2f}")
        columns[4].metric("vs Triton's default",
                          "-" if default is None else f"{top.throughput / default.throughput:.2f}×",
                          help="Single draws, against the best default-config trial under the same SLA.")
    st.markdown(f"`{top.settings}`")
    cost = views.cost_text(top, found["finalists"][number] if is_verified else None)
    if cost:
        st.caption(f"Cost: {cost}.")
    command = trials[number].user_attrs.get("perf_analyzer_cmd")
    if command:
        st.code(command, language="bash", wrap_lines=True)
    form = st.radio("Config form", ["measured", "native", "adapter"], horizontal=True, key=f"form-{name}",
                    help="measured: the form the trial was measured in (what `tuner export` writes by default); "
                         "native: the stock Triton image's own backend (not measured on the bundled server); "
                         "adapter: the python-backend form.")
    try:
        data = export_zip(url, name, number, max_p99_ms, form)
    except TunerError as exc:
        st.error(f"Cannot export trial {number}: {exc}")
        return
    st.download_button(f"Download trial {number} as a model repository (zip)", data,
                       file_name=f"{name}-trial{number}-{form}.zip", mime="application/zip",
                       key="download")


def show_trials(frame: pd.DataFrame) -> None:
    st.subheader(f"All trials ({len(frame)})")
    # The cost and the worker first, next to the figures: the frame has them last.
    extra = views.extra_columns(frame)
    rest = [c for c in frame.columns if c not in ("number", "status", "settings", *extra, *views.hidden_columns(frame))]
    table(frame[["number", "status", *extra, *rest]], key="trials")


def show_importance(study: optuna.Study) -> None:
    st.subheader("Parameter importance (throughput)")
    importances = views.param_importances(study)
    if not importances:
        st.info("Needs at least 3 completed trials whose knobs vary; check back as the search goes on.")
        return
    st.plotly_chart(views.importance_figure(importances))


def show_trial(name: str, trials: list[optuna.trial.FrozenTrial], frame: pd.DataFrame, found: dict | None,
               max_p99_ms: float | None) -> None:
    st.subheader("Trial")
    key = f"trial-{name}"
    top, _ = views.chosen(frame, found, max_p99_ms)
    st.session_state.setdefault(key, int(frame.number.iloc[-1]) if top is None else top)
    labels = {int(r.number): f"trial {r.number} · {r.status} · {r.settings}" for r in frame.itertuples()}
    number = st.selectbox("Trial", list(labels), format_func=labels.get, key=key)
    row = frame.set_index("number", drop=False).loc[number]
    attrs = trials[number].user_attrs
    show_trial_notes(row, attrs)
    if found is not None and number in found["finalists"]:
        t = found["finalists"][number]["throughput"]
        st.info(f"A verified finalist{f' ({views.role(found, number)})' if views.role(found, number) else ''}: "
                f"{views.figure_text(t, 'infer/s')} over {found['rounds']} rounds; "
                "the figures below are its single draw.")
    measurement = attrs.get("measurement")
    if measurement:
        left, right = st.columns(2)
        left.markdown("**latency percentiles** (perf_analyzer, client side)")
        left.plotly_chart(views.latency_figure(row, max_p99_ms))
        right.markdown(f"**where the average request's {measurement['avg_ms']:.2f} ms go**")
        right.plotly_chart(views.time_split_figure(measurement))
    steps = views.step_table(attrs)
    if steps is not None:
        st.markdown("**the pipeline's steps** (perf_analyzer's composing-model statistics at the trial's load)")
        table(steps, key=f"steps-{name}-{number}")
    show_trial_config(trials, trials[number])
    if attrs.get("perf_analyzer_cmd"):
        st.markdown("**perf_analyzer command**")
        st.code(attrs["perf_analyzer_cmd"], language="bash", wrap_lines=True)
    recorded = {k: v for k, v in attrs.items() if k not in SHOWN_ATTRS}
    if recorded:
        st.markdown("**everything else the trial recorded** (accuracy, server metrics, timings...)")
        st.json(recorded, expanded=False)


def show_trial_notes(row: pd.Series, attrs: dict) -> None:
    """Why a trial failed or needs care, before its figures."""
    if pd.notna(row.rejected):
        st.warning(f"Rejected by the accuracy check: {row.rejected}")
    elif row.state == "FAIL" or pd.notna(row.error):
        st.error(f"Trial {row.number} failed: {row.error if pd.notna(row.error) else 'no reason recorded'}")
    if row.unstable:
        st.warning("perf_analyzer never saw three windows agree: these figures come from loose windows.")
    if attrs.get("repeat_of") is not None:
        st.info(f"Same deployment and load as trial {attrs['repeat_of']}: its measurement was reused.")


def show_pipeline_configs(trials: list[optuna.trial.FrozenTrial], trial: optuna.trial.FrozenTrial) -> None:
    """Every model's config.pbtxt as deployed, with its diff from the repository as given."""
    default = views.default_pipeline_trial(trials)
    for model, config in trial.user_attrs["configs"].items():
        with st.expander(f"{model}/config.pbtxt"):
            left, right = st.columns(2)
            left.code(config, language="protobuf")
            given = (default.user_attrs["configs"].get(model) if default is not None else None)
            if given is None:
                right.info("The study has no trial of the repository as given to compare with.")
            else:
                right.code(views.text_diff(given, config, f"as given (trial {default.number})", f"trial {trial.number}")
                           or "(identical)", language="diff")


def show_trial_config(trials: list[optuna.trial.FrozenTrial], trial: optuna.trial.FrozenTrial) -> None:
    if trial.user_attrs.get("configs"):
        show_pipeline_configs(trials, trial)
        return
    config = trial.user_attrs.get("config_pbtxt")
    if not config:
        st.info("This trial did not get as far as rendering a config.")
        return
    default = views.default_config_trial(trials)
    left, right = st.columns(2)
    left.markdown("**config.pbtxt** (as deployed)")
    left.code(config, language="protobuf")
    right.markdown("**diff from Triton's default config**")
    if default is None:
        right.info("The study has no default-config trial to compare with.")
    elif default.number == trial.number:
        right.info("This trial is Triton's default config.")
    else:
        right.code(views.config_diff(default, trial) or "(identical)", language="diff")


main()

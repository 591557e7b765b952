"""The tuner dashboard: a Streamlit app over one Optuna study storage, and nothing else.

Served by `tuner dashboard [--storage URL]`, which runs `streamlit run <this file> -- --storage URL`
(the file is the module tuner.dashboard.app, tuner.resources.DASHBOARD_APP). See docs/dashboard.md.
"""

from __future__ import annotations

import argparse
import sys

import optuna
import pandas as pd
import streamlit as st

from tuner import results
from tuner.dashboard import views
from tuner.errors import TunerError

REFRESH_S = 5
NEWEST = 5
# Trial attributes the trial view shows in their own place; it lists whatever else a trial recorded.
SHOWN_ATTRS = {"candidate", "config_pbtxt", "measurement", "perf_analyzer_cmd", "error", "rejected", "baseline",
               "repeat_of", "unstable"}


def storage_url(argv: list[str]) -> str:
    """The storage URL given after `--` on the streamlit command line."""
    parser = argparse.ArgumentParser(prog="tuner dashboard")
    parser.add_argument("--storage", default=views.DEFAULT_STORAGE)
    return parser.parse_known_args(argv)[0].storage


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
    st.caption(f"study storage: `{url}`")
    try:
        storage = open_storage(url)
    except TunerError as exc:
        st.error(str(exc))
        return
    overview = views.study_overview(storage)
    if overview.empty:
        st.info(f"No studies in `{url}` yet. Start one with `tuner search --model MODEL --storage {url}`; "
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
            st.json(attrs["experiment"])
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
    show_pareto(frame, max_p99_ms, name)
    show_best(url, name, trials, frame, max_p99_ms)
    show_trials(frame)
    show_importance(study)
    show_trial(name, trials, frame, max_p99_ms)


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
        table(newest[["number", "status", "settings", "throughput", "p99_ms", "error"]])


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


def show_best(url: str, name: str, trials: list[optuna.trial.FrozenTrial], frame: pd.DataFrame,
              max_p99_ms: float | None) -> None:
    st.subheader("Best trial under the SLA" if max_p99_ms else "Best trial (no SLA)")
    top = views.best(frame, max_p99_ms)
    if top is None:
        done = results.completed(views.eligible(frame))
        st.info("No completed trial yet." if done.empty else
                f"No completed trial has p99 ≤ {max_p99_ms:g} ms; the lowest measured is {done.p99_ms.min():.2f} ms.")
        return
    number = int(top.number)
    default = views.best(frame, max_p99_ms, baseline=True)
    columns = st.columns(5)
    columns[0].metric("trial", number)
    columns[1].metric("throughput (infer/s)", f"{top.throughput:.1f}")
    columns[2].metric("p99 (ms)", f"{top.p99_ms:.2f}")
    columns[3].metric("p50 (ms)", f"{top.p50_ms:.2f}")
    columns[4].metric("vs Triton's default", "-" if default is None else f"{top.throughput / default.throughput:.2f}×",
                      help="Against the best default-config trial under the same SLA.")
    st.markdown(f"`{top.settings}`")
    command = trials[number].user_attrs.get("perf_analyzer_cmd")
    if command:
        st.code(command, language="bash", wrap_lines=True)
    form = st.radio("Config form", ["native", "adapter"], horizontal=True, key=f"form-{name}",
                    help="native: the stock Triton image's onnxruntime backend; "
                         "adapter: the python-backend form the bundled tritonserver measured.")
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
    rest = [c for c in frame.columns if c not in ("number", "status", "settings")]
    table(frame[["number", "status", *rest]], key="trials")


def show_importance(study: optuna.Study) -> None:
    st.subheader("Parameter importance (throughput)")
    importances = views.param_importances(study)
    if not importances:
        st.info("Needs at least 3 completed trials whose knobs vary; check back as the search goes on.")
        return
    st.plotly_chart(views.importance_figure(importances))


def show_trial(name: str, trials: list[optuna.trial.FrozenTrial], frame: pd.DataFrame,
               max_p99_ms: float | None) -> None:
    st.subheader("Trial")
    key = f"trial-{name}"
    top = views.best(frame, max_p99_ms)
    st.session_state.setdefault(key, int(frame.number.iloc[-1] if top is None else top.number))
    labels = {int(r.number): f"trial {r.number} · {r.status} · {r.settings}" for r in frame.itertuples()}
    number = st.selectbox("Trial", list(labels), format_func=labels.get, key=key)
    row = frame.set_index("number", drop=False).loc[number]
    attrs = trials[number].user_attrs
    show_trial_notes(row, attrs)
    measurement = attrs.get("measurement")
    if measurement:
        left, right = st.columns(2)
        left.markdown("**latency percentiles** (perf_analyzer, client side)")
        left.plotly_chart(views.latency_figure(row, max_p99_ms))
        right.markdown(f"**where the average request's {measurement['avg_ms']:.2f} ms go**")
        right.plotly_chart(views.time_split_figure(measurement))
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


def show_trial_config(trials: list[optuna.trial.FrozenTrial], trial: optuna.trial.FrozenTrial) -> None:
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

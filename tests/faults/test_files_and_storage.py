"""Faults of files and storage: export never deletes or overwrites what tuner did not write (the
user's model least of all), a study name never leads outside results_dir, a storage password is
never shown nor stored, the dashboard creates nothing, and SQLite waits out another's lock."""

from __future__ import annotations

import hashlib
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from models import mlp
from tuner import experiment, tools
from tuner.cli import app
from tuner.dashboard import views
from tuner.errors import TunerError
from tuner.resources import DASHBOARD_APP
from tuner.storage import mask, open_storage
from tuner.study import open_study

runner = CliRunner()
STUDY = "faults"
SECRET_URL = "postgresql+psycopg://user:secret@127.0.0.1:5432/db"
USER_CONFIG = 'name: "m"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'


def tree(root: Path) -> dict[str, str]:
    """Every file and folder under root, with the sha256 of each file's content."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error:") and "Traceback" not in result.output, result.output
    line = " ".join(result.output.split())  # rich wraps long lines at the terminal's width
    for fragment in fragments:
        assert fragment in line, line
    return line


@dataclass(frozen=True)
class Searched:
    work: Path
    model_dir: Path  # the user's Triton model directory the search was given
    storage: str
    db: Path


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Searched:
    """One real two-trial search (Triton's default config, then one strong shape) of a Triton model
    directory that also holds the user's own config and notes."""
    if tools.tritonserver_path() is None or tools.perf_analyzer_path() is None:
        pytest.fail("tritonserver or perf_analyzer missing: run `bash scripts/setup.sh` (make test does)")
    work = tmp_path_factory.mktemp("files-and-storage")
    model_dir = work / "models" / "m"
    mlp(model_dir / "1" / "model.onnx", features=16, hidden=32)
    (model_dir / "config.pbtxt").write_text(USER_CONFIG)
    (model_dir / "NOTES.md").write_text("the user's own notes\n")
    spec = work / "exp.yaml"
    spec.write_text(yaml.safe_dump({
        "trials": 2, "results_dir": str(work / "results"), "baseline_concurrency": [2],
        "space": {"instances": [1], "max_batch_size": [4], "max_queue_delay_us": [100], "threads": [0],
                  "concurrency": [2]},
        "measure": {"interval_ms": 300, "max_windows": 3, "samples": 2, "confirm_best": False},
        "accuracy": {"samples": 2},
    }))
    db = work / "results" / "tuner.db"
    storage = f"sqlite:///{db}"
    result = runner.invoke(app, ["search", "--model", str(model_dir), "--experiment", str(spec),
                                 "--storage", storage, "--study", STUDY])
    assert result.exit_code == 0, result.output
    return Searched(work, model_dir, storage, db)


def export(searched: Searched, out: Path):
    return runner.invoke(app, ["export", "--study", STUDY, "--storage", searched.storage, "--out", str(out)])


@pytest.mark.integration
def test_export_over_the_searched_model_directory_is_refused_and_leaves_it_as_it_was(searched):
    models = searched.model_dir.parent
    before = tree(models)
    line = one_line_error(export(searched, models), "is the study's source model", "choose another --out")
    assert str(searched.model_dir) in line
    assert tree(models) == before  # versions, config and notes: every byte as it was, nothing added beside
    # Into the model directory itself, or its version folder: the export would be inside the source.
    for inside in (searched.model_dir, searched.model_dir / "1"):
        one_line_error(export(searched, inside), "is inside the study's source model")
    assert tree(models) == before


@pytest.mark.integration
def test_export_next_to_files_tuner_did_not_write_is_refused_and_changes_nothing(searched, tmp_path):
    theirs = tmp_path / "theirs"
    (theirs / "m" / "1").mkdir(parents=True)
    (theirs / "m" / "1" / "model.onnx").write_bytes(b"someone else's model")
    (theirs / "m" / "config.pbtxt").write_text('name: "m"\n')
    before = tree(theirs)
    one_line_error(export(searched, theirs), f"{theirs / 'm'} already exists and tuner export did not write it",
                   "choose another --out")
    assert tree(theirs) == before

    report_only = tmp_path / "report-only"
    report_only.mkdir()
    (report_only / "REPORT.md").write_text("my own report\n")
    before = tree(report_only)
    one_line_error(export(searched, report_only), f"{report_only / 'REPORT.md'} already exists")
    assert tree(report_only) == before  # checked before anything is written: no m/ either


@pytest.mark.integration
def test_export_replaces_its_own_export_and_only_that(searched, tmp_path):
    out = tmp_path / "exported"
    first = export(searched, out)
    assert first.exit_code == 0, first.output
    assert (out / "m" / "config.pbtxt").is_file() and (out / "m" / "1" / "model.onnx").is_file()
    assert (out / "m" / ".tuner-export").is_file() and (out / ".tuner-export").is_file()
    second = export(searched, out)  # its own marker: replaced
    assert second.exit_code == 0, second.output
    assert {"REPORT.md", "trial.json", "perf_inputs.json", "m/config.pbtxt", "m/1/model.onnx"} <= set(tree(out))

    (out / "m" / "2").mkdir()
    (out / "m" / "2" / "model.onnx").write_bytes(b"a version the user added")
    before = tree(out)
    one_line_error(export(searched, out), "holds files tuner export did not write (2/model.onnx)")
    assert tree(out) == before
    assert tree(searched.model_dir)["config.pbtxt"] == hashlib.sha256(USER_CONFIG.encode()).hexdigest()


@pytest.mark.parametrize("name", ["../../x", "../x", ".hidden", "a/b", "x" * 101, "with space"])
def test_a_study_name_that_is_not_a_plain_folder_name_is_one_line_and_creates_nothing(name, tmp_path, monkeypatch,
                                                                                     mlp_onnx):
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    before = tree(tmp_path)
    result = runner.invoke(app, ["search", "--model", str(mlp_onnx), "--study", name,
                                 "--storage", f"sqlite:///{cwd / 'results' / 'tuner.db'}"])
    one_line_error(result, "study:", "1 to 100 letters, digits, '.', '_' or '-', not starting with '.'")
    assert tree(tmp_path) == before  # no results/, no x/ next to it or above


def test_a_study_folder_outside_results_dir_is_refused():
    from tuner.workspace import Workspace

    assert Workspace.of(Path("results"), "ok-1.2_x").root == Path("results/ok-1.2_x")
    for name in ("..", "../x", "a/../../x", "."):
        with pytest.raises(TunerError, match="outside results"):
            Workspace.of(Path("results"), name)


def test_a_storage_password_is_masked_where_shown_and_where_stored():
    assert mask(SECRET_URL) == "postgresql+psycopg://user:***@127.0.0.1:5432/db"
    assert mask("postgresql://h/db?user=u&password=secret&sslmode=require") == \
        "postgresql://h/db?user=u&password=***&sslmode=require"
    assert mask("sqlite:///results/tuner.db") == "sqlite:///results/tuner.db"
    exp = experiment.build({"model": "-", "storage": SECRET_URL})
    assert exp.storage_url == SECRET_URL  # the search itself opens the real URL
    stored = exp.model_dump(mode="json")  # what record_identity stores in the study
    assert "secret" not in str(stored) and stored["storage"] == mask(SECRET_URL)
    assert experiment.Experiment.model_validate(stored).storage == mask(SECRET_URL)  # export re-reads it
    with pytest.raises(TunerError) as failed:  # no driver here (or no server): one line, masked
        open_storage(SECRET_URL)
    assert "secret" not in str(failed.value) and "user:***@" in str(failed.value)


@pytest.mark.integration
def test_the_stored_experiment_holds_the_storage_url_without_a_secret(searched):
    study = optuna.load_study(study_name=STUDY, storage=searched.storage)
    assert study.user_attrs["experiment"]["storage"] == searched.storage  # no password: shown as given
    with sqlite3.connect(searched.db) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_dashboard_gets_the_storage_url_off_its_command_line(monkeypatch):
    import subprocess as sp

    calls = []
    monkeypatch.setattr(sp, "call", lambda cmd, **kwargs: calls.append((cmd, kwargs)) or 0)
    result = runner.invoke(app, ["dashboard", "--storage", SECRET_URL])
    assert result.exit_code == 0, result.output
    (cmd, kwargs), = calls
    assert "secret" not in " ".join(cmd) and "secret" not in result.output
    assert kwargs["env"]["TUNER_STORAGE"] == SECRET_URL


def test_the_dashboard_page_never_shows_the_password(monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", [str(DASHBOARD_APP)])
    monkeypatch.setenv("TUNER_STORAGE", SECRET_URL)
    at = AppTest.from_file(str(DASHBOARD_APP), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [c.value for c in at.caption] + [e.value for e in at.error]
    assert any("user:***@" in text for text in shown), shown
    assert not any("secret" in text for text in shown), shown


def test_the_dashboard_never_creates_a_storage(tmp_path):
    missing = tmp_path / "sub" / "tuner.db"
    with pytest.raises(TunerError, match=r"there is no file .*`tuner search --storage sqlite:///"):
        views.open_storage(f"sqlite:///{missing}")
    assert not missing.exists() and not missing.parent.exists()
    empty = tmp_path / "empty.db"
    empty.touch()  # a file, but no study storage in it: an error, and no schema written into it
    with pytest.raises(TunerError, match="cannot open study storage"):
        views.open_storage(f"sqlite:///{empty}")
    assert empty.stat().st_size == 0


@pytest.mark.integration
def test_a_locked_sqlite_database_is_waited_for_not_failed(searched):
    """Another connection holds the write lock longer than sqlite3's default 5 s busy timeout:
    the report reads meanwhile (WAL) and a write waits for the lock, then succeeds."""
    held_s = 7.0
    locked, done = threading.Event(), threading.Event()

    def hold_lock() -> None:
        db = sqlite3.connect(searched.db, isolation_level=None)
        try:
            db.execute("BEGIN EXCLUSIVE")
            locked.set()
            time.sleep(held_s)
            db.execute("COMMIT")
        finally:
            db.close()
            done.set()

    holder = threading.Thread(target=hold_lock, daemon=True)
    holder.start()
    assert locked.wait(10)
    start = time.monotonic()
    report = runner.invoke(app, ["report", "--study", STUDY, "--storage", searched.storage])
    assert report.exit_code == 0, report.output
    assert "Best trials" in report.output
    study = open_study(experiment.build({"model": "-", "storage": searched.storage}), STUDY, create=False)
    study.set_user_attr("written_while_locked", True)  # waits for the lock instead of "database is locked"
    waited = time.monotonic() - start
    holder.join(10)
    assert done.is_set() and waited >= held_s - 1.5
    assert optuna.load_study(study_name=STUDY, storage=searched.storage).user_attrs["written_while_locked"] is True


def test_an_out_folder_that_holds_the_source_onnx_file_is_refused(tmp_path):
    from tuner.export import check_out

    onnx = mlp(tmp_path / "repo" / "x" / "x.onnx", features=4, hidden=4)  # `--model repo/x/x.onnx`: model "x"
    before = tree(tmp_path)
    with pytest.raises(TunerError, match=r"repo/x holds the study's source model .*x\.onnx; export never writes"):
        check_out(tmp_path / "repo", "x", [onnx.resolve()])
    check_out(tmp_path / "elsewhere", "x", [onnx.resolve()])  # a fresh folder: fine
    assert tree(tmp_path) == before

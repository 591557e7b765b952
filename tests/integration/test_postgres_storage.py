"""Studies in a real PostgreSQL, the storage of several workers: scripts/postgres.sh starts it,
tuner.storage opens it (heartbeats for writers, read-only for the dashboard), its faults are one
line with the password masked, and a search with a price per hour reports and exports its cost.

The server is the tests' own (tests/postgres_server.py: scripts/postgres.sh on a data directory of
the session, stopped at its end). Each test gets a database
of its own, dropped after it.
"""

import json
import socket
import subprocess
import sys
import time

import optuna
import pytest
from typer.testing import CliRunner

from conftest import write_experiment
from postgres_server import libpq
from tuner import storage as tuner_storage
from tuner.cli import app
from tuner.errors import TunerError

psycopg = pytest.importorskip("psycopg", reason="tuner's postgres extra (scripts/setup.sh installs it)")


def test_the_script_run_again_finds_its_server_and_only_prints_the_url(postgres):
    assert postgres.url.startswith("postgresql+psycopg://tuner@127.0.0.1:")
    again = time.monotonic()
    rerun = postgres.script()
    assert rerun.returncode == 0 and rerun.stdout.strip().splitlines()[-1] == postgres.url
    assert time.monotonic() - again < 5
    assert postgres.script("status").returncode == 0


def _tables(url: str) -> list[str]:
    with psycopg.connect(libpq(url)) as db:
        return [r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_reader_follows_what_a_writer_adds_to_the_study(postgres_database):
    writer = tuner_storage.open_storage(postgres_database)
    assert writer.get_heartbeat_interval() == tuner_storage.HEARTBEAT_INTERVAL_S
    study = optuna.create_study(study_name="live", storage=writer, directions=["maximize", "minimize"])
    reader = tuner_storage.open_storage(postgres_database, read_only=True)
    assert reader.get_heartbeat_interval() is None  # the dashboard keeps no heartbeat
    following = optuna.load_study(study_name="live", storage=reader)
    assert following.trials == []
    for throughput in (100.0, 250.0):
        trial = study.ask()
        trial.set_user_attr("worker", "host-a/w0")
        study.tell(trial, [throughput, 5.0])
        seen = following.trials  # the same reader, not reopened
        assert [t.values[0] for t in seen][-1] == throughput and seen[-1].user_attrs["worker"] == "host-a/w0"
    assert len(following.trials) == 2


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning", "ignore:Heartbeat of storage")
def test_the_trial_of_a_killed_worker_fails_through_its_heartbeat(postgres_database, monkeypatch):
    monkeypatch.setattr(tuner_storage, "HEARTBEAT_INTERVAL_S", 1)
    monkeypatch.setattr(tuner_storage, "GRACE_PERIOD_S", 1)
    writer = tuner_storage.open_storage(postgres_database)
    study = optuna.create_study(study_name="stale", storage=writer, directions=["maximize", "minimize"])
    trial = study.ask()
    writer.record_heartbeat(trial._trial_id)  # what a running search does every interval, until killed
    time.sleep(2.5)
    optuna.storages.fail_stale_trials(study)  # what the next worker does when it starts or asks
    assert study.trials[0].state == optuna.trial.TrialState.FAIL


def test_the_dashboard_reader_creates_nothing_in_an_empty_database(postgres_database):
    with pytest.raises(TunerError) as failed:
        tuner_storage.open_storage(postgres_database, read_only=True)
    message = str(failed.value)
    assert message.startswith(f"cannot open study storage '{postgres_database}': ") and "\n" not in message
    assert "exception is raised during the commit" not in message  # the cause, not Optuna's wrapper
    assert _tables(postgres_database) == []


def test_an_unreachable_postgresql_is_one_line_with_the_password_masked():
    url = f"postgresql+psycopg://tuner:hunter2@127.0.0.1:{_closed_port()}/tuner"
    shown = url.replace("hunter2", "***")
    for read_only in (False, True):
        started = time.monotonic()
        with pytest.raises(TunerError) as failed:
            tuner_storage.open_storage(url, read_only=read_only)
        assert time.monotonic() - started < tuner_storage.POSTGRES_CONNECT_TIMEOUT_S
        message = str(failed.value)
        assert message.startswith(f"cannot open study storage '{shown}': connection failed")
        assert "Connection refused" in message and "hunter2" not in message and "\n" not in message
    result = CliRunner().invoke(app, ["report", "--study", "any", "--storage", url])
    assert result.exit_code == 2
    assert result.output.count("error:") == 1  # one message (rich wraps it at the console's width)
    assert " ".join(result.output.split()).startswith(f"error: cannot open study storage '{shown}': connection")


def test_a_missing_driver_says_how_to_install_it(tmp_path):
    # psycopg made unimportable in a fresh interpreter, as on a machine without tuner's postgres extra.
    probe = ("import sys; sys.modules['psycopg'] = None\n"
             "from tuner.storage import open_storage\n"
             "from tuner.errors import TunerError\n"
             "try:\n    open_storage(sys.argv[1])\nexcept TunerError as exc:\n    print(exc)\n")
    for url, advice in (("postgresql+psycopg://tuner:pw@127.0.0.1:5432/tuner", "install it with: pip install "
                                                                               "'tuner[postgres]'"),
                        ("postgresql+psycopg2://tuner:pw@127.0.0.1:5432/tuner", "write the URL as "
                                                                                "postgresql+psycopg://")):
        out = subprocess.run([sys.executable, "-c", probe, url], capture_output=True, text=True, timeout=60).stdout
        lines = out.strip().splitlines()
        assert len(lines) == 1 and "driver is not installed" in lines[0] and advice in lines[0], out
        assert "pw@" not in lines[0] and "pip install 'tuner[postgres]'" in lines[0]


def test_a_search_on_postgresql_with_a_price_reports_and_exports_its_cost(postgres_database, mlp_onnx, tmp_path):
    spec = write_experiment(tmp_path / "exp.yaml", results_dir=str(tmp_path / "results"), trials=3,
                            verify={"leaders": 1, "min_rounds": 2, "max_rounds": 2})
    runner = CliRunner()
    searched = runner.invoke(app, ["search", "--model", str(mlp_onnx), "--experiment", str(spec),
                                   "--storage", postgres_database, "--study", "priced", "--price-per-hour", "3.6"])
    assert searched.exit_code == 0, searched.output
    study = optuna.load_study(study_name="priced", storage=postgres_database)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(t.user_attrs["price_per_hour"] == 3.6 and t.user_attrs.get("worker") for t in done)

    reported = runner.invoke(app, ["report", "--study", "priced", "--storage", postgres_database])
    assert reported.exit_code == 0, reported.output
    assert "cost / 1M" in reported.output and "per million inferences" in reported.output

    out = tmp_path / "export"
    exported = runner.invoke(app, ["export", "--study", "priced", "--storage", postgres_database, "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    claim = json.loads((out / "tuner-claim.json").read_text())
    throughput = claim["figures"]["throughput"]["median"]
    assert claim["cost"]["price_per_hour"] == 3.6
    assert claim["cost"]["per_million_inferences"]["median"] == pytest.approx(3.6 / (throughput * 3600) * 1e6)
    assert claim["measured_on"]["worker"] == done[0].user_attrs["worker"]
    assert "## Cost" in (out / "REPORT.md").read_text()
    assert "per million inferences" in (out / "REPORT.html").read_text()

"""Fixtures of the dashboard tests: a study made by one real short search, and the app run over a storage."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import optuna
import pytest
import yaml
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from tuner import tools
from tuner.cli import app
from tuner.resources import DASHBOARD_APP as APP

STUDY = "dash"
SLA_MS = 500.0


@dataclass(frozen=True)
class Searched:
    storage: str
    study: optuna.Study


@pytest.fixture(scope="session")
def searched(tmp_path_factory, mlp_onnx) -> Searched:
    """Four real trials of the tiny MLP (about 40 s): Triton's default config first, then three candidates,
    and the verification stage over the finalists (two or three interleaved rounds)."""
    if tools.tritonserver_path() is None or tools.perf_analyzer_path() is None:
        pytest.fail("tritonserver or perf_analyzer missing: run `bash scripts/setup.sh` (make test does)")
    work = tmp_path_factory.mktemp("dashboard-search")
    spec = work / "exp.yaml"
    spec.write_text(yaml.safe_dump({
        "trials": 4,
        "results_dir": str(work / "results"),
        "baseline_concurrency": [2],
        "space": {"instances": [1, 2], "max_batch_size": [4, 8], "max_queue_delay_us": [100],
                  "threads": [0, 1], "concurrency": [2, 4]},
        "measure": {"interval_ms": 500, "max_windows": 4, "samples": 4},
        # The search ends with its verification stage; two or three rounds keep the fixture short.
        "verify": {"min_rounds": 2, "max_rounds": 3},
    }))
    storage = f"sqlite:///{work / 'results' / 'tuner.db'}"
    result = CliRunner().invoke(app, ["search", "--model", str(mlp_onnx), "--experiment", str(spec),
                                      "--storage", storage, "--study", STUDY, "--max-p99-ms", str(SLA_MS)])
    assert result.exit_code == 0, result.output
    return Searched(storage, optuna.load_study(study_name=STUDY, storage=storage))


@pytest.fixture
def dashboard(monkeypatch):
    """Run the app over a storage URL, as `tuner dashboard --storage URL` passes it."""

    def run(storage: str) -> AppTest:
        monkeypatch.setattr(sys, "argv", [str(APP), "--storage", storage])
        at = AppTest.from_file(str(APP), default_timeout=120).run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return run

"""A regular (non-editable) `pip install` of the checkout is a complete tuner: it renders configs, runs a
real search and serves the dashboard from its own copy of templates/ and dashboard/, from any folder.

The install is quick on purpose: a fresh virtual environment, the checkout built and installed without its
dependencies, and the dependencies borrowed from the test environment through a .pth file. A plain path line
in a .pth only appends that folder to sys.path; the .pth files inside it (the editable install's finder of
the test environment among them) are not processed, so the checkout's tuner cannot leak in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import optuna
import pytest

from models import mlp
from tuner import results, tools

from conftest import write_experiment

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STUDY = "installed"
# What the build must not see (.gitignore's entries and the environments).
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "results", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".whl", ".gl", ".carry")

PATHS = r"""
import json, sys, tuner, tuner.resources as r
print(json.dumps({"tuner": tuner.__file__, "templates": str(r.TEMPLATES_DIR), "adapters": str(r.ADAPTER_DIR),
                  "app": str(r.DASHBOARD_APP), "prefix": sys.prefix}))
"""

# Runs in the installed environment: the installed app, as `tuner dashboard --storage URL` passes it.
DASHBOARD = r"""
import json, sys
from streamlit.testing.v1 import AppTest
from tuner.resources import DASHBOARD_APP

sys.argv = [str(DASHBOARD_APP), "--storage", sys.argv[1]]
at = AppTest.from_file(str(DASHBOARD_APP), default_timeout=120).run()
views = sys.modules.get("tuner.dashboard.views")
print(json.dumps({"views": getattr(views, "__file__", None),
                  "exceptions": [str(e.value) for e in at.exception], "errors": [str(e.value) for e in at.error],
                  "titles": [t.value for t in at.title], "headers": [h.value for h in at.header],
                  "subheaders": [s.value for s in at.subheader]}))
"""


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """A fresh venv with the checkout pip-installed into it (not editable); commands run in a scratch folder."""
    tmp = tmp_path_factory.mktemp("install")
    src, venv, work = tmp / "src", tmp / "venv", tmp / "work"
    work.mkdir()
    shutil.copytree(REPO, src, ignore=NOT_SOURCE)  # the build writes build/ and *.egg-info beside its sources
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], work, dict(os.environ), 120)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     work, dict(os.environ), 60).stdout.strip())
    (site / "test-environment.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # Not the test environment's bin/ on PATH, nor its variables: the installed copy stands on its own.
    here = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *(p for p in env.get("PATH", "").split(os.pathsep)
                                                        if p and p != here)])
    # pip and setuptools come from the test environment (through the .pth); --ignore-installed keeps pip
    # off the test environment's own tuner, which it can see there too.
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index", "--no-deps",
          "--no-build-isolation", "--ignore-installed", str(src)], work, env, 300)
    return {"venv": venv, "python": python, "site": site, "work": work, "env": env}


def test_the_installed_tuner_is_its_own_copy_with_every_file_it_ships(installed):
    venv, site = installed["venv"], installed["site"]
    paths = json.loads(_run([str(installed["python"]), "-c", PATHS], installed["work"], installed["env"], 60).stdout)
    assert Path(paths["prefix"]) == venv
    assert Path(paths["tuner"]) == site / "tuner" / "__init__.py"  # not the checkout's
    templates, adapters, app = Path(paths["templates"]), Path(paths["adapters"]), Path(paths["app"])
    assert (templates, adapters, app) == (site / "tuner" / "templates", site / "tuner" / "templates" / "python",
                                          site / "tuner" / "dashboard" / "app.py")
    for module in REPO.joinpath("tuner").rglob("*.py"):  # pyproject.toml lists the packages by hand
        name = ".".join(module.parent.relative_to(REPO).parts)
        assert (site / module.relative_to(REPO)).is_file(), f"package {name} is missing from pyproject.toml"
    for pattern, installed_dir in (("templates/*.j2", templates), ("templates/python/*.py", adapters),
                                   ("dashboard/*.py", app.parent)):
        shipped = sorted(REPO.glob(pattern))
        assert shipped, pattern
        for path in shipped:
            assert (installed_dir / path.name).is_file(), f"{path.relative_to(REPO)} is not installed"
    assert (venv / "bin" / "tuner").is_file()


def test_the_installed_tuner_searches_and_serves_the_dashboard_from_anywhere(installed, tmp_path):
    server, perf_analyzer = tools.tritonserver_path(), tools.perf_analyzer_path()
    assert server and perf_analyzer  # the integration conftest fails first when setup.sh was not run
    # The installed copy looks for the binaries beside its own interpreter: point it at the checkout's.
    env = installed["env"] | {"TUNER_TRITONSERVER": str(server), "TUNER_PERF_ANALYZER": str(perf_analyzer)}
    work = installed["work"]
    model = mlp(tmp_path / "tiny.onnx", features=8, hidden=16, outputs=4, layers=2)
    spec = write_experiment(tmp_path / "exp.yaml", trials=2, results_dir=str(tmp_path / "results"))
    storage = f"sqlite:///{tmp_path / 'results' / 'tuner.db'}"
    _run([str(installed["venv"] / "bin" / "tuner"), "search", "--model", str(model), "--experiment", str(spec),
          "--storage", storage, "--study", STUDY, "--trials", "2", "--max-p99-ms", "500"], work, env, 600)
    study = optuna.load_study(study_name=STUDY, storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert (results.trials_frame(study).throughput > 0).all()
    assert 'backend: "python"' in study.trials[0].user_attrs["config_pbtxt"]  # rendered from the templates

    page = json.loads(_run([str(installed["python"]), "-c", DASHBOARD, storage], work, env, 300).stdout)
    assert page["exceptions"] == [] and page["errors"] == []
    assert Path(page["views"]).is_relative_to(installed["site"])
    assert page["titles"] == ["tuner: Triton configuration search"]
    assert f"Study {STUDY}" in page["headers"]
    assert "Best trial under the SLA" in page["subheaders"]  # the best trial's zip was exported without error

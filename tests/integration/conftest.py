import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from tuner import tools

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _real_binaries():
    """Integration tests need the real tritonserver and perf_analyzer that scripts/setup.sh installs."""
    if tools.tritonserver_path() is None or tools.perf_analyzer_path() is None:
        pytest.fail("tritonserver or perf_analyzer missing: run `bash scripts/setup.sh` (make test does)")


def write_experiment(path: Path, **fields) -> Path:
    """A quick experiment: short measurement windows, a small space."""
    spec = {
        "trials": 4,
        "baseline_concurrency": [2],
        "space": {"instances": [1, 2], "max_batch_size": [4, 8], "max_queue_delay_us": [100],
                  "threads": [0, 1], "concurrency": [2, 4]},
        "measure": {"interval_ms": 500, "max_windows": 4, "samples": 4},
        # Verification kept short: the two leaders and the default, two or three rounds.
        "verify": {"leaders": 2, "min_rounds": 2, "max_rounds": 3},
    } | fields
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL on loopback (scripts/postgres.sh) with a data directory of this test run,
    stopped and removed at the end. The directory is world-searchable: postgres runs as its own
    user and must reach it."""
    data = Path(tempfile.mkdtemp(prefix="tuner-pg-"))
    os.chmod(data, 0o755)
    env = dict(os.environ, TUNER_PG_DIR=str(data / "data"), TUNER_PG_PORT=str(56000 + os.getpid() % 1000))
    script = Path(__file__).resolve().parents[2] / "scripts" / "postgres.sh"
    started = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr[-2000:]
    yield started.stdout.strip().splitlines()[-1]
    subprocess.run(["bash", str(script), "stop"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(data, ignore_errors=True)

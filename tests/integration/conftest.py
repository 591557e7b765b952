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


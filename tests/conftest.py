import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import mlp  # noqa: E402


@pytest.fixture(scope="session")
def mlp_onnx(tmp_path_factory) -> Path:
    return mlp(tmp_path_factory.mktemp("models") / "mlp.onnx")

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import mlp  # noqa: E402
from postgres_server import fresh_database, postgres_server  # noqa: E402


@pytest.fixture(scope="session")
def mlp_onnx(tmp_path_factory) -> Path:
    return mlp(tmp_path_factory.mktemp("models") / "mlp.onnx")


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL on loopback (scripts/postgres.sh) for the session: .url, .script(...)."""
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres) -> str:
    return postgres.url


@pytest.fixture
def postgres_database(postgres_url) -> str:
    """A database of its own for one test, as a storage URL; dropped after it."""
    with fresh_database(postgres_url) as url:
        yield url

"""A real PostgreSQL for the tests (scripts/postgres.sh) and fresh databases in it.

The data directory is a world-searchable temporary folder: postgres runs as its own user and must
reach it wherever the checkout lies. The server is stopped and its folder removed at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "postgres.sh"


@dataclass(frozen=True)
class PostgresServer:
    url: str  # the storage URL the script printed last
    env: dict  # TUNER_PG_DIR and TUNER_PG_PORT of this server, for running the script again

    def script(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=600)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    folder = Path(tempfile.mkdtemp(prefix="tuner-pg-"))
    os.chmod(folder, 0o755)
    env = dict(os.environ, TUNER_PG_DIR=str(folder / "data"), TUNER_PG_PORT=str(56000 + os.getpid() % 1000))
    server = PostgresServer("", env)
    started = server.script()
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        yield PostgresServer(started.stdout.strip().splitlines()[-1], env)
    finally:
        server.script("stop")
        shutil.rmtree(folder, ignore_errors=True)


def libpq(url: str) -> str:
    """The SQLAlchemy URL as psycopg takes it."""
    return sqlalchemy.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """A new database of the server at `url`, as a storage URL; dropped afterwards."""
    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq(url), autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    try:
        yield sqlalchemy.engine.make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq(url), autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

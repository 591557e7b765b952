"""The study storage: opening it safely, and showing its URL without its password.

Every place that shows or stores a storage URL (terminal lines, error messages, the dashboard,
the experiment a study records) goes through `mask`; every place that opens one goes through
`open_storage`, which gives SQLite a busy timeout and WAL journaling, so that the dashboard
rereading a study every few seconds never fails a search's writes (nor the reverse), and
PostgreSQL (psycopg 3, `postgresql+psycopg://`, the storage of several workers) a connect timeout
and pooled connections checked before use.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import warnings
from pathlib import Path

import optuna
import sqlalchemy

from tuner.errors import TunerError

SQLITE_BUSY_TIMEOUT_S = 30  # a writer (or reader) waits this long for another's lock before failing
HEARTBEAT_INTERVAL_S = 10  # a running search's trials beat this often...
GRACE_PERIOD_S = 30  # ...and one silent this long is failed (its search was killed)
POSTGRES_CONNECT_TIMEOUT_S = 10  # an unreachable PostgreSQL host is an error after this long, not a hang

# scheme://user:password@host: the password, as SQLAlchemy's URL parser splits it.
_NETLOC_SECRET = re.compile(r"^([\w+.-]+://[^:/@]*:)[^@]*@")
# ...?password=...: the libpq-style query parameters that carry one.
_QUERY_SECRET = re.compile(r"([?&](?:password|passwd|pwd)=)[^&]*", re.IGNORECASE)


def mask(url: str) -> str:
    """The URL with its password (in the user part or a query parameter) replaced by ***."""
    return _QUERY_SECRET.sub(r"\1***", _NETLOC_SECRET.sub(r"\1***@", url))


def _secrets(url: str) -> list[str]:
    found = [m.group(0).removeprefix(m.group(1)).removesuffix("@") for m in [_NETLOC_SECRET.match(url)] if m]
    found += [m.group(0).removeprefix(m.group(1)) for m in _QUERY_SECRET.finditer(url)]
    return [s for s in found if s]


def sqlite_file(url: str) -> Path | None:
    """The database file of an sqlite:/// URL; None for other databases and in-memory SQLite."""
    if not url.startswith("sqlite:"):
        return None
    try:
        database = sqlalchemy.engine.make_url(url).database
    except Exception:
        return None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _use_wal(path: Path) -> None:
    """Switch the SQLite file to write-ahead logging (it stays so: the mode is stored in the file).
    Readers then never block the writer and the writer never blocks readers."""
    with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)) as db:
        db.execute("PRAGMA journal_mode=WAL")


def _driver_missing(cause: BaseException, url: str) -> str:
    """What to do about a missing database driver: for PostgreSQL, tuner's postgres extra (psycopg 3)."""
    what = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    text = f"its database driver is not installed ({what})"
    if not url.startswith("postgres"):
        return text
    module = getattr(cause, "name", None) or ""
    if module.split(".")[0] == "psycopg":
        return text + "; install it with: pip install 'tuner[postgres]'"
    # Another PostgreSQL driver (psycopg2, pg8000, ...) named by the URL: tuner installs psycopg 3.
    return text + ("; tuner's postgres extra installs psycopg 3: write the URL as postgresql+psycopg://... and "
                   "install it with: pip install 'tuner[postgres]'")


def _root_cause(exc: BaseException) -> BaseException:
    """The error under Optuna's own wrapper ("An exception is raised during the commit...")."""
    while isinstance(exc, optuna.exceptions.StorageInternalError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _reason(exc: BaseException, url: str) -> str:
    """The first line of a storage error, with any secret of the URL masked."""
    exc = _root_cause(exc)
    if isinstance(exc, ImportError):
        text = _driver_missing(exc.__cause__ or exc, url)
    else:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        text = re.sub(r"^\([\w.]+\) ", "", text)  # SQLAlchemy's "(psycopg.OperationalError) " prefix
        text = re.sub(r"\s+", " ", text)
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text.replace(url, mask(url))


def _engine_kwargs(url: str) -> dict:
    """SQLite waits for another's lock. PostgreSQL gives up on an unreachable host after a while
    instead of libpq's default of waiting as long as TCP does, and checks a pooled connection
    before using it, so that a worker or the dashboard outlives a restart of the server."""
    if url.startswith("sqlite:"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if url.startswith("postgresql"):
        connect_args = {} if "connect_timeout=" in url else {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}
        return {"connect_args": connect_args, "pool_pre_ping": True}
    return {}


def open_storage(url: str, *, read_only: bool = False) -> optuna.storages.RDBStorage:
    """Open an Optuna RDB storage; any problem (bad URL, missing driver, unreachable database, no
    such SQLite file) is one TunerError line showing the masked URL.

    Writers (search, export, report) get SQLite's folder created, WAL journaling, and trial
    heartbeats. `read_only` (the dashboard) opens only what exists: a missing SQLite file is an
    error, the schema is never created, and no heartbeat is kept.
    """
    shown = mask(url)
    path = sqlite_file(url)
    try:
        engine_kwargs = _engine_kwargs(url)
        if path is not None:
            if read_only and not path.is_file():
                raise TunerError(f"cannot open study storage {shown!r}: there is no file {path}; "
                                 f"`tuner search --storage {shown}` creates it")
            if not read_only:
                path.parent.mkdir(parents=True, exist_ok=True)
                _use_wal(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
            if read_only:
                # skip_table_creation: a reader never creates Optuna's schema (a storage without it
                # is an error). Optuna still writes its version row into a schema that lacks one,
                # which only a storage that no Optuna ever finished creating does.
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=True)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                              heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=GRACE_PERIOD_S)
    except TunerError:
        raise
    except Exception as exc:  # sqlalchemy and sqlite3 errors: bad URL, missing driver, not a database, unreachable
        raise TunerError(f"cannot open study storage {shown!r}: {_reason(exc, url)}") from None

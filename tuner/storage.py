"""The study storage: opening it safely, and showing its URL without its password.

Every place that shows or stores a storage URL (terminal lines, error messages, the dashboard,
the experiment a study records) goes through `mask`; every place that opens one goes through
`open_storage`, which gives SQLite a busy timeout and WAL journaling, so that the dashboard
rereading a study every few seconds never fails a search's writes (nor the reverse).
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


def _reason(exc: BaseException, url: str) -> str:
    """The first line of a storage error, with any secret of the URL masked."""
    text = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, ImportError):
        cause = exc.__cause__ or exc
        text = f"its database driver is not installed ({str(cause).splitlines()[0] if str(cause) else type(cause).__name__})"
        if url.startswith("postgresql"):
            # (no brackets: the CLI prints with rich markup, which would eat "[postgres]")
            text += "; install it with: pip install psycopg psycopg-binary (tuner's postgres extra)"
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text.replace(url, mask(url))


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
        engine_kwargs = {}
        if path is not None:
            if read_only and not path.is_file():
                raise TunerError(f"cannot open study storage {shown!r}: there is no file {path}; "
                                 f"`tuner search --storage {shown}` creates it")
            if not read_only:
                path.parent.mkdir(parents=True, exist_ok=True)
                _use_wal(path)
            engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
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

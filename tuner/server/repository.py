"""A Triton model repository on disk that a server reads from."""

from __future__ import annotations

import shutil
from pathlib import Path

from tuner.server import ModelPackage


def stage(repository: Path, package: ModelPackage) -> Path:
    """Place the package's files under repository/<name>/, copying only what changed.

    The config.pbtxt written here is the candidate's; the server is also given it through the
    load API, so a restart of the server never serves a stale config.
    """
    model_dir = repository / package.name
    for relative, source in package.files.items():
        target = model_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        # copy2 keeps the source's mtime, so an unchanged file matches on size and mtime.
        if not target.exists() or (target.stat().st_size, target.stat().st_mtime_ns) != \
                (source.stat().st_size, source.stat().st_mtime_ns):
            shutil.copy2(source, target)
    (model_dir / "config.pbtxt").write_text(package.config_pbtxt)
    return model_dir

"""Where the external binaries live and the environment they need.

`scripts/setup.sh` installs tritonserver under `<venv>/opt/pytriton/pytriton/tritonserver` and
perf_analyzer in `<venv>/bin`; users can point elsewhere with TUNER_TRITONSERVER /
TUNER_PERF_ANALYZER.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from tuner.errors import TunerError

SETUP_HINT = "run `bash scripts/setup.sh` from the tuner checkout"


def _venv_server_root() -> Path:
    return Path(sys.prefix) / "opt" / "pytriton" / "pytriton" / "tritonserver"


def tritonserver_path() -> Path | None:
    """The tritonserver binary: $TUNER_TRITONSERVER, the one setup.sh unpacked, or PATH."""
    if env := os.environ.get("TUNER_TRITONSERVER"):
        return Path(env)
    bundled = _venv_server_root() / "bin" / "tritonserver"
    if bundled.exists():
        return bundled
    found = shutil.which("tritonserver")
    return Path(found) if found else None


def backend_directory(server: Path) -> Path:
    """Triton's backends folder: beside the binary's bin/ (bundled layout) or /opt/tritonserver."""
    candidate = server.resolve().parent.parent / "backends"
    return candidate if candidate.is_dir() else Path("/opt/tritonserver/backends")


def server_backends(server: Path) -> list[str]:
    """Names of the backends the server can load (its backends folder's subfolders)."""
    folder = backend_directory(server)
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def require_tritonserver() -> Path:
    path = tritonserver_path()
    if path is None or not path.exists():
        raise TunerError(f"tritonserver not found: {SETUP_HINT}, or set TUNER_TRITONSERVER to the binary")
    return path


def server_env() -> dict[str, str]:
    """Environment for tritonserver: the python backend stub embeds this interpreter, so it needs
    libpython on the library path and this environment's packages (onnxruntime, numpy) importable."""
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    # The stub imports exactly what this process imports (same order, .pth entries included), and
    # the checkout itself: the pytorch adapter imports tuner's model definitions (tuner.zoo).
    checkout = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([checkout, *(p for p in sys.path if p and os.path.exists(p))])
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env


def perf_analyzer_path() -> Path | None:
    if env := os.environ.get("TUNER_PERF_ANALYZER"):
        return Path(env)
    beside = Path(sys.executable).parent / "perf_analyzer"
    if beside.exists():
        return beside
    found = shutil.which("perf_analyzer")
    return Path(found) if found else None


def require_perf_analyzer() -> Path:
    path = perf_analyzer_path()
    if path is None or not path.exists():
        raise TunerError(f"perf_analyzer not found: {SETUP_HINT}, or set TUNER_PERF_ANALYZER to the binary")
    return path


def perf_analyzer_env() -> dict[str, str]:
    """perf_analyzer links libcudart.so.12 even on CPU machines; the nvidia-cuda-runtime-cu12 wheel has it."""
    env = dict(os.environ)
    extra = []
    try:
        import nvidia.cuda_runtime  # type: ignore[import-not-found]

        extra.append(str(Path(list(nvidia.cuda_runtime.__path__)[0]) / "lib"))
    except ImportError:
        pass
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*extra, env.get("LD_LIBRARY_PATH", "")]).strip(os.pathsep)
    return env

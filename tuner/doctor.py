"""What this machine can do for a search, and how to get what is missing."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tuner import tools
from tuner.errors import TunerError
from tuner.server.local import LocalServer


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _tritonserver() -> Check:
    path = tools.tritonserver_path()
    if path is None or not path.exists():
        return Check("tritonserver", False, "not found", "bash scripts/setup.sh (unpacks it from nvidia-pytriton)")
    backends = ", ".join(tools.server_backends(path)) or "none"
    try:
        version = _started_server_version()
    except TunerError as exc:
        return Check("tritonserver", False, f"{path} does not start: {str(exc).splitlines()[0]}",
                     "see the server log named above; bash scripts/setup.sh reinstalls it")
    return Check("tritonserver", True, f"{version} at {path}; backends: {backends}")


def _started_server_version() -> str:
    """tritonserver has no --version: start it on an empty repository and ask."""
    with tempfile.TemporaryDirectory() as tmp:
        with LocalServer(Path(tmp) / "models", Path(tmp) / "server.log", startup_timeout_s=30) as server:
            return "tritonserver " + server.metadata()["version"]


def _perf_analyzer() -> Check:
    path = tools.perf_analyzer_path()
    if path is None or not path.exists():
        return Check("perf_analyzer", False, "not found", "bash scripts/setup.sh (installs tritonclient==2.48.0)")
    out = subprocess.run([str(path), "--version"], capture_output=True, text=True, env=tools.perf_analyzer_env())
    text = (out.stdout + out.stderr).strip()
    if "error while loading shared libraries" in text:
        return Check("perf_analyzer", False, text.splitlines()[0],
                     "apt-get install libb64-0d; pip install nvidia-cuda-runtime-cu12")
    version = next((l for l in text.splitlines() if "perf_analyzer" in l.lower() or "version" in l.lower()), "")
    return Check("perf_analyzer", True, f"{path} {version}".strip())


def _docker() -> Check:
    try:
        import docker

        client = docker.from_env(timeout=5)
        info = client.version()
        return Check("docker engine", True, f"reachable, version {info.get('Version')}")
    except Exception as exc:
        reason = str(exc).splitlines()[0][:120]
        return Check("docker engine", False, f"not reachable ({reason})",
                     "bash scripts/docker_engine.sh (as root: installs docker.io and starts dockerd)")


def _gpus() -> Check:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return Check("GPUs", False, "none (no nvidia-smi)", "GPU candidates need an NVIDIA GPU and driver")
    out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True, text=True)
    gpus = [l.strip() for l in out.stdout.splitlines() if l.strip()]
    return Check("GPUs", bool(gpus), "; ".join(gpus) or out.stderr.strip()[:120])


def _runtimes() -> list[Check]:
    checks = []
    try:
        import onnxruntime as ort

        checks.append(Check("onnxruntime", True,
                            f"{ort.__version__}; providers: {', '.join(ort.get_available_providers())}"))
    except ImportError:
        checks.append(Check("onnxruntime", False, "not installed", "pip install onnxruntime"))
    for package, fix in (("openvino", "pip install openvino"), ("torch", "pip install torch==2.13.0"),
                         ("tensorrt", "TensorRT needs an NVIDIA GPU machine: pip install tensorrt")):
        try:
            checks.append(Check(package, True, importlib.metadata.version(package)))
        except importlib.metadata.PackageNotFoundError:
            checks.append(Check(package, False, "not installed", fix))
    return checks


# Runtimes whose code has never run on a real machine of this project (none at hand has their
# packages), with what is untested. Keep in step with README and docs/backends.md; a runtime
# leaves this table when a run on real hardware is recorded in docs/measurements/.
UNTESTED = {
    "tensorrt": "TensorRT plans (engine build, optimization profile, native tensorrt_plan config)",
    "onnxruntime-cuda": "ONNX Runtime's CUDA execution provider (needs onnxruntime-gpu)",
    "onnxruntime-tensorrt": "ONNX Runtime's TensorRT execution provider (needs onnxruntime-gpu and TensorRT)",
    "onnxruntime-openvino": "ONNX Runtime's OpenVINO execution provider (needs onnxruntime-openvino)",
    "openvino bf16/fp16": "OpenVINO's bf16/fp16 hints (the CPUs at hand lack the instructions: they ran f32)",
}
UNTESTED_NOTE = "untested on real hardware"


def _untested() -> list[Check]:
    """Shown as missing-with-a-reason, so nobody reads a skipped runtime as a validated one."""
    return [Check(f"{name} ({UNTESTED_NOTE})", False, what,
                  "runs where its packages are installed; report the first run (docs/measurements/)")
            for name, what in UNTESTED.items()]


def run_checks() -> list[Check]:
    return [_tritonserver(), _perf_analyzer(), _docker(), _gpus(), *_runtimes(), *_untested()]

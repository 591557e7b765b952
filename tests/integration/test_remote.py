"""Remote launch mode against a separately started tritonserver on loopback: candidates go with
their files through the load API, the server's own model is left alone, and a server that is not
in explicit model-control mode is refused with a clear message."""

import os
import shutil
import signal
import subprocess
import time

import numpy as np
import optuna
import pytest
import tritonclient.http as httpclient
from typer.testing import CliRunner

from tuner import backends, tools
from tuner.cli import app
from tuner.render import render
from tuner.server import ModelPackage
from tuner.server.local import LocalServer, free_ports
from tuner.signature import read_signature
from tuner.candidate import Candidate

from conftest import write_experiment

runner = CliRunner()


@pytest.fixture(scope="module")
def remote(tmp_path_factory, mlp_onnx):
    """A server someone else runs: explicit mode, its own repository, one model ("other") loaded."""
    root = tmp_path_factory.mktemp("remote")
    config = render("adapter", "other", read_signature(mlp_onnx),
                    Candidate(instances=1, max_batch_size=4, dynamic_batching=False, max_queue_delay_us=0,
                              preferred_batch=False, threads=1, warmup=False, concurrency=1),
                    {"x": np.zeros(64, np.float32)})
    with LocalServer(root / "repository", root / "server.log") as server:
        server.load(ModelPackage("other", config, backends.get("onnxruntime").adapter_files(mlp_onnx)))
        yield server


def _remote_experiment(tmp_path, http_url: str, grpc_url: str, **fields):
    return write_experiment(tmp_path / "exp.yaml", results_dir=str(tmp_path / "results"),
                            server={"launch": "remote", "url": http_url, "grpc_url": grpc_url}, **fields)


@pytest.fixture
def client(remote):
    client = httpclient.InferenceServerClient(remote.http_url)
    yield client
    client.close()  # an open connection would hold up the server's shutdown


def test_a_remote_search_sends_candidates_and_leaves_the_servers_model_alone(remote, client, mlp_onnx, tmp_path):
    other_config = client.get_model_config("other")
    spec = _remote_experiment(tmp_path, remote.http_url, remote.grpc_url, trials=2)
    storage = f"sqlite:///{tmp_path / 'results' / 'tuner.db'}"
    result = runner.invoke(app, ["search", "--model", str(mlp_onnx), "--experiment", str(spec),
                                 "--storage", storage, "--study", "mlp-remote"])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="mlp-remote", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"], \
        [t.user_attrs.get("error") for t in study.trials]
    assert all(t.values[0] > 0 for t in study.trials)

    assert client.is_model_ready("other") and client.get_model_config("other") == other_config
    assert not client.is_model_ready("mlp")  # what the search loaded, it unloaded
    # Nothing was written into the server's repository: the files travelled with the load requests.
    assert sorted(p.name for p in remote.repository.iterdir()) == ["other"]


def test_a_model_the_server_already_serves_is_not_replaced(remote, client, mlp_onnx, tmp_path):
    same_name = tmp_path / "other.onnx"  # the search would serve it as "other"
    shutil.copy(mlp_onnx, same_name)
    other_config = client.get_model_config("other")
    spec = _remote_experiment(tmp_path, remote.http_url, remote.grpc_url, trials=1)
    result = runner.invoke(app, ["search", "--model", str(same_name), "--experiment", str(spec),
                                 "--storage", f"sqlite:///{tmp_path / 'tuner.db'}"])
    assert result.exit_code == 2, result.output
    assert "already serves a model named 'other'" in result.output
    assert client.is_model_ready("other") and client.get_model_config("other") == other_config


@pytest.fixture
def server_without_explicit_mode(tmp_path):
    """tritonserver in --model-control-mode=none, started by hand."""
    binary = tools.require_tritonserver()
    (tmp_path / "repository").mkdir()
    http, grpc, metrics = free_ports(3)
    cmd = [str(binary), f"--model-repository={tmp_path / 'repository'}", "--model-control-mode=none",
           f"--backend-directory={tools.backend_directory(binary)}",
           "--http-address=127.0.0.1", f"--http-port={http}", "--grpc-address=127.0.0.1", f"--grpc-port={grpc}",
           "--metrics-address=127.0.0.1", f"--metrics-port={metrics}"]
    with open(tmp_path / "none.log", "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=tools.server_env(),
                                   start_new_session=True)
    try:
        yield f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_a_server_not_in_explicit_mode_is_refused(server_without_explicit_mode, mlp_onnx, tmp_path):
    http_url, grpc_url = server_without_explicit_mode
    spec = _remote_experiment(tmp_path, http_url, grpc_url, trials=1)
    started = time.monotonic()
    result = runner.invoke(app, ["search", "--model", str(mlp_onnx), "--experiment", str(spec),
                                 "--storage", f"sqlite:///{tmp_path / 'tuner.db'}"])
    assert result.exit_code == 2, result.output
    assert f"the server at {http_url} is not in explicit model-control mode" in result.output
    assert "--model-control-mode=explicit" in result.output and "Traceback" not in result.output
    assert time.monotonic() - started < 30

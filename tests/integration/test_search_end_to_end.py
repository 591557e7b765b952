"""A real search: real tritonserver, real perf_analyzer, real Optuna study on SQLite."""

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from models import reference, unloadable
from tuner import client, results
from tuner.cli import app
from tuner.server import ModelPackage
from tuner.server.local import LocalServer
from tuner.signature import read_signature

from conftest import write_experiment

runner = CliRunner()


@pytest.fixture(scope="module")
def searched(tmp_path_factory, mlp_onnx):
    """One real search shared by the tests below."""
    work = tmp_path_factory.mktemp("search")
    spec = write_experiment(work / "exp.yaml", results_dir=str(work / "results"))
    storage = f"sqlite:///{work / 'results' / 'tuner.db'}"
    result = runner.invoke(app, ["search", "--model", str(mlp_onnx), "--experiment", str(spec),
                                 "--storage", storage, "--study", "mlp-e2e", "--max-p99-ms", "500"])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="mlp-e2e", storage=storage)
    return work, storage, study, result.output


def test_a_real_search_completes_trials_with_measured_throughput(searched):
    _, _, study, output = searched
    frame = results.trials_frame(study)
    assert len(frame) == 4
    done = results.completed(frame)
    assert len(done) >= 3
    assert (done.throughput > 0).all() and (done.p99_ms > 0).all() and (done.p99_ms >= done.p50_ms).all()
    measured = done[done.repeat_of.isna()]
    assert (measured.load_s > 0).all() and (measured.first_request_ms > 0).all()
    assert frame.baseline.iloc[0]  # Triton's default config goes first
    first = study.trials[0].user_attrs
    # Its concurrency was found by a ramp on one load: 2, then 4 unless 2 already saturated it;
    # the trial reports the ramp's best point (the first trial is always confirmed: a new best).
    ramped = [p["concurrency"] for p in first["curve"]]
    assert ramped in ([2], [2, 4]) and frame.concurrency.iloc[0] in ramped
    assert "concurrency" not in study.trials[0].params
    assert set(first["confirm"]) == {"first", "again"}
    assert "perf_analyzer" in first["perf_analyzer_cmd"] and 'backend: "python"' in first["config_pbtxt"]
    assert "Best trials" in output and "tuned / default throughput" in output


def test_the_search_ends_with_verified_finalists(searched):
    _, _, study, output = searched
    verified = study.user_attrs["verification"]
    assert 2 <= verified["rounds"] <= 3 and verified["stopped"] in ("converged", "max_rounds", "budget")
    finalists = {int(n) for n in verified["finalists"]}
    assert 0 in finalists and verified["default"] == 0  # Triton's default is always measured again
    assert all(len(r) == len(finalists) for r in verified["rounds_measured"])  # every finalist, every round
    for figures in verified["finalists"].values():
        t = figures["throughput"]
        assert 0 < t["low"] <= t["median"] <= t["high"]
    if verified["winner"] is not None:
        assert verified["finalists"][str(verified["winner"])]["meets_sla"] and 0 < verified["p_best"] <= 1
    assert "verified: " in output and "interleaved rounds" in output


def test_running_again_resumes_and_skips_what_is_done(searched, mlp_onnx):
    work, storage, _, _ = searched
    spec = work / "exp.yaml"
    args = ["search", "--model", str(mlp_onnx), "--experiment", str(spec), "--storage", storage,
            "--study", "mlp-e2e", "--max-p99-ms", "500"]
    same = runner.invoke(app, args)
    assert same.exit_code == 0, same.output
    assert "4 of 4 trials already done" in same.output
    more = runner.invoke(app, [*args, "--trials", "5"])
    assert more.exit_code == 0, more.output
    study = optuna.load_study(study_name="mlp-e2e", storage=storage)
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert sum(bool(t.user_attrs.get("baseline")) for t in study.trials) == 1  # baseline not enqueued twice


def test_exported_config_serves_correct_inferences_on_a_fresh_server(searched, mlp_onnx, tmp_path):
    work, storage, _, _ = searched
    out = tmp_path / "exported"
    result = runner.invoke(app, ["export", "--study", "mlp-e2e", "--storage", storage, "--out", str(out),
                                 "--form", "adapter"])
    assert result.exit_code == 0, result.output
    model_dir = out / "mlp"
    assert (model_dir / "config.pbtxt").is_file() and (model_dir / "1" / "model.onnx").is_file()
    report = (out / "REPORT.md").read_text()
    assert "perf_analyzer -m mlp" in report and "--concurrency-range" in report

    # A fresh server reads the exported folder as its repository, config.pbtxt from disk.
    sig = read_signature(mlp_onnx)
    with LocalServer(out, tmp_path / "server.log") as server:
        server.load(ModelPackage("mlp", (model_dir / "config.pbtxt").read_text()))
        x = np.random.default_rng(1).standard_normal(64).astype(np.float32)
        y = client.infer(server.grpc_url, "mlp", sig, {"x": x})["y"]
    np.testing.assert_allclose(y[0], reference(mlp_onnx, x[None])[0], rtol=1e-5, atol=1e-6)

    native = tmp_path / "native"
    assert runner.invoke(app, ["export", "--study", "mlp-e2e", "--storage", storage, "--out", str(native),
                               "--form", "native"]).exit_code == 0
    assert 'platform: "onnxruntime_onnx"' in (native / "mlp" / "config.pbtxt").read_text()


def test_candidates_the_server_cannot_load_are_failed_trials_with_reasons(tmp_path):
    model = unloadable(tmp_path / "broken.onnx")
    spec = write_experiment(tmp_path / "exp.yaml", results_dir=str(tmp_path / "results"), trials=2)
    storage = f"sqlite:///{tmp_path / 'results' / 'tuner.db'}"
    result = runner.invoke(app, ["search", "--model", str(model), "--experiment", str(spec),
                                 "--storage", storage, "--study", "broken"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    study = optuna.load_study(study_name="broken", storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]  # the search went on after the first
    assert all("refused to load" in t.user_attrs["error"] for t in study.trials)
    assert "0 completed, 2 failed" in result.output


def test_an_inaccurate_runtime_is_rejected_with_its_figures_and_never_best(tmp_path, mlp_onnx):
    # int8 loses a few percent of the output range on this MLP; a 1e-4 limit must reject it.
    spec = write_experiment(tmp_path / "exp.yaml", results_dir=str(tmp_path / "results"), trials=4,
                            space={"precisions": ["fp32", "int8"], "instances": [1], "max_batch_size": [4],
                                   "concurrency": [2], "dynamic_batching": [False], "warmup": [False],
                                   "threads": [0]},
                            accuracy={"max_rel_error": 1e-4})
    storage = f"sqlite:///{tmp_path / 'results' / 'tuner.db'}"
    study = None
    for seed in range(5):  # the sampler must propose int8 at least once
        result = runner.invoke(app, ["search", "--model", str(mlp_onnx), "--experiment", str(spec),
                                     "--storage", storage, "--study", f"guard{seed}", "--seed", str(seed)])
        assert result.exit_code == 0, result.output
        study = optuna.load_study(study_name=f"guard{seed}", storage=storage)
        if any(t.params.get("runtime") == "onnxruntime:int8" for t in study.trials):
            break
    int8 = [t for t in study.trials if t.params.get("runtime") == "onnxruntime:int8"]
    assert int8, "no seed proposed int8"
    for t in int8:
        assert t.state.name == "PRUNED" and "measurement" not in t.user_attrs
        assert t.user_attrs["accuracy"]["passed"] is False
        assert t.user_attrs["accuracy"]["max_rel_error"]["y"] > 1e-4
        assert "relative error" in t.user_attrs["rejected"]
    frame = results.trials_frame(study)
    assert results.best(frame).precision == "fp32"
    assert "rejected by the accuracy guard" in result.output

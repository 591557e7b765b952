"""Export and verify, for real: a short search with its verification stage, the export of its
verified winner in the form it was measured in, and `tuner verify` measuring that export again on a
fresh tritonserver (real perf_analyzer) against its claim."""

import hashlib
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from models import reference
from tuner import client
from tuner.cli import app
from tuner.server import ModelPackage
from tuner.server.local import LocalServer
from tuner.signature import read_signature

from conftest import write_experiment

runner = CliRunner()
STUDY = "mlp-export"


def flat(output: str) -> str:
    return " ".join(output.split())  # rich wraps long lines at the console's width


def tree(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, mlp_onnx):
    """One short real search (Triton's default and two strong shapes, then the verification),
    exported with the defaults."""
    work = tmp_path_factory.mktemp("export")
    spec = write_experiment(work / "exp.yaml", results_dir=str(work / "results"), trials=3,
                            verify={"leaders": 2, "min_rounds": 2, "max_rounds": 2})
    storage = f"sqlite:///{work / 'results' / 'tuner.db'}"
    searched = runner.invoke(app, ["search", "--model", str(mlp_onnx), "--experiment", str(spec),
                                   "--storage", storage, "--study", STUDY, "--max-p99-ms", "500"])
    assert searched.exit_code == 0, searched.output
    study = optuna.load_study(study_name=STUDY, storage=storage)
    out = work / "exported"
    result = runner.invoke(app, ["export", "--study", STUDY, "--storage", storage, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return work, storage, study, out, flat(result.output)


def test_the_default_export_is_the_verified_winner_in_its_measured_form_and_serves_from_disk(
        exported, mlp_onnx, tmp_path):
    _, _, study, out, output = exported
    verified = study.user_attrs["verification"]
    assert verified["winner"] is not None, verified  # an SLA of 500 ms: some finalist meets it
    claim = json.loads((out / "tuner-claim.json").read_text())
    assert claim["trial"] == verified["winner"] and claim["model"] == "mlp"
    assert claim["form"] == claim["measured_form"] == "adapter" and claim["form_measured"]  # the bundled server
    figures = claim["figures"]
    assert figures["verified"] and figures["winner"] and figures["rounds"] == verified["rounds"]
    assert figures["throughput"] == verified["finalists"][str(claim["trial"])]["throughput"]
    assert claim["max_p99_ms"] == 500 and claim["concurrency"] == study.trials[claim["trial"]].user_attrs[
        "candidate"]["concurrency"]
    assert claim["measure"]["interval_ms"] == 500 and claim["measure"]["max_windows"] == 4
    args = claim["perf_analyzer"]["args"]
    assert args[:3] == ["perf_analyzer", "-m", "mlp"] and "{url}" in args and "{csv}" in args
    assert args[args.index("--concurrency-range") + 1] == str(claim["concurrency"])
    assert "--percentile" not in args  # as measured: stability is judged on the average latency
    assert claim["tuner_version"] and claim["created"]
    assert f"exported trial {claim['trial']} (verified winner" in output and "form adapter" in output
    assert "tuner verify" in output

    # The exported folder, config.pbtxt as written, served by a fresh tritonserver from disk.
    config = (out / "mlp" / "config.pbtxt").read_text()
    assert config == study.trials[claim["trial"]].user_attrs["config_pbtxt"]  # the very config measured
    assert 'backend: "python"' in config
    sig = read_signature(mlp_onnx)
    with LocalServer(out, tmp_path / "server.log") as server:
        server.load(ModelPackage("mlp", config))
        x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
        y = client.infer(server.grpc_url, "mlp", sig, {"x": x[0]})["y"]
    np.testing.assert_allclose(y[0], reference(mlp_onnx, x[:1])[0], rtol=1e-5, atol=1e-6)

    report = (out / "REPORT.md").read_text()
    t, p = figures["throughput"], figures["p99_ms"]
    assert "Verified figures" in report and f"{t['median']:.1f} | [{t['low']:.1f}, {t['high']:.1f}]" in report
    assert f"{p['median']:.2f} | [{p['low']:.2f}, {p['high']:.2f}]" in report
    assert "P(best)" in report and "not verified" not in report and "not measured" not in report
    assert "perf_analyzer -m mlp -i grpc -u <url>" in report and "--input-data perf_inputs.json" in report
    assert "127.0.0.1" not in report and "tuner verify <this folder>" in report

    page = (out / "REPORT.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", page)  # self-contained: no network
    assert "plotly.js v" in page and "Pareto front" in page and "Verified finalists" in page
    assert "Latency percentiles" in page and "Config diff from Triton" in page


def test_verify_holds_on_the_honest_export_and_leaves_it_as_it_was(exported):
    _, _, _, out, _ = exported
    before = tree(out)
    # The 2-core machine's noise between runs is 7-14 %: a generous tolerance.
    result = runner.invoke(app, ["verify", str(out), "--rounds", "2", "--tolerance", "0.5"])
    text = flat(result.output)
    assert result.exit_code == 0, result.output
    assert "round 1/2" in text and "round 2/2" in text and "the claim holds" in text
    assert "claimed (verified" in text and "verified here (2 rounds" in text and "met" in text
    assert tree(out) == before  # a copy was served: the export is untouched


def test_verify_refuses_a_false_claim_and_says_why(exported, tmp_path):
    _, _, _, out, _ = exported
    false = tmp_path / "false"
    shutil.copytree(out, false)
    claim = json.loads((false / "tuner-claim.json").read_text())
    claim["figures"]["throughput"]["median"] *= 10
    claim["max_p99_ms"] = 0.01  # no p99 is this low: the SLA is missed too
    (false / "tuner-claim.json").write_text(json.dumps(claim))
    result = runner.invoke(app, ["verify", str(false), "--rounds", "1", "--tolerance", "0.5"])
    text = flat(result.output)
    assert result.exit_code == 1, result.output
    assert "the claim does not hold" in text and "below the claimed" in text
    assert "misses the SLA p99 <= 0.01 ms" in text and "Traceback" not in text


def test_verify_names_a_folder_that_is_no_export_on_one_line(tmp_path):
    for folder, why in ((tmp_path, "is not a tuner export"), (tmp_path / "nope", "is not a folder")):
        result = runner.invoke(app, ["verify", str(folder)])
        assert result.exit_code == 2 and result.output.startswith("error:"), result.output
        assert why in flat(result.output) and "Traceback" not in result.output
    (tmp_path / "tuner-claim.json").write_text("{}")
    result = runner.invoke(app, ["verify", str(tmp_path)])
    assert result.exit_code == 2 and "is not a valid claim" in flat(result.output), result.output


def test_a_native_export_says_it_was_not_measured_and_an_unverified_one_says_single_draw(exported):
    work, storage, _, _, _ = exported
    native = work / "native"
    result = runner.invoke(app, ["export", "--study", STUDY, "--storage", storage, "--out", str(native),
                                 "--form", "native"])
    assert result.exit_code == 0, result.output
    assert "not measured on this server" in flat(result.output)
    assert 'platform: "onnxruntime_onnx"' in (native / "mlp" / "config.pbtxt").read_text()
    report = (native / "REPORT.md").read_text()
    assert "not measured on this server" in report and "figures below are of the adapter form" in report
    claim = json.loads((native / "tuner-claim.json").read_text())
    assert claim["form"] == "native" and claim["measured_form"] == "adapter" and not claim["form_measured"]

    # Another SLA than the verification's: the best single draw under it, and it says so.
    other = work / "other-sla"
    result = runner.invoke(app, ["export", "--study", STUDY, "--storage", storage, "--out", str(other),
                                 "--max-p99-ms", "400"])
    assert result.exit_code == 0, result.output
    assert "not verified: single draw" in flat(result.output)
    assert "not verified: single draw" in (other / "REPORT.md").read_text()
    assert json.loads((other / "tuner-claim.json").read_text())["figures"]["verified"] is False


def test_no_html_exports_where_plotly_is_missing(exported):
    # A GPU machine carries only the server's tools: --no-html exports there, without the charts.
    work, storage, _, _, _ = exported
    out = work / "no-html"
    code = "import sys; sys.modules['plotly'] = None\nfrom tuner.cli import app\napp()"
    result = subprocess.run([sys.executable, "-c", code, "export", "--study", STUDY, "--storage", storage,
                             "--out", str(out), "--no-html"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "tuner-claim.json").exists() and not (out / "REPORT.html").exists()
    assert "REPORT.html was left out (`--no-html`)" in (out / "REPORT.md").read_text()
    assert "REPORT.html" not in (out / ".tuner-export").read_text()  # the marker lists what was written

"""`tuner verify` warms each reloaded model up as the claim's verification did (verify.warmup_s), and runs without plotly."""

import subprocess
import sys
from pathlib import Path

from tuner import reproduce
from tuner.errors import TrialError

ARGS = ["perf_analyzer", "-m", "m", "-u", "{url}", "--measurement-interval", "1000", "--stability-percentage",
        "20", "-f", "{csv}", "--input-data", "{input_data}"]
RETRY = ["perf_analyzer", "-m", "m", "-u", "{url}", "--measurement-interval", "1000", "--stability-percentage",
         "1000.0", "--max-trials", "3", "-f", "{csv}", "--input-data", "{input_data}"]


def claim(warmup_s):
    return {"perf_analyzer": {"args": ARGS, "retry_args": RETRY},
            "measure": {"timeout_s": 60, "warmup_s": warmup_s}}


def test_the_warm_up_runs_the_retry_arguments_with_windows_a_third_of_it(monkeypatch):
    ran = []
    monkeypatch.setattr(reproduce.perf_analyzer, "measure", lambda cmd, csv, timeout: ran.append(cmd))
    reproduce.warm_up(claim(9.0), "127.0.0.1:8001", Path("w.csv"), Path("in.json"))
    (cmd,) = ran
    assert cmd[cmd.index("--measurement-interval") + 1] == "3000"
    assert cmd[cmd.index("--stability-percentage") + 1] == "1000.0"
    assert "127.0.0.1:8001" in cmd and "w.csv" in cmd and "in.json" in cmd


def test_no_warm_up_without_one_in_the_claim_and_a_failed_one_is_left_to_the_measured_run(monkeypatch):
    ran = []
    monkeypatch.setattr(reproduce.perf_analyzer, "measure", lambda cmd, csv, timeout: ran.append(cmd))
    reproduce.warm_up(claim(0), "u", Path("w.csv"), Path("in.json"))
    reproduce.warm_up({"perf_analyzer": {"args": ARGS, "retry_args": RETRY}, "measure": {"timeout_s": 60}},
                       "u", Path("w.csv"), Path("in.json"))
    assert ran == []

    def fail(cmd, csv, timeout):
        raise TrialError("perf_analyzer failed")

    monkeypatch.setattr(reproduce.perf_analyzer, "measure", fail)
    reproduce.warm_up(claim(3.0), "u", Path("w.csv"), Path("in.json"))  # no exception


def test_verify_imports_where_plotly_is_missing():
    # A GPU machine carries only the server's tools: `tuner verify` must not need plotly, which
    # only REPORT.html (tuner export) draws with.
    code = ("import sys; sys.modules['plotly'] = None\n"
            "import tuner.reproduce, tuner.export\n"
            "try:\n    tuner.export._html(None, None, '', [])\n"
            "except tuner.errors.TunerError as exc:\n    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("REPORT.html needs plotly, which is not installed here")

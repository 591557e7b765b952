"""The trial's stages without a server: load test, packaging, the accuracy guard, recording."""

import optuna
import pytest

from tuner.candidate import Candidate

from tuner.experiment import MeasureSpec, build
from tuner.measure.metrics import ServerMetrics
from tuner.measure.perf_analyzer import Measurement
from tuner.trial import record
from tuner.trial.deploy import package
from tuner.trial.guard import AccuracyGuard, Rejected, numerics_key
from tuner.trial.loadtest import PerfRun, load_test

METRICS = ServerMetrics(1, 0.5, 1.0, None, None, None)


def fake_perf(curve: dict[int, tuple[float, float]], unstable_at=(), again: float | None = None):
    asked = []

    def perf(concurrency, suffix):
        asked.append((concurrency, suffix))
        throughput, p99 = curve[concurrency]
        if suffix == "confirm" and again is not None:
            throughput = again
        m = Measurement(concurrency, throughput, p99 / 2, p99, p99, p99, p99 / 2, 0, 0, 0, 0, 0, 0)
        return PerfRun(m, METRICS, f"perf_analyzer --concurrency-range {concurrency}", concurrency in unstable_at)

    return perf, asked


def test_a_ramp_keeps_every_point_and_reports_the_best_within_the_sla():
    perf, asked = fake_perf({1: (100, 5), 2: (180, 8), 4: (250, 12), 8: (260, 30)}, unstable_at=(2,))
    result = load_test(perf, MeasureSpec(), 0, [1, 2, 4, 8], floor=1, max_p99_ms=10, best_so_far=None)
    assert [c for c, _ in asked] == [1, 2, 4]  # 4 is over the SLA: the ramp stops there
    assert result.measurement.concurrency == 2 and [p.concurrency for p in result.curve] == [1, 2, 4]
    assert result.unstable and result.confirm is None
    assert result.command.endswith("--concurrency-range 2")


def test_a_new_best_is_measured_again_and_averaged():
    perf, asked = fake_perf({1: (100, 5), 2: (200, 6)}, again=180)
    result = load_test(perf, MeasureSpec(), 0, [1, 2], floor=1, max_p99_ms=None, best_so_far=150)
    assert asked[-1] == (2, "confirm")
    assert result.confirm == {"first": 200, "again": 180} and result.measurement.throughput == 190


def test_no_confirmation_below_the_best_or_with_a_sampled_concurrency():
    perf, asked = fake_perf({4: (100, 5)})
    result = load_test(perf, MeasureSpec(concurrency_search="sample"), 4, [1, 2, 4], floor=1, max_p99_ms=None,
                       best_so_far=500)
    assert asked == [(4, "")] and result.curve is None and result.confirm is None


def test_a_package_holds_config_files_and_warmup_inputs(tmp_path):
    (tmp_path / "warmup").mkdir()
    (tmp_path / "warmup" / "x").write_bytes(b"\0" * 8)
    pkg = package("m", "name: \"m\"\n", {"1/model.onnx": tmp_path / "model.onnx"}, tmp_path / "warmup")
    assert set(pkg.files) == {"1/model.onnx", "warmup/x"}
    assert package("m", "", {}, tmp_path / "none").files == {}


def test_the_guard_trusts_the_reference_and_remembers_failures():
    guard = AccuracyGuard(source=None, spec=None, samples=[])
    reference = Candidate(backend="onnxruntime", precision="fp32")
    assert guard.check(reference, "unused") is None  # the reference is not checked against itself
    int8 = Candidate(backend="openvino", precision="int8", family="openvino")
    guard.verdicts[numerics_key(int8)] = {"passed": False, "reason": "max rel error 0.5 > 0.1"}
    assert guard.known_failure(int8)["reason"].startswith("max rel")
    with pytest.raises(Rejected, match="accuracy check failed: max rel error"):
        guard.check(int8, "unused")


def test_each_setting_of_a_runtimes_knobs_is_checked_on_its_own():
    # sdpa attention or CUDA graphs compute differently from the same runtime without them.
    native = Candidate(backend="pytorch", precision="fp16", family="pytorch", attention="native")
    sdpa = Candidate(backend="pytorch", precision="fp16", family="pytorch", attention="sdpa")
    assert numerics_key(native) != numerics_key(sdpa)
    assert numerics_key(native).startswith("pytorch:fp16 ")
    guard = AccuracyGuard(source=None, spec=None, samples=[])
    guard.verdicts[numerics_key(sdpa)] = {"passed": False, "reason": "greedy CTC tokens agree on 90%"}
    assert guard.known_failure(sdpa) is not None and guard.known_failure(native) is None


def _study(values_and_params):
    study = optuna.create_study(directions=["maximize", "minimize"])
    for (throughput, p99), params in values_and_params:
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: optuna.distributions.CategoricalDistribution([1, 2, 3]) for k in params},
            values=[throughput, p99], user_attrs={"measurement": {"throughput": throughput}}))
    return study


def test_the_best_so_far_respects_the_sla_and_repeats_are_found():
    study = _study([((100.0, 5.0), {"instances": 1}), ((300.0, 50.0), {"instances": 2})])
    assert record.best_throughput(study, None) == 300 and record.best_throughput(study, 10) == 100
    assert record.best_throughput(_study([]), 10) == 0
    assert record.same_params(study, {"instances": 2}).number == 1
    assert record.same_params(study, {"instances": 3}) is None


def test_constraints_follow_the_experiment():
    exp = build({"model": "m.onnx", "max_p99_ms": 10, "max_gpu_mem_gb": 2})
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    record.constrain(trial, exp, p99_ms=12.5, gpu_memory_gb=1.0)
    attrs = study.trials[0].system_attrs
    assert (attrs["constraints:p99_over_sla_ms"], attrs["constraints:gpu_memory_over_gb"]) == (2.5, -1.0)


def test_a_study_searched_over_other_choices_says_so_in_one_line():
    from tuner.errors import TunerError
    from tuner.trial import TrialObjective

    class Objective(TrialObjective):
        def __init__(self, choices):
            self.exp, self.worker, self.choices = build({"model": "-", "trials": 4}), None, choices
            self.on_start = lambda number, candidate: None

        def _suggest(self, trial):
            return trial.suggest_categorical("encoder.instances", self.choices)

    study = optuna.create_study(study_name="asr", directions=["maximize", "minimize"])
    study.enqueue_trial({"encoder.instances": 1})
    study.ask().suggest_categorical("encoder.instances", [1, 2])
    with pytest.raises(TunerError, match=r"^study 'asr' was searched over other values .* --fresh"):
        Objective([2, 4, 8])(study.ask())

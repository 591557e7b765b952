"""The verification's warm-up (tuner.trial.loadtest.warm_up): an unmeasured run of about the asked
length at the finalist's load level, or nothing at 0 s."""

from tuner.trial.loadtest import warm_up


def test_warm_up_runs_once_at_the_level_for_about_the_asked_seconds_without_stability():
    asked = []

    def perf_at(spec):
        def run(level, suffix):
            asked.append((spec, level, suffix))
        return run

    warm_up(perf_at, 64, 10.0)
    (spec, level, suffix), = asked
    assert level == 64 and suffix == "warmup"
    assert spec.max_windows == 3 and abs(spec.interval_ms * spec.max_windows - 10_000) <= 3
    assert spec.stability_percent >= 1000  # never waits for windows to agree


def test_no_warm_up_at_zero_seconds():
    asked = []
    warm_up(lambda spec: asked.append(spec), 8, 0.0)
    assert asked == []

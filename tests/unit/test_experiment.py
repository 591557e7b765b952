import pytest

from tuner.errors import TunerError
from tuner.experiment import build, load


def test_defaults_are_sensible():
    exp = build({"model": "m.onnx"})
    assert exp.storage_url == "sqlite:///results/tuner.db"
    assert exp.trials > 0 and exp.max_p99_ms is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_p99_ms": -1}, "max_p99_ms: Input should be greater than 0"),
        ({"storage": "foo://bar"}, "storage: Value error, must be an SQLAlchemy URL"),
        ({"space": {"instances": []}}, "space.instances: Value error, must list at least one value"),
        ({"space": {"concurrency": [0, 4]}}, "space.concurrency: Value error, values must be >= 1"),
        ({"trials": 0}, "trials: Input should be greater than or equal to 1"),
        ({"instance": 3}, "instance: Extra inputs are not permitted"),
    ],
)
def test_bad_fields_are_named_in_one_line(fields, message):
    with pytest.raises(TunerError) as err:
        build({"model": "m.onnx"} | fields)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_flags_override_the_file(tmp_path):
    spec = tmp_path / "e.yaml"
    spec.write_text("model: a.onnx\ntrials: 7\nmax_p99_ms: 100\nspace:\n  instances: [1]\n")
    exp = load(spec, {"trials": 3, "max_p99_ms": None})
    assert (exp.model, exp.trials, exp.max_p99_ms, exp.space.instances) == ("a.onnx", 3, 100, [1])


def test_broken_files_say_what_is_wrong(tmp_path):
    with pytest.raises(TunerError, match="does not exist"):
        load(tmp_path / "missing.yaml", {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(TunerError, match="not valid YAML"):
        load(bad, {})
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(TunerError, match="must hold a mapping"):
        load(listy, {})
    with pytest.raises(TunerError, match="no model given"):
        load(None, {})

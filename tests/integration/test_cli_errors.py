"""Bad input: one line that says what to fix, a non-zero exit, no traceback."""

import pytest
from typer.testing import CliRunner

from tuner.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "--model", "/no/such/model.onnx"], "neither a built-in model"),
        (["search", "--model", "{text}"], "is not an .onnx file"),
        (["search", "--model", "{fake_onnx}"], "is not a readable ONNX model"),
        (["search", "--model", "{mlp}", "--storage", "foo://nowhere"], "must be an SQLAlchemy URL"),
        (["search", "--model", "{mlp}", "--storage", "sqlite:////proc/no/such/dir/t.db"], "cannot open study storage"),
        (["search", "--model", "{mlp}", "--max-p99-ms", "-1"], "max_p99_ms: Input should be greater than 0"),
        (["search", "--model", "{mlp}", "--experiment", "/no/such.yaml"], "does not exist"),
        (["export", "--study", "nope", "--out", "x", "--storage", "sqlite:///{tmp}/empty.db"], "no study named 'nope'"),
        (["export", "--study", "nope", "--out", "x", "--max-p99-ms", "-1"], "--max-p99-ms must be a positive"),
    ],
)
def test_bad_input_is_one_clear_line(args, message, tmp_path, mlp_onnx):
    text = tmp_path / "model.txt"
    text.write_text("hello")
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"\x00garbage")
    args = [a.format(text=text, fake_onnx=fake, mlp=mlp_onnx, tmp=tmp_path) for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("error:")

"""The python-backend adapters build only the outputs a batch's requests name (as an ensemble's
scheduler names only those it maps), and the pytorch runner never copies the others off the
device; a request that names none gets every output, as before. Runs BatchingModel with a tiny
stand-in for triton_python_backend_utils."""

import json
import sys
import types

import numpy as np
import pytest

from template_modules import load_template
from tuner.resources import ADAPTER_DIR

sys.path.insert(0, str(ADAPTER_DIR))
import tuner_adapter  # noqa: E402  (templates/python/tuner_adapter.py, the adapters' shared helper)

torch = pytest.importorskip("torch")


class FakePbUtils:
    """The part of triton_python_backend_utils the adapters use."""

    class Tensor:
        def __init__(self, name, value):
            self.name, self.value = name, value

    class InferenceResponse:
        def __init__(self, output_tensors=(), error=None):
            self.outputs = {t.name: t.value for t in output_tensors}
            self.error = error

    class TritonError(Exception):
        pass

    @staticmethod
    def get_input_tensor_by_name(request, name):
        return types.SimpleNamespace(as_numpy=lambda: request.inputs[name])


class FakeRequest:
    def __init__(self, inputs, requested=()):
        self.inputs, self.requested = inputs, list(requested)

    def requested_output_names(self):
        return self.requested


@pytest.fixture(autouse=True)
def pb_utils(monkeypatch):
    monkeypatch.setattr(tuner_adapter, "pb_utils", FakePbUtils)


class Doubler(tuner_adapter.BatchingModel):
    """x [B, T] with lengths n [B] -> y = 2x (ragged on n), n, and z = x + 1; records what it was asked."""

    def __init__(self):
        self.batched, self.ragged_outputs = True, {"y": "n"}
        self.input_ranks, self.outputs = {"x": 2, "n": 1}, ["y", "n", "z"]
        self.asked = []

    def infer(self, feed):
        self.asked.append(list(self.needed_outputs))
        return {"y": feed["x"] * 2, "n": feed["n"], "z": feed["x"] + 1}


def requests(*requested):
    xs = [np.arange(3, dtype=np.float32)[None], np.arange(5, dtype=np.float32)[None]]
    return [FakeRequest({"x": x, "n": np.array([[x.shape[1]]], np.int32)}, names) for x, names in zip(xs, requested)]


def test_a_request_that_names_no_output_gets_all_of_them_as_before():
    model = Doubler()
    everything, named = model.execute(requests((), ())), model.execute(requests(("y", "n", "z"), ("y", "n", "z")))
    assert model.asked == [["y", "n", "z"], ["y", "n", "z"]]
    for a, b in zip(everything, named):
        assert list(a.outputs) == list(b.outputs) == ["y", "n", "z"]
        assert all(np.array_equal(a.outputs[k], b.outputs[k]) for k in a.outputs)
    assert everything[0].outputs["y"].shape == (1, 3)  # trimmed to its own length


def test_only_the_named_outputs_are_computed_and_returned():
    model = Doubler()
    # The batch computes the union, plus the lengths that trim the ragged y; each request gets its own.
    first, second = model.execute(requests(("y",), ("z",)))
    assert model.asked == [["y", "n", "z"]]
    assert list(first.outputs) == ["y"] and list(second.outputs) == ["z"]
    assert first.outputs["y"].tolist() == [[0, 2, 4]]

    model.execute(requests(("z",), ("z",)))
    assert model.asked[-1] == ["z"]  # no ragged output wanted: the lengths are not needed


def pytorch_adapter():
    return load_template("pytorch_model.py", "tuner_pytorch_model_outputs_test")


pm = pytorch_adapter()


class Untouchable:
    """An output that fails the test if anything reads it (a cast, a copy to the host)."""

    def __getattr__(self, name):
        raise AssertionError(f"the unwanted output was touched: .{name}")


class ThreeOutputs(torch.nn.Module):
    """x [B, T] -> (x * 2, an output that must stay on the device, the row lengths)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, x, n):
        return x * self.scale, Untouchable(), n


def serving_module(name):
    return ThreeOutputs(), {"x": 2, "n": 1}, ("y", "big", "n")


def pytorch_model(tmp_path, monkeypatch):
    """The pytorch adapter's TritonPythonModel initialized as Triton would, on a CPU instance."""
    definition = types.ModuleType("fake_torch_definition")
    definition.serving_module = serving_module
    monkeypatch.setitem(sys.modules, "fake_torch_definition", definition)
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.json").write_text(json.dumps({"torch_module": "fake_torch_definition:tiny"}))
    config = {"max_batch_size": 8, "parameters": {"model_file": {"string_value": "model.json"},
                                                  "ragged_outputs": {"string_value": json.dumps({"y": "n"})}}}
    model = pm.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_repository": str(tmp_path), "model_version": "1",
                      "model_instance_kind": "CPU", "model_instance_device_id": "0"})
    return model


def test_the_torch_runner_leaves_unwanted_outputs_on_the_device(tmp_path, monkeypatch):
    model = pytorch_model(tmp_path, monkeypatch)
    responses = model.execute(requests(("y", "n"), ("n",)))
    assert all(r.error is None for r in responses), [r.error for r in responses]
    assert list(responses[0].outputs) == ["y", "n"] and list(responses[1].outputs) == ["n"]
    assert responses[0].outputs["y"].tolist() == [[0, 2, 4]]

    responses = model.execute(requests((), ()))  # asking for everything reaches the untouchable output
    assert all(isinstance(r.error, FakePbUtils.TritonError) and "touched" in str(r.error) for r in responses)


def test_the_wenet_encoder_gives_the_ensemble_the_same_outputs_without_ctc_log_probs():
    from tuner.zoo.wenet import collate, model, sample_utterances
    from tuner.zoo.wenet.ensemble import SCORING_INPUTS

    module, ranks, outputs = model.serving_module("wenet-tiny")
    runner = pm.TorchRunner(module, ranks, outputs, "cpu", pm.Settings())
    batch = collate(sample_utterances(np.random.default_rng(0), 3, 0.5, 3.0))
    everything, pruned = runner(batch), runner(batch, list(SCORING_INPUTS))
    assert "ctc_log_probs" in everything and set(pruned) == set(SCORING_INPUTS)
    assert all(np.array_equal(pruned[name], everything[name]) for name in SCORING_INPUTS)

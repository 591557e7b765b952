"""The pytorch backend's runtime ladder on the CPU: sdpa attention, length buckets, the fp16 depthwise
fix, torch.compile through the runner, what is refused, and how the knobs reach the runner."""


import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tuner.candidate import Candidate  # noqa: E402
from tuner.render import parse, render  # noqa: E402
from template_modules import load_template
from tuner.resources import ADAPTER_DIR  # noqa: E402
from tuner.signature import Signature, Tensor  # noqa: E402
from tuner.zoo.wenet import collate, model, sample_utterances  # noqa: E402

TINY = "wenet-tiny"


def adapter():
    return load_template("pytorch_model.py", "tuner_pytorch_model_test")


pm = adapter()


def feed(n=4, seed=1):
    batch = collate(sample_utterances(np.random.default_rng(seed), n, 0.5, 3.0))
    batch["speech_lengths"][0] = 5  # an utterance with no output frame: every key masked
    return batch


def run(settings, batch):
    module, ranks, outputs = model.serving_module(TINY)
    return pm.TorchRunner(module, ranks, outputs, "cpu", settings)(batch)


def assert_same(a, b, atol=1e-5):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].shape == b[name].shape, name
        assert np.abs(a[name].astype(np.float64) - b[name].astype(np.float64)).max() <= atol, name


def test_sdpa_attention_equals_the_native_one():
    batch = feed()
    native = run(pm.Settings(), batch)
    sdpa = run(pm.Settings(attention="sdpa"), batch)
    assert_same(native, sdpa)
    assert np.array_equal(native["beam_log_probs_idx"], sdpa["beam_log_probs_idx"])


def test_length_buckets_give_the_unbucketed_results():
    batch = feed()
    frames = batch["speech"].shape[1]
    plain = run(pm.Settings(), batch)
    for bounds in ((frames + 37, frames + 400), (frames,), (10, 20)):  # padded further, exact, beyond the last
        assert_same(plain, run(pm.Settings(length_buckets=bounds), batch))


def test_graphed_batch_sizes_are_powers_of_two():
    assert [pm.graph_batch(n) for n in (1, 2, 3, 4, 5, 33, 64)] == [2, 2, 4, 4, 8, 64, 64]


def test_a_batch_padded_to_a_graph_size_gives_the_unpadded_results():
    batch = feed(n=5)  # runs as 8 rows: three copies of the first utterance, cut off after
    module, ranks, outputs = model.serving_module(TINY)
    padded = pm.TorchRunner(module, ranks, outputs, "cpu", pm.Settings(length_buckets=(400,)))
    padded.pad_batches = True
    rows, forward = [], padded.forward
    padded.forward = lambda *tensors: rows.append(len(tensors[0])) or forward(*tensors)
    result = padded(batch)
    assert rows == [8] and len(result["beam_log_probs_idx"]) == 5
    assert_same(run(pm.Settings(length_buckets=(400,)), batch), result)


def test_warm_runs_every_bucket_at_every_graphed_batch_size_before_any_request():
    module, ranks, outputs = model.serving_module(TINY)
    runner = pm.TorchRunner(module, ranks, outputs, "cpu", pm.Settings(length_buckets=(64, 128), compile="default"))
    seen, forward = [], runner.module  # the eager module stands in for the compiled one (Inductor: minutes here)
    runner.forward = lambda *tensors: seen.append(tuple(tensors[0].shape[:2])) or forward(*tensors)
    runner.pad_batches = True
    timings = runner.warm(max_batch=5)  # batch sizes 2, 4, 8 (1 runs as 2, 5 as 8) at two buckets
    assert [(rows, frames) for rows, frames, _ in timings] == [(r, f) for f in (64, 128) for r in (2, 4, 8)]
    assert seen == [(r, f) for f in (64, 128) for r in (2, 4, 8)]
    assert pm.warm_summary(timings).startswith("warmed 6 shapes: the first (2x64, with the compile)")
    plain = pm.TorchRunner(*model.serving_module(TINY), "cpu", pm.Settings(length_buckets=(64, 128)))
    assert plain.warm(max_batch=5) == []  # eager, no graphs: nothing to compile or capture
    unbucketed = pm.TorchRunner(*model.serving_module(TINY), "cpu", pm.Settings(compile="default"))
    assert unbucketed.warm(max_batch=5) == []  # no buckets: the shapes are unbounded


def test_per_request_arrays_give_the_stacked_batch_results():
    # What the Triton model hands the runner (gathers_itself): each request's own arrays, ragged,
    # padded into the runner's host buffer; a second, larger batch then a smaller one reuse it.
    module, ranks, outputs = model.serving_module(TINY)
    runner = pm.TorchRunner(module, ranks, outputs, "cpu", pm.Settings(length_buckets=(400,)))
    runner.pinned, runner.pad_batches = False, True
    for n, seed in ((3, 2), (6, 3), (2, 4)):
        batch = feed(n=n, seed=seed)
        requests = [{name: batch[name][i:i + 1, :int(batch["speech_lengths"][i])] if name == "speech"
                     else batch[name][i:i + 1] for name in ranks} for i in range(n)]
        per_request = {name: [r[name] for r in requests] for name in ranks}
        stacked = {name: np.concatenate([np.pad(a, [(0, 0), (0, max(len(b[0]) for b in arrays) - len(a[0]))]
                                                + [(0, 0)] * (a.ndim - 2)) if a.ndim >= 2 else a for a in arrays])
                   for name, arrays in per_request.items()}
        assert_same(run(pm.Settings(), stacked), runner(per_request))


def test_buckets_and_their_parsing():
    assert pm.parse_buckets("off") == () and pm.parse_buckets("1024, 256,512") == (256, 512, 1024)
    with pytest.raises(ValueError, match="length_buckets must be off or input lengths"):
        pm.parse_buckets("short,long")
    assert [pm.bucket(f, (256, 512)) for f in (1, 256, 257, 600)] == [256, 256, 512, 600]


def test_fp16_depthwise_runs_in_fp32_and_pointwise_convs_are_matmuls():
    torch.manual_seed(0)
    conv = model.ConvolutionModule(32, 15, "layer_norm").eval()
    x = torch.randn(2, 32, 40)
    with torch.inference_mode():
        assert torch.allclose(conv.pointwise(conv.pointwise_conv1, x.transpose(1, 2)),
                              conv.pointwise_conv1(x).transpose(1, 2), atol=1e-5)
        reference = conv.depthwise(x)
        half = conv.half()
        fixed = half.depthwise(x.half())
        assert fixed.dtype == torch.float16
        assert (fixed.float() - reference).abs().max() < 1e-2


def test_compile_runs_through_the_runner(monkeypatch):
    # The compiled module is never tested for truth: bool(OptimizedModule) calls its __len__,
    # which raises "WenetEncoder does not support len()". Inductor is too slow for a unit test;
    # dynamo with the eager backend builds the same OptimizedModule wrapper.
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **kw: real(module, dynamic=True, backend="eager"))
    batch = feed(2)
    assert_same(run(pm.Settings(), batch), run(pm.Settings(compile="default", attention="sdpa"), batch))


@pytest.mark.parametrize("settings, reason", [
    (dict(cuda_graphs=True, length_buckets=(256,)), "CUDA graphs need a CUDA device; this instance runs on cpu"),
    (dict(precision="fp8"), "precision must be one of"),
    (dict(compile="fastest"), "compile must be one of"),
])
def test_what_the_runner_refuses_says_why(settings, reason):
    module, ranks, outputs = model.serving_module(TINY)
    with pytest.raises(ValueError, match=reason):
        pm.TorchRunner(module, ranks, outputs, "cpu", pm.Settings(**settings))
    graphs_alone = pm.refusal(pm.Settings(cuda_graphs=True), "cuda:0", module)
    assert graphs_alone.startswith("cuda_graphs needs length_buckets")


def test_the_pytorch_knobs_reach_the_runner_settings():
    signature = Signature(inputs=(Tensor("speech", "TYPE_FP32", "float32", (-1, 80)),
                                  Tensor("speech_lengths", "TYPE_INT32", "int32", ())),
                          outputs=(Tensor("encoder_out", "TYPE_FP32", "float32", (-1, 64)),), batched=True)
    c = Candidate(backend="pytorch", family="pytorch", kind="KIND_GPU", precision="tf32", max_batch_size=8,
                  attention="sdpa", compile="default", length_buckets="256,512", cuda_graphs=True, concurrency=1)
    sample = {"speech": np.zeros((300, 80), np.float32), "speech_lengths": np.array([300], np.int32)}
    config = parse(render("adapter", "wenet", signature, c, sample))
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert pm.Settings.from_parameters(params) == pm.Settings("tf32", "sdpa", "default", (256, 512), True)
    onnx = Candidate(max_batch_size=8, concurrency=1)  # the pytorch knobs do not exist elsewhere
    assert not {"attention", "compile", "length_buckets", "cuda_graphs"} & set(
        parse(render("adapter", "m", signature, onnx, sample)).parameters)

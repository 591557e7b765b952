"""The WeNet zoo model: ONNX export matches PyTorch, padding is masked, exports are cached.

Uses ``wenet-tiny``; the module-scoped export takes about half a minute on two CPU cores.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from tuner import zoo  # noqa: E402
from tuner.zoo import wenet  # noqa: E402
from tuner.zoo.wenet import cache, model, onnx_export  # noqa: E402

TINY = "wenet-tiny"
PADDED_OUTPUTS = ("encoder_out", "ctc_log_probs", "beam_log_probs")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo-cache")


@pytest.fixture(scope="module")
def artifacts(cache_dir: Path) -> wenet.ZooArtifacts:
    return wenet.export(TINY, cache_dir)


@pytest.fixture(scope="module")
def models() -> tuple[torch.nn.Module, torch.nn.Module]:
    return wenet.build(TINY)


@pytest.fixture(scope="module")
def encoder_session(artifacts: wenet.ZooArtifacts) -> ort.InferenceSession:
    return ort.InferenceSession(str(artifacts.encoder), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def decoder_session(artifacts: wenet.ZooArtifacts) -> ort.InferenceSession:
    return ort.InferenceSession(str(artifacts.decoder), providers=["CPUExecutionProvider"])


def run_onnx(session: ort.InferenceSession, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs)))


def run_torch_encoder(encoder: torch.nn.Module, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        outputs = encoder(torch.from_numpy(inputs["speech"]), torch.from_numpy(inputs["speech_lengths"]))
    return {name: t.numpy() for name, t in zip(wenet.ENCODER_OUTPUTS, outputs)}


def utterances_of(frames: list[int], seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Fbank-like utterances of exactly the given frame counts."""
    rng = np.random.default_rng(seed)
    return [
        wenet.sample_utterances(rng, 1, min_seconds=t / 100, max_seconds=t / 100)[0] for t in frames
    ]


def assert_same_top_k(
    idx: np.ndarray, expected_idx: np.ndarray, log_probs: np.ndarray, expected_values: np.ndarray
) -> None:
    """Top-k indices agree, except that near-tied candidates may come in either order."""
    # Whatever order ties came out in, the chosen tokens must carry the expected top-k values.
    picked = np.take_along_axis(log_probs, idx, axis=-1)
    np.testing.assert_allclose(picked, expected_values, rtol=1e-4, atol=1e-5)
    assert np.mean(idx == expected_idx) > 0.99


@pytest.mark.parametrize(
    "frames",
    [[wenet.EXPORT_MIN_FRAMES], [73], [300, 151, 57], [412, 380, 222, 208, 100, 64, 31, 11]],
    ids=["b1-shortest", "b1", "b3", "b8"],
)
def test_encoder_onnx_matches_torch(models, encoder_session, frames: list[int]) -> None:
    batch = wenet.collate(utterances_of(frames, seed=len(frames)))
    expected = run_torch_encoder(models[0], batch)
    got = run_onnx(encoder_session, batch)

    t_out = wenet.subsampled_frames(max(frames))
    assert got["encoder_out"].shape == (len(frames), t_out, 64)
    assert got["encoder_out"].dtype == np.float32
    assert got["encoder_out_lens"].dtype == np.int32
    assert got["beam_log_probs_idx"].dtype == np.int64
    assert got["beam_log_probs"].shape == (len(frames), t_out, wenet.BEAM)
    np.testing.assert_array_equal(got["encoder_out_lens"], [wenet.subsampled_frames(t) for t in frames])
    for name in PADDED_OUTPUTS:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-5, err_msg=name)
    assert_same_top_k(
        got["beam_log_probs_idx"],
        expected["beam_log_probs_idx"],
        expected["ctc_log_probs"],
        expected["beam_log_probs"],
    )


def test_encoder_runs_below_the_exported_minimum_length(models, encoder_session) -> None:
    # torch.export was told T >= 11 (T' >= 2); the graph must still serve the shortest inputs.
    batch = wenet.collate(utterances_of([wenet.MIN_FRAMES, 9], seed=3))
    expected = run_torch_encoder(models[0], batch)
    got = run_onnx(encoder_session, batch)
    np.testing.assert_array_equal(got["encoder_out_lens"], [1, 1])
    np.testing.assert_allclose(got["encoder_out"], expected["encoder_out"], rtol=1e-4, atol=1e-5)


def test_padded_batch_equals_each_utterance_alone(encoder_session) -> None:
    frames = [300, 41, 187, 12, 256, 300]
    utterances = utterances_of(frames, seed=7)
    batched = run_onnx(encoder_session, wenet.collate(utterances))

    for i, utterance in enumerate(utterances):
        alone = run_onnx(encoder_session, wenet.collate([utterance]))
        valid = int(alone["encoder_out_lens"][0])
        assert valid == wenet.subsampled_frames(frames[i])
        assert batched["encoder_out_lens"][i] == valid
        for name in PADDED_OUTPUTS:
            np.testing.assert_allclose(
                batched[name][i, :valid], alone[name][0], rtol=1e-4, atol=1e-5, err_msg=f"{name}[{i}]"
            )
        assert_same_top_k(
            batched["beam_log_probs_idx"][i, :valid],
            alone["beam_log_probs_idx"][0],
            alone["ctc_log_probs"][0],
            alone["beam_log_probs"][0],
        )


@pytest.mark.parametrize("conv_norm", ["layer_norm", "batch_norm"])
def test_padding_values_do_not_leak_into_valid_frames(conv_norm: str) -> None:
    # Garbage instead of zeros in the padding must not change anything within the valid frames.
    encoder, _ = wenet.build_from(dataclasses.replace(wenet.get_config(TINY), conv_norm=conv_norm))
    batch = wenet.collate(utterances_of([200, 90], seed=11))
    noisy = {k: v.copy() for k, v in batch.items()}
    noisy["speech"][1, 90:] = 1e3
    clean, dirty = run_torch_encoder(encoder, batch), run_torch_encoder(encoder, noisy)
    valid = wenet.subsampled_frames(90)
    for name in PADDED_OUTPUTS:
        np.testing.assert_allclose(dirty[name][1, :valid], clean[name][1, :valid], rtol=1e-5, atol=1e-6)


def test_subsampled_mask_equals_wenets_slicing() -> None:
    frames = 64
    lengths = torch.arange(0, frames + 1, dtype=torch.int32)
    full = torch.arange(frames).unsqueeze(0) < lengths.unsqueeze(1)
    wenet_style = full.unsqueeze(1)[:, :, 2::2][:, :, 2::2]
    ours = model.WenetEncoder.subsampled_mask(lengths, wenet_style.size(2))
    assert torch.equal(ours, wenet_style)
    assert wenet_style.size(2) == wenet.subsampled_frames(frames)


def decoder_inputs(cfg: wenet.WenetConfig, batch: int, frames: int, hyp_len: int, seed: int):
    return [t.numpy() for t in onnx_export._decoder_example(cfg, batch, frames, hyp_len, seed=seed)]


@pytest.mark.parametrize("batch,frames,hyp_len", [(1, 20, 5), (4, 75, 12), (7, 3, 0)])
def test_decoder_onnx_matches_torch(models, decoder_session, batch, frames, hyp_len) -> None:
    cfg = wenet.get_config(TINY)
    inputs = decoder_inputs(cfg, batch, frames, hyp_len, seed=batch)
    with torch.no_grad():
        expected = models[1](*(torch.from_numpy(x) for x in inputs)).numpy()
    got = run_onnx(decoder_session, dict(zip(wenet.DECODER_INPUTS, inputs)))["best_index"]
    assert got.dtype == np.int64 and got.shape == (batch,)
    np.testing.assert_array_equal(got, expected)


def test_decoder_rescoring_semantics(decoder_session) -> None:
    cfg = wenet.get_config(TINY)
    inputs = dict(zip(wenet.DECODER_INPUTS, decoder_inputs(cfg, 5, 40, 8, seed=5)))
    # A CTC score far above the rest decides, whatever the attention decoder says.
    chosen = np.array([3, 0, 9, 5, 1])
    ctc = np.full((5, cfg.beam), -1e4, np.float32)
    ctc[np.arange(5), chosen] = 0.0
    got = run_onnx(decoder_session, {**inputs, "ctc_score": ctc})["best_index"]
    np.testing.assert_array_equal(got, chosen)
    # What pads the hypotheses (WeNet's -1 or <eos>) must not matter.
    hyps = inputs["hyps_pad_sos_eos"]
    eos_padded = np.where(hyps < 0, cfg.vocab_size - 1, hyps)
    baseline = run_onnx(decoder_session, inputs)["best_index"]
    repadded = run_onnx(decoder_session, {**inputs, "hyps_pad_sos_eos": eos_padded})["best_index"]
    np.testing.assert_array_equal(repadded, baseline)


def test_export_is_cached(artifacts: wenet.ZooArtifacts, cache_dir: Path, monkeypatch) -> None:
    assert artifacts.encoder == cache_dir / f"{TINY}-{wenet.settings_hash(TINY)}" / "encoder.onnx"
    assert artifacts.decoder.parent == artifacts.encoder.parent
    before = {p: p.stat().st_mtime_ns for p in (artifacts.encoder, artifacts.decoder)}

    def no_export(*args, **kwargs):
        raise AssertionError("cached export was redone")

    monkeypatch.setattr(onnx_export, "_export_encoder", no_export)
    monkeypatch.setattr(onnx_export, "_export_decoder", no_export)
    start = time.perf_counter()
    again = wenet.export(TINY, cache_dir)
    via_registry = zoo.get(f"{TINY}-encoder").export(cache_dir)
    assert time.perf_counter() - start < 0.5
    assert again == artifacts
    assert via_registry == artifacts.encoder
    assert {p: p.stat().st_mtime_ns for p in before} == before
    # Nothing but the two models is left behind (no temporary files).
    assert sorted(p.name for p in artifacts.directory.iterdir()) == ["decoder.onnx", "encoder.onnx"]


def test_export_is_deterministic(artifacts: wenet.ZooArtifacts, tmp_path: Path) -> None:
    encoder, _ = wenet.build(TINY)
    again = tmp_path / "encoder.onnx"
    onnx_export._export_encoder(encoder, again)
    assert again.read_bytes() == artifacts.encoder.read_bytes()


def test_settings_hash_tracks_settings(monkeypatch) -> None:
    assert wenet.settings_hash(TINY) == wenet.settings_hash(TINY)
    assert wenet.settings_hash(TINY) != wenet.settings_hash("wenet")
    before = wenet.settings_hash(TINY)
    monkeypatch.setattr(cache, "EXPORTER_VERSION", cache.EXPORTER_VERSION + "-changed")
    assert wenet.settings_hash(TINY) != before


def test_failed_save_leaves_no_file(tmp_path: Path) -> None:
    class HalfWritingProgram:
        def save(self, path: Path, external_data: bool) -> None:
            Path(path).write_bytes(b"half a model")

    def failing_check(path: Path) -> None:
        raise RuntimeError("onnxruntime disagrees")

    target = tmp_path / "encoder.onnx"
    with pytest.raises(RuntimeError):
        onnx_export._atomic_save(HalfWritingProgram(), target, check=failing_check)
    assert list(tmp_path.iterdir()) == []


def test_sample_utterances() -> None:
    rng = np.random.default_rng(42)
    utterances = wenet.sample_utterances(rng, 40)
    frames = np.array([u["speech"].shape[0] for u in utterances])
    assert len(utterances) == 40
    for u, t in zip(utterances, frames):
        assert set(u) == {"speech", "speech_lengths"}
        assert u["speech"].dtype == np.float32 and u["speech"].shape == (t, wenet.FEATURE_DIM)
        assert u["speech_lengths"].dtype == np.int32 and u["speech_lengths"].shape == (1,)
        assert u["speech_lengths"][0] == t
        assert np.isfinite(u["speech"]).all()
    assert frames.min() >= 200 and frames.max() <= 1600
    # Stratified: every 1.4 s band of the 2-16 s range holds some utterances.
    assert np.all(np.bincount((frames - 200) * 10 // 1401, minlength=10) >= 1)
    # Log-mel fbank scale before CMVN: around 8-14, not standard normal.
    speech = np.concatenate([u["speech"] for u in utterances])
    assert 8.0 < speech.mean() < 14.0 and 2.0 < speech.std() < 6.0
    # Reproducible from the generator's seed.
    again = wenet.sample_utterances(np.random.default_rng(42), 40)
    assert all(np.array_equal(a["speech"], b["speech"]) for a, b in zip(utterances, again))


def test_registry() -> None:
    assert zoo.names() == ["wenet-encoder", "wenet-tiny-encoder"]
    assert zoo.get("no-such-model") is None
    model = zoo.get(f"{TINY}-encoder")
    assert model is not None and model.name == f"{TINY}-encoder"
    assert model.ragged_outputs == {
        "encoder_out": "encoder_out_lens",
        "ctc_log_probs": "encoder_out_lens",
        "beam_log_probs": "encoder_out_lens",
        "beam_log_probs_idx": "encoder_out_lens",
    }
    samples = model.sample_inputs(np.random.default_rng(0), 12)
    frames = [s["speech"].shape[0] for s in samples]
    assert len(samples) == 12 and min(frames) >= 50 and max(frames) <= 300


def test_importing_the_zoo_does_not_import_torch() -> None:
    code = "import sys, tuner.zoo; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_sampling_and_a_cached_export_do_not_import_torch(artifacts: wenet.ZooArtifacts, cache_dir: Path) -> None:
    code = (
        "import sys, numpy as np, tuner.zoo; tiny = tuner.zoo.get('wenet-tiny-encoder'); "
        f"tiny.sample_inputs(np.random.default_rng(0), 2); print(tiny.export({str(cache_dir)!r})); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == [str(artifacts.encoder), "False"]


def test_full_size_wenet_builds() -> None:
    encoder, decoder = wenet.build("wenet")
    # WeNet's AISHELL conformer: ~46M parameters, of which the 6-block decoder holds ~12M.
    assert 30e6 < wenet.parameter_count(encoder) < 40e6
    assert 9e6 < wenet.parameter_count(decoder) < 14e6
    assert len(encoder.encoders) == 12 and len(decoder.decoder.decoders) == 6
    batch = wenet.collate(utterances_of([250, 120]))
    out = run_torch_encoder(encoder, batch)
    assert out["encoder_out"].shape == (2, wenet.subsampled_frames(250), 256)
    assert out["ctc_log_probs"].shape[-1] == 4233
    np.testing.assert_allclose(np.exp(out["ctc_log_probs"]).sum(-1), 1.0, rtol=1e-4)
    # Weights come from the fixed seed: building twice gives the same model.
    again, _ = wenet.build("wenet")
    assert all(torch.equal(a, b) for a, b in zip(encoder.state_dict().values(), again.state_dict().values()))

"""ONNX export of the WeNet encoder and decoder, as WeNet's ``export_onnx_gpu.py`` does it.

Each graph is checked against torch with onnxruntime at shapes it was not exported with, then
saved atomically; :func:`tuner.zoo.wenet.cache.export` decides whether an export is needed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import torch

from tuner.zoo.wenet.audio import collate, fake_fbank
from tuner.zoo.wenet.config import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    EXPORT_MIN_FRAMES,
    EXPORT_MIN_HYP_LEN,
    MAX_BATCH,
    MAX_FRAMES,
    MAX_HYP_LEN,
    MIN_FRAMES,
    OPSET,
    WenetConfig,
    get_config,
)
from tuner.zoo.wenet.model import build


def export_models(name: str, encoder_path: Path, decoder_path: Path) -> None:
    """Build variant ``name`` and export it; the encoder is written last (the completion marker)."""
    encoder, decoder = build(name)
    _export_decoder(decoder, get_config(name), decoder_path)
    _export_encoder(encoder, encoder_path)


def _encoder_example(batch: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic fbank-like encoder inputs with distinct lengths, the longest == frames."""
    rng = np.random.default_rng(1234)
    lengths = np.linspace(frames, max(MIN_FRAMES, frames // 2), batch).round().astype(np.int32)
    utterances = [
        {"speech": fake_fbank(rng, int(t)), "speech_lengths": np.array([t], np.int32)}
        for t in lengths
    ]
    batch_inputs = collate(utterances)
    return torch.from_numpy(batch_inputs["speech"]), torch.from_numpy(batch_inputs["speech_lengths"])


def _decoder_example(
    cfg: WenetConfig, batch: int, frames: int, hyp_len: int, seed: int = 4321
) -> tuple[torch.Tensor, ...]:
    """Random rescoring inputs: hypotheses of varying length padded with WeNet's ignore_id -1."""
    g = torch.Generator().manual_seed(seed)
    sos_eos = cfg.vocab_size - 1
    encoder_out = torch.randn(batch, frames, cfg.d_model, generator=g)
    encoder_out_lens = torch.randint(1, frames + 1, (batch,), generator=g, dtype=torch.int32)
    encoder_out_lens[0] = frames
    token_counts = torch.randint(0, hyp_len + 1, (batch, cfg.beam), generator=g)
    token_counts[0, 0] = hyp_len
    hyps = torch.full((batch, cfg.beam, hyp_len + 2), -1, dtype=torch.int64)
    for b in range(batch):
        for k in range(cfg.beam):
            n = int(token_counts[b, k])
            hyps[b, k, 0] = sos_eos
            hyps[b, k, 1 : n + 1] = torch.randint(1, sos_eos, (n,), generator=g)
            hyps[b, k, n + 1] = sos_eos
    hyps_lens_sos = (token_counts + 1).to(torch.int32)
    ctc_score = -torch.rand(batch, cfg.beam, generator=g) * 10.0
    return encoder_out, encoder_out_lens, hyps, hyps_lens_sos, ctc_score


def _export_encoder(encoder: torch.nn.Module, path: Path) -> None:
    """Export with dynamic batch and time, check it against torch at other shapes, save atomically."""
    # Dim.DYNAMIC rather than named Dims: torch.export's solver cannot prove guards such as
    # "((T - 3) // 4) != 1" from T >= 11 and would reject named Dims; DYNAMIC records them as
    # range refinements instead. The axes get their names back in _name_dynamic_axes.
    batch = torch.export.Dim.DYNAMIC(min=1, max=MAX_BATCH)
    frames = torch.export.Dim.DYNAMIC(min=EXPORT_MIN_FRAMES, max=MAX_FRAMES)
    with _quiet_exporter():
        program = torch.onnx.export(
            encoder,
            _encoder_example(batch=2, frames=203),
            dynamo=True,
            dynamic_shapes={"speech": {0: batch, 1: frames}, "speech_lengths": {0: batch}},
            input_names=list(ENCODER_INPUTS),
            output_names=list(ENCODER_OUTPUTS),
            opset_version=OPSET,
            verbose=False,
        )
    _name_dynamic_axes(
        program.model, {"speech": {0: "batch", 1: "frames"}, "speech_lengths": {0: "batch"}}
    )
    _atomic_save(program, path, check=lambda p: _check_encoder(encoder, p))


def _export_decoder(decoder: torch.nn.Module, cfg: WenetConfig, path: Path) -> None:
    """Export with dynamic batch, encoder frames and hypothesis length; the beam stays fixed."""
    batch = torch.export.Dim.DYNAMIC(min=1, max=MAX_BATCH)
    frames = torch.export.Dim.DYNAMIC(min=1, max=MAX_FRAMES)
    hyp_len = torch.export.Dim.DYNAMIC(min=EXPORT_MIN_HYP_LEN, max=MAX_HYP_LEN)
    with _quiet_exporter():
        program = torch.onnx.export(
            decoder,
            _decoder_example(cfg, batch=2, frames=37, hyp_len=9),
            dynamo=True,
            dynamic_shapes={
                "encoder_out": {0: batch, 1: frames},
                "encoder_out_lens": {0: batch},
                "hyps_pad_sos_eos": {0: batch, 2: hyp_len},
                "hyps_lens_sos": {0: batch},
                "ctc_score": {0: batch},
            },
            input_names=list(DECODER_INPUTS),
            output_names=list(DECODER_OUTPUTS),
            opset_version=OPSET,
            verbose=False,
        )
    _name_dynamic_axes(
        program.model,
        {
            "encoder_out": {0: "batch", 1: "frames"},
            "encoder_out_lens": {0: "batch"},
            "hyps_pad_sos_eos": {0: "batch", 2: "hyp_len"},
            "hyps_lens_sos": {0: "batch"},
            "ctc_score": {0: "batch"},
        },
    )
    _atomic_save(program, path, check=lambda p: _check_decoder(decoder, cfg, p))


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's known-harmless chatter (missing torchvision ops, deprecations)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r".*axis name.*", category=UserWarning)
            yield
    finally:
        logger.setLevel(level)


def _name_dynamic_axes(model: ir.Model, names: dict[str, dict[int, str]]) -> None:
    """Rename the exporter's shape symbols (``s37``) to readable names throughout the graph.

    ``names`` maps graph input -> axis -> name; derived sizes such as ``((s5 - 3)//4)`` on the
    outputs are rewritten too, so they read ``((frames - 3)//4)``.
    """
    mapping: dict[str, str] = {}
    for value in model.graph.inputs:
        for axis, name in names.get(value.name, {}).items():
            mapping[str(value.shape[axis])] = name
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, mapping)) + r")\b")

    def rename(dim: object) -> object:
        if isinstance(dim, ir.SymbolicDim) and dim.value is not None:
            return ir.SymbolicDim(pattern.sub(lambda m: mapping[m.group(0)], dim.value))
        return dim

    values = list(model.graph.inputs) + [out for node in model.graph for out in node.outputs]
    for value in values:
        if value.shape is not None:
            value.shape = ir.Shape([rename(dim) for dim in value.shape])


def _atomic_save(program: object, path: Path, check: Callable[[Path], None]) -> None:
    """Save an ONNXProgram with weights inline, run ``check`` on it, then rename into place."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # One self-contained file: Triton's onnxruntime backend loads model.onnx alone.
        program.save(tmp, external_data=False)  # type: ignore[attr-defined]
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a server in a container may run as another user
        check(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU onnxruntime session."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check_encoder(encoder: torch.nn.Module, path: Path) -> None:
    """Fail the export if onnxruntime disagrees with torch at a batch and length not exported with."""
    speech, lengths = _encoder_example(batch=3, frames=331)
    with torch.no_grad():
        expected = [t.numpy() for t in encoder(speech, lengths)]
    got = _session(path).run(None, {"speech": speech.numpy(), "speech_lengths": lengths.numpy()})
    for name, e, g in zip(ENCODER_OUTPUTS, expected, got):
        if name == "beam_log_probs_idx":
            continue  # near-ties may swap order; beam_log_probs already checks the values
        np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-4, err_msg=f"encoder output {name}")


def _check_decoder(decoder: torch.nn.Module, cfg: WenetConfig, path: Path) -> None:
    """Fail the export if onnxruntime picks other hypotheses than torch at new shapes."""
    inputs = _decoder_example(cfg, batch=3, frames=53, hyp_len=14, seed=99)
    with torch.no_grad():
        expected = decoder(*inputs).numpy()
    got = _session(path).run(None, dict(zip(DECODER_INPUTS, (t.numpy() for t in inputs))))[0]
    np.testing.assert_array_equal(got, expected, err_msg="decoder best_index")

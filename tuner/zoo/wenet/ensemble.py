"""The WeNet Triton ensemble as it is deployed: audio in, text out, three composing models.

```
WAV, WAV_LENS ─► feature_extractor ─► SPEECH, SPEECH_LENGTHS ─► encoder ─► ENCODER_OUT(_LENS),
                 (python: fbank)                (ONNX Runtime | PyTorch)   BEAM_LOG_PROBS(_IDX)
                                                                                │
           TRANSCRIPTS, TOKENS, TOKEN_LENS ◄── scoring ◄────────────────────────┘
                      (python: CTC greedy | prefix beam | prefix beam + attention rescoring)
```

Tensors between the steps stay inside the server; the encoder's full CTC log-probabilities are
left unmapped, so they never reach a client. Each composing model's scheduling (instances, max
batch size, dynamic batching and its queue delay) comes from its own :class:`Candidate` and is
rendered by the same templates as a single-model trial (tuner.render), so a later per-step
search varies exactly the knobs it varies today. The encoder is the zoo's ONNX export served by
its backend's python-backend adapter (ONNX Runtime on CPUs), or, for a pytorch Candidate (GPUs),
the zoo's PyTorch module built by the pytorch adapter from a model.json naming it; that one
imports tuner.zoo.wenet, so the server's python then needs tuner. The two python steps ship the
leaf modules they run (features.py, decoding.py) beside their model.py.

:func:`packages` gives the four models as :class:`ModelPackage` (composing models first, the
ensemble last), for a server's ``load`` or for :func:`write_repository`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tuner import backends, zoo
from tuner.candidate import Candidate
from tuner.render import parse, render
from tuner.resources import TEMPLATES_DIR
from tuner.server import ModelPackage
from tuner.server.repository import stage
from tuner.signature import Signature, Tensor, read_signature
from tuner.zoo.wenet import decoding, pipeline
from tuner.zoo.wenet.cache import ZooArtifacts
from tuner.zoo.wenet.config import ENCODER_OUTPUTS, get_config

FEATURES, ENCODER, SCORING = "feature_extractor", "encoder", "scoring"
STEPS = (FEATURES, ENCODER, SCORING)
# The ensemble's own tensors, named as in WeNet's Triton model repository.
WAV, WAV_LENS = "WAV", "WAV_LENS"
TRANSCRIPTS, TOKENS, TOKEN_LENS = "TRANSCRIPTS", "TOKENS", "TOKEN_LENS"
# Encoder outputs the scoring step reads; ctc_log_probs (B x T' x vocab, megabytes) is not one.
SCORING_INPUTS = ("encoder_out", "encoder_out_lens", "beam_log_probs", "beam_log_probs_idx")
_LEAF_MODULES = Path(__file__).resolve().parent
_PYTHON = TEMPLATES_DIR / "python"


def default_step() -> Candidate:
    """A step's scheduling before any search: one CPU instance, dynamic batching of up to 8."""
    return Candidate(instances=1, max_batch_size=8, dynamic_batching=True, max_queue_delay_us=1000,
                     preferred_batch=False, threads=1, warmup=False, concurrency=1)


@dataclass(frozen=True)
class EnsembleSpec:
    """One deployment of the pipeline: the variant, the scoring choice and each step's scheduling."""

    variant: str
    method: str = "rescore"  # greedy | prefix_beam | rescore
    beam: int | None = None  # prefix beam width; None: the exported top-k (config.BEAM)
    steps: dict[str, Candidate] = field(default_factory=lambda: {s: default_step() for s in STEPS}, hash=False)
    name: str | None = None  # the ensemble's model name; None: the variant's

    @property
    def model_name(self) -> str:
        return self.name or self.variant

    @property
    def beam_width(self) -> int:
        return get_config(self.variant).beam if self.beam is None else self.beam


def _tensor(name: str, triton_type: str, dims: tuple[int, ...]) -> Tensor:
    numpy_type = {"TYPE_FP32": "float32", "TYPE_INT32": "int32", "TYPE_INT64": "int64",
                  "TYPE_STRING": "object"}[triton_type]
    return Tensor(name, triton_type, numpy_type, dims)


def _features_signature(feature_dim: int) -> Signature:
    return Signature(
        inputs=(_tensor("wav", "TYPE_FP32", (-1,)), _tensor("wav_lens", "TYPE_INT32", ())),
        outputs=(_tensor("speech", "TYPE_FP32", (-1, feature_dim)), _tensor("speech_lengths", "TYPE_INT32", ())),
        batched=True,
    )


def _scoring_signature(encoder: Signature) -> Signature:
    by_name = {t.name: t for t in encoder.outputs}
    return Signature(
        inputs=tuple(by_name[name] for name in SCORING_INPUTS),
        outputs=(_tensor(TRANSCRIPTS, "TYPE_STRING", (1,)), _tensor(TOKENS, "TYPE_INT64", (-1,)),
                 _tensor(TOKEN_LENS, "TYPE_INT32", ())),
        batched=True,
    )


def _dummy_sample(signature: Signature) -> dict[str, np.ndarray]:
    """Per-request arrays of the right rank: render() sizes warmup files from a sample, and the
    ensemble's steps run without warmup (its files would have to be made per step)."""
    return {t.name: np.zeros(tuple(1 if d == -1 else d for d in t.config_dims), np.float32) for t in signature.inputs}


def _python_step(name: str, signature: Signature, candidate: Candidate, parameters: dict[str, str]) -> str:
    """config.pbtxt of a python-backend step: the adapter template's scheduling and tensors, with
    this step's parameters instead of a runtime's."""
    candidate = replace(candidate, warmup=False)
    config = parse(_ragged(render("adapter", name, signature, candidate, _dummy_sample(signature))))
    config.ClearField("parameters")
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return text_format.MessageToString(config)


def _ragged(config_text: str) -> str:
    """Every variable-length input may be batched with others of other lengths: the steps' adapters
    pad a batch and take each request's length from its lengths input. Without it Triton's dynamic
    batcher only joins requests of one shape, and utterances of 2-16 s almost never have one (on an
    H200 the encoder ran batches of 1.09 requests on average; issue 15). Set whatever the step's
    scheduling, so that a search that turns dynamic batching on finds it."""
    config = parse(config_text)
    for tensor in config.input:
        if -1 in tensor.dims:
            tensor.allow_ragged_batch = True
    return text_format.MessageToString(config)


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> dict:
    return {"model_name": model, "model_version": -1, "input_map": inputs, "output_map": outputs}


def _ensemble_config(spec: EnsembleSpec, encoder: Signature, scoring: Signature) -> str:
    config = model_config_pb2.ModelConfig(
        name=spec.model_name,
        platform="ensemble",
        # An ensemble may not batch more than any of its steps.
        max_batch_size=min(spec.steps[s].max_batch_size for s in STEPS),
    )
    config.input.add(name=WAV, data_type=model_config_pb2.TYPE_FP32, dims=[-1])
    config.input.add(name=WAV_LENS, data_type=model_config_pb2.TYPE_INT32, dims=[1])
    for t in scoring.outputs:
        config.output.add(name=t.name, data_type=model_config_pb2.DataType.Value(t.triton_type),
                          dims=list(t.config_dims))
    internal = {name: name.upper() for name in ("speech", "speech_lengths", *SCORING_INPUTS)}
    steps = [
        _step(FEATURES, {"wav": WAV, "wav_lens": WAV_LENS},
              {"speech": internal["speech"], "speech_lengths": internal["speech_lengths"]}),
        _step(ENCODER, {t.name: internal[t.name] for t in encoder.inputs},
              {name: internal[name] for name in SCORING_INPUTS}),
        _step(SCORING, {name: internal[name] for name in SCORING_INPUTS},
              {t.name: t.name for t in scoring.outputs}),
    ]
    for step in steps:
        config.ensemble_scheduling.step.add(**step)
    return text_format.MessageToString(config)


def _encoder_files(variant: str, candidate: Candidate, artifacts: ZooArtifacts, workdir: Path) -> dict[str, Path]:
    """The encoder's model directory: its backend's adapter beside the ONNX export, or for the
    pytorch backend beside a model.json (written under ``workdir``) naming the zoo's PyTorch module."""
    backend = backends.get(candidate.backend)
    if backend.family != "pytorch":
        return backend.adapter_files(artifacts.encoder)
    definition = workdir / f"{variant}-model.json"
    definition.parent.mkdir(parents=True, exist_ok=True)
    definition.write_text(json.dumps({"torch_module": zoo.encoder_of(variant).torch_module}))
    return backend.adapter_files(definition)


def packages(spec: EnsembleSpec, artifacts: ZooArtifacts, workdir: Path) -> list[ModelPackage]:
    """The composing models and the ensemble; generated files (units.txt, the pytorch encoder's
    model.json) go under ``workdir``."""
    cfg = get_config(spec.variant)
    pipeline.check_scoring(cfg, spec.method, spec.beam_width)
    if set(spec.steps) != set(STEPS):
        raise ValueError(f"need a Candidate for each step {STEPS}, got {sorted(spec.steps)}")
    if any(spec.steps[s].max_batch_size < 1 for s in STEPS):
        raise ValueError("every step must batch (max_batch_size >= 1): requests carry a batch dimension")
    encoder_signature = read_signature(artifacts.encoder)
    scoring_signature = _scoring_signature(encoder_signature)

    features_config = _python_step(FEATURES, _features_signature(cfg.feature_dim), spec.steps[FEATURES], {
        "threads": str(spec.steps[FEATURES].threads),
        "ragged_outputs": json.dumps({"speech": "speech_lengths"}),
    })
    features_files = {"1/model.py": _PYTHON / "wenet_features_model.py",
                      "1/tuner_adapter.py": _PYTHON / "tuner_adapter.py",
                      "1/features.py": _LEAF_MODULES / "features.py"}

    encoder = spec.steps[ENCODER]
    ragged = {name: "encoder_out_lens" for name in ENCODER_OUTPUTS if name != "encoder_out_lens"}
    sample = {"speech": np.zeros((100, cfg.feature_dim), np.float32), "speech_lengths": np.array([100], np.int32)}
    encoder_config = _ragged(render("adapter", ENCODER, encoder_signature, encoder, sample, ragged))
    if encoder.warmup:
        raise ValueError("the encoder step runs without warmup for now (its warmup files are not written)")
    encoder_files = _encoder_files(spec.variant, encoder, artifacts, workdir)

    units = workdir / f"{spec.variant}-units.txt"
    units.parent.mkdir(parents=True, exist_ok=True)
    units.write_text(decoding.units_text(pipeline.vocabulary(cfg)), encoding="utf-8")
    scoring_config = _python_step(SCORING, scoring_signature, spec.steps[SCORING], {
        "method": spec.method,
        "beam": str(spec.beam_width),
        "decoder_beam": str(cfg.beam),
        "units_file": "units.txt",
        "decoder_file": "decoder.onnx",
        "intra_op_threads": str(spec.steps[SCORING].threads),
        "ragged_outputs": json.dumps({TOKENS: TOKEN_LENS}),
    })
    scoring_files = {"1/model.py": _PYTHON / "wenet_scoring_model.py",
                     "1/tuner_adapter.py": _PYTHON / "tuner_adapter.py",
                     "1/decoding.py": _LEAF_MODULES / "decoding.py",
                     "1/units.txt": units,
                     # Shipped whatever the method: the scoring step loads it only for rescore,
                     # so a deployment switches method by its config parameter alone.
                     "1/decoder.onnx": artifacts.decoder}

    # An ensemble has no files, but Triton wants its version directory.
    version_marker = workdir / "ensemble-version-marker"
    version_marker.write_text("Triton needs a version directory for the ensemble; it holds nothing.\n")
    return [
        ModelPackage(FEATURES, features_config, features_files),
        ModelPackage(ENCODER, encoder_config, encoder_files),
        ModelPackage(SCORING, scoring_config, scoring_files),
        ModelPackage(spec.model_name, _ensemble_config(spec, encoder_signature, scoring_signature),
                     {"1/README": version_marker}),
    ]


def write_repository(directory: Path, models: list[ModelPackage]) -> Path:
    """A Triton model repository of ``models`` (config.pbtxt and files per model) under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for package in models:
        stage(directory, package)
    return directory

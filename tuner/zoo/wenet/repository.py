"""The zoo's WeNet pipelines (``wenet``, ``wenet-tiny``, and their GPU forms ``wenet-gpu``,
``wenet-tiny-gpu``) as a pipeline search takes them: the
audio-to-text ensemble (ensemble.py) written once as a model repository, with real utterances to
measure and to check, and the in-process reference's transcripts.

The repository starts where a user's would: every step at Triton's default scheduling (one
instance, max batch size 4, no dynamic batching) and scoring by attention rescoring. The scoring
step always ships decoder.onnx, so the search switches its ``method`` (greedy, prefix_beam,
rescore) and ``beam`` by config parameter alone.

On device "gpu" the feature extractor runs on KIND_GPU, the encoder is the pytorch backend's
adapter on KIND_GPU (fp32, its runtime ladder off), and scoring stays on the CPU; the encoder's
runtime knobs (precision, attention, length buckets, CUDA graphs) are searched as config
parameters like scoring's. The reference stays the fp32 CPU pipeline's.

Everything is written under ``cache_dir``: the export (cache.py), and beside it the repository in
a folder named by the variant's settings hash and a digest of what the repository holds (configs,
shipped sources), so a second search reuses it and a changed template writes a new one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import replace
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from tuner import backends
from tuner.candidate import Candidate
from tuner.knobs import BY_NAME
from tuner.pipeline.repository import read
from tuner.pipeline.source import PipelineSource
from tuner.server import ModelPackage
from tuner.zoo.wenet import decoding, ensemble, load, pipeline
from tuner.zoo.wenet.cache import ZooArtifacts, export, settings_hash
from tuner.zoo.wenet.config import get_config

MEASURED_UTTERANCES, MEASURED_SECONDS = 16, (2.0, 16.0)  # perf_analyzer's data sets, sent in turn
GUARD_UTTERANCES, GUARD_SECONDS = 4, (2.0, 6.0)  # short: the guard runs before every trial
SEARCHED_BEAMS = (4, 10)  # prefix beam widths offered to the search (those within the exported top-k)
DEVICES = ("cpu", "gpu")
SEARCHED_BUCKETS = ("off", "256,512,1024,1600")  # the pytorch encoder's length_buckets choices


def triton_default_step() -> Candidate:
    """A step as Triton schedules a config that says nothing: one instance, no dynamic batching;
    max batch size 4, small enough for any step."""
    return Candidate(instances=1, max_batch_size=4, dynamic_batching=False, warmup=False)


def steps_for(device: str) -> dict[str, Candidate]:
    """Each step as the written repository holds it: Triton's default scheduling; on "gpu" the
    feature extractor and the encoder (the pytorch backend's adapter, fp32, its ladder knobs at
    Triton's defaults) on KIND_GPU, scoring on the CPU."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    step = triton_default_step()
    if device == "cpu":
        return {s: step for s in ensemble.STEPS}
    ladder = {name: BY_NAME[name].triton_default for name in ("attention", "compile", "length_buckets", "cuda_graphs")}
    encoder = replace(step, backend="pytorch", family="pytorch", kind="KIND_GPU", precision="fp32", **ladder)
    return {ensemble.FEATURES: replace(step, kind="KIND_GPU"), ensemble.ENCODER: encoder, ensemble.SCORING: step}


def searched_parameters(variant: str, device: str) -> dict[str, dict[str, tuple[str, ...]]]:
    """The config parameters a search varies, per step (the written repository's values among them)."""
    scoring = {"method": decoding.METHODS,
               "beam": tuple(str(b) for b in SEARCHED_BEAMS if b <= get_config(variant).beam)}
    if device == "cpu":
        return {ensemble.SCORING: scoring}
    encoder = {"precision": backends.get("pytorch").precisions,
               "attention": BY_NAME["attention"].choices,
               "length_buckets": SEARCHED_BUCKETS,
               # Without buckets the adapter ignores graphs (pytorch_model.py: Settings.from_parameters).
               "cuda_graphs": ("false", "true")}
    return {ensemble.ENCODER: encoder, ensemble.SCORING: scoring}


def pipeline_source(variant: str, cache_dir: Path, seed: int = 0, device: str = "cpu") -> PipelineSource:
    """The variant's pipeline on ``device`` ("cpu" or "gpu"): exported and written under
    ``cache_dir`` on first use, then reused."""
    cache_dir = Path(cache_dir)
    artifacts = export(variant, cache_dir)
    root = _repository(variant, artifacts, cache_dir, device)
    rng = np.random.default_rng(seed)
    measured = pipeline.sample_waveforms(rng, MEASURED_UTTERANCES, *MEASURED_SECONDS)
    guarded = pipeline.sample_waveforms(rng, GUARD_UTTERANCES, *GUARD_SECONDS)
    input_data = root.parent / f"input-data-seed{seed}.json"
    if not input_data.is_file():
        # Written aside and renamed: a worker reading it never sees half a file.
        partial = input_data.with_name(f".{input_data.name}.{os.getpid()}")
        os.replace(load.write_input_data(partial, measured), input_data)
    return PipelineSource(
        name=variant if device == "cpu" else f"{variant}-{device}",  # its ZOO_PIPELINES name
        repository=read(root, top=variant),
        requests=load.requests(guarded),
        input_data=input_data,
        reference=reference_outputs(variant, guarded),
        reference_for=_per_scoring(variant, guarded),
        parameters=searched_parameters(variant, device),
        mean_seconds=load.mean_seconds(measured),
    )


def _per_scoring(variant: str, waveforms: list[np.ndarray]) -> Callable[[Mapping[str, Mapping[str, str]]], list]:
    """The reference of a trial's scoring choice: the fp32 in-process pipeline with the same method
    and beam (made once per choice). The guard so checks what a deployment changes in the
    computation (precision, kernels, batching), while the scoring method's own effect on the text
    is the user's choice, made by the space the experiment offers."""
    made: dict[tuple[str, int | None], list] = {}

    def reference_for(parameters: Mapping[str, Mapping[str, str]]) -> list:
        scoring = parameters.get(ensemble.SCORING, {})
        key = (scoring.get("method", "rescore"), int(scoring["beam"]) if scoring.get("beam") else None)
        if key not in made:
            made[key] = reference_outputs(variant, waveforms, *key)
        return made[key]

    return reference_for


def reference_outputs(variant: str, waveforms: list[np.ndarray], method: str = "rescore",
                      beam: int | None = None) -> list[dict[str, np.ndarray]]:
    """The fp32 in-process pipeline's text and token ids (rescoring unless told), as the ensemble
    returns them for one request (TRANSCRIPTS: one utf-8 string; TOKENS: int64 ids)."""
    reference = pipeline.ReferencePipeline(variant, method, beam)
    outputs = []
    for waveform in waveforms:
        transcript = reference(waveform)
        outputs.append({ensemble.TRANSCRIPTS: np.array([transcript.text.encode("utf-8")], dtype=object),
                        ensemble.TOKENS: np.array(transcript.ids, np.int64)})
    return outputs


def _repository(variant: str, artifacts: ZooArtifacts, cache_dir: Path, device: str = "cpu") -> Path:
    """The written repository's root, writing it unless a previous search did."""
    spec = ensemble.EnsembleSpec(variant, method="rescore", steps=steps_for(device))
    kind = "pipeline" if device == "cpu" else f"{device}-pipeline"
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Generated files (units.txt) and the repository are made aside, then renamed into place:
    # a killed write or a second worker never leaves a half repository where a whole one is expected.
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=f".{variant}-{kind}-") as scratch:
        models = ensemble.packages(spec, artifacts, Path(scratch) / "work")
        home = cache_dir / f"{variant}-{settings_hash(variant)}-{kind}-{_digest(models, artifacts)}"
        root = home / "repository"
        if not root.is_dir():
            staged = ensemble.write_repository(Path(scratch) / "repository", models)
            home.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staged, root)
            except OSError:
                if not root.is_dir():  # not another worker's rename that came first
                    raise
    return root


def _digest(models: list[ModelPackage], artifacts: ZooArtifacts) -> str:
    """What the written repository holds: configs and shipped files. The exported models stand in
    by name (the settings hash already names their content); the templates and leaf modules
    change with tuner, and a stale copy of one would serve old code."""
    digest = hashlib.sha256()
    for package in models:
        digest.update(f"{package.name}\n{package.config_pbtxt}\n".encode())
        for relative, source in sorted(package.files.items()):
            exported = source.parent == artifacts.directory
            digest.update(f"{relative}\n".encode())
            digest.update(source.name.encode() if exported else source.read_bytes())
    return digest.hexdigest()[:12]

"""A pipeline repository read from disk, one composing model's scheduling settings, and the
repository those settings deploy.

```
root/
  asr/config.pbtxt          platform: "ensemble" (the top model) ─► steps pre, clf
  asr/1/                    (an ensemble's version directory holds nothing)
  pre/config.pbtxt, pre/1/model.py
  clf/config.pbtxt, clf/1/model.py
```
The top is an ensemble (its steps, nested ensembles flattened) or a python-backend BLS model
(every other model of the repository is one it may call). Each composing model is a `Step`; its
knobs are a `StepSettings`; `packages` turns settings into what a server loads.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from tuner.errors import TunerError
from tuner.experiment import STEP_KNOBS
from tuner.candidate import describe_steps
from tuner.knobs import BY_NAME, Context
from tuner.server import ModelPackage
from tuner.server.repository import stage

CONFIG = "config.pbtxt"
_MARKER_TEXT = "Triton needs a version directory for this model; it holds nothing.\n"


@dataclass(frozen=True)
class Step:
    """One model of the repository, as given."""

    name: str
    config: ModelConfig
    directory: Path  # its directory in the source repository


@dataclass(frozen=True)
class PipelineRepository:
    root: Path
    top: str  # the top model's name
    top_config: ModelConfig
    kind: str  # "ensemble" or "bls"
    steps: dict[str, Step]  # the composing models searched, in step order (BLS: by name)
    # Nested ensembles, deployed as given but for their max batch size; inner ones first.
    fixed: dict[str, Step] = field(default_factory=dict)


def split_model_arg(arg: str) -> tuple[Path, str | None]:
    """`--model DIR:MODEL` names the top model of a repository; `--model DIR` leaves it to `read`.
    An existing path is taken whole, so a directory whose name holds ':' still works."""
    head, sep, tail = arg.rpartition(":")
    if Path(arg).exists() or not sep or not head or "/" in tail:
        return Path(arg), None
    return Path(head), tail or None


def is_pipeline(root: Path) -> bool:
    """Whether `root` is a model repository holding an ensemble (a cheap look; never raises)."""
    try:
        for directory in _model_dirs(Path(root)).values():
            try:
                if _is_ensemble(_read_config(directory)):
                    return True
            except TunerError:
                continue
    except OSError:
        return False
    return False


def read(root: Path, top: str | None = None) -> PipelineRepository:
    """The repository at `root` with `top` as its top model; `top` None: its one ensemble that no
    other ensemble uses as a step."""
    root = Path(root)
    if not root.is_dir():
        raise TunerError(f"model repository {root} is not a directory")
    models = _model_dirs(root)
    if top is None:
        top = _find_top(root, models)
    if top not in models:
        raise TunerError(f"{root} has no model {top!r} (a directory with {CONFIG}); its models: "
                         f"{', '.join(models) or 'none'}")
    top_config = _read_config(models[top])
    steps: dict[str, Step] = {}
    fixed: dict[str, Step] = {}
    if _is_ensemble(top_config):
        _flatten(root, top, top_config, steps, fixed, visiting={top})
        return PipelineRepository(root, top, top_config, "ensemble", steps, fixed)
    if top_config.backend != "python":
        raise TunerError(f"model {top!r} in {root} is neither an ensemble nor a python-backend (BLS) model: "
                         "name the repository's top model with --model DIR:MODEL")
    # A BLS model may call any model of the repository: all of them are its composing models.
    # Ensembles among them are deployed as given (their own steps are already composing models).
    for name, directory in models.items():
        config = _read_config(directory)
        if name != top and _is_ensemble(config) and name not in fixed:
            _flatten(root, name, config, {}, fixed, visiting={name})
            fixed[name] = Step(name, config, directory)
    for name, directory in models.items():
        if name != top and name not in fixed:
            steps[name] = Step(name, _read_config(directory), directory)
    return PipelineRepository(root, top, top_config, "bls", steps, fixed)


@dataclass(frozen=True)
class StepSettings:
    """One composing model's scheduling: the knobs of tuner.knobs a step searches."""

    instances: int
    max_batch_size: int  # 0: the model does not batch (then no dynamic batching)
    dynamic_batching: bool
    max_queue_delay_us: int
    preferred_batch: bool  # preferred_batch_size = [max_batch_size]
    parameters: tuple[tuple[str, str], ...] = ()  # config `parameters` string values set by the search, by key

    def as_dict(self) -> dict:
        return {**{name: getattr(self, name) for name in STEP_KNOBS}, "parameters": dict(self.parameters)}

    @classmethod
    def from_dict(cls, values: dict) -> "StepSettings":
        return cls(**{name: values[name] for name in STEP_KNOBS},
                   parameters=tuple(sorted(values.get("parameters", {}).items())))


def as_given(config: ModelConfig, keys: Iterable[str] = ()) -> StepSettings:
    """The settings a model's config holds; `parameters` are its string values of `keys` (the
    searched ones) that it sets."""
    batching = config.max_batch_size > 0 and config.WhichOneof("scheduling_choice") == "dynamic_batching"
    batcher = config.dynamic_batching
    return StepSettings(
        # Triton's own default is one instance (per GPU): a config without groups gets one.
        instances=config.instance_group[0].count if config.instance_group else 1,
        max_batch_size=config.max_batch_size,
        dynamic_batching=batching,
        max_queue_delay_us=batcher.max_queue_delay_microseconds if batching else 0,
        preferred_batch=batching and len(batcher.preferred_batch_size) > 0,
        parameters=tuple(sorted((k, config.parameters[k].string_value) for k in keys if k in config.parameters)),
    )


def apply(config: ModelConfig, settings: StepSettings) -> ModelConfig:
    """A copy of `config` with these settings; everything they do not name is left as it was."""
    edited = ModelConfig()
    edited.CopyFrom(config)
    if edited.instance_group:
        for group in edited.instance_group:
            group.count = settings.instances
    else:
        edited.instance_group.add(count=settings.instances)  # no kind: Triton decides
    # A model that does not batch, or a stateful one (sequence batcher), keeps its scheduling.
    if config.max_batch_size > 0:
        edited.max_batch_size = settings.max_batch_size
        if not config.HasField("sequence_batching"):
            _set_dynamic_batching(config, edited, settings)
    for key, value in settings.parameters:
        edited.parameters[key].string_value = value
    return edited


def _set_dynamic_batching(given: ModelConfig, edited: ModelConfig, settings: StepSettings) -> None:
    if not settings.dynamic_batching:
        edited.ClearField("dynamic_batching")
        return
    batcher = edited.dynamic_batching  # the user's other fields (priorities, queue policy) stay
    batcher.SetInParent()
    batcher.max_queue_delay_microseconds = settings.max_queue_delay_us
    # The user's own preferred sizes were chosen for their max batch size: kept while it is kept.
    keep_users_sizes = (settings.preferred_batch and len(given.dynamic_batching.preferred_batch_size) > 0
                        and settings.max_batch_size == given.max_batch_size)
    if not keep_users_sizes:
        del batcher.preferred_batch_size[:]
        if settings.preferred_batch:
            batcher.preferred_batch_size.append(settings.max_batch_size)


def packages(repo: PipelineRepository, settings: dict[str, StepSettings],
             workdir: Path | None = None) -> list[ModelPackage]:
    """What a server loads, in load order: the composing models (steps order) with their settings
    (a step without settings as given), nested ensembles, the top model last. Generated files (a
    version directory's marker) go under `workdir` (default: a folder in the temp directory)."""
    unknown = sorted(set(settings) - set(repo.steps))
    if unknown:
        raise ValueError(f"settings for {', '.join(unknown)}, which are not steps of {repo.top} "
                         f"(steps: {', '.join(repo.steps)})")
    configs = {name: apply(step.config, settings[name]) if name in settings else step.config
               for name, step in repo.steps.items()}
    for name, nested in repo.fixed.items():  # inner first: each sees its steps' final sizes
        configs[name] = _fit_ensemble(nested.config, configs)
    top = Step(repo.top, repo.top_config, repo.root / repo.top)
    configs[top.name] = _fit_ensemble(top.config, configs) if repo.kind == "ensemble" else top.config
    marker = Path(workdir or Path(tempfile.gettempdir()) / "tuner-pipeline") / "version-marker"
    return [ModelPackage(model.name, text_format.MessageToString(configs[model.name]), _files(model.directory, marker))
            for model in (*repo.steps.values(), *repo.fixed.values(), top)]


def write(repo: PipelineRepository, settings: dict[str, StepSettings], dest: Path) -> Path:
    """The whole repository with these settings under `dest` (config.pbtxt and files per model)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:  # generated files are copied in, then dropped
        for package in packages(repo, settings, Path(workdir)):
            stage(dest, package)
    return dest


def describe(settings: dict[str, StepSettings]) -> str:
    """One line, a part per step: "pre x2 mbs=8 db=on delay=500us nopref | clf x1 method=greedy"."""
    return describe_steps({name: step.as_dict() for name, step in settings.items()})


def _model_dirs(root: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and (p / CONFIG).is_file()}


def _read_config(directory: Path) -> ModelConfig:
    path = directory / CONFIG
    try:
        config = text_format.Parse(path.read_text(), ModelConfig())
    except FileNotFoundError:
        raise TunerError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, text_format.ParseError) as exc:
        raise TunerError(f"{path} is not a model config Triton reads: {str(exc).splitlines()[0]}") from None
    if not config.name:
        config.name = directory.name  # Triton names a model after its directory
    return config


def _is_ensemble(config: ModelConfig) -> bool:
    return config.platform == "ensemble"


def _find_top(root: Path, models: dict[str, Path]) -> str:
    configs = {name: _read_config(directory) for name, directory in models.items()}
    ensembles = [name for name, config in configs.items() if _is_ensemble(config)]
    used = {step.model_name for name in ensembles for step in configs[name].ensemble_scheduling.step}
    tops = [name for name in ensembles if name not in used]
    if not ensembles:
        raise TunerError(f"{root} holds no ensemble: for a python (BLS) model calling the others, "
                         f"name it with --model {root}:MODEL")
    if len(tops) != 1:
        raise TunerError(f"{root} holds {len(tops)} top ensembles ({', '.join(tops) or 'each is a step of another'}): "
                         f"name the one to tune with --model {root}:MODEL")
    return tops[0]


def _flatten(root: Path, ensemble: str, config: ModelConfig, steps: dict[str, Step], fixed: dict[str, Step],
             visiting: set[str]) -> None:
    """Add the ensemble's composing models to `steps` in step order; a nested ensemble adds its
    own first and itself to `fixed`."""
    for name in (step.model_name for step in config.ensemble_scheduling.step):
        if name in steps or name in fixed:
            continue
        if name in visiting:
            raise TunerError(f"ensemble {ensemble} in {root} steps through {name}, which contains it: "
                             "an ensemble cannot contain itself")
        directory = root / name
        if not (directory / CONFIG).is_file():
            raise TunerError(f"ensemble {ensemble} steps through model {name!r}, but {directory / CONFIG} "
                             "does not exist: add that model to the repository")
        step_config = _read_config(directory)
        if _is_ensemble(step_config):
            _flatten(root, name, step_config, steps, fixed, visiting | {name})
            fixed[name] = Step(name, step_config, directory)
        else:
            steps[name] = Step(name, step_config, directory)


def _fit_ensemble(config: ModelConfig, configs: dict[str, ModelConfig]) -> ModelConfig:
    """An ensemble may not batch more than any of its steps (Triton refuses to load it): lower its
    max batch size to theirs."""
    fitted = ModelConfig()
    fitted.CopyFrom(config)
    steps = [configs[step.model_name].max_batch_size for step in config.ensemble_scheduling.step]
    fitted.max_batch_size = min([config.max_batch_size, *steps])
    return fitted


def _files(directory: Path, marker: Path) -> dict[str, Path]:
    """Every file of a model but its config; a model without files (an ensemble) gets a marker in
    its version directories, since Triton needs one to load it and an empty one is not copied."""
    files = {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*"))
             if p.is_file() and p != directory / CONFIG}
    if files:
        return files
    versions = [p.name for p in sorted(directory.iterdir()) if p.is_dir() and p.name.isdigit()] or ["1"]
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(_MARKER_TEXT)
    return {f"{version}/README": marker for version in versions}

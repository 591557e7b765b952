"""The experiment spec: what to tune, over which space, against which SLA, with which budget.

It comes from a YAML file (see experiments/) and command-line flags override it. pydantic
validates it; a bad field gives one line that names the field and what is allowed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, create_model, field_serializer, field_validator,
                      model_validator)

from tuner import backends
from tuner.accuracy import AccuracySpec, CtcCheck
from tuner.candidate import PRECISIONS, REFERENCE_RUNTIME, split_runtime
from tuner.errors import TunerError
from tuner.knobs import BY_NAME, KNOBS, Knob
from tuner.storage import mask

_KNOWN_STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")
# A study name is also the name of its folder under results_dir: no separators, no dot-files.
_STUDY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _knob_check(knob: Knob, optional: bool = False):
    def check(cls, values: list | None) -> list | None:
        if values is None and optional:  # a step override that leaves the knob to the space
            return None
        if not values:
            raise ValueError("must list at least one value")
        if knob.minimum is not None and any(v < knob.minimum for v in values):
            raise ValueError(f"values must be >= {knob.minimum}")
        if knob.choices is not None and any(v not in knob.choices for v in values):
            raise ValueError(f"values must be among {', '.join(map(str, knob.choices))}")
        return values

    return field_validator(knob.name)(check)


def _known(allowed: Callable[[], Sequence[str]]):
    def check(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError("must list at least one value")
        unknown = [v for v in values if v not in allowed()]
        if unknown:
            raise ValueError(f"unknown {', '.join(unknown)}; known: {', '.join(allowed())}")
        return values

    return check


# The values each knob may take (one value pins the knob): a field per knob of tuner.knobs, plus
# the runtimes, whose usable "backend:precision" pairs are found on the machine and server.
Space = create_model(
    "Space",
    __base__=_Strict,
    __doc__="The values each knob may take. One value pins the knob.",
    __validators__={
        **{f"_check_{k.name}": _knob_check(k) for k in KNOBS},
        "_known_backends": field_validator("backends")(_known(lambda: backends.names())),
        "_known_precisions": field_validator("precisions")(_known(lambda: PRECISIONS)),
    },
    backends=(list[str], Field(["onnxruntime"], description="runtimes to search (tuner doctor lists them)")),
    precisions=(list[str], Field(["fp32"], description="fp32, fp16, bf16, int8; pairs a backend lacks are dropped")),
    **{k.name: (list[k.type], Field(list(k.values), description=k.description)) for k in KNOBS},
)


# The scheduling knobs a composing model of a pipeline repository (an ensemble's step, a model a
# BLS model calls) searches on its own (tuner.pipeline).
STEP_KNOBS = ("instances", "max_batch_size", "dynamic_batching", "max_queue_delay_us", "preferred_batch")

StepOverride = create_model(
    "StepOverride",
    __base__=_Strict,
    __doc__="One composing model's own values for its scheduling knobs; a knob left out takes `space`'s.",
    __validators__={f"_check_{name}": _knob_check(BY_NAME[name], optional=True) for name in STEP_KNOBS},
    **{name: (list[BY_NAME[name].type] | None, Field(None, description=BY_NAME[name].description))
       for name in STEP_KNOBS},
    parameters=(dict[str, list[str]], Field({}, description="config.pbtxt `parameters` of the model searched as "
                                                            "categorical knobs: key -> its string values")),
)


class MeasureSpec(_Strict):
    """perf_analyzer settings: each trial measures windows until stable (or max_windows)."""

    interval_ms: int = Field(1000, ge=100, description="length of one measurement window")
    stability_percent: float = Field(20.0, gt=0, description="three windows agree within this much")
    max_windows: int = Field(6, ge=3, description="give up on stability after this many windows")
    timeout_s: float = Field(180.0, gt=0, description="kill perf_analyzer after this long")
    samples: int = Field(8, ge=1, description="distinct sample inputs fed to perf_analyzer")
    data_seed: int | None = Field(None, description="seed of the sample inputs; default: the study's seed")
    load: Literal["concurrency", "request_rate"] = Field(
        "concurrency", description="concurrency: a fixed number of requests in flight (closed loop, space.concurrency); "
                                   "request_rate: Poisson arrivals at a rate (open loop, space.request_rate); an SLA "
                                   "pick is then the highest sustained rate whose p99 meets the SLA")
    concurrency_search: Literal["ramp", "sample"] = Field(
        "ramp", description="ramp: measure each configuration at rising concurrencies (space.concurrency) on one "
                            "load until throughput stops rising or p99 passes the SLA; sample: the sampler picks one")
    ramp_min_gain: float = Field(0.03, ge=0, description="ramp: stop when a step adds less than this share of throughput")
    sla_headroom: float = Field(0.0, ge=0, lt=1, description="ramp: prefer the load whose p99 stays this share under "
                                                              "the SLA (a pick on the edge fails when measured again)")
    confirm_best: bool = Field(True, description="measure a new best once more and keep the mean (noise guard)")

    @property
    def ramps(self) -> bool:
        """Each trial finds its concurrency (no concurrency among the sampled params)."""
        return self.concurrency_search == "ramp"


class VerifySpec(_Strict):
    """The verification stage at the end of a search: the finalists measured again in interleaved,
    shuffled rounds (each one reloaded every round) until the winner is known to +-target."""

    enabled: bool = True
    leaders: int = Field(3, ge=1, description="finalists: the best this many within the SLA (plus the best just "
                                              "over it and Triton's default)")
    min_rounds: int = Field(3, ge=2)
    max_rounds: int = Field(7, ge=2)
    target_half_width: float = Field(0.05, gt=0, description="stop once the winner's interval is within +-this share")
    share: float = Field(0.3, gt=0, lt=1, description="share of timeout_s the stage may take (the search gets the rest)")
    max_s: float = Field(900.0, gt=0, description="the stage's time when the search has no timeout_s")
    warmup_s: float = Field(0.0, ge=0, description="after each reload, load the finalist this long unmeasured first "
                                                   "(GPU runtimes plan kernels and capture graphs on first sight of "
                                                   "each shape; 0: measure at once)")

    def budget_s(self, timeout_s: float | None) -> float:
        return timeout_s * self.share if timeout_s else self.max_s

    def search_timeout_s(self, timeout_s: float | None) -> float | None:
        """What the sampling part of a search may take: the rest of the budget."""
        return timeout_s * (1 - self.share) if timeout_s and self.enabled else timeout_s


class AccuracySettings(_Strict):
    """The guard every non-reference candidate passes before it is measured."""

    max_rel_error: float | None = Field(0.1, gt=0, description="max |out - ref| / max |ref| per float output")
    max_cer: float | None = Field(0.0, ge=0, description="pipelines: character error rate of text outputs "
                                  "against the reference (0: identical text)")
    output_limits: dict[str, float | None] = Field({}, description="per-output limits; null = report only")
    ctc_log_probs: str | None = Field(None, description="output of CTC log-probs whose greedy tokens must agree")
    ctc_lengths: str = "encoder_out_lens"
    min_ctc_agreement: float = Field(0.95, gt=0, le=1)
    samples: int = Field(8, ge=1, description="sample inputs compared (the first of the measurement samples)")
    calibration_samples: int = Field(32, ge=1, description="inputs for int8 static calibration")

    def spec(self) -> AccuracySpec:
        ctc = CtcCheck(self.ctc_log_probs, self.ctc_lengths, self.min_ctc_agreement) if self.ctc_log_probs else None
        return AccuracySpec(self.max_rel_error, self.output_limits, ctc)


class ServerSpec(_Strict):
    """Where candidates are deployed: a local process, a docker container, or a running server."""

    launch: Literal["local", "docker", "remote"] = "local"
    startup_timeout_s: float = Field(60.0, gt=0)
    load_timeout_s: float = Field(180.0, gt=0)
    # docker
    image: str = Field("nvcr.io/nvidia/tritonserver:24.10-py3", description="tritonserver image (docker mode)")
    gpus: str | None = Field(None, description='"all", a count ("2") or device ids ("0,1"); docker mode')
    shm_size: str = Field("1g", description="container shared memory (python backend tensors go through it)")
    # remote
    url: str | None = Field(None, description="remote mode: host:port of the server's HTTP endpoint")
    grpc_url: str | None = Field(None, description="remote mode: host:port of its gRPC endpoint (perf_analyzer)")
    metrics_url: str | None = Field(None, description="remote mode: its metrics URL (default http://<host>:8002/metrics)")

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: str | None) -> str | None:
        if value is None or value == "all" or all(part.strip().isdigit() for part in value.split(",")):
            return value
        raise ValueError('must be "all", a count ("2") or device ids ("0,1")')

    @model_validator(mode="after")
    def _remote_needs_urls(self) -> "ServerSpec":
        if self.launch == "remote" and not (self.url and self.grpc_url):
            raise ValueError("launch: remote needs url (HTTP host:port) and grpc_url (gRPC host:port)")
        return self


class Experiment(_Strict):
    model: str = Field(description="zoo name (wenet), an .onnx file, or a Triton model directory")
    study: str | None = Field(None, description="study name; defaults to the model's name")
    storage: str | None = Field(None, description="Optuna storage URL; default sqlite:///<results_dir>/tuner.db")
    results_dir: Path = Path("results")
    trials: int = Field(20, ge=1, description="total trials in the study (a resumed study counts its old ones)")
    timeout_s: float | None = Field(None, gt=0, description="stop starting new trials after this many seconds")
    max_p99_ms: float | None = Field(None, gt=0, description="SLA: p99 latency limit in milliseconds")
    seed: int | None = 0
    max_gpu_mem_gb: float | None = Field(None, gt=0, description="constraint: GPU memory used during the measurement")
    price_per_hour: float | None = Field(None, gt=0, description="price of the machine a worker runs on, per hour: "
                                         "gives each trial a cost per million inferences")
    objective: Literal["throughput", "cost"] = Field(
        "throughput", description="what the pick maximises within the SLA: throughput, or the lowest cost per "
                                  "million inferences (needs price_per_hour; with min_throughput as a floor)")
    min_throughput: float | None = Field(None, gt=0, description="floor: a pick must serve at least this many "
                                                                 "inferences/s (verified median)")
    baseline_concurrency: list[int] = Field([1, 4], description="concurrencies at which Triton's default config is measured first")
    baseline_runtime: str = Field(REFERENCE_RUNTIME, description="backend:precision of the default config (e.g. pytorch:fp32 on GPU)")
    space: Space = Space()
    measure: MeasureSpec = MeasureSpec()
    verify: VerifySpec = VerifySpec()
    accuracy: AccuracySettings = AccuracySettings()
    server: ServerSpec = ServerSpec()
    steps: dict[str, StepOverride] = Field(
        {}, description="pipeline repositories only (the model is an ensemble or a BLS model over other models): "
                        "per composing model, by name, its own knob values instead of `space`'s")

    @field_validator("storage")
    @classmethod
    def _known_storage(cls, url: str | None) -> str | None:
        if url is not None and not url.split(":", 1)[0].split("+", 1)[0] in _KNOWN_STORAGE_SCHEMES:
            raise ValueError(f"must be an SQLAlchemy URL starting with one of {', '.join(s + '://' for s in _KNOWN_STORAGE_SCHEMES)}")
        return url

    @field_validator("study")
    @classmethod
    def _study_name(cls, name: str | None) -> str | None:
        if name is not None and not _STUDY_NAME.fullmatch(name):
            raise ValueError(f"{name[:40]!r} is not allowed: use 1 to 100 letters, digits, '.', '_' or '-', not "
                             "starting with '.' (it names the study's folder under results_dir)")
        return name

    @model_validator(mode="after")
    def _study_folder_inside_results(self) -> "Experiment":
        if self.study is not None:
            folder = Path(os.path.normpath(self.results_dir / self.study))
            if folder.parent != Path(os.path.normpath(self.results_dir)):
                raise ValueError(f"study {self.study!r} would put its files outside results_dir {self.results_dir}")
        return self

    @model_validator(mode="after")
    def _cost_needs_price(self) -> "Experiment":
        if self.objective == "cost" and self.price_per_hour is None:
            raise ValueError("objective cost needs price_per_hour (--price-per-hour): the machine's price per hour")
        return self

    @field_serializer("storage", when_used="json")
    def _masked_storage(self, url: str | None) -> str | None:
        # The experiment is stored in the study (and shown by the dashboard): never with a password.
        # Nothing opens a storage from the stored copy.
        return None if url is None else mask(url)

    @field_validator("baseline_runtime")
    @classmethod
    def _runtime_key(cls, key: str) -> str:
        backend, precision = split_runtime(key)
        if backend not in backends.names() or precision not in PRECISIONS:
            raise ValueError(f"must be backend:precision, e.g. onnxruntime:fp32 (backends: {', '.join(backends.names())})")
        return key

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.results_dir / 'tuner.db'}"


def _one_line(exc: ValidationError, source: str) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        problems.append(f"{where}: {err['msg']}")
    return f"invalid experiment ({source}): " + "; ".join(problems)


def build(fields: dict, source: str = "command line") -> Experiment:
    try:
        return Experiment.model_validate(fields)
    except ValidationError as exc:
        raise TunerError(_one_line(exc, source)) from None


def load(path: Path | None, overrides: dict, launch: str | None = None) -> Experiment:
    """Read an experiment file (if any) and apply the non-None command-line overrides
    (`launch` overrides server.launch)."""
    fields: dict = {}
    source = "command line"
    if path is not None:
        if not path.is_file():
            raise TunerError(f"experiment file {path} does not exist; see experiments/ for examples")
        try:
            fields = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise TunerError(f"experiment file {path} is not valid YAML: {exc}".splitlines()[0]) from None
        if not isinstance(fields, dict):
            raise TunerError(f"experiment file {path} must hold a mapping of fields, not {type(fields).__name__}")
        source = str(path)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if launch is not None:
        fields["server"] = {**(fields.get("server") or {}), "launch": launch}
    if "model" not in fields:
        raise TunerError("no model given: pass --model (wenet, a .onnx file or a Triton model directory)")
    return build(fields, source)

"""Candidate -> config.pbtxt through jinja2 templates, parsed back through Triton's ModelConfig
protobuf so an invalid config is caught before the server sees it."""

from __future__ import annotations

from dataclasses import dataclass

import jinja2
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from tuner import backends
from tuner.candidate import Candidate
from tuner.errors import TrialError
from tuner.knobs import KNOBS
from tuner.resources import TEMPLATES_DIR
from tuner.signature import Signature, Tensor

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES_DIR), undefined=jinja2.StrictUndefined, keep_trailing_newline=True
)


@dataclass(frozen=True)
class Warmup:
    batch_size: int
    inputs: tuple[Tensor, ...]  # dims are the concrete per-sample shape of the warmup file


def warmups_for(candidate: Candidate, signature: Signature, sample: dict) -> list[Warmup]:
    """Warm up at the batch sizes that matter: a single request and a full batch."""
    inputs = tuple(
        Tensor(t.name, t.triton_type, t.numpy_type, tuple(sample[t.name].shape) or (1,)) for t in signature.inputs
    )
    sizes = sorted({1, max(candidate.max_batch_size, 1)})
    return [Warmup(b, inputs) for b in sizes]


def render(form: str, name: str, signature: Signature, candidate: Candidate, sample: dict,
           ragged_outputs: dict[str, str] | None = None) -> str:
    """The config.pbtxt text of a candidate; `form` is "adapter" (python backend) or "native"."""
    backend = backends.get(candidate.backend)
    # Every adapter is a python-backend model; only native configs differ per runtime family.
    template = _env.get_template(f"{backend.family}.native.pbtxt.j2" if form == "native" else "adapter.pbtxt.j2")
    variables = backends.template_variables(candidate, form, ragged_outputs)
    variables["adapter_parameters"] |= knob_parameters(candidate)
    text = template.render(
        name=name,
        signature=signature,
        c=candidate,
        warmups=warmups_for(candidate, signature, sample),
        **variables,
    )
    config = parse(text)  # fail here, with the template's fault, rather than inside the server
    fragments = knob_fragments(candidate) if form == "native" else []
    if fragments:
        for fragment in fragments:
            json_format.ParseDict(fragment, config)  # merges into what the template wrote
        text = text_format.MessageToString(config)
    return "\n".join(line for line in text.splitlines() if line.strip()) + "\n"


def _active_values(candidate: Candidate) -> list[tuple]:
    """(knob, value) of the knobs that exist for this candidate and have a value."""
    values = candidate.as_dict()
    ctx = candidate.context()
    return [(k, values[k.name]) for k in KNOBS if k.exists(values, ctx) and values[k.name] is not None]


def knob_parameters(candidate: Candidate) -> dict[str, str]:
    """The python-backend parameters that runtime knobs reach the adapter through."""
    return {k.adapter_parameter: str(v) for k, v in _active_values(candidate) if k.adapter_parameter}


def knob_fragments(candidate: Candidate) -> list[dict]:
    """The ModelConfig fragments (JSON form) that knobs add to a native config."""
    return [fragment for k, v in _active_values(candidate) if k.native and (fragment := k.native(v))]


def parse(text: str) -> model_config_pb2.ModelConfig:
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise TrialError(f"rendered config.pbtxt is not a valid Triton ModelConfig: {exc}") from None


def to_json(text: str) -> str:
    """The JSON form Triton's load API takes as a config override."""
    return json_format.MessageToJson(parse(text), preserving_proto_field_name=True, indent=None)

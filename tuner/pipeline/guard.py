"""The pipeline's accuracy guard: the deployed pipeline must give the reference's outputs on the
source's fixed requests before it is measured.

Every output the reference holds is compared over all requests together:
- text (TYPE_STRING) by corpus character error rate (tuner.zoo.wenet.cer.corpus_cer: all edits
  over all reference characters), against `max_cer`;
- float outputs by max |out - ref| / max |ref| over every element of every request (the error
  against the output's range, as the single-model guard measures it, tuner.accuracy), against
  `max_rel_error`; another shape, or NaN / Inf where the reference is finite, is an infinite error;
- integer and bool outputs (token ids, lengths, labels) by the same error rate over their
  elements, reported only: a difference of ids says nothing about how far apart they are, and a
  scoring choice allowed to change the text (max_cer > 0) changes its token ids with it. The
  single-model guard reports integer outputs the same way.
A limit of None reports the figure without judging it.

The requests go out concurrently, so the steps' batchers batch them as they would under load:
a deployment whose batching changes the results is caught here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from tuner.errors import TrialError
from tuner.pipeline.source import PipelineSource
from tuner.zoo.wenet.cer import corpus_cer

_TIMEOUT_S = 300.0  # a full-size WeNet rescoring several long utterances at once on a small CPU
_EPS = 1e-12

Outputs = dict[str, np.ndarray]  # one request's outputs, without the batch dimension


def compare(reference: Sequence[Mapping[str, np.ndarray]], outputs: Sequence[Mapping[str, np.ndarray]],
            text_outputs: Collection[str], max_cer: float | None, max_rel_error: float | None) -> dict:
    """The verdict on ``outputs`` (one mapping per request) against ``reference``; the outputs
    named in ``text_outputs`` hold utf-8 bytes. Json-able::

        {"outputs": {"TRANSCRIPTS": {"metric": "cer", "value": 0.0, "limit": 0.0}, ...}, "ok": True}
    """
    if len(outputs) != len(reference):
        raise ValueError(f"{len(outputs)} results for {len(reference)} reference requests")
    figures = {}
    for name in (reference[0] if reference else {}):
        expected = [np.asarray(r[name]) for r in reference]
        got = [None if o.get(name) is None else np.asarray(o[name]) for o in outputs]
        if name in text_outputs:
            figures[name] = {"metric": "cer", "value": _text_error_rate(expected, got), "limit": max_cer}
        elif expected[0].dtype.kind in "biu":
            figures[name] = {"metric": "cer", "value": _element_error_rate(expected, got), "limit": None}
        else:
            figures[name] = {"metric": "rel_error", "value": _rel_error(expected, got), "limit": max_rel_error}
    ok = all(f["limit"] is None or f["value"] <= f["limit"] for f in figures.values())
    return {"outputs": figures, "ok": ok}


def _text_error_rate(expected: list[np.ndarray], got: list[np.ndarray | None]) -> float:
    """Corpus CER over every string element of every request; a missing element counts as empty
    text (all its characters deleted), an extra one as inserted."""
    if any(g is None for g in got):
        return math.inf
    pairs = [(_text(r), _text(h)) for ref, hyp in zip(expected, got)
             for r, h in itertools.zip_longest(ref.reshape(-1), hyp.reshape(-1), fillvalue=b"")]
    return corpus_cer(pairs)


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _element_error_rate(expected: list[np.ndarray], got: list[np.ndarray | None]) -> float:
    """Edits over reference elements, each request's elements one sequence (token ids: a token
    error rate)."""
    if any(g is None for g in got):
        return math.inf
    return corpus_cer((tuple(r.reshape(-1).tolist()), tuple(h.reshape(-1).tolist())) for r, h in zip(expected, got))


def _rel_error(expected: list[np.ndarray], got: list[np.ndarray | None]) -> float:
    if any(g is None or g.shape != r.shape for r, g in zip(expected, got)):
        return math.inf
    ref = np.concatenate([r.reshape(-1) for r in expected]).astype(np.float64)
    out = np.concatenate([g.reshape(-1) for g in got]).astype(np.float64)
    finite = np.isfinite(ref)
    if not np.isfinite(out[finite]).all():
        return math.inf
    error = float(np.max(np.abs(out[finite] - ref[finite]), initial=0.0))
    return error / (float(np.max(np.abs(ref[finite]), initial=0.0)) + _EPS)


def _wire_type(data_type: int) -> str:
    """The inference protocol's name of a config data type (TYPE_STRING travels as BYTES)."""
    name = model_config_pb2.DataType.Name(data_type).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


class PipelineGuard:
    """Checks a deployed pipeline against the source's reference (or the as-given deployment's
    outputs, taken once with :meth:`take_reference` when the source has none)."""

    def __init__(self, source: PipelineSource, max_cer: float | None, max_rel_error: float | None):
        self.source, self.max_cer, self.max_rel_error = source, max_cer, max_rel_error
        self.reference: list[Outputs] | None = source.reference
        config = source.repository.top_config
        self._batched = config.max_batch_size > 0
        self._inputs = {t.name: _wire_type(t.data_type) for t in config.input}
        self._outputs = [t.name for t in config.output]
        self._text_outputs = {t.name for t in config.output if t.data_type == model_config_pb2.TYPE_STRING}

    def take_reference(self, grpc_url: str) -> None:
        """The deployed pipeline's outputs become the reference (call it with the repository as
        given deployed); a source that brings its own reference keeps it."""
        if self.reference is None:
            self.reference = self._infer_all(grpc_url)

    def check(self, grpc_url: str, parameters: Mapping[str, Mapping[str, str]] | None = None) -> dict:
        """The verdict on the deployed pipeline (see :func:`compare`) against the reference of its
        searched `parameters` ({step: {key: value}}) where the source has one per choice; a failed
        request raises TrialError."""
        reference = self.reference
        if self.source.reference_for is not None and parameters is not None:
            reference = self.source.reference_for(parameters)
        if reference is None:
            raise RuntimeError("no reference: call take_reference with the as-given pipeline deployed first")
        return compare(reference, self._infer_all(grpc_url), self._text_outputs, self.max_cer,
                       self.max_rel_error)

    def _infer_all(self, grpc_url: str) -> list[Outputs]:
        requests = self.source.requests
        with ThreadPoolExecutor(max(1, len(requests))) as pool:
            return list(pool.map(lambda item: self._infer(grpc_url, *item), enumerate(requests)))

    def _infer(self, grpc_url: str, index: int, request: Mapping[str, np.ndarray]) -> Outputs:
        inputs = []
        for name, wire_type in self._inputs.items():
            value = np.asarray(request[name])
            if self._batched:
                value = value.reshape((1, *(value.shape or (1,))))
            tensor = grpcclient.InferInput(name, list(value.shape), wire_type)
            tensor.set_data_from_numpy(np.ascontiguousarray(value))
            inputs.append(tensor)
        client = grpcclient.InferenceServerClient(grpc_url)
        try:
            result = client.infer(self.source.repository.top, inputs, client_timeout=_TIMEOUT_S,
                                  outputs=[grpcclient.InferRequestedOutput(name) for name in self._outputs])
        except InferenceServerException as exc:
            raise TrialError(f"pipeline request {index} failed: {exc.message()}") from None
        finally:
            client.close()
        arrays = {name: result.as_numpy(name) for name in self._outputs}
        # The batch dimension of one goes: the reference holds one request's outputs.
        return {name: (a[0] if self._batched and a is not None else a) for name, a in arrays.items()}

"""Stage 4, the accuracy guard: a runtime other than the reference must give the reference's
outputs on the fixed samples before it is measured. Checked once per search for each runtime and
setting of its runtime knobs (an attention kernel, a compiled module or CUDA graphs compute
differently from the same runtime without them)."""

from __future__ import annotations

import numpy as np

from tuner import accuracy, client
from tuner.accuracy import AccuracySpec
from tuner.candidate import REFERENCE_RUNTIME, Candidate
from tuner.knobs import by_reach
from tuner.model_source import ModelSource
from tuner.workspace import Sample


class Rejected(Exception):
    """The runtime's outputs disagree with the reference: the candidate is never measured."""

    def __init__(self, verdict: dict):
        super().__init__(f"accuracy check failed: {verdict['reason']}")
        self.verdict = verdict


def numerics_key(candidate: Candidate) -> str:
    """What decides the numbers a deployment computes: its runtime and its runtime knobs."""
    knobs = [f"{name}={getattr(candidate, name)}" for name in by_reach("runtime")
             if getattr(candidate, name) not in (None, False)]
    return " ".join([candidate.runtime, *knobs])


class AccuracyGuard:
    def __init__(self, source: ModelSource, spec: AccuracySpec, samples: list[Sample]):
        self.source, self.spec, self.samples = source, spec, samples
        self._reference: list[dict[str, np.ndarray]] | None = None
        self.verdicts: dict[str, dict] = {}  # runtime key -> accuracy report

    def known_failure(self, candidate: Candidate) -> dict | None:
        """The verdict of a runtime setting that already failed (it is not deployed again)."""
        verdict = self.verdicts.get(numerics_key(candidate))
        return verdict if verdict is not None and not verdict["passed"] else None

    def check(self, candidate: Candidate, grpc_url: str) -> dict | None:
        """The verdict for the deployed candidate (None for the reference runtime itself); raises Rejected."""
        if candidate.runtime == REFERENCE_RUNTIME:
            return None
        key = numerics_key(candidate)
        if key not in self.verdicts:
            if self._reference is None:
                self._reference = accuracy.reference_outputs(self.source.onnx_path, self.samples)
            sig = self.source.signature
            outputs = [client.infer(grpc_url, self.source.name, sig, s, batched=sig.batched) for s in self.samples]
            self.verdicts[key] = accuracy.check(self._reference, outputs, self.spec).as_dict()
        verdict = self.verdicts[key]
        if not verdict["passed"]:
            raise Rejected(verdict)
        return verdict

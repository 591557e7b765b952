"""Stage 4, the accuracy guard: a runtime other than the reference must give the reference's
outputs on the fixed samples before it is measured. Checked once per runtime and search."""

from __future__ import annotations

import numpy as np

from tuner import accuracy, client
from tuner.accuracy import AccuracySpec
from tuner.candidate import REFERENCE_RUNTIME
from tuner.model_source import ModelSource
from tuner.workspace import Sample


class Rejected(Exception):
    """The runtime's outputs disagree with the reference: the candidate is never measured."""

    def __init__(self, verdict: dict):
        super().__init__(f"accuracy check failed: {verdict['reason']}")
        self.verdict = verdict


class AccuracyGuard:
    def __init__(self, source: ModelSource, spec: AccuracySpec, samples: list[Sample]):
        self.source, self.spec, self.samples = source, spec, samples
        self._reference: list[dict[str, np.ndarray]] | None = None
        self.verdicts: dict[str, dict] = {}  # runtime key -> accuracy report

    def known_failure(self, runtime: str) -> dict | None:
        """The verdict of a runtime that already failed (it is not deployed again)."""
        verdict = self.verdicts.get(runtime)
        return verdict if verdict is not None and not verdict["passed"] else None

    def check(self, runtime: str, grpc_url: str) -> dict | None:
        """The verdict for the deployed runtime (None for the reference itself); raises Rejected."""
        if runtime == REFERENCE_RUNTIME:
            return None
        if runtime not in self.verdicts:
            if self._reference is None:
                self._reference = accuracy.reference_outputs(self.source.onnx_path, self.samples)
            sig = self.source.signature
            outputs = [client.infer(grpc_url, self.source.name, sig, s, batched=sig.batched) for s in self.samples]
            self.verdicts[runtime] = accuracy.check(self._reference, outputs, self.spec).as_dict()
        verdict = self.verdicts[runtime]
        if not verdict["passed"]:
            raise Rejected(verdict)
        return verdict

"""The accuracy guard: a candidate's outputs against the reference, on the same fixed sample inputs.

The reference is ONNX Runtime fp32 (CPU) on the original model, one sample at a time. A candidate
(another precision, runtime or batching) is rejected when
- an output is missing or has another shape;
- an output holds NaN or Inf where the reference is finite;
- a float output's relative error exceeds its limit. The relative error of an output is
  max |candidate - reference| / (max |reference| + eps), both maxima over every element of every
  sample: the error measured against the output's range. Dividing element by element would blow
  up wherever the reference is near zero (a ReLU output, a log-probability close to 0) and
  reject every quantized model; dividing by the range asks "is any value off by more than X% of
  what this output spans", which is what fp16 (about 1e-3) and int8 (a few 1e-2) lose by design,
  and what a broken model (zeroed weights: 1.0; overflow: Inf) blows through;
- an integer output given a limit differs in more than that fraction of its elements (integer
  outputs without a limit, such as top-k indices that flip on near-ties, are only reported);
- for CTC models, the greedy tokens (argmax per valid frame) agree with the reference's on fewer
  than `min_agreement` of the valid frames, or the valid lengths differ.

Example::

    reference = reference_outputs(Path("model.onnx"), samples)
    report = check(reference, [client.infer(url, name, signature, s) for s in samples],
                   AccuracySpec(max_rel_error=0.05))
    if not report.passed:
        raise TrialError(f"accuracy check failed: {report.reason}")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

_EPS = 1e-12


@dataclass(frozen=True)
class CtcCheck:
    """Greedy CTC decoding must agree: `log_probs` [B, T, vocab], valid frames from `lengths` [B]."""

    log_probs: str = "ctc_log_probs"
    lengths: str = "encoder_out_lens"
    min_agreement: float = 0.95


@dataclass(frozen=True)
class AccuracySpec:
    """The limits of one experiment.

    `max_rel_error` applies to every float output, `output_limits` overrides it per output (a
    relative error for float outputs, a mismatch fraction for integer ones); None = report only.
    """

    max_rel_error: float | None = 0.1
    output_limits: Mapping[str, float | None] = field(default_factory=dict)
    ctc: CtcCheck | None = None

    def limit(self, output: str, is_float: bool) -> float | None:
        if output in self.output_limits:
            return self.output_limits[output]
        return self.max_rel_error if is_float else None


@dataclass(frozen=True)
class AccuracyReport:
    """The figures of one check and its verdict."""

    passed: bool
    reason: str  # why it failed, or a one-line summary of the figures
    samples: int
    max_rel_error: dict[str, float]  # float outputs: max |a - b| / (max |reference| + eps)
    max_abs_error: dict[str, float]  # float outputs
    mismatch_fraction: dict[str, float]  # integer and bool outputs: share of elements that differ
    has_nan: dict[str, bool]  # NaN where the reference is finite
    has_inf: dict[str, bool]  # Inf where the reference is finite
    ctc_agreement: float | None = None  # share of valid frames with the same greedy token

    def as_dict(self) -> dict:
        return asdict(self)


def reference_outputs(onnx_path: Path, samples: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """ONNX Runtime fp32 CPU outputs of the original model, one sample at a time as a batch of one."""
    import onnxruntime as ort

    from tuner.backends.base import batch_of_one
    from tuner.signature import read_signature

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ranks = {i.name: len(i.shape) for i in session.get_inputs()}
    batched = read_signature(onnx_path).batched
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, batch_of_one(s, ranks, batched)))) for s in samples]


def _aligned(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray | None:
    """The candidate in the reference's shape; Triton adds a dim to [B] outputs ([1] -> [1, 1])."""
    candidate = np.asarray(candidate)
    if candidate.shape == reference.shape:
        return candidate
    if candidate.size == reference.size and np.squeeze(candidate).shape == np.squeeze(reference).shape:
        return candidate.reshape(reference.shape)
    return None


def check(reference: Sequence[Mapping[str, np.ndarray]], candidate: Sequence[Mapping[str, np.ndarray]],
          spec: AccuracySpec = AccuracySpec()) -> AccuracyReport:
    """Compare a candidate's outputs with the reference's, sample by sample, and give the verdict."""
    failures: list[str] = []
    if len(candidate) != len(reference):
        failures.append(f"{len(candidate)} candidate results for {len(reference)} samples")
    pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in (reference[0] if reference else {})}
    for i, (ref, cand) in enumerate(zip(reference, candidate)):
        for name, expected in ref.items():
            if name not in cand:
                failures.append(f"sample {i}: output {name} missing")
                continue
            got = _aligned(np.asarray(expected), cand[name])
            if got is None:
                failures.append(f"sample {i}: {name} has shape {tuple(np.shape(cand[name]))}, "
                                f"reference {tuple(np.shape(expected))}")
                continue
            pairs[name].append((np.asarray(expected), got))

    rel, absolute, mismatch, nan, inf = {}, {}, {}, {}, {}
    for name, values in pairs.items():
        if not values:
            continue
        expected = np.concatenate([r.ravel() for r, _ in values])
        got = np.concatenate([c.ravel() for _, c in values])
        is_float = np.issubdtype(expected.dtype, np.floating)
        limit = spec.limit(name, is_float)
        if not is_float:
            mismatch[name] = float(np.mean(expected != got)) if expected.size else 0.0
            if limit is not None and mismatch[name] > limit:
                failures.append(f"{name}: {mismatch[name]:.2%} of values differ (limit {limit:.2%})")
            continue
        expected, got = expected.astype(np.float64), got.astype(np.float64)
        finite = np.isfinite(expected)
        nan[name] = bool(np.isnan(got[finite]).any())
        inf[name] = bool(np.isinf(got[finite]).any())
        if nan[name] or inf[name]:
            failures.append(f"{name}: {'NaN' if nan[name] else 'Inf'} where the reference is finite")
        both = finite & np.isfinite(got)
        absolute[name] = float(np.max(np.abs(got[both] - expected[both]), initial=0.0))
        rel[name] = absolute[name] / (float(np.max(np.abs(expected[finite]), initial=0.0)) + _EPS)
        if limit is not None and rel[name] > limit:
            failures.append(f"{name}: max relative error {rel[name]:.3g} > {limit:g}")

    agreement = None
    if spec.ctc is not None and not failures:
        agreement, problem = _ctc_agreement(pairs, spec.ctc)
        if problem:
            failures.append(problem)
        elif agreement < spec.ctc.min_agreement:
            failures.append(f"greedy CTC tokens agree on {agreement:.2%} of frames (minimum "
                            f"{spec.ctc.min_agreement:.2%})")

    if failures:
        reason = "; ".join(failures)
    else:
        figures = [f"{n} {e:.2g}" for n, e in rel.items()]
        if agreement is not None:
            figures.append(f"CTC agreement {agreement:.2%}")
        reason = "max relative error " + ", ".join(figures) if figures else "outputs match"
    return AccuracyReport(passed=not failures, reason=reason, samples=len(candidate), max_rel_error=rel,
                          max_abs_error=absolute, mismatch_fraction=mismatch, has_nan=nan, has_inf=inf,
                          ctc_agreement=agreement)


def _ctc_agreement(pairs: Mapping[str, list[tuple[np.ndarray, np.ndarray]]], ctc: CtcCheck) -> tuple[float, str]:
    if not pairs.get(ctc.log_probs) or not pairs.get(ctc.lengths):
        return 0.0, f"CTC check needs outputs {ctc.log_probs} and {ctc.lengths}"
    agree = total = 0
    for (ref_lp, cand_lp), (ref_len, cand_len) in zip(pairs[ctc.log_probs], pairs[ctc.lengths]):
        ref_len, cand_len = ref_len.ravel(), cand_len.ravel()
        if not np.array_equal(ref_len, cand_len):
            return 0.0, f"{ctc.lengths} differ: {cand_len.tolist()} vs reference {ref_len.tolist()}"
        ref_lp = ref_lp.reshape(len(ref_len), -1, ref_lp.shape[-1])
        cand_lp = cand_lp.reshape(ref_lp.shape)
        for row, frames in enumerate(ref_len):
            frames = int(frames)
            agree += int(np.sum(ref_lp[row, :frames].argmax(-1) == cand_lp[row, :frames].argmax(-1)))
            total += frames
    return (agree / total if total else 1.0), ""

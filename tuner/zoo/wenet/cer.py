"""Character error rate: the edit distance between a reference and a hypothesis over the
reference's length, for the ensemble's accuracy guard (served text against the reference
pipeline's).

Works on any sequences of comparable items: strings (one character a unit, as Chinese CER
counts) or token-id tuples (one token a unit). Unit costs, as WeNet's tools/compute-cer.py and
sclite count: a substitution, a deletion (a reference unit missing from the hypothesis) and an
insertion (a hypothesis unit not in the reference) cost 1 each.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Edits:
    """The cheapest alignment's edits; ``reference_length`` is the denominator of the rate."""

    substitutions: int
    deletions: int
    insertions: int
    reference_length: int

    @property
    def distance(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Edits per reference unit. An empty reference: 0 against an empty hypothesis, else
        infinite (every unit is an error against nothing; no finite rate says how bad)."""
        if self.reference_length == 0:
            return 0.0 if self.distance == 0 else math.inf
        return self.distance / self.reference_length


def edits(reference: Sequence[Hashable], hypothesis: Sequence[Hashable]) -> Edits:
    """Levenshtein alignment of ``hypothesis`` to ``reference``, one row of the table at a time.

    Each cell holds (cost, deletions, insertions, substitutions); taking the smallest tuple picks
    the cheapest alignment and, among equally cheap ones, the one with the fewest deletions then
    insertions, i.e. the most substitutions, as a diagonal-first aligner reports them. Only the
    split into kinds depends on that choice; the distance does not.
    """
    hyp = list(hypothesis)
    # Row for the empty reference prefix: j insertions.
    previous = [(j, 0, j, 0) for j in range(len(hyp) + 1)]
    for i, ref_unit in enumerate(reference, start=1):
        current = [(i, i, 0, 0)]  # i deletions against the empty hypothesis prefix
        for j, hyp_unit in enumerate(hyp, start=1):
            cost, d, n, s = previous[j - 1]
            diagonal = (cost, d, n, s) if ref_unit == hyp_unit else (cost + 1, d, n, s + 1)
            cost, d, n, s = previous[j]
            deletion = (cost + 1, d + 1, n, s)
            cost, d, n, s = current[j - 1]
            insertion = (cost + 1, d, n + 1, s)
            current.append(min(diagonal, deletion, insertion))
        previous = current
    _, deletions, insertions, substitutions = previous[-1]
    return Edits(substitutions, deletions, insertions, len(reference))


def edit_distance(reference: Sequence[Hashable], hypothesis: Sequence[Hashable]) -> int:
    return edits(reference, hypothesis).distance


def cer(reference: Sequence[Hashable], hypothesis: Sequence[Hashable]) -> float:
    """Edit distance over the reference's length (see ``Edits.rate`` for an empty reference)."""
    return edits(reference, hypothesis).rate


def corpus_cer(pairs: Iterable[tuple[Sequence[Hashable], Sequence[Hashable]]]) -> float:
    """Over many utterances: all edits over all reference units (not the mean of per-utterance
    rates, which would weigh a short utterance's one error like a long one's), as WeNet reports
    a test set's CER."""
    total = Edits(0, 0, 0, 0)
    for reference, hypothesis in pairs:
        e = edits(reference, hypothesis)
        total = Edits(total.substitutions + e.substitutions, total.deletions + e.deletions,
                      total.insertions + e.insertions, total.reference_length + e.reference_length)
    return total.rate

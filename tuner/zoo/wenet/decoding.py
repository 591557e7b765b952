"""From the encoder's CTC top-k to token ids and text: greedy, prefix beam search, attention rescoring.

The three scoring choices of WeNet's Triton pipeline, over the encoder outputs its GPU export
gives (``beam_log_probs`` / ``beam_log_probs_idx``: each frame's top-k log-probabilities and
token ids, best first; ``encoder_out`` / ``encoder_out_lens`` for the rescoring decoder):

* ``greedy``: each frame's best token, repeats collapsed, blanks dropped;
* ``prefix_beam``: CTC prefix beam search keeping ``beam`` prefixes, extending them with each
  frame's ``beam`` best tokens (WeNet's ``ctc_prefix_beam_search``); the best prefix wins;
* ``rescore``: the prefix beam's hypotheses rescored by the attention decoder
  (``AttentionRescorer`` of model.py, or its ONNX export): decoder log-likelihood +
  ``ctc_weight`` x CTC score, best of the beam.

WeNet's token conventions: id 0 is ``<blank>``, id 1 ``<unk>``, the last id ``<sos/eos>``.

A leaf module (numpy only, nothing of tuner): the ensemble writer ships this file beside the
scoring model's model.py. The decoder is passed in as a function, so the reference pipeline uses
the torch module and the served scoring step the exported ONNX graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

BLANK = 0
METHODS = ("greedy", "prefix_beam", "rescore")
IGNORE_ID = -1  # WeNet pads hypotheses with ignore_id
# CTC score of the filler hypotheses that pad a short beam up to the decoder's fixed beam: low
# enough that no real hypothesis loses to one, finite so float32 arithmetic stays NaN-free.
FILLER_CTC_SCORE = -1e30

Hypothesis = tuple[tuple[int, ...], float]  # (token ids, CTC log-probability of the prefix)
# (encoder_out, encoder_out_lens, hyps_pad_sos_eos, hyps_lens_sos, ctc_score) -> best_index [B]:
# the inputs and output of the zoo's decoder (config.DECODER_INPUTS / DECODER_OUTPUTS).
Rescorer = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def ctc_greedy(best_ids: np.ndarray) -> list[int]:
    """Token ids of one utterance from its frames' best ids (T,): collapse repeats, drop blanks."""
    ids = np.asarray(best_ids).reshape(-1)
    if ids.size == 0:
        return []
    keep = np.ones(ids.size, dtype=bool)
    keep[1:] = ids[1:] != ids[:-1]
    return [int(i) for i in ids[keep] if i != BLANK]


def _logaddexp(a: float, b: float) -> float:
    # Scalar math: the search calls this per prefix, token and frame; numpy's per-call overhead
    # would dominate.
    if a < b:
        a, b = b, a
    if b == -math.inf:
        return a
    return a + math.log1p(math.exp(b - a))


def ctc_prefix_beam_search(log_probs: np.ndarray, token_ids: np.ndarray, beam: int) -> list[Hypothesis]:
    """The ``beam`` best label sequences of one utterance, best first, with their CTC log-probability.

    ``log_probs`` / ``token_ids`` (T, K): each frame's top-K log-probabilities and their ids; the
    first ``min(beam, K)`` columns are used (the encoder sorts them best first). Each prefix keeps
    two probabilities, of ending in a blank and in its last token, so that ``a a`` (one ``a``)
    and ``a <blank> a`` (two) are told apart. With ``beam`` at least the number of live prefixes
    and all tokens in the top-K this is exact (the unit tests check it against enumeration).
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    width = min(beam, log_probs.shape[1]) if log_probs.ndim == 2 else 0
    # prefix -> (log P(prefix, ends in blank), log P(prefix, ends in its last token))
    hyps: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}
    for t in range(log_probs.shape[0]):
        grown: dict[tuple[int, ...], list[float]] = {}

        def add(prefix: tuple[int, ...], which: int, value: float) -> None:
            entry = grown.setdefault(prefix, [-math.inf, -math.inf])
            entry[which] = _logaddexp(entry[which], value)

        for k in range(width):
            token, lp = int(token_ids[t, k]), float(log_probs[t, k])
            for prefix, (p_blank, p_token) in hyps.items():
                if token == BLANK:
                    add(prefix, 0, _logaddexp(p_blank, p_token) + lp)
                elif prefix and token == prefix[-1]:
                    add(prefix, 1, p_token + lp)  # a repeat collapses into the same token
                    add(prefix + (token,), 1, p_blank + lp)  # after a blank it is a new token
                else:
                    add(prefix + (token,), 1, _logaddexp(p_blank, p_token) + lp)
        # Ties broken by the prefix itself, so the order never depends on dict insertion order.
        ranked = sorted(grown.items(), key=lambda kv: (-_logaddexp(*kv[1]), kv[0]))
        hyps = {prefix: (pb, pt) for prefix, (pb, pt) in ranked[:beam]}
    return [(prefix, _logaddexp(pb, pt)) for prefix, (pb, pt) in hyps.items()]


def rescoring_inputs(
    nbest: Sequence[Sequence[Hypothesis]], decoder_beam: int, sos_eos: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The decoder's ``hyps_pad_sos_eos`` int64 (B, decoder_beam, L + 2), ``hyps_lens_sos`` int32
    (B, decoder_beam) and ``ctc_score`` float32 (B, decoder_beam) from each utterance's n-best.

    Each hypothesis reads ``<sos> tokens <eos>``, padded with IGNORE_ID to the longest (L tokens).
    The exported decoder's beam is fixed: shorter n-best lists are filled up with empty
    hypotheses scored FILLER_CTC_SCORE, which can never win.
    """
    if any(len(hyps) > decoder_beam for hyps in nbest):
        raise ValueError(f"more hypotheses than the decoder's beam of {decoder_beam}")
    longest = max((len(ids) for hyps in nbest for ids, _ in hyps), default=0)
    batch = len(nbest)
    hyps_pad = np.full((batch, decoder_beam, longest + 2), IGNORE_ID, dtype=np.int64)
    hyps_pad[:, :, 0] = sos_eos
    hyps_pad[:, :, 1] = sos_eos  # the fillers: <sos> <eos>
    lens = np.ones((batch, decoder_beam), dtype=np.int32)
    scores = np.full((batch, decoder_beam), FILLER_CTC_SCORE, dtype=np.float32)
    for b, hyps in enumerate(nbest):
        for k, (ids, score) in enumerate(hyps):
            hyps_pad[b, k, 1 : len(ids) + 1] = ids
            hyps_pad[b, k, len(ids) + 1] = sos_eos
            lens[b, k] = len(ids) + 1
            scores[b, k] = score
    return hyps_pad, lens, scores


def decode(
    method: str,
    beam_log_probs: np.ndarray,
    beam_log_probs_idx: np.ndarray,
    encoder_out_lens: np.ndarray,
    beam: int,
    encoder_out: np.ndarray | None = None,
    rescorer: Rescorer | None = None,
    decoder_beam: int | None = None,
    sos_eos: int | None = None,
) -> list[list[int]]:
    """Token ids of each utterance of a padded encoder batch.

    ``beam_log_probs`` / ``beam_log_probs_idx`` (B, T', K) and ``encoder_out_lens`` (B,) as the
    encoder returns them; ``rescore`` also needs ``encoder_out`` (B, T', d), the ``rescorer``, the
    decoder's fixed beam and the ``<sos/eos>`` id. Frames past an utterance's length are ignored,
    so the result of each utterance does not depend on the batch it came in.
    """
    if method not in METHODS:
        raise ValueError(f"unknown scoring method {method!r}; known: {', '.join(METHODS)}")
    lens = np.asarray(encoder_out_lens).reshape(-1).astype(np.int64)
    if method == "greedy":
        return [ctc_greedy(beam_log_probs_idx[b, : lens[b], 0]) for b in range(lens.size)]
    nbest = [ctc_prefix_beam_search(beam_log_probs[b, : lens[b]], beam_log_probs_idx[b, : lens[b]], beam)
             for b in range(lens.size)]
    if method == "prefix_beam":
        return [list(hyps[0][0]) for hyps in nbest]
    if encoder_out is None or rescorer is None or decoder_beam is None or sos_eos is None:
        raise ValueError("rescore needs encoder_out, a rescorer, the decoder's beam and the <sos/eos> id")
    hyps_pad, hyps_lens, ctc_scores = rescoring_inputs(nbest, decoder_beam, sos_eos)
    best = np.asarray(rescorer(encoder_out, lens.astype(np.int32), hyps_pad, hyps_lens, ctc_scores)).reshape(-1)
    return [list(nbest[b][int(best[b])][0]) for b in range(lens.size)]


def ids_to_text(ids: Sequence[int], units: Sequence[str]) -> str:
    """The characters of token ids (WeNet's units are single characters, joined without spaces)."""
    return "".join(units[i] for i in ids)


def units_text(units: Sequence[str]) -> str:
    """WeNet's units.txt: ``<unit> <id>`` per line."""
    return "".join(f"{unit} {i}\n" for i, unit in enumerate(units))


def read_units(text: str) -> list[str]:
    """The units of a units.txt, by id."""
    pairs = [line.rsplit(" ", 1) for line in text.splitlines() if line.strip()]
    units = {int(i): unit for unit, i in pairs}
    return [units[i] for i in range(len(units))]

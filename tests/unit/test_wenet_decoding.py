"""CTC greedy, prefix beam search and attention rescoring (tuner/zoo/wenet/decoding.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from tuner.zoo.wenet import decoding
from tuner.zoo.wenet.config import get_config
from tuner.zoo.wenet.pipeline import vocabulary


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _top_k(log_probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's beam_log_probs / beam_log_probs_idx: top-k per frame, best first."""
    idx = np.argsort(-log_probs, axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(log_probs, idx, axis=-1), idx


def _brute_force(log_probs: np.ndarray) -> dict[tuple[int, ...], float]:
    """log P(labels) of every label sequence: the sum over all V**T frame paths that collapse to it."""
    frames, vocab = log_probs.shape
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(vocab), repeat=frames):
        labels = tuple(k for k, _ in itertools.groupby(path) if k != decoding.BLANK)
        p = math.exp(sum(log_probs[t, s] for t, s in enumerate(path)))
        totals[labels] = totals.get(labels, 0.0) + p
    return {labels: math.log(p) for labels, p in totals.items()}


@pytest.mark.parametrize("seed", range(5))
def test_prefix_beam_search_with_a_full_beam_equals_enumerating_every_path(seed):
    rng = np.random.default_rng(seed)
    frames, vocab = 5, 3  # 243 paths; "a a" and "a <blank> a" both occur
    log_probs = _log_softmax(rng.normal(0, 1.5, (frames, vocab)))
    values, ids = _top_k(log_probs, vocab)
    exact = _brute_force(log_probs)

    found = decoding.ctc_prefix_beam_search(values, ids, beam=len(exact))
    assert {labels for labels, _ in found} == set(exact)
    for labels, score in found:
        assert score == pytest.approx(exact[labels], abs=1e-9)
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    assert found[0][0] == max(exact, key=exact.get)
    # Probabilities of all label sequences sum to one: no path is lost or counted twice.
    assert sum(math.exp(s) for _, s in found) == pytest.approx(1.0)


def test_a_narrow_beam_keeps_at_most_beam_hypotheses_best_first():
    rng = np.random.default_rng(11)
    log_probs = _log_softmax(rng.normal(0, 2.0, (30, 20)))
    values, ids = _top_k(log_probs, 10)
    for beam in (1, 3, 10):
        found = decoding.ctc_prefix_beam_search(values, ids, beam)
        assert 1 <= len(found) <= beam
        assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
        assert len({labels for labels, _ in found}) == len(found)


def test_greedy_is_the_collapsed_argmax_and_ignores_padded_frames():
    rng = np.random.default_rng(2)
    log_probs = _log_softmax(rng.normal(0, 1.0, (3, 40, 6)))
    log_probs[:, :, decoding.BLANK] += 1.0  # blanks between tokens, as CTC models emit
    values, ids = _top_k(log_probs, 4)
    lengths = np.array([40, 17, 3], np.int32)
    got = decoding.decode("greedy", values, ids, lengths, beam=4)
    for b, n in enumerate(lengths):
        best = log_probs[b, :n].argmax(axis=1)
        expected = [int(k) for k, _ in itertools.groupby(best) if k != decoding.BLANK]
        assert got[b] == expected
    assert any(len(g) > 1 for g in got)


def test_decoding_a_padded_batch_equals_each_utterance_alone():
    rng = np.random.default_rng(4)
    log_probs = _log_softmax(rng.normal(0, 1.5, (3, 25, 8)))
    values, ids = _top_k(log_probs, 5)
    lengths = np.array([25, 9, 14], np.int32)
    for method in ("greedy", "prefix_beam"):
        batch = decoding.decode(method, values, ids, lengths, beam=5)
        for b, n in enumerate(lengths):
            alone = decoding.decode(method, values[b : b + 1, :n], ids[b : b + 1, :n], lengths[b : b + 1], 5)
            assert batch[b] == alone[0]


def test_rescoring_inputs_follow_wenets_layout_and_fill_the_decoders_beam():
    nbest = [[((5, 6, 7), -1.0), ((5,), -2.0)], [((), -0.5)]]
    hyps, lens, scores = decoding.rescoring_inputs(nbest, decoder_beam=3, sos_eos=99)
    assert hyps.shape == (2, 3, 5) and hyps.dtype == np.int64
    assert hyps[0, 0].tolist() == [99, 5, 6, 7, 99]
    assert hyps[0, 1].tolist() == [99, 5, 99, -1, -1]
    assert hyps[1, 0].tolist() == [99, 99, -1, -1, -1]
    assert lens.tolist() == [[4, 2, 1], [1, 1, 1]]  # tokens + <sos>
    assert scores[0, :2].tolist() == [-1.0, -2.0]
    assert (scores[0, 2:] == decoding.FILLER_CTC_SCORE).all() and (scores[1, 1:] == decoding.FILLER_CTC_SCORE).all()


def test_rescore_returns_the_hypothesis_the_rescorer_picks_not_the_ctc_best():
    rng = np.random.default_rng(5)
    log_probs = _log_softmax(rng.normal(0, 1.5, (2, 12, 6)))
    values, ids = _top_k(log_probs, 4)
    lengths = np.array([12, 12], np.int32)
    nbest = [decoding.ctc_prefix_beam_search(values[b], ids[b], 4) for b in range(2)]

    def last_of_beam(encoder_out, encoder_out_lens, hyps, hyps_lens, ctc_score):
        # The worst real hypothesis of each utterance (fillers score FILLER_CTC_SCORE).
        real = ctc_score > decoding.FILLER_CTC_SCORE
        return real.sum(axis=1) - 1

    got = decoding.decode("rescore", values, ids, lengths, 4, encoder_out=np.zeros((2, 12, 8), np.float32),
                          rescorer=last_of_beam, decoder_beam=10, sos_eos=5)
    assert got == [list(nbest[b][-1][0]) for b in range(2)]
    assert got != decoding.decode("prefix_beam", values, ids, lengths, 4)


def test_rescoring_with_the_zoo_decoder_picks_the_best_combined_score():
    """The torch decoder through the padded beam picks what scoring each hypothesis alone picks:
    decoder log-likelihood of its tokens and <eos> + ctc_weight x its CTC score."""
    torch = pytest.importorskip("torch")
    from tuner.zoo.wenet.model import build

    cfg = get_config("wenet-tiny")
    _, rescorer = build("wenet-tiny")
    rng = np.random.default_rng(6)
    frames = 20
    encoder_out = rng.normal(0, 1, (1, frames, cfg.d_model)).astype(np.float32)
    nbest = [[(tuple(int(t) for t in rng.integers(2, cfg.vocab_size - 1, n)), float(-rng.uniform(1, 3)))
              for n in (4, 7, 2, 5, 6)]]
    hyps, lens, ctc = decoding.rescoring_inputs(nbest, cfg.beam, cfg.vocab_size - 1)
    with torch.inference_mode():
        best = int(rescorer(torch.from_numpy(encoder_out), torch.tensor([frames], dtype=torch.int32),
                            torch.from_numpy(hyps), torch.from_numpy(lens), torch.from_numpy(ctc))[0])

        def alone(ids, ctc_score):
            seq = torch.tensor([[cfg.vocab_size - 1, *ids, cfg.vocab_size - 1]])
            steps = seq.size(1) - 1
            causal = torch.tril(torch.ones(steps, steps, dtype=torch.bool)).unsqueeze(0)
            logits = rescorer.decoder(torch.from_numpy(encoder_out), torch.ones(1, 1, frames, dtype=torch.bool),
                                      seq[:, :-1], causal)
            lp = torch.log_softmax(logits, -1).gather(2, seq[:, 1:, None]).sum()
            return float(lp) + cfg.ctc_weight * ctc_score

        combined = [alone(ids, score) for ids, score in nbest[0]]
    assert best == int(np.argmax(combined))
    assert best < len(nbest[0]), "a filler hypothesis won"


def test_vocabulary_is_seeded_wenet_shaped_and_texts_join_its_characters():
    cfg = get_config("wenet-tiny")
    units = vocabulary(cfg)
    assert units == vocabulary(cfg) and len(units) == cfg.vocab_size
    assert units[0] == "<blank>" and units[1] == "<unk>" and units[-1] == "<sos/eos>"
    assert len(set(units)) == len(units) and all(len(u) == 1 for u in units[2:-1])
    assert decoding.read_units(decoding.units_text(units)) == units
    assert decoding.ids_to_text([2, 3, 2], units) == units[2] + units[3] + units[2]
    with pytest.raises(ValueError, match="scoring method"):
        decoding.decode("viterbi", np.zeros((1, 1, 1)), np.zeros((1, 1, 1), np.int64), np.array([1]), 1)

"""Python-backend model: the WeNet ensemble's scoring step (encoder outputs -> token ids and text).

Inputs: the encoder's ``encoder_out`` FP32 [-1, d], ``encoder_out_lens`` INT32 [1],
``beam_log_probs`` FP32 [-1, K] and ``beam_log_probs_idx`` INT64 [-1, K]; outputs ``TRANSCRIPTS``
BYTES [1] (UTF-8 text), ``TOKENS`` INT64 [-1] (token ids; a request of several rows pads the
shorter ones with -1) and ``TOKEN_LENS`` INT32 [1]. The requests of one batch are padded into
one batch: one prefix beam search per utterance, then one call of the rescoring decoder for
the whole batch (tuner_adapter.py stacks, splits and reports errors, as in every tuner adapter).

decoding.py (tuner/zoo/wenet/decoding.py), tuner_adapter.py, units.txt and, for rescoring,
decoder.onnx ship beside this file: the repository needs numpy and onnxruntime, not tuner.
Parameters: ``method`` (greedy, prefix_beam, rescore), ``beam`` (prefix beam width),
``decoder_beam`` (the exported decoder's fixed beam), ``units_file``, ``decoder_file``,
``intra_op_threads`` (the decoder session's; 0 leaves onnxruntime's default), ``ragged_outputs``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # decoding.py and tuner_adapter.py

import numpy as np  # noqa: E402
from decoding import decode, ids_to_text, read_units  # noqa: E402
from tuner_adapter import BatchingModel, model_path  # noqa: E402


class TritonPythonModel(BatchingModel):
    def initialize(self, args):
        params = self.configure(args)
        self.method = params.get("method", "rescore")
        self.beam = int(params.get("beam", "10"))
        self.decoder_beam = int(params.get("decoder_beam", "10"))
        with open(model_path(args, params.get("units_file", "units.txt")), encoding="utf-8") as f:
            self.units = read_units(f.read())
        self.sos_eos = len(self.units) - 1  # WeNet's <sos/eos> is the last unit
        self.session = None
        if self.method == "rescore":
            import onnxruntime as ort

            options = ort.SessionOptions()
            threads = int(params.get("intra_op_threads", "1"))
            if threads > 0:
                options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            self.session = ort.InferenceSession(model_path(args, params.get("decoder_file", "decoder.onnx")),
                                                sess_options=options, providers=["CPUExecutionProvider"])
        self.input_ranks = {"encoder_out": 3, "encoder_out_lens": 1, "beam_log_probs": 3, "beam_log_probs_idx": 3}
        self.outputs = ["TRANSCRIPTS", "TOKENS", "TOKEN_LENS"]

    def _rescore(self, encoder_out, encoder_out_lens, hyps_pad_sos_eos, hyps_lens_sos, ctc_score):
        names = [i.name for i in self.session.get_inputs()]
        arrays = dict(encoder_out=encoder_out, encoder_out_lens=encoder_out_lens,
                      hyps_pad_sos_eos=hyps_pad_sos_eos, hyps_lens_sos=hyps_lens_sos, ctc_score=ctc_score)
        return self.session.run(None, {name: arrays[name] for name in names})[0]

    def infer(self, feed):
        ids = decode(self.method, feed["beam_log_probs"], feed["beam_log_probs_idx"], feed["encoder_out_lens"],
                     self.beam, encoder_out=feed["encoder_out"], rescorer=self._rescore,
                     decoder_beam=self.decoder_beam, sos_eos=self.sos_eos)
        longest = max((len(i) for i in ids), default=0)
        tokens = np.full((len(ids), max(longest, 1)), -1, dtype=np.int64)
        for row, utterance in enumerate(ids):
            tokens[row, : len(utterance)] = utterance
        texts = np.array([[ids_to_text(i, self.units).encode("utf-8")] for i in ids], dtype=np.object_)
        return {"TRANSCRIPTS": texts, "TOKENS": tokens,
                "TOKEN_LENS": np.array([len(i) for i in ids], dtype=np.int32)}

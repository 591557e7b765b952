"""Python-backend model: the WeNet ensemble's feature extractor (16 kHz waveform -> 80-bin fbank).

Inputs ``wav`` FP32 [-1] (samples in int16 scale) and ``wav_lens`` INT32 [1] (valid samples);
outputs ``speech`` FP32 [-1, 80] and ``speech_lengths`` INT32 [1] (valid frames), the encoder's
inputs. The requests of one batch are zero-padded into one waveform batch and featurised in a
single call; each request gets its features back trimmed to its own frames (tuner_adapter.py's
stacking, splitting and error handling, as every tuner adapter).

features.py (tuner/zoo/wenet/features.py) and tuner_adapter.py ship beside this file: the
repository needs torch and numpy in the server's python, not tuner. Parameters (config.pbtxt
``parameters``): ``threads`` (torch intra-op threads of this instance; 0 leaves torch's default),
``ragged_outputs``. A KIND_GPU instance computes on its GPU.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # features.py and tuner_adapter.py

import numpy as np  # noqa: E402
import torch  # noqa: E402
from features import fbank  # noqa: E402
from tuner_adapter import BatchingModel  # noqa: E402


class TritonPythonModel(BatchingModel):
    def initialize(self, args):
        params = self.configure(args)
        threads = int(params.get("threads", "1"))
        if threads > 0:
            torch.set_num_threads(threads)
        if args.get("model_instance_kind") == "GPU":
            self.device = torch.device(f"cuda:{args['model_instance_device_id']}")
        else:
            self.device = torch.device("cpu")
        self.input_ranks = {"wav": 2, "wav_lens": 1}
        self.outputs = ["speech", "speech_lengths"]

    def infer(self, feed):
        wav = torch.from_numpy(np.ascontiguousarray(feed["wav"], dtype=np.float32)).to(self.device)
        lens = torch.from_numpy(feed["wav_lens"].astype(np.int64))
        with torch.inference_mode():
            speech, frames = fbank(wav, lens)
        return {"speech": speech.cpu().numpy(), "speech_lengths": frames.numpy()}

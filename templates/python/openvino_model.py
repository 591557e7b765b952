"""Python-backend adapter: runs an OpenVINO IR model with OpenVINO's CPU plugin inside Triton.

Request stacking, padding and output trimming are tuner_adapter.py's (shared with the
onnxruntime adapter). Parameters (config.pbtxt `parameters`): model_file (model.xml, model.bin
beside it), precision_hint (INFERENCE_PRECISION_HINT: f32, f16, bf16), threads
(INFERENCE_NUM_THREADS; 0 = OpenVINO's default), performance_hint (LATENCY: one stream per
instance, Triton's instances being the parallelism), ragged_outputs.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tuner_adapter.py ships beside this file

import numpy as np  # noqa: E402
import openvino as ov  # noqa: E402
from tuner_adapter import BatchingModel, model_path  # noqa: E402


class TritonPythonModel(BatchingModel):
    def initialize(self, args):
        params = self.configure(args)
        properties = {
            "INFERENCE_PRECISION_HINT": params.get("precision_hint", "f32"),
            "PERFORMANCE_HINT": params.get("performance_hint", "LATENCY"),
        }
        threads = int(params.get("threads", "0"))
        if threads > 0:
            properties["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        compiled = core.compile_model(core.read_model(model_path(args, params.get("model_file", "model.xml"))),
                                      "CPU", properties)
        self.request = compiled.create_infer_request()
        self.input_ranks = {port.get_any_name(): port.get_partial_shape().rank.get_length() for port in compiled.inputs}
        self.ports = {port.get_any_name(): port for port in compiled.outputs}
        self.outputs = list(self.ports)

    def infer(self, feed):
        result = self.request.infer(feed)
        # The request reuses its output buffers on the next call: copy out.
        return {name: np.array(result[port]) for name, port in self.ports.items()}

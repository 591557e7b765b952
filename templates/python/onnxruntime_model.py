"""Python-backend adapter: runs an ONNX model with ONNX Runtime inside Triton.

Request stacking, padding and output trimming are tuner_adapter.py's (shared with the openvino
adapter). Parameters (config.pbtxt `parameters`): onnx_file, intra_op_threads,
graph_optimization_level (all, extended, basic, disabled), providers (comma-separated, in priority
order), provider_options (JSON list, one dict per provider), ragged_outputs.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tuner_adapter.py ships beside this file

import onnxruntime as ort  # noqa: E402
from tuner_adapter import BatchingModel, model_path  # noqa: E402

_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
GRAPH_OPTIMIZATION_LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}


class TritonPythonModel(BatchingModel):
    def initialize(self, args):
        params = self.configure(args)
        options = ort.SessionOptions()
        level = params.get("graph_optimization_level", "all")
        options.graph_optimization_level = GRAPH_OPTIMIZATION_LEVELS[level]
        threads = int(params.get("intra_op_threads", "0"))
        if threads > 0:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers = params.get("providers", "CPUExecutionProvider").split(",")
        provider_options = json.loads(params.get("provider_options", "[]")) or [{} for _ in providers]
        # A KIND_GPU instance runs on the GPU Triton gave it.
        device = args.get("model_instance_device_id", "0")
        provider_options = [dict(o, device_id=device) if p in _GPU_PROVIDERS else o
                            for p, o in zip(providers, provider_options)]
        self.session = ort.InferenceSession(model_path(args, params.get("onnx_file", "model.onnx")), sess_options=options,
                                            providers=providers, provider_options=provider_options)
        self.input_ranks = {i.name: len(i.shape) for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]

    def infer(self, feed):
        # Only the outputs this batch's requests want are fetched (tuner_adapter.BatchingModel).
        return dict(zip(self.needed_outputs, self.session.run(self.needed_outputs, feed)))

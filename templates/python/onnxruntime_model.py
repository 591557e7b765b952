"""Python-backend adapter: runs an ONNX model with ONNX Runtime inside Triton.

Triton's scheduler (instance groups, dynamic batcher, warmup) stays in charge; this model only
turns the list of requests Triton hands to `execute` into one session call:
- requests are stacked along the batch axis; inputs of different lengths (ragged batching)
  are zero-padded to the longest, which is correct for models that take their valid lengths
  as an input (e.g. WeNet's speech_lengths);
- outputs are split back per request; outputs named in the `ragged_outputs` parameter have
  their time axis trimmed to the longest valid length among that request's rows.
Parameters (config.pbtxt `parameters`): onnx_file, intra_op_threads, providers, ragged_outputs.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _stack(arrays):
    """Concatenate along axis 0, zero-padding every other axis to the largest size."""
    shapes = np.array([a.shape for a in arrays])
    target = shapes.max(axis=0)
    if (shapes[:, 1:] == target[1:]).all():
        return np.concatenate(arrays, axis=0)
    padded = [np.pad(a, [(0, 0)] + [(0, int(t - s)) for s, t in zip(a.shape[1:], target[1:])]) for a in arrays]
    return np.concatenate(padded, axis=0)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        threads = int(params.get("intra_op_threads", "0"))
        if threads > 0:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        model_file = os.path.join(args["model_repository"], args["model_version"], params.get("onnx_file", "model.onnx"))
        providers = params.get("providers", "CPUExecutionProvider").split(",")
        self.session = ort.InferenceSession(model_file, sess_options=options, providers=providers)
        self.batched = config.get("max_batch_size", 0) > 0
        self.input_ranks = {i.name: len(i.shape) for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.ragged_outputs = json.loads(params.get("ragged_outputs", "{}"))

    def _model_input(self, name, array):
        # Triton has at least one dim per batch element: a [B] tensor arrives as [B, 1].
        if array.ndim == self.input_ranks[name] + 1 and array.shape[-1] == 1:
            return array.reshape(array.shape[:-1])
        return array

    def execute(self, requests):
        if not self.batched:
            return [self._run([r])[0] for r in requests]
        try:
            return self._run(requests)
        except Exception as exc:  # one bad batch must not take the model down
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))
                    for _ in requests]

    def _run(self, requests):
        per_request = [{name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.input_ranks}
                       for r in requests]
        feeds = {name: self._model_input(name, _stack([inputs[name] for inputs in per_request]))
                 for name in self.input_ranks}
        results = dict(zip(self.outputs, self.session.run(self.outputs, feeds)))
        responses, start = [], 0
        rows = [next(iter(inputs.values())).shape[0] if self.batched else 1 for inputs in per_request]
        for n in rows:
            stop = start + n if self.batched else None
            tensors = []
            for name in self.outputs:
                value = results[name][start:stop] if self.batched else results[name]
                if name in self.ragged_outputs:
                    valid = int(np.max(results[self.ragged_outputs[name]][start:stop]))
                    value = value[:, :valid]
                if self.batched and value.ndim == 1:
                    value = value.reshape(-1, 1)
                tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(value)))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses

"""Python-backend adapter: runs a model's PyTorch definition on the instance's GPU.

Request stacking, padding and output trimming are tuner_adapter.py's. Parameters (config.pbtxt
`parameters`): model_file (JSON naming the definition, "module:name", whose
`serving_module(name)` returns (module, {input: rank}, output names)), precision (fp32, fp16,
bf16: the module's weights and float inputs are cast; float outputs come back as fp32),
ragged_outputs.
"""

import importlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tuner_adapter.py ships beside this file

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tuner_adapter import BatchingModel, model_path  # noqa: E402

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TritonPythonModel(BatchingModel):
    def initialize(self, args):
        params = self.configure(args)
        with open(model_path(args, params.get("model_file", "model.json"))) as f:
            module_path, name = json.load(f)["torch_module"].split(":")
        module, self.input_ranks, outputs = importlib.import_module(module_path).serving_module(name)
        self.outputs = list(outputs)
        if args.get("model_instance_kind") == "GPU":
            self.device = torch.device(f"cuda:{args['model_instance_device_id']}")
        else:
            self.device = torch.device("cpu")
        self.dtype = _DTYPES[params.get("precision", "fp32")]
        self.module = module.to(device=self.device, dtype=self.dtype).eval()

    def _tensor(self, array):
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(self.device, non_blocking=True)
        return tensor.to(self.dtype) if tensor.is_floating_point() else tensor

    def infer(self, feed):
        with torch.inference_mode():
            results = self.module(*(self._tensor(feed[name]) for name in self.input_ranks))
        return {name: (value.float() if value.is_floating_point() else value).cpu().numpy()
                for name, value in zip(self.outputs, results)}

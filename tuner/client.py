"""One inference over gRPC, with the tritonclient library: cold-start probes and correctness checks."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient

from tuner.signature import Signature


def infer(url: str, model: str, signature: Signature, sample: dict[str, np.ndarray],
          batched: bool = True, timeout_s: float = 120.0) -> dict[str, np.ndarray]:
    """Send one request (a batch of one when the model is batched) and return its outputs."""
    client = grpcclient.InferenceServerClient(url)
    try:
        inputs = []
        for t in signature.inputs:
            value = sample[t.name]
            if batched:
                value = value.reshape((1, *(value.shape or (1,))))
            tensor = grpcclient.InferInput(t.name, list(value.shape), t.wire_type)
            tensor.set_data_from_numpy(np.ascontiguousarray(value))
            inputs.append(tensor)
        outputs = [grpcclient.InferRequestedOutput(t.name) for t in signature.outputs]
        result = client.infer(model, inputs, outputs=outputs, client_timeout=timeout_s)
        return {t.name: result.as_numpy(t.name) for t in signature.outputs}
    finally:
        client.close()

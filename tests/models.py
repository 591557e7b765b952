"""Small ONNX models built with onnx.helper for tests (no torch needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def mlp(path: Path, features: int = 64, hidden: int = 256, outputs: int = 8, layers: int = 3, seed: int = 0) -> Path:
    """y = MLP(x): x float32 [B, features] -> y float32 [B, outputs], dynamic batch."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev, width = [], [], "x", features
    for i in range(layers):
        out_width = outputs if i == layers - 1 else hidden
        w = (rng.standard_normal((width, out_width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        name = "y" if i == layers - 1 else f"h{i}"
        matmul = f"m{i}" if i < layers - 1 else name
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [matmul]))
        if i < layers - 1:
            nodes.append(helper.make_node("Relu", [matmul], [name]))
        prev, width = name, out_width
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def reference(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def unloadable(path: Path) -> Path:
    """A well-formed ONNX graph with an operator no runtime has: it reads fine, it never loads."""
    node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="tuner.test")
    graph = helper.make_graph(
        [node], "unloadable",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("tuner.test", 1)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path

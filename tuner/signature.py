"""A model's interface read from its ONNX graph: inputs, outputs, types, and the batch dimension."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuner.errors import TunerError

# ONNX TensorProto element type -> (Triton data type, numpy dtype name)
_ONNX_TYPES = {
    1: ("TYPE_FP32", "float32"),
    2: ("TYPE_UINT8", "uint8"),
    3: ("TYPE_INT8", "int8"),
    5: ("TYPE_INT16", "int16"),
    6: ("TYPE_INT32", "int32"),
    7: ("TYPE_INT64", "int64"),
    9: ("TYPE_BOOL", "bool"),
    10: ("TYPE_FP16", "float16"),
    11: ("TYPE_FP64", "float64"),
    16: ("TYPE_BF16", "bfloat16"),
}


@dataclass(frozen=True)
class Tensor:
    name: str
    triton_type: str  # e.g. "TYPE_FP32"
    numpy_type: str  # e.g. "float32"
    dims: tuple[int, ...]  # without the batch dimension when the model is batched; -1 = variable

    @property
    def wire_type(self) -> str:
        """The datatype name on the inference protocol ("FP32")."""
        return self.triton_type.removeprefix("TYPE_")

    @property
    def config_dims(self) -> tuple[int, ...]:
        """Triton needs at least one dim per batch element; a rank-1 [B] tensor is dims [1] + reshape []."""
        return self.dims or (1,)

    @property
    def is_ragged(self) -> bool:
        return -1 in self.dims


@dataclass(frozen=True)
class Signature:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    batched: bool  # every input and output has a leading variable dimension

    def input(self, name: str) -> Tensor:
        return next(t for t in self.inputs if t.name == name)


def _shape(value_info) -> list[int]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in dims]


def _tensor(value_info, batched: bool) -> Tensor:
    elem = value_info.type.tensor_type.elem_type
    if elem not in _ONNX_TYPES:
        raise TunerError(f"tensor {value_info.name!r} has ONNX element type {elem}, which tuner does not serve")
    triton_type, numpy_type = _ONNX_TYPES[elem]
    shape = _shape(value_info)
    return Tensor(value_info.name, triton_type, numpy_type, tuple(shape[1:] if batched else shape))


def read_signature(path: Path) -> Signature:
    """Read inputs and outputs of an ONNX model; the model is batched when all of them start with a
    variable dimension (Triton then owns that dimension: max_batch_size > 0)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for non-ONNX files
        raise TunerError(f"{path} is not a readable ONNX model ({type(exc).__name__}); give a .onnx file") from None
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    if not graph_inputs or not model.graph.output:
        raise TunerError(f"{path} has no graph inputs or outputs; is it a complete ONNX model?")
    everything = [*graph_inputs, *model.graph.output]
    batched = all(_shape(v) and _shape(v)[0] == -1 for v in everything)
    return Signature(
        inputs=tuple(_tensor(v, batched) for v in graph_inputs),
        outputs=tuple(_tensor(v, batched) for v in model.graph.output),
        batched=batched,
    )

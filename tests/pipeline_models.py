"""Hand-written Triton model repositories of a two-step pipeline, as a user would bring them.

Nothing here comes from tuner's zoo or templates: the configs are plain ``config.pbtxt`` text and
the models plain python-backend ``model.py`` files (numpy only), in a user's first, untuned form
(max_batch_size 8, one instance, no dynamic batching).

    RAW FP32 [16] ─► preprocess ─► FEATURES FP32 [16] ─► classify ─► SCORES FP32 [4], LABEL STRING [1]

``two_step_ensemble`` serves it behind an ensemble, ``bls_pipeline`` behind a python BLS model.
The numpy math is written once, below: ``reference`` runs it in-process and the same functions'
source is written into the models' ``model.py`` files.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import numpy as np

from tuner.measure.perf_analyzer import write_input_data
from tuner.signature import Signature, Tensor

PREPROCESS = "preprocess"
CLASSIFY = "classify"
RAW, FEATURES, SCORES, LABEL = "RAW", "FEATURES", "SCORES", "LABEL"

WIDTH = 16  # RAW and FEATURES per batch element
CLASSES = 4
HIDDEN = 256  # classify's hidden layer: real CPU work per request, so scheduling matters
HIDDEN_LAYERS = 4
WEIGHT_SEED = 1234
MAX_BATCH_SIZE = 8


# --- The math: module-level functions, also written verbatim into the model.py files. ---

def standardize(raw):
    """RAW [B, 16] -> FEATURES [B, 16]: fixed centring and scaling, then a small soft clip."""
    x = (raw.astype(np.float64) - 0.5) * 2.0
    return (x + 0.1 * np.tanh(3.0 * x)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def classifier_weights():
    """The classifier's fixed weights (seeded): input, hidden layers, output."""
    rng = np.random.default_rng(WEIGHT_SEED)
    w_in = rng.standard_normal((WIDTH, HIDDEN)) / np.sqrt(WIDTH)
    hidden = [rng.standard_normal((HIDDEN, HIDDEN)) / np.sqrt(HIDDEN) for _ in range(HIDDEN_LAYERS)]
    w_out = rng.standard_normal((HIDDEN, CLASSES)) / np.sqrt(HIDDEN) * 4.0
    return w_in, hidden, w_out


def classify_scores(features):
    """FEATURES [B, 16] -> SCORES [B, 4]: an MLP then softmax, in float64 so that the batch
    a row is computed in cannot change its argmax."""
    w_in, hidden, w_out = classifier_weights()
    h = np.tanh(features.astype(np.float64) @ w_in)
    for w in hidden:
        h = np.tanh(h @ w)
    logits = h @ w_out
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def labels_of(scores):
    """SCORES [B, 4] -> LABEL [B, 1]: the winning class's name as bytes (b"class_2")."""
    return np.array([[f"class_{int(i)}".encode()] for i in scores.argmax(axis=1)], dtype=np.object_)


_MATH_CONSTANTS = ("WIDTH", "CLASSES", "HIDDEN", "HIDDEN_LAYERS", "WEIGHT_SEED")
_MATH_FUNCTIONS = (standardize, classifier_weights, classify_scores, labels_of)


def _math_source() -> str:
    constants = "".join(f"{name} = {globals()[name]!r}\n" for name in _MATH_CONSTANTS)
    functions = "\n\n".join(inspect.getsource(f) for f in _MATH_FUNCTIONS)
    return f"{constants}\n\n{functions}"


def reference(raw: np.ndarray) -> dict[str, np.ndarray]:
    """The pipeline's outputs for RAW [B, 16], computed in this process."""
    scores = classify_scores(standardize(np.asarray(raw, dtype=np.float32)))
    return {SCORES: scores, LABEL: labels_of(scores)}


# --- The python-backend models. ---

_HEADER = '''\
import functools

import numpy as np
import triton_python_backend_utils as pb_utils

'''

# A batching model: Triton may hand execute() several requests, each with its own batch
# dimension; they are computed as one batch and split back.
_BATCHED_MODEL = '''

def _batched(requests, name):
    arrays = [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
    return np.concatenate(arrays), np.cumsum([len(a) for a in arrays])[:-1]


class TritonPythonModel:
    def initialize(self, args):
        {warm}

    def execute(self, requests):
        batch, splits = _batched(requests, {input!r})
        {compute}
        return [pb_utils.InferenceResponse(output_tensors=[{tensors}])
                for {parts} in zip({splits})]
'''

_PREPROCESS_MODEL = _BATCHED_MODEL.format(
    warm="pass", input=RAW,
    compute="features = standardize(batch)",
    tensors=f'pb_utils.Tensor("{FEATURES}", f)', parts="(f,)",
    splits="np.split(features, splits)")

_CLASSIFY_MODEL = _BATCHED_MODEL.format(
    warm="classifier_weights()", input=FEATURES,
    compute="scores = classify_scores(batch)\n        labels = labels_of(scores)",
    tensors=f'pb_utils.Tensor("{SCORES}", s), pb_utils.Tensor("{LABEL}", l)', parts="s, l",
    splits="np.split(scores, splits), np.split(labels, splits)")

# Business logic scripting: the top model calls the two steps itself, one request at a time.
_BLS_MODEL = f'''\
import numpy as np
import triton_python_backend_utils as pb_utils


def _call(model, inputs, outputs):
    """One BLS inference; its outputs as numpy arrays, or raises with the step's error."""
    response = pb_utils.InferenceRequest(model_name=model, inputs=inputs, requested_output_names=outputs).exec()
    if response.has_error():
        raise pb_utils.TritonModelException(f"{{model}}: {{response.error().message()}}")
    return [pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs]


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                raw = pb_utils.get_input_tensor_by_name(request, "{RAW}")
                (features,) = _call("{PREPROCESS}", [raw], ["{FEATURES}"])
                scores, labels = _call("{CLASSIFY}", [pb_utils.Tensor("{FEATURES}", features)], ["{SCORES}", "{LABEL}"])
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("{SCORES}", scores), pb_utils.Tensor("{LABEL}", labels)]))
            except pb_utils.TritonModelException as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses
'''


# --- config.pbtxt text, as written by hand. ---

def _tensor(name: str, data_type: str, dims: int) -> str:
    return f'{{ name: "{name}" data_type: {data_type} dims: [ {dims} ] }}'


_RAW = _tensor(RAW, "TYPE_FP32", WIDTH)
_FEATURES = _tensor(FEATURES, "TYPE_FP32", WIDTH)
_OUTPUTS = f'{_tensor(SCORES, "TYPE_FP32", CLASSES)},\n  {_tensor(LABEL, "TYPE_STRING", 1)}'


def _python_config(name: str, inputs: str, outputs: str) -> str:
    return f'''\
name: "{name}"
backend: "python"
max_batch_size: {MAX_BATCH_SIZE}
input [
  {inputs}
]
output [
  {outputs}
]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
'''


def _ensemble_config(name: str) -> str:
    return f'''\
name: "{name}"
platform: "ensemble"
max_batch_size: {MAX_BATCH_SIZE}
input [
  {_RAW}
]
output [
  {_OUTPUTS}
]
ensemble_scheduling {{
  step [
    {{
      model_name: "{PREPROCESS}"
      model_version: -1
      input_map {{ key: "{RAW}" value: "{RAW}" }}
      output_map {{ key: "{FEATURES}" value: "features" }}
    }},
    {{
      model_name: "{CLASSIFY}"
      model_version: -1
      input_map {{ key: "{FEATURES}" value: "features" }}
      output_map {{ key: "{SCORES}" value: "{SCORES}" }}
      output_map {{ key: "{LABEL}" value: "{LABEL}" }}
    }}
  ]
}}
'''


def _write_model(root: Path, name: str, config: str, model_py: str | None) -> None:
    folder = root / name
    (folder / "1").mkdir(parents=True, exist_ok=True)  # an ensemble needs its (empty) version folder too
    (folder / "config.pbtxt").write_text(config)
    if model_py is not None:
        (folder / "1" / "model.py").write_text(model_py)


def _write_steps(root: Path) -> None:
    math = _HEADER + _math_source()
    _write_model(root, PREPROCESS, _python_config(PREPROCESS, _RAW, _FEATURES), math + _PREPROCESS_MODEL)
    _write_model(root, CLASSIFY, _python_config(CLASSIFY, _FEATURES, _OUTPUTS), math + _CLASSIFY_MODEL)


def two_step_ensemble(root: Path, name: str = "scorer") -> Path:
    """A repository at ``root``: ``preprocess``, ``classify`` and the ensemble ``name`` (RAW ->
    SCORES, LABEL). Returns ``root``."""
    _write_steps(root)
    _write_model(root, name, _ensemble_config(name), None)
    return root


def bls_pipeline(root: Path, name: str = "bls_scorer") -> Path:
    """A repository at ``root``: ``preprocess``, ``classify`` and the python BLS model ``name``
    that calls them in turn (RAW -> SCORES, LABEL). Returns ``root``."""
    _write_steps(root)
    _write_model(root, name, _python_config(name, _RAW, _OUTPUTS), _BLS_MODEL)
    return root


# --- Load for perf_analyzer. ---

SIGNATURE = Signature(
    inputs=(Tensor(RAW, "TYPE_FP32", "float32", (WIDTH,)),),
    outputs=(Tensor(SCORES, "TYPE_FP32", "float32", (CLASSES,)),),  # LABEL (bytes) has no Tensor type here
    batched=True,
)


def sample_raw(n: int, seed: int = 0) -> np.ndarray:
    """n rows of RAW [n, 16], uniform in [0, 1)."""
    return np.random.default_rng(seed).random((n, WIDTH), dtype=np.float32)


def input_data(path: Path, n: int = 8, seed: int = 0) -> Path:
    """perf_analyzer ``--input-data`` JSON at ``path``: n data sets of RAW [16] (one request each)."""
    return write_input_data(path, SIGNATURE, [{RAW: row} for row in sample_raw(n, seed)])

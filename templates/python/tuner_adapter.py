"""What every python-backend runtime adapter shares: requests in, one runtime call, responses out.

Triton's scheduler (instance groups, dynamic batcher, warmup) stays in charge; an adapter only
turns the list of requests Triton hands to `execute` into one call of its runtime:
- requests are stacked along the batch axis; inputs of different lengths (ragged batching)
  are zero-padded to the longest, which is correct for models that take their valid lengths
  as an input (e.g. WeNet's speech_lengths);
- outputs are split back per request; outputs named in the `ragged_outputs` parameter have
  their time axis trimmed to the longest valid length among that request's rows;
- a response holds only the outputs its request names (`requested_output_names()`; none named:
  all, as Triton reads an empty list). An ensemble's scheduler names only the outputs it maps, so
  an unmapped one (WeNet's ctc_log_probs, megabytes per utterance) is never built into a response,
  and `infer` may skip copying it off the device (`needed_outputs`).

This file ships beside model.py in the model's version directory; model.py puts that directory
on sys.path before importing it. The numpy functions here run without Triton (unit tests).
"""

import json
import os

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # outside the python backend stub
    pb_utils = None


def parameters(args):
    """(model config dict, {parameter: string value}) of the `initialize` args."""
    config = json.loads(args["model_config"])
    return config, {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


def model_path(args, filename):
    return os.path.join(args["model_repository"], args["model_version"], filename)


def stack(arrays):
    """Concatenate along axis 0, zero-padding every other axis to the largest size."""
    shape = padded_shape(arrays)
    if all(a.shape[1:] == shape[1:] for a in arrays):
        return np.concatenate(arrays, axis=0)
    out = np.empty(shape, dtype=arrays[0].dtype)
    gather(arrays, out)
    return out


def padded_shape(arrays, rows=None, axis1=None):
    """The shape `arrays` stack into: their items (or `rows`), then each other axis's largest
    size (axis 1 `axis1` where given: a length bucket)."""
    shape = [sum(len(a) for a in arrays) if rows is None else rows, *np.max([a.shape[1:] for a in arrays], axis=0)]
    if axis1 is not None and len(shape) > 1:
        shape[1] = axis1
    return tuple(int(n) for n in shape)


def gather(arrays, out):
    """Write `arrays` one after another along axis 0 of `out` (a buffer the caller may reuse),
    each zero-padded on the other axes: one copy, where padding then concatenating makes two
    fresh arrays (on a GPU host's 16 MB batch of waveforms, 6 ms of page faults and copies).
    Rows of `out` after the arrays' items repeat its first row: a real item, for a batch padded
    to a fixed size (a CUDA graph's)."""
    start = 0
    for a in arrays:
        region = out[start:start + len(a)]
        if a.shape[2:] != out.shape[2:]:
            region[...] = 0
        elif a.shape[1:2] != out.shape[1:2]:
            region[:, a.shape[1]:] = 0
        region[(slice(None),) + tuple(slice(0, n) for n in a.shape[1:])] = a
        start += len(a)
    if start < len(out):
        out[start:] = out[:1]
    return out


def model_input(array, rank):
    """Triton has at least one dim per batch element: a [B] tensor arrives as [B, 1]."""
    if array.ndim == rank + 1 and array.shape[-1] == 1:
        return array.reshape(array.shape[:-1])
    return array


def feeds(per_request, input_ranks):
    """One runtime feed from the per-request input dicts."""
    return {name: stack(arrays) for name, arrays in parts(per_request, input_ranks).items()}


def parts(per_request, input_ranks):
    """Each input's per-request arrays, in the model's rank, not yet stacked (for an adapter that
    gathers them into a buffer of its own: `BatchingModel.gathers_itself`)."""
    return {name: [model_input(inputs[name], rank) for inputs in per_request] for name, rank in input_ranks.items()}


def needed_outputs(wanted, outputs, ragged_outputs):
    """The outputs a batch must compute, in `outputs` order: those any request wants, and the
    lengths that trim a wanted ragged one when it is split per request."""
    lengths = {ragged_outputs[name] for name in wanted if name in ragged_outputs}
    return [name for name in outputs if name in wanted or name in lengths]


def split(results, rows, batched, ragged_outputs):
    """Per-request output dicts from the batch results; `rows` is each request's batch size."""
    per_request, start = [], 0
    for n in rows:
        stop = start + n if batched else None
        outputs = {}
        for name, value in results.items():
            value = value[start:stop] if batched else value
            if name in ragged_outputs:
                valid = int(np.max(results[ragged_outputs[name]][start:stop]))
                value = value[:, :valid]
            if batched and value.ndim == 1:
                value = value.reshape(-1, 1)
            outputs[name] = np.ascontiguousarray(value)
        per_request.append(outputs)
        start += n
    return per_request


class BatchingModel:
    """Base of an adapter's TritonPythonModel.

    A subclass's `initialize` calls `self.configure(args)` and sets `self.input_ranks`
    ({input name: rank in the model}) and `self.outputs` (output names); `infer(feed)` runs the
    runtime once and returns {output name: array}, at least for the names in
    `self.needed_outputs` (set before each call: what this batch's requests want); others it
    returns are dropped. The feed holds stacked arrays, or with `gathers_itself` each input's
    list of per-request arrays (`parts`), for a runtime that pads them into its own buffers.
    """

    gathers_itself = False

    def configure(self, args):
        config, params = parameters(args)
        self.max_batch_size = config.get("max_batch_size", 0)
        self.batched = self.max_batch_size > 0
        self.ragged_outputs = json.loads(params.get("ragged_outputs", "{}"))
        return params

    def infer(self, feed):
        raise NotImplementedError

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
        wanted = [self._wanted(r) for r in requests]
        self.needed_outputs = needed_outputs(set().union(*wanted), self.outputs, self.ragged_outputs)
        gather_feed = parts if self.gathers_itself else feeds
        results = self.infer(gather_feed(per_request, self.input_ranks))
        results = {name: results[name] for name in self.needed_outputs}
        rows = [next(iter(inputs.values())).shape[0] if self.batched else 1 for inputs in per_request]
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, value) for name, value in out.items()
                                                           if name in names])
                for out, names in zip(split(results, rows, self.batched, self.ragged_outputs), wanted)]

    def _wanted(self, request):
        """The outputs a request names; none named: all of them, as Triton reads an empty list."""
        return set(request.requested_output_names()) or set(self.outputs)

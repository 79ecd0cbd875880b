"""``predict`` on a list of sequences of different lengths (a ragged batch).

``Sequential.predict([a1, a2, ...])``, each ``a_i`` one sample ``(length_i, *step_shape)``
(one fewer axis than the model's input), returns a list with one output per sample, each
that of ``predict(a_i[None])[0]``: sequence outputs keep exactly ``length_i`` steps, so no
padded position is ever returned.

How: the samples are sorted by length (longest first) and taken ``batch_size`` at a time.

* A model whose layers are all per-timestep and causal (those a stream pool accepts, see
  :mod:`rnncore.models.stream_plan`) runs right-padded batches layer by layer: each
  recurrent layer runs the spans between successive lengths over the rows still running,
  so the rows of sequences that ended drop out of the product (no work on padding); the
  layers whose rounding depends on the row count run on each sample's own steps. The
  outputs are bit for bit those of predicting each sample alone.
* Any other model (Bidirectional, a Conv1D that is not causal, pooling, ...) runs the
  samples of each length together, without padding: the recurrent layers' rows are bit for
  bit those of the sample alone, layers computed by a general matrix product (Dense) may
  differ from it in the last bits (Eigen picks its kernel by the row count).

A model with stateful layers is refused (its carried states tie the samples together).

When you pad a batch yourself and mask the padding instead (a Masking layer, or
``Embedding(mask_zero=True)``), Keras's rule for the padded (masked) positions applies: a
recurrent layer keeps its states there and outputs the output of the last used step (zeros
before the first; zeros throughout with ``zero_output_for_mask=True``), and the following
layers compute on those repeated values; a ragged predict returns none of those positions.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedModelError
from ..layers._args import as_float_array
from .stream_plan import StreamPlan

__all__ = ["predict_ragged"]


def _checked(model, samples, shape, dtype) -> list:
    step_shape, fixed = tuple(shape[2:]), shape[1]
    out = []
    for k, s in enumerate(samples):
        what = f"{model.name}: predict sample {k}"
        # float samples of a float model take its dtype (as predict does); anything else goes
        # to the model's layers as given, which convert or refuse it
        a = as_float_array(s, dtype, what) if dtype is not None else np.asarray(s)
        if a.ndim != len(step_shape) + 1 or a.shape[1:] != step_shape or a.shape[0] == 0:
            raise ValueError(
                f"{what}: expected shape (length,) + {step_shape} with length >= 1, got {a.shape}"
            )
        if fixed is not None and a.shape[0] != fixed:  # its layers would see another length
            raise ValueError(
                f"{what}: expected shape {(fixed,) + step_shape} (the model's input has "
                f"{fixed} timesteps), got {a.shape}"
            )
        out.append(a)
    return out


def predict_ragged(model, samples: list, batch_size: int) -> list:
    """One output per sample of ``samples`` (see the module's help)."""
    if not samples:
        raise ValueError(f"{model.name}: predict got an empty list of samples")
    stateful = [layer.name for layer in model.stateful_layers()]
    if stateful:  # each predict call would continue from the states the last one left
        raise UnsupportedModelError(
            f"{model.name}: predict on a list of samples is not supported for a model with "
            f"stateful layers {stateful}: their carried states tie the samples together"
        )
    try:
        plan = StreamPlan(model)
    except UnsupportedModelError:
        plan = None
    shape = tuple(model.input_shape)
    step_shape = tuple(shape[2:])
    dtype = None if plan is None or plan.input_dtype.kind != "f" else plan.input_dtype
    arrays = _checked(model, samples, shape, dtype)
    lengths = np.array([a.shape[0] for a in arrays])
    order = np.argsort(-lengths, kind="stable")
    out: list = [None] * len(arrays)
    if plan is None:
        for n in np.unique(lengths):
            same = np.flatnonzero(lengths == n)
            for start in range(0, len(same), batch_size):
                idx = same[start : start + batch_size]
                ys = model._run_batch([np.stack([arrays[i] for i in idx])])
                for k, i in enumerate(idx):
                    out[i] = model._pack_outputs([y[k] for y in ys])
        return out
    for start in range(0, len(arrays), batch_size):
        idx = order[start : start + batch_size]
        lens = [int(lengths[i]) for i in idx]
        x = np.zeros((len(idx), lens[0]) + step_shape, arrays[idx[0]].dtype)
        for k, i in enumerate(idx):
            x[k, : lens[k]] = arrays[i]
        for i, y in zip(idx, plan.run_ragged(x, lens)):
            out[i] = y
    return out

"""What :class:`rnncore.Sequential` and :class:`rnncore.Model` share: ``predict`` in batches,
``predict_on_batch``, the weights as lists, ``save`` / ``save_weights`` / ``load_weights`` /
``to_json``, ``reset_states`` and pickling without training state.

A model provides ``_input_specs()`` (``[(name, batch shape or None)]``, one per model
input), ``_input_dict(x)`` (a dict of inputs as a list, or a refusal), ``_run_batch(xs)`` (the
outputs of one batch as a flat list of arrays) and ``_pack_outputs(list)`` (the outputs as
the model returns them: one array, a tuple or list, or a dict).

How ``x`` is read, by every model kind alike (:meth:`ModelBase._read_x`): one array-like
for a model with one input; a list or tuple with one entry per input, or a dict keyed by
input name, for several (Keras). For a model with one input a list of arrays each with one
axis fewer than the input (``(timesteps, features)`` for ``(batch, timesteps, features)``)
is a ragged batch, one sample each, which ``predict`` and ``predict_on_batch`` return one
output for each; a list of one array of the input's rank is that input (Keras); nested
Python lists that form one regular array are that array; anything else is refused naming
``x`` and the shapes expected and given.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from ..errors import ModelFileError, UnsupportedArgumentError
from ..formats.archive import ARCHIVE_ERRORS, load_npy, read_member
from ..formats.keras_save import write_model
from ..formats.onnx.export import to_onnx
from ..layers._base import DropsTransientOnPickle
from ..quantization import check_mode
from ..training import Trainer
from .plan import STALE
from .ragged import predict_ragged
from .stream_pool import StreamPool

__all__ = ["ModelBase", "strip_masks", "unique_weights"]


def strip_masks(outputs):
    """Plain ndarrays (no attached Keras mask), as ``predict`` returns."""
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(np.asarray(o) for o in outputs)
    if isinstance(outputs, dict):
        return {k: np.asarray(v) for k, v in outputs.items()}
    return np.asarray(outputs)


def unique_weights(layers, attribute="weights") -> list:
    """The variables of ``layers`` in order, each once (a layer used twice, or shared by a
    nested model, has one set of weights): Keras's ``model.weights``."""
    seen, out = set(), []
    for layer in layers:
        for v in getattr(layer, attribute):
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
    return out


def _shape_text(shape) -> str:
    """``(None, 5, 3)``: plain ints (never ``np.int64(5)``), for messages."""
    return str(tuple(None if d is None else int(d) for d in shape))


def _list_text(arrays) -> str:
    """``a list of 2 arrays of shapes [(5, 3), (7, 3)]``, for messages."""
    shapes = ", ".join(_shape_text(a.shape) for a in arrays[:4])
    more = ", ..." if len(arrays) > 4 else ""
    return f"a list of {len(arrays)} arrays of shapes [{shapes}{more}]"


def _rows_of(a) -> int:
    shape = getattr(a, "shape", None)
    if shape is None or len(shape) == 0:
        raise ValueError(f"predict: every input needs a sample axis, got {a!r}")
    return int(shape[0])


class ModelBase(DropsTransientOnPickle, Trainer):
    """The methods Keras's models share (see the module's help)."""

    #: what the model's saved config is called (``rnncore_model.json``'s class_name)
    _class_name = "Model"

    # ---- inference ----------------------------------------------------------------------

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Outputs for ``x`` computed ``batch_size`` samples at a time (32 by default).

        ``x`` (each input, for several) may be any array-like indexable by sample ranges (a
        NumPy array, an ``np.memmap`` or an HDF5 dataset larger than memory: only one batch
        is read at a time), or an iterable of batches (a generator; ``steps`` limits how
        many are drawn). The result is preallocated once, so the only full-size arrays are
        the outputs. ``verbose`` only affects progress printing, which rnncore does not do.

        A model with one input also takes a ragged batch: a list of NumPy arrays, each one
        sample with one axis fewer than the model's input (``(length, input_dim)`` for a 3-D
        input), of any lengths; it returns a list of outputs, each as if predicted alone (see
        :mod:`rnncore.models.ragged`). Nested Python lists that form one regular array are
        that array. How ``x`` is read: see :mod:`rnncore.models.base`.
        """
        if callbacks:
            raise UnsupportedArgumentError("predict: callbacks are not supported by rnncore")
        if batch_size is None:
            batch_size = 32
        if int(batch_size) != batch_size or batch_size <= 0:
            raise ValueError(f"predict: batch_size must be a positive integer, got {batch_size!r}")
        batch_size = int(batch_size)
        if (
            x is not None
            and not hasattr(x, "shape")
            and not isinstance(x, (list, tuple, dict, str, bytes))
        ):
            if not hasattr(x, "__iter__"):
                raise TypeError(
                    f"{self.name}: predict: x must be {self._x_forms()} or an iterable of "
                    f"batches, got {type(x).__name__}"
                )
            return self._predict_batches(x, steps)
        xs, samples = self._read_x(x, "predict")
        if samples is not None:
            if steps is not None:
                raise ValueError(f"{self.name}: predict on a list of samples takes no steps")
            return predict_ragged(self, samples, batch_size)
        counts = [_rows_of(a) for a in xs]
        if len(set(counts)) > 1:
            raise ValueError(
                f"{self.name}: all inputs must have the same number of samples, got {counts}"
            )
        n = counts[0]
        if steps is not None:
            n = min(n, int(steps) * batch_size)
        out = None
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            ys = self._run_batch([np.asarray(a[start:stop]) for a in xs])
            if out is None:
                out = [np.empty((n,) + a.shape[1:], a.dtype) for a in ys]
            for o, a in zip(out, ys):
                o[start:stop] = a
        if out is None:
            raise ValueError(f"{self.name}: predict got no samples")
        return self._pack_outputs(out)

    def _predict_batches(self, batches, steps):
        outs = []
        for k, batch in enumerate(batches):
            if steps is not None and k >= steps:
                break
            if isinstance(batch, tuple):  # (x, y) or (x, y, sample_weight) like Keras
                batch = batch[0]
            xs = self._input_list(batch, "predict")
            outs.append(self._run_batch([np.asarray(a) for a in xs]))
        if not outs:
            raise ValueError(f"{self.name}: predict got no batches")
        return self._pack_outputs([np.concatenate(parts) for parts in zip(*outs)])

    # ---- reading x ---------------------------------------------------------------------

    def _x_forms(self) -> str:
        """What ``x`` may be, for messages."""
        specs = self._input_specs()
        if len(specs) > 1:
            names = [name for name, _ in specs]
            return f"a list with one array per input {names} or a dict keyed by input name"
        shape = specs[0][1]
        if shape is None:
            return "one array (batch, ...)"
        text = f"one array of shape {_shape_text(shape)} (a batch)"
        if len(shape) >= 2:
            text += f" or a list of arrays of shape {_shape_text(shape[1:])} (a ragged batch)"
        return text

    def _read_x(self, x, what: str):
        """``(inputs, None)`` with one entry per model input, or ``(None, samples)`` for a
        ragged batch (the rule is in the module's help); refuses anything else naming ``x``."""
        specs = self._input_specs()
        if x is None or isinstance(x, (str, bytes)):
            got = "None" if x is None else type(x).__name__
            raise TypeError(f"{self.name}: {what}: x must be {self._x_forms()}, got {got}")
        if isinstance(x, dict):
            return self._input_dict(x), None
        if len(specs) > 1:
            names = [name for name, _ in specs]
            if not isinstance(x, (list, tuple)):
                raise ValueError(
                    f"{self.name}: {what}: the model has {len(specs)} inputs {names}: give a "
                    f"list in the order of model.inputs or a dict keyed by input name as x, "
                    f"got {type(x).__name__}"
                )
            if len(x) != len(specs):
                raise ValueError(
                    f"{self.name}: {what}: the model has {len(specs)} input(s) {names}, got "
                    f"a list of {len(x)} for x"
                )
            return list(x), None
        if not isinstance(x, (list, tuple)):
            return [x], None
        shape = specs[0][1]
        if x and shape is not None and all(hasattr(a, "shape") for a in x):
            ranks = [len(a.shape) for a in x]
            if len(x) == 1 and ranks[0] == len(shape):  # one entry per input, as Keras
                return [x[0]], None
            if len(shape) >= 2 and all(r == len(shape) - 1 for r in ranks):
                return None, list(x)
            raise ValueError(
                f"{self.name}: {what}: x is {_list_text(x)} for a model with one input of "
                f"shape {_shape_text(shape)}: x must be {self._x_forms()}"
            )
        # nested Python lists (or a model whose input is not known yet): one array, as Keras
        try:
            return [np.asarray(x)], None
        except ValueError:
            raise ValueError(
                f"{self.name}: {what}: x is a list that is not one regular array (its entries "
                f"differ in shape); x must be {self._x_forms()}"
                + (", each a NumPy array" if shape is not None and len(shape) >= 2 else "")
            ) from None

    def _input_list(self, x, what: str = "__call__") -> list:
        """``x`` as one entry per model input; a ragged batch is refused (only ``predict``
        and ``predict_on_batch`` take one)."""
        xs, samples = self._read_x(x, what)
        if samples is not None:
            shape = self._input_specs()[0][1]
            raise ValueError(
                f"{self.name}: {what}: x is {_list_text(samples)}, a ragged batch, which "
                f"predict and predict_on_batch take (one output per sample); here x must be "
                f"one array of shape {_shape_text(shape)}"
            )
        return xs

    def predict_on_batch(self, x):
        """The outputs for one batch ``x`` (one array, or a ragged batch: a list of outputs)."""
        xs, samples = self._read_x(x, "predict_on_batch")
        if samples is not None:
            return predict_ragged(self, samples, max(len(samples), 1))
        return self._pack_outputs(self._run_batch(xs))

    def stream_pool(self, capacity):
        """A pool of up to ``capacity`` independent streams over this model, stepped
        together (:class:`rnncore.models.stream_pool.StreamPool`: ``open``, ``step``,
        ``reset``, ``close``, ``get_state``, ``set_state``). Refuses a model with a layer
        that is not per-timestep and causal, naming it."""
        return StreamPool(self, capacity)

    def stateful_layers(self) -> list:
        """The layers that carry states between calls, those of nested models included."""
        out = []
        for layer in self.layers:
            if isinstance(layer, ModelBase):
                out += layer.stateful_layers()
            elif getattr(layer, "stateful", False):
                out.append(layer)
        return out

    # ---- low precision (rnncore.quantization) ---------------------------------------------

    def leaf_layers(self) -> list:
        """Every layer that computes, through nested models and wrappers (Bidirectional's
        two directions, TimeDistributed's layer)."""
        out = []

        def walk(layer):
            inner = layer.layers if isinstance(layer, ModelBase) else layer.inner_layers()
            if not inner:
                out.append(layer)
            for sub in inner:
                walk(sub)

        for layer in self.layers:
            walk(layer)
        return out

    def _quantizable(self) -> list:
        return [layer for layer in self.leaf_layers() if hasattr(layer, "set_quantized")]

    def quantize(self, mode: str) -> None:
        """Hold the weights of every layer with a low-precision kernel in ``mode``
        (``"bf16"`` or ``"int8"``, :mod:`rnncore.quantization`), Keras 3's method name:
        every recurrent layer (both directions of a Bidirectional) and Dense (also in
        TimeDistributed); other layers stay float32. The model must be built and float32.

        Quantizing again in the same mode changes nothing; another mode is refused, naming
        the layers (their float32 weights are not kept, as in Keras: quantize a float32 copy).

        Afterwards predict, calls and stateful streaming compute with the quantized
        weights, ``save`` writes them as they are (``load_model`` restores them exactly),
        ``get_weights`` returns their dequantized float32 values, and ``fit`` is refused.
        """
        check_mode(mode, f"{self.name}: quantize")
        if not self.built:
            raise ValueError(f"{self.name}: quantize needs a built model (build or call it first)")
        layers = self._quantizable()
        # refused before any layer changes: a model is never left half in one mode
        refusals = [r for r in (layer._requantize_refusal(mode) for layer in layers) if r]
        if refusals:
            more = f" (and {len(refusals) - 1} more layer(s))" if len(refusals) > 1 else ""
            raise ValueError(f"{self.name}: {refusals[0]}{more}")
        for layer in layers:
            layer.quantize(mode)

    @property
    def quantization_mode(self) -> str | None:
        """The mode of the model's quantized layers (``"bf16"``, ``"int8"``), or None."""
        modes = {layer.quantization_mode for layer in self._quantizable()} - {None}
        return modes.pop() if len(modes) == 1 else (None if not modes else "mixed")

    def quantized_variables(self) -> dict:
        """``{id(variable): Quantized}`` for every weight held in low precision."""
        out = {}
        for layer in self._quantizable():
            for name, q in (layer.quantized_weights() or {}).items():
                out[id(getattr(layer, name))] = q
        return out

    def restore_quantized(self, by_variable: dict) -> None:
        """Hold the quantized weights of a saved file, ``{id(variable): Quantized}`` (every
        quantized weight of a layer, or none)."""
        for layer in self._quantizable():
            names = layer._quantized_weights
            found = {n: by_variable[id(getattr(layer, n))] for n in names
                     if id(getattr(layer, n)) in by_variable}  # fmt: skip
            if found:
                modes = {q.mode for q in found.values()}
                layer.set_quantized(modes.pop() if len(modes) == 1 else "mixed", found)

    def reset_states(self) -> None:
        """Zero the carried states of every stateful layer."""
        for layer in self.stateful_layers():
            layer.reset_states()

    reset_state = reset_states

    # ---- weights --------------------------------------------------------------------------

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights, in Keras's order (``model.weights``)."""
        return [v.numpy() for v in self.weights]

    def count_params(self) -> int:
        return int(sum(v.value.size for v in self.weights))

    @property
    def variables(self):
        return self.weights

    @property
    def gradients(self) -> list:
        """dL/d(weight) of the last :meth:`backward` (the model used as a layer), aligned
        with :attr:`weights`."""
        grads = getattr(self, "_grads", None)
        return list(grads) if grads is not None else [None] * len(self.weights)

    # ---- files --------------------------------------------------------------------------

    def to_onnx(self, path=None, **kwargs):
        """Export to ONNX (a Sequential or a functional Model; see
        :func:`rnncore.formats.onnx.export.to_onnx`); onnxruntime runs it with the same outputs."""
        return to_onnx(self, path, **kwargs)

    def to_json(self, **kwargs) -> str:
        """The model's config as JSON (architecture only), as ``keras.Model.to_json``."""
        return json.dumps({"class_name": self._class_name, "config": self.get_config()}, **kwargs)

    def save(self, filepath, overwrite=True, **kwargs) -> None:
        """Save config and weights to one file, in the format the suffix names: ``.keras``
        (Keras 3), ``.h5`` (Keras's legacy HDF5), else rnncore's own (e.g.
        ``model.rnncore``); see :func:`rnncore.models.save_model`."""
        if kwargs:
            raise TypeError(f"save: unexpected keyword argument(s) {', '.join(map(repr, kwargs))}")
        write_model(self, filepath, overwrite=overwrite)

    def save_weights(self, filepath, overwrite=True) -> None:
        """The weights alone, as a NumPy ``.npz`` (arrays ``w0000``, ``w0001``, ...)."""
        if not overwrite and os.path.exists(filepath):
            raise FileExistsError(f"{filepath} exists and overwrite=False")
        with open(filepath, "wb") as f:
            np.savez(f, **{f"w{k:04d}": w for k, w in enumerate(self.get_weights())})

    def load_weights(self, filepath) -> None:
        """Weights written by :meth:`save_weights` (read with ``allow_pickle=False``)."""
        try:
            zf = zipfile.ZipFile(filepath)
        except ARCHIVE_ERRORS as e:
            raise ModelFileError(f"{filepath}: cannot read the weights file ({e})") from None
        with zf:
            names = sorted(zf.namelist())
            bad = [n for n in names if not n.endswith(".npy")]
            if bad:
                raise ModelFileError(f"{filepath}: not a weights file: member {bad[0]!r}")
            weights = [load_npy(read_member(zf, n, filepath), f"{filepath}: {n}") for n in names]
        self.set_weights(weights)

    # ---- pickling -----------------------------------------------------------------------

    #: dropped by pickling: training state (compile again to train further) and the calls
    #: of the model as a layer of another (the outer model's graph records them)
    _transient = Trainer._training_state + (
        "_train_cache",
        "_grads",
        "_inbound_nodes",
    )

    #: the model's plan (rnncore.models.plan): STALE until the first call compiles it
    _plan = STALE

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        # the plan holds the process's core chains and generation numbers: never copied or
        # pickled; the copy compiles its own on its first call (the class's STALE)
        state.pop("_plan", None)
        return state

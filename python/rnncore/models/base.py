"""What :class:`rnncore.Sequential` and :class:`rnncore.Model` share: ``predict`` in batches,
``predict_on_batch``, the weights as lists, ``save`` / ``save_weights`` / ``load_weights`` /
``to_json``, ``reset_states`` and pickling without training state.

A model provides ``_input_list(x)`` (its inputs as a list of array-likes, one per model
input), ``_run_batch(xs)`` (the outputs of one batch as a flat list of arrays) and
``_pack_outputs(list)`` (the outputs as the model returns them: one array, a tuple or list,
or a dict).
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

        A Sequential also takes a ragged batch: a list of NumPy arrays, each one sample with
        one axis fewer than the model's input (``(length, input_dim)`` for a 3-D input), of
        any lengths; it returns a list of outputs, each as if predicted alone (see
        :mod:`rnncore.models.ragged`). A list of nested Python lists is one array, as before.
        """
        if callbacks:
            raise UnsupportedArgumentError("predict: callbacks are not supported by rnncore")
        if batch_size is None:
            batch_size = 32
        if int(batch_size) != batch_size or batch_size <= 0:
            raise ValueError(f"predict: batch_size must be a positive integer, got {batch_size!r}")
        batch_size = int(batch_size)
        samples = self._ragged_samples(x)
        if samples is not None:
            if steps is not None:
                raise ValueError(f"{self.name}: predict on a list of samples takes no steps")
            return predict_ragged(self, samples, batch_size)
        if not hasattr(x, "shape") and not isinstance(x, (list, tuple, dict)):
            return self._predict_batches(x, steps)
        xs = self._input_list(x)
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
            outs.append(self._run_batch([np.asarray(a) for a in self._input_list(batch)]))
        if not outs:
            raise ValueError(f"{self.name}: predict got no batches")
        return self._pack_outputs([np.concatenate(parts) for parts in zip(*outs)])

    def _ragged_samples(self, x):
        """The samples of a ragged batch given to ``predict``, or None (a Sequential's)."""
        return None

    def predict_on_batch(self, x):
        return self._pack_outputs(self._run_batch(self._input_list(x)))

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

        Afterwards predict, calls and stateful streaming compute with the quantized
        weights, ``save`` writes them as they are (``load_model`` restores them exactly),
        ``get_weights`` returns their dequantized float32 values, and ``fit`` is refused.
        """
        check_mode(mode, f"{self.name}: quantize")
        if not self.built:
            raise ValueError(f"{self.name}: quantize needs a built model (build or call it first)")
        for layer in self._quantizable():
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
        "_chain_cache",
    )

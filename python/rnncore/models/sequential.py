"""The Keras ``Sequential`` model: a linear stack of layers."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from ..errors import ModelFileError, UnsupportedArgumentError
from ..formats.archive import ARCHIVE_ERRORS, load_npy, read_member
from ..formats.onnx.export import to_onnx
from ..formats.saved_model import write_archive
from ..layers import InputLayer, InputTensor, Layer, deserialize_layer, serialize_layer
from ..layers._base import (
    DropsTransientOnPickle,
    build_chain,
    require_default,
    shape_tuple,
    unique_name,
)
from ..training import Trainer
from .summary import format_shape, summary_table

__all__ = ["Sequential"]


def _strip_masks(outputs):
    """Plain ndarrays (no attached Keras mask), as ``predict`` returns."""
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(np.asarray(o) for o in outputs)
    return np.asarray(outputs)


class Sequential(DropsTransientOnPickle, Trainer):
    """A linear stack of layers, as ``keras.Sequential``.

    ``Sequential([Input(shape=(timesteps, features)), LSTM(32), Dense(1)])``, or layers
    added one by one with ``add``. The model builds when its input shape is known (an
    ``Input`` first, or ``input_shape=`` on the first layer), else on its first call.
    ``model(x)`` runs the layers (masks propagate as in Keras); ``predict(x, batch_size)``
    runs in batches and returns plain NumPy arrays.
    """

    def __init__(self, layers=None, trainable=True, name=None):
        self.name = name if name is not None else unique_name("sequential")
        self.trainable = trainable
        self._input_layer: InputLayer | None = None
        self._layers: list[Layer] = []
        self.built = False
        self._build_input_shape = None
        self._output_shapes: list = []
        self._compile_config = None
        self.stop_training = False
        for layer in layers or []:
            self.add(layer, rebuild=False)
        self._maybe_build()

    # ---- structure --------------------------------------------------------------------

    def add(self, layer, rebuild=True) -> None:
        """Append a layer (an ``Input``/``InputLayer`` only as the first entry)."""
        if isinstance(layer, InputTensor):
            layer = layer._input_layer
        if isinstance(layer, InputLayer):
            if self._layers or self._input_layer is not None:
                raise ValueError(f"{self.name}: an Input must be the first entry of the model")
            self._input_layer = layer
        elif isinstance(layer, Layer):
            if any(existing.name == layer.name for existing in self._layers):
                raise ValueError(
                    f"{self.name}: all layers must have unique names; "
                    f"{layer.name!r} is already in the model"
                )
            self._layers.append(layer)
        elif isinstance(layer, Sequential):
            raise NotImplementedError(
                f"{self.name}: nesting a Sequential model inside "
                f"another is not supported by rnncore"
            )
        else:
            raise TypeError(f"{self.name}: can only add rnncore layers, got {layer!r}")
        if rebuild:
            self._maybe_build()

    def pop(self) -> Layer:
        if not self._layers:
            raise IndexError(f"{self.name}: there are no layers to remove")
        layer = self._layers.pop()
        self.built = False
        self._maybe_build()
        return layer

    @property
    def layers(self) -> list[Layer]:
        return list(self._layers)

    def get_layer(self, name=None, index=None) -> Layer:
        if index is not None:
            return self._layers[index]
        for layer in self._layers:
            if layer.name == name:
                return layer
        raise ValueError(f"{self.name}: no layer named {name!r}")

    def _declared_input_shape(self):
        if self._input_layer is not None:
            return self._input_layer.batch_shape
        if self._layers and self._layers[0]._input_shape_arg is not None:
            return self._layers[0]._input_shape_arg
        return None

    def _maybe_build(self) -> None:
        shape = self._declared_input_shape()
        if shape is not None and self._layers:
            self.build(shape)

    def build(self, input_shape=None) -> None:
        """Build every layer for a batch input shape (``None`` for an unknown size)."""
        if input_shape is None:
            input_shape = self._declared_input_shape()
            if input_shape is None:
                raise ValueError(f"{self.name}: build() needs an input shape")
        self._build_input_shape = shape_tuple(input_shape, f"{self.name}: build")
        self._output_shapes = build_chain(self._layers, self._build_input_shape, self.name)
        self.built = True

    # ---- calling -----------------------------------------------------------------------

    def __call__(self, inputs, training=None, mask=None):
        """Run the layers on ``inputs``; masks propagate as in Keras."""
        if not self._layers:
            raise ValueError(f"{self.name}: the model has no layers")
        if not self.built:
            self.build(np.shape(inputs))
        x = inputs
        if mask is None:
            mask = getattr(inputs, "_keras_mask", None)
        previous = None
        for layer in self._layers:
            if type(x) is tuple:
                raise ValueError(
                    f"{self.name}: layer {previous.name!r} returned several outputs, which "
                    f"only the last layer may"
                )
            x = layer(x, mask=mask, training=training)
            mask = getattr(x, "_keras_mask", None)
            previous = layer
        return x

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Outputs for ``x`` computed ``batch_size`` samples at a time (32 by default).

        ``x`` may be any array-like indexable by sample ranges (a NumPy array, an
        ``np.memmap`` or an HDF5 dataset larger than memory: only one batch is read at a
        time), or an iterable of batches (a generator; ``steps`` limits how many are
        drawn). The result is preallocated once, so the only full-size array is the output.
        ``verbose`` only affects progress printing, which rnncore does not do.
        """
        if callbacks:
            raise UnsupportedArgumentError("predict: callbacks are not supported by rnncore")
        if batch_size is None:
            batch_size = 32
        if int(batch_size) != batch_size or batch_size <= 0:
            raise ValueError(f"predict: batch_size must be a positive integer, got {batch_size!r}")
        batch_size = int(batch_size)
        if not hasattr(x, "shape") and not isinstance(x, (list, tuple)):
            return self._predict_batches(x, steps)
        if isinstance(x, (list, tuple)):
            x = np.asarray(x)
        n = int(x.shape[0])
        if steps is not None:
            n = min(n, int(steps) * batch_size)
        out = None
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            y = _strip_masks(self(np.asarray(x[start:stop]), training=False))
            if out is None:
                ys = y if isinstance(y, tuple) else (y,)
                out = tuple(np.empty((n,) + a.shape[1:], a.dtype) for a in ys)
            for o, a in zip(out, y if isinstance(y, tuple) else (y,)):
                o[start:stop] = a
        if out is None:
            raise ValueError(f"{self.name}: predict got no samples")
        return out if len(out) > 1 else out[0]

    def _predict_batches(self, batches, steps):
        outs = []
        for k, batch in enumerate(batches):
            if steps is not None and k >= steps:
                break
            if isinstance(batch, tuple):  # (x, y) or (x, y, sample_weight) like Keras
                batch = batch[0]
            outs.append(_strip_masks(self(batch, training=False)))
        if not outs:
            raise ValueError(f"{self.name}: predict got no batches")
        if isinstance(outs[0], tuple):
            return tuple(np.concatenate(parts) for parts in zip(*outs))
        return np.concatenate(outs)

    def predict_on_batch(self, x):
        return _strip_masks(self(x, training=False))

    def reset_states(self) -> None:
        """Zero the carried states of every stateful layer."""
        for layer in self._layers:
            if getattr(layer, "stateful", False):
                layer.reset_states()

    reset_state = reset_states

    # ---- weights --------------------------------------------------------------------------

    @property
    def weights(self):
        return [v for layer in self._layers for v in layer.weights]

    @property
    def trainable_weights(self):
        if not self.trainable:
            return []
        return [v for layer in self._layers for v in layer.trainable_weights]

    @property
    def non_trainable_weights(self):
        if not self.trainable:
            return self.weights
        return [v for layer in self._layers for v in layer.non_trainable_weights]

    def get_weights(self) -> list[np.ndarray]:
        return [w for layer in self._layers for w in layer.get_weights()]

    def set_weights(self, weights) -> None:
        """Set all weights (Keras's order: layer by layer); nothing changes on an error."""
        if not self.built:
            raise ValueError(
                f"{self.name}: the model is not built yet: call it once, call "
                f"build(input_shape), or start it with an Input"
            )
        weights = list(weights)
        counts = [len(layer.weights) for layer in self._layers]
        if len(weights) != sum(counts):
            raise ValueError(
                f"{self.name}: the model has {sum(counts)} weights, got a list of {len(weights)}"
            )
        parts, start = [], 0
        for layer, n in zip(self._layers, counts):
            part = weights[start : start + n]
            layer._check_weights(part)
            parts.append(part)
            start += n
        for layer, part in zip(self._layers, parts):
            layer.set_weights(part)

    def count_params(self) -> int:
        return int(sum(v.value.size for v in self.weights))

    @property
    def input_shape(self):
        return self._build_input_shape

    @property
    def output_shape(self):
        if not self.built:
            raise ValueError(f"{self.name}: the model is not built yet")
        return self._output_shapes[-1]

    @property
    def dtype(self):
        return self._layers[0].dtype if self._layers else "float32"

    # ---- summary --------------------------------------------------------------------------

    def summary(self, line_length=None, positions=None, print_fn=None, expand_nested=False,
                show_trainable=False, layer_range=None) -> None:  # fmt: skip
        """Print Keras's table: each layer's name, type, output shape and parameter count."""
        require_default(
            "summary",
            expand_nested=(expand_nested, False),
            show_trainable=(show_trainable, False),
            layer_range=(layer_range, None),
        )
        rows = []
        for k, layer in enumerate(self._layers):
            if layer.built and self.built:
                shape = format_shape(self._output_shapes[k])
                params = f"{layer.count_params():,}"
            else:
                shape, params = "?", "0 (unbuilt)"
            rows.append((f"{layer.name} ({type(layer).__name__})", shape, params))
        text = summary_table(
            f'Model: "{self.name}"',
            rows,
            weights=(self.weights, self.trainable_weights, self.non_trainable_weights),
            line_length=line_length,
            positions=positions,
        )
        (print_fn or print)(text)

    # ---- config and files -----------------------------------------------------------------

    def get_config(self) -> dict:
        layers = [serialize_layer(layer) for layer in self._layers]
        if self._input_layer is not None:
            layers.insert(0, serialize_layer(self._input_layer))
        return {"name": self.name, "trainable": self.trainable, "layers": layers}

    @classmethod
    def from_config(cls, config: dict):
        layers = [deserialize_layer(spec) for spec in config.get("layers", [])]
        return cls(layers, trainable=config.get("trainable", True), name=config.get("name"))

    def to_onnx(self, path=None, **kwargs):
        """Export to ONNX (see :func:`rnncore.formats.onnx.export.to_onnx`); onnxruntime runs it
        with the same outputs."""
        return to_onnx(self, path, **kwargs)

    def to_json(self, **kwargs) -> str:
        """The model's config as JSON (architecture only), as ``keras.Model.to_json``."""
        return json.dumps({"class_name": "Sequential", "config": self.get_config()}, **kwargs)

    def save(self, filepath, overwrite=True, **kwargs) -> None:
        """Save config and weights to one file (format: see :mod:`rnncore.models`)."""
        if kwargs:
            raise TypeError(f"save: unexpected keyword argument(s) {', '.join(map(repr, kwargs))}")
        write_archive(self, filepath, overwrite=overwrite)

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

    #: training state dropped by pickling (a pickled model holds its layers' config and
    #: weights only; compile it again to train it further)
    _transient = ("optimizer", "_loss", "_metrics", "history", "_compile_config")

    def __repr__(self):
        return f"<Sequential name={self.name}, built={self.built}, layers={len(self._layers)}>"

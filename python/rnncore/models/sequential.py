"""The Keras ``Sequential`` model: a linear stack of layers."""

from __future__ import annotations

import numpy as np

from ..layers import InputLayer, InputTensor, Layer, _variable, deserialize_layer, serialize_layer
from ..layers._base import attach_mask, build_chain, require_default, shape_tuple, unique_name
from ..layers._symbolic import is_symbolic, symbolic_call
from . import plan
from .base import ModelBase, strip_masks, unique_weights
from .summary import format_shape, layer_label, summary_table

__all__ = ["Sequential"]


class Sequential(ModelBase):
    """A linear stack of layers, as ``keras.Sequential``.

    ``Sequential([Input(shape=(timesteps, features)), LSTM(32), Dense(1)])``, or layers
    added one by one with ``add``. The model builds when its input shape is known (an
    ``Input`` first, or ``input_shape=`` on the first layer), else on its first call.
    ``model(x)`` runs the layers (masks propagate as in Keras); ``predict(x, batch_size)``
    runs in batches and returns plain NumPy arrays. Called on symbolic tensors it is one
    layer of a functional :class:`rnncore.Model`.
    """

    _class_name = "Sequential"

    def __init__(self, layers=None, trainable=True, name=None):
        self.name = name if name is not None else unique_name("sequential")
        self.trainable = trainable
        self._input_layer: InputLayer | None = None
        self._layers: list[Layer] = []
        self.built = False
        self._build_input_shape = None
        self._output_shapes: list = []
        self._compile_config = None
        self._inbound_nodes = []
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
        self._plan = plan.STALE  # compiled again over the new list
        if rebuild:
            self._maybe_build()

    def pop(self) -> Layer:
        if not self._layers:
            raise IndexError(f"{self.name}: there are no layers to remove")
        layer = self._layers.pop()
        self._plan = plan.STALE
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
        if type(inputs) is not np.ndarray:  # an exact ndarray carries no mask and is no symbol
            if is_symbolic(inputs, mask):
                return symbolic_call(self, inputs, {"mask": mask, "training": training})
            if not isinstance(inputs, np.ndarray):  # a list, None, ...: read as predict reads x
                inputs = self._input_list(inputs)[0]
            if mask is None:
                mask = getattr(inputs, "_keras_mask", None)
        y, mask = self._call(inputs, mask, training)
        return y if mask is None else attach_mask(y, mask)

    def _call(self, inputs, mask, training):
        """``(outputs, output mask)`` of the layers on ``inputs`` (a layer's ``_call``): the
        model's plan (rnncore.models.plan), looked up by one comparison while valid."""
        compiled = self._plan
        if compiled.clock != _variable.latest:
            if not self._layers:
                raise ValueError(f"{self.name}: the model has no layers")
            if not self.built:
                self.build(np.shape(inputs))
            compiled = plan.current(self)
        values, masks = compiled.run((inputs,), (mask,), training)
        return values[-1], masks[-1]  # the last slot: the last layer's output

    def _plan_layers(self) -> list:
        return self._layers

    def _compile_plan(self):
        return plan.linear(self._layers, self)

    # ---- what predict, the trainer and a functional model read ----------------------------

    def _input_specs(self) -> list:
        # an unbuilt model's input shape is not known yet: x is then read as one array
        return [("input", tuple(self.input_shape) if self.built else None)]

    def _input_dict(self, x) -> list:
        raise TypeError(f"{self.name}: a Sequential model takes one input array, got a dict")

    def _run_batch(self, xs) -> list:
        y = strip_masks(self(xs[0], training=False))
        return list(y) if isinstance(y, tuple) else [y]

    def _pack_outputs(self, outputs: list):
        return tuple(outputs) if len(outputs) > 1 else outputs[0]

    def _output_names_list(self) -> list:
        return [self._layers[-1].name] if self._layers else ["output"]

    def _training_inputs(self, x, what) -> list:
        if not self._layers:
            raise ValueError(f"{self.name}.{what}: the model has no layers")
        x = self._data_array(x, "x", what)
        if x.dtype.kind not in "biu":  # integers stay exact: token ids for an Embedding
            x = x.astype(self.dtype, copy=False)
        return [x]

    def _output_shapes_for(self, xs) -> list:
        if not self.built:
            self.build((None,) + xs[0].shape[1:])
        shape = self.compute_output_shape((None,) + xs[0].shape[1:])
        if isinstance(shape, (tuple, list)) and shape and isinstance(shape[0], (tuple, list)):
            raise NotImplementedError(
                f"{self.name}: the model has several outputs (return_state=True or "
                f"Bidirectional merge_mode=None last); fit/evaluate need one output"
            )
        return [shape]

    def _forward_outputs(self, xs, rng):
        y, mask = self._forward_train_masked(xs[0], rng)
        return [y], [mask]

    def _outputs_on_batch(self, xs):
        y, mask = self._call(xs[0], None, False)
        return [y], [mask]

    def _backward_outputs(self, d_outputs) -> None:
        self._backward(d_outputs[0])

    def _trainable_gradients(self):
        trainable = {id(v) for v in self.trainable_weights}
        return [
            (g, v)
            for layer in self._layers
            for v, g in zip(layer.weights, layer.gradients)
            if g is not None and id(v) in trainable
        ]

    def _release_training(self) -> None:
        for layer in self._layers:
            layer._train_cache = None

    def _forward_train_masked(self, x, rng):
        """The training forward through the layers: ``(output, output mask)``."""
        mask = None
        for layer in self._layers:
            if type(x) is tuple:
                raise NotImplementedError(
                    f"{self.name}: a layer returned several outputs inside the model"
                )
            x, mask = layer.forward_train(x, mask, rng)
            if isinstance(mask, list):
                mask = mask[0]
        return x, mask

    def _forward_train(self, x, rng):
        return self._forward_train_masked(x, rng)[0]

    def _backward(self, d_out):
        for layer in reversed(self._layers):
            d_out = layer.backward(d_out)
        return d_out

    # ---- as a layer of a functional model -------------------------------------------------

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._layers:
            shape = layer.compute_output_shape(shape)
        return shape

    def compute_mask(self, inputs, mask=None):
        return None

    def _symbolic_shapes(self, input_shape, kwargs):
        if not self.built:
            self.build(input_shape)
        return self.compute_output_shape(input_shape)

    def forward_train(self, inputs, mask=None, rng=None):
        """The layers' training forward, keeping each layer's cache in the model's own (a
        functional model may call it several times a step)."""
        caches = []
        try:
            for layer in self._layers:
                inputs, mask = layer.forward_train(inputs, mask, rng)
                if isinstance(mask, list):
                    mask = mask[0]
                caches.append(layer._train_cache)
                layer._train_cache = None
        finally:
            self._train_cache = caches
        return inputs, mask

    def backward(self, dy):
        caches = self._train_cache
        grads = []
        for layer, cache in zip(reversed(self._layers), reversed(caches)):
            layer._train_cache = cache
            try:
                dy = layer.backward(dy)
            finally:
                layer._train_cache = None
            grads[:0] = layer.gradients
        self._grads = grads
        return dy

    # ---- weights --------------------------------------------------------------------------

    @property
    def weights(self):
        return unique_weights(self._layers)

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
            rows.append((layer_label(layer, type(layer).__name__), shape, params))
        text = summary_table(
            f'Model: "{self.name}"',
            rows,
            weights=(self.weights, self.trainable_weights, self.non_trainable_weights),
            line_length=line_length,
            positions=positions,
            quantized=self.quantized_variables(),
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

    def __repr__(self):
        return f"<Sequential name={self.name}, built={self.built}, layers={len(self._layers)}>"

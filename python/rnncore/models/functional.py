"""Keras's functional API: :class:`Model` (``rnncore.Model(inputs, outputs)``).

::

    enc_in = rnncore.Input((None, 8), name="encoder")
    dec_in = rnncore.Input((None, 8), name="decoder")
    _, h, c = LSTM(32, return_state=True)(enc_in)
    seq = LSTM(32, return_sequences=True)(dec_in, initial_state=[h, c])
    model = rnncore.Model([enc_in, dec_in], Dense(8)(seq))

The inputs are ``rnncore.Input`` tensors (one, a list, or a dict keyed by name), the outputs
symbolic tensors computed from them (one, a list or tuple, or a dict). Layers may be shared
(one weight set, called several times), and a model (functional or Sequential) may be
called as a layer of another. ``model.layers``, ``model.weights`` and ``get_weights()``
follow Keras's order (:mod:`rnncore.models.graph`), so ``set_weights(keras_model.get_weights())``
reproduces a Keras model built the same way.

Calling: ``model(x)`` / ``predict(x)`` take one array, a list in the order of
``model.inputs`` or a dict keyed by input name, and return one array for one output, else
the outputs as the model declared them (list, tuple or dict). Masks travel through the
graph as in Keras at run time. The config (``get_config``) is Keras 3's functional config
(:mod:`rnncore.models.functional_config`); ``save``/``rnncore.load_model`` and pickling
keep it with the weights.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..layers import InputLayer, Layer, _variable, deserialize_layer, serialize_layer
from ..layers._base import as_float_array, attach_mask, require_default, unique_name
from ..layers._symbolic import (
    KerasTensor,
    check_tensor,
    flatten,
    is_symbolic,
    symbolic_call,
    tensor_label,
)
from . import functional_config, plan
from .base import ModelBase, unique_weights
from .graph import Graph
from .sequential import Sequential
from .summary import functional_summary

__all__ = ["Model", "Functional", "deserialize"]


class Model(ModelBase):
    """A model defined by the graph of layer calls from ``inputs`` to ``outputs`` (Keras's
    ``keras.Model(inputs, outputs, name=None)``, which is a ``Functional``).

    Parameters
    ----------
    inputs : KerasTensor, list or dict of them
        ``rnncore.Input`` tensors.
    outputs : KerasTensor, list, tuple or dict of them
        Tensors computed from the inputs by calling layers.
    name : str, optional
        The model's name (``"functional"``, ``"functional_1"``, ... by default).
    trainable : bool, default True
        Whether ``fit`` updates the model's weights.
    """

    _class_name = "Functional"

    def __new__(cls, *args, **kwargs):
        return object.__new__(Functional if cls is Model else cls)

    def __init__(self, inputs=None, outputs=None, name=None, trainable=True, **kwargs):
        if inputs is None or outputs is None:
            raise NotImplementedError(
                "rnncore.Model: subclassed models (Model() without inputs and outputs) are not "
                "supported; build Model(inputs, outputs) from rnncore.Input tensors, or a "
                "Sequential"
            )
        if kwargs:
            raise TypeError(f"Model: unexpected keyword argument(s) {', '.join(map(repr, kwargs))}")
        self.name = name if name is not None else unique_name("functional")
        self.trainable = True if trainable is None else bool(trainable)
        owner = f"model {self.name!r}"
        self._inputs_struct, self._outputs_struct = inputs, outputs
        self._inputs, self._outputs = flatten(inputs), flatten(outputs)
        _check_inputs(inputs, self._inputs, owner)
        for t in self._outputs:
            check_tensor(t, "outputs", owner)
        if not self._outputs:
            raise ValueError(f"{owner}: outputs must not be empty")
        self._graph = Graph(self._inputs, self._outputs, owner)
        # one output, returned as one array (not a dict or tuple of one): _pack_outputs
        self._one_output = len(self._outputs) == 1 and not isinstance(outputs, (dict, tuple))
        # each input's dtype, rank and fixed axes: what a call's input is checked against
        self._input_checks = [
            (
                np.dtype(t.dtype),
                len(t.shape),
                tuple((k, d) for k, d in enumerate(t.shape) if d is not None),
            )  # fmt: skip
            for t in self._inputs
        ]
        self.output_names = [t._keras_history.operation.name for t in self._outputs]
        self.built = True
        self._inbound_nodes = []
        self._compile_config = None
        self.stop_training = False

    # ---- structure ----------------------------------------------------------------------

    @property
    def inputs(self) -> list:
        """The input tensors, a flat list (a dict of inputs: by sorted key, as Keras)."""
        return list(self._inputs)

    @property
    def outputs(self) -> list:
        return list(self._outputs)

    @property
    def input(self):
        """The inputs as given to the constructor."""
        return self._inputs_struct

    @property
    def output(self):
        return self._outputs_struct

    @property
    def input_names(self) -> list:
        return [t.name for t in self._inputs]

    @property
    def input_shape(self):
        shapes = [t.shape for t in self._inputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_shape(self):
        shapes = [t.shape for t in self._outputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def layers(self) -> list:
        """The layers (input layers and nested models included) in Keras's order."""
        return list(self._graph.operations)

    def get_layer(self, name=None, index=None):
        if index is not None:
            return self._graph.operations[index]
        for layer in self._graph.operations:
            if layer.name == name:
                return layer
        raise ValueError(f"{self.name}: no layer named {name!r}")

    @property
    def dtype(self) -> str:
        return self._outputs[0].dtype

    def _symbolic_dtypes(self, n):
        return [t.dtype for t in self._outputs]

    # ---- weights --------------------------------------------------------------------------

    @property
    def weights(self):
        return unique_weights(self._graph.operations)

    @property
    def trainable_weights(self):
        if not self.trainable:
            return []
        return unique_weights(self._graph.operations, "trainable_weights")

    @property
    def non_trainable_weights(self):
        if not self.trainable:
            return self.weights
        trainable = {id(v) for v in self.trainable_weights}
        return [v for v in self.weights if id(v) not in trainable]

    def set_weights(self, weights) -> None:
        """Set all weights from arrays in Keras's order (``model.weights``); every array is
        checked before any weight changes."""
        weights, own = list(weights), self.weights
        if len(weights) != len(own):
            raise ValueError(
                f"{self.name}: the model has {len(own)} weights, got a list of {len(weights)}"
            )
        arrays = []
        for v, w in zip(own, weights):
            a = as_float_array(w, v.value.dtype, f"{self.name}: weight {v.path!r}")
            if a.shape != v.shape:
                raise ValueError(
                    f"{self.name}: weight {v.path!r} expects shape {v.shape}, got {a.shape}"
                )
            arrays.append(a)
        for v, a in zip(own, arrays):
            v.assign(a)

    # ---- inputs and outputs -------------------------------------------------------------

    def _input_specs(self) -> list:
        return [(k, tuple(t.shape)) for k, t in zip(self._input_keys(), self._inputs)]

    def _input_dict(self, x) -> list:
        """A dict of inputs keyed by input name (keys of a dict of inputs) as a list."""
        names = self._input_keys()
        missing = [k for k in names if k not in x]
        if missing:
            raise ValueError(
                f"{self.name}: no data for input(s) {missing}; the model's inputs are {names}"
            )
        return [x[k] for k in names]

    def _input_keys(self) -> list:
        if isinstance(self._inputs_struct, dict):
            return sorted(self._inputs_struct)
        return [t.name for t in self._inputs]

    def _prepare(self, xs) -> list:
        """Each input as an array of its Input's dtype and shape (Keras squeezes or expands
        a trailing axis of size 1; any other difference is refused by name)."""
        out = []
        for t, (dtype, ndim, fixed), a in zip(self._inputs, self._input_checks, xs):
            if type(a) is np.ndarray and a.dtype == dtype and a.ndim == ndim:
                shape = a.shape
                for axis, size in fixed:
                    if shape[axis] != size:
                        break
                else:  # what the checks below give back as it is (the usual call): one pass
                    out.append(a)
                    continue
            ref = t.shape
            what = f"{self.name}: input {t.name!r}"
            if dtype.kind == "f" or not isinstance(a, np.ndarray) or a.dtype != dtype:
                a = _as_input_array(a, dtype, what)
            if a.ndim == len(ref) + 1 and a.shape[-1] == 1:
                a = a[..., 0]
            elif a.ndim == len(ref) - 1 and ref[-1] == 1:
                a = a[..., None]
            if a.ndim != len(ref) or any(r not in (None, d) for r, d in zip(ref, a.shape)):
                raise ValueError(f"{what}: expected shape {ref}, got {a.shape}")
            out.append(a)
        return out

    def _input_masks(self, xs, mask) -> list:
        if mask is None:
            return [getattr(a, "_keras_mask", None) for a in xs]
        if isinstance(mask, dict):
            return [mask.get(k) for k in self._input_keys()]
        masks = list(mask) if isinstance(mask, (list, tuple)) else [mask]
        if len(masks) != len(xs):
            raise ValueError(f"{self.name}: mask must have one entry per input ({len(xs)})")
        return masks

    def _pack_outputs(self, values: list):
        struct = self._outputs_struct
        if isinstance(struct, dict):
            return dict(zip(sorted(struct), values))
        if isinstance(struct, tuple):
            return tuple(values)
        return values[0] if len(values) == 1 else list(values)

    def _run_batch(self, xs) -> list:
        return self._run(self._prepare(xs), [None] * len(xs), False)[0]

    # ---- calling ------------------------------------------------------------------------

    def __call__(self, inputs, training=None, mask=None):
        """Run the graph on arrays (masks as Keras), or record a call on symbolic tensors."""
        if type(inputs) is np.ndarray and len(self._inputs) == 1 and mask is None:
            # what _input_list and _input_masks read it as: an exact ndarray is no symbol and
            # carries no mask
            xs, masks = [inputs], [None]
        elif is_symbolic(inputs, mask):
            return symbolic_call(self, inputs, {"mask": mask, "training": training})
        else:
            xs = self._input_list(inputs)
            masks = self._input_masks(xs, mask)
        outs, out_masks = self._run(self._prepare(xs), masks, training)
        if self._one_output:  # what _pack_outputs gives for it
            return outs[0] if out_masks[0] is None else attach_mask(outs[0], out_masks[0])
        return self._pack_outputs([o if m is None else attach_mask(o, m)
                                   for o, m in zip(outs, out_masks)])  # fmt: skip

    def _call(self, inputs, mask, training):
        """``(outputs, masks)`` (one, or lists): the model as a layer of another graph."""
        xs = self._input_list(inputs)
        outs, masks = self._run(self._prepare(xs), self._input_masks(xs, mask), training)
        return (outs[0], masks[0]) if len(outs) == 1 else (outs, masks)

    def _run(self, xs: list, masks: list, training):
        """``(outputs, output masks)`` of the model's plan (rnncore.models.plan), looked up
        by one comparison while valid, on prepared inputs."""
        compiled = self._plan
        if compiled.clock != _variable.latest:
            compiled = plan.current(self)
        values, value_masks = compiled.run(xs, masks, training)
        outputs = compiled.outputs
        return [values[s] for s in outputs], [value_masks[s] for s in outputs]

    def _plan_layers(self) -> list:
        # nested models are calls of the plan that run their own plans
        return [op for op in self._graph.operations if isinstance(op, Layer)]

    def _compile_plan(self):
        return plan.graph(self._graph)

    def _shape_list(self, input_shape) -> list:
        """Input shapes (one, a list, or a dict keyed by input name) as a list."""
        if isinstance(input_shape, dict):
            return [input_shape[k] for k in self._input_keys()]
        return [input_shape] if len(self._inputs) == 1 else list(input_shape)

    def _symbolic_shapes(self, input_shape, kwargs):
        shapes = self._shape_list(input_shape)
        for t, shape in zip(self._inputs, shapes):
            shape = tuple(shape)
            if len(shape) != len(t.shape) or any(
                None not in (a, b) and a != b for a, b in zip(shape, t.shape)
            ):
                raise ValueError(
                    f"model {self.name!r}: input {t.name!r} expects shape {t.shape}, got {shape}"
                )
        return self.compute_output_shape(input_shape)

    def compute_output_shape(self, input_shape):
        out = self._graph.output_shapes(self._shape_list(input_shape))
        return out[0] if len(out) == 1 else out

    def compute_mask(self, inputs, mask=None):
        return None

    # ---- training (also as a layer of another model) --------------------------------------

    def forward_train(self, inputs, mask=None, rng=None):
        xs = self._input_list(inputs)
        outs, masks, records = self._graph.forward_train(
            self._prepare(xs), self._input_masks(xs, mask), rng
        )
        self._train_cache = records
        return (outs[0], masks[0]) if len(outs) == 1 else (outs, masks)

    def backward(self, dy):
        d_outs = [dy] if len(self._outputs) == 1 else list(dy)
        d_inputs, grads = self._graph.backward(self._train_cache, d_outs)
        self._grads = [grads[id(v)][1] if id(v) in grads else None for v in self.weights]
        return d_inputs[0] if len(d_inputs) == 1 else d_inputs

    def _output_names_list(self) -> list:
        return list(self.output_names)

    def _training_inputs(self, x, what) -> list:
        names = self._input_keys()
        xs = self._input_list(x, what)
        label = "x" if len(xs) == 1 else "x[{!r}]"
        return self._prepare(
            [self._data_array(a, label.format(n), what) for a, n in zip(xs, names)]
        )

    def _output_shapes_for(self, xs) -> list:
        return self._graph.output_shapes([(None,) + a.shape[1:] for a in xs])

    def _forward_outputs(self, xs, rng):
        outs, masks, self._records = self._graph.forward_train(xs, [None] * len(xs), rng)
        return outs, masks

    def _outputs_on_batch(self, xs):
        return self._run(xs, [None] * len(xs), False)

    def _backward_outputs(self, d_outputs) -> None:
        self._weight_grads = self._graph.backward(self._records, d_outputs)[1]

    def _trainable_gradients(self):
        grads = self._weight_grads
        return [(grads[id(v)][1], v) for v in self.trainable_weights if id(v) in grads]

    def _release_training(self) -> None:
        self._records = self._weight_grads = None

    # ---- summary, config, pickling --------------------------------------------------------

    def summary(self, line_length=None, positions=None, print_fn=None, expand_nested=False,
                show_trainable=False, layer_range=None) -> None:  # fmt: skip
        """Print Keras 3's table: each layer's name, type, output shape, parameter count
        and (for a graph that is not a chain) the calls it is connected to."""
        require_default("summary", expand_nested=(expand_nested, False),
                        show_trainable=(show_trainable, False),
                        layer_range=(layer_range, None))  # fmt: skip
        (print_fn or print)(functional_summary(self, line_length, positions))

    def get_config(self) -> dict:
        """Keras 3's functional config (see :mod:`rnncore.models.functional_config`)."""
        return functional_config.get_config(self, serialize)

    @classmethod
    def from_config(cls, config: dict, custom_objects=None):
        """A model from :meth:`get_config`'s form (Keras 3's functional config, the layers'
        configs rnncore's): the layers are created, then called in the recorded order."""
        if custom_objects:
            raise NotImplementedError("Model.from_config: custom_objects are not supported")
        return functional_config.from_config(cls, config, deserialize)

    _transient = ModelBase._transient + ("_records", "_weight_grads")

    def __getstate__(self):
        # the config and the layer objects (their weights and carried states), from which
        # __setstate__ calls the layers again; never the graph's records themselves
        return {
            "config": self.get_config(),
            "layers": {layer.name: layer for layer in self.layers},
        }

    def __setstate__(self, state):
        model = functional_config.from_config(
            type(self), state["config"], deserialize, layers=state["layers"]
        )
        self.__dict__.update(model.__dict__)

    def __repr__(self):
        return (
            f"<{type(self).__name__} name={self.name}, inputs={len(self._inputs)}, "
            f"outputs={len(self._outputs)}, layers={len(self.layers)}>"
        )


class Functional(Model):
    """What ``rnncore.Model(inputs, outputs)`` creates (Keras's class name for it)."""


# ---- helpers -------------------------------------------------------------------------------


def serialize(layer) -> dict:
    """``{"class_name", "config"}`` of a layer or a nested model."""
    if isinstance(layer, ModelBase):
        return {"class_name": layer._class_name, "config": layer.get_config()}
    return serialize_layer(layer)


def deserialize(spec: dict):
    """A layer or nested model from ``{"class_name", "config"}`` (rnncore's classes only)."""
    name = spec.get("class_name") if isinstance(spec, dict) else None
    if name in ("Functional", "Model"):
        return Model.from_config(spec.get("config") or {})
    if name == "Sequential":
        return Sequential.from_config(spec.get("config") or {})
    return deserialize_layer(spec)


def _check_inputs(struct, inputs: list, owner: str) -> None:
    if not inputs:
        raise ValueError(f"{owner}: inputs must not be empty")
    names = []
    for t in inputs:
        check_tensor(t, "inputs", owner)
        if not isinstance(t._keras_history.operation, InputLayer):
            raise NotImplementedError(
                f"{owner}: input {tensor_label(t)} is not an rnncore.Input; rnncore builds "
                f"models from Input tensors only (make a new Input for a sub-model)"
            )
        if t.name in names:
            raise ValueError(
                f"{owner}: several inputs are named {t.name!r}; give each Input its own name"
            )
        names.append(t.name)
    if isinstance(struct, dict):
        for key, t in struct.items():
            if isinstance(t, KerasTensor) and key != t.name:
                warnings.warn(
                    f"{owner}: the inputs dict maps {key!r} to Input {t.name!r}; the keys "
                    f"should be the inputs' names (Input(..., name={key!r}))",
                    stacklevel=3,
                )


def _as_input_array(a, dtype: np.dtype, what: str) -> np.ndarray:
    """An input array in its Input's dtype: floats as layers convert them; integers (token
    ids) from integer arrays or floats holding whole numbers (others are refused)."""
    if dtype.kind == "f":
        return as_float_array(a, dtype, what)
    arr = np.asarray(a)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{what}: expects whole numbers ({dtype}), got fractional values")
    elif arr.dtype.kind not in "biu":
        raise TypeError(f"{what}: expects {dtype} values, got dtype {arr.dtype}")
    return arr.astype(dtype)

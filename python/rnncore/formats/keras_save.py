"""rnncore models written as Keras model files: :func:`write_keras` (Keras 3 ``.keras``) and
:func:`write_keras_h5` (Keras's legacy HDF5 ``.h5``), which Keras's own
``keras.saving.load_model`` opens, and :func:`rnncore.load_model` reads back.

The files mirror what Keras 3 itself writes (``keras/src/saving/saving_lib.py`` and
``keras/src/legacy/saving/legacy_h5_format.py``), and what :mod:`rnncore.formats.keras`
reads:

* ``.keras``: an uncompressed ZIP of ``metadata.json`` (``keras_version``,
  ``date_saved``), ``config.json`` (the model as ``keras.saving.serialize_keras_object``
  gives it: ``module``, ``class_name``, ``config``, ``registered_name`` of the model, of
  each layer and of each initializer) and ``model.weights.h5``, where each layer's weights
  are ``layers/<class name in snake case>[_<k>]/vars/0..n-1`` (numbered per class in the
  order of ``model.layers``), an RNN's under ``cell/vars``, a Bidirectional's under
  ``forward_layer`` and ``backward_layer``, a TimeDistributed's under ``layer``, a nested
  model's under its own ``layers``; every ``vars`` group records the layer's name.
* ``.h5``: the model config as JSON in the file's ``model_config`` attribute (Keras's
  legacy form: ``class_name`` and ``config``, no modules), and the weights in
  ``model_weights/<layer name>/<weight path>`` in the order of each layer group's
  ``weight_names`` attribute (a nested model's: its trainable weights, then the others).

A compiled model's compile settings are written as Keras writes them (:func:`compile_config`):
``compile_config`` in ``config.json`` (the optimizer, its learning rate or schedule, the
loss, metrics, loss weights), with the optimizer's state in ``model.weights.h5``'s
``optimizer/vars`` (step count, learning rate, each trainable variable's slots, in Keras's
order), and ``training_config`` in an ``.h5``; ``keras.saving.load_model`` returns the model
compiled. A setting Keras lacks leaves the model saved uncompiled, with a warning naming it.
rnncore's own :func:`rnncore.load_model` does not read compile settings (compile the loaded
model).

Only what Keras can hold is written. A model with a weight held in low precision
(``model.quantize``) or a layer option Keras lacks (the LSTM variants: ``use_peepholes``,
``projection_units``, ``cell_clip``, ``input_forget``, ``output_activation``) raises
:class:`~rnncore.errors.UnsupportedModelError` naming the layer: nothing is dropped
silently. rnncore's own format (:mod:`.saved_model`) holds all of them.
"""

from __future__ import annotations

import copy
import datetime
import io
import json
import os
import warnings
import zipfile

import numpy as np

from ..errors import UnsupportedModelError
from ..layers._args import to_snake_case
from ..layers.recurrent import LSTM_VARIANTS
from .archive import check_overwrite, optional_import, write_atomically
from .keras_graph import RNN_CLASSES
from .keras_weights import unique_name
from .saved_model import write_archive

__all__ = ["write_model", "write_keras", "write_keras_h5", "KERAS_FORMAT_VERSION"]

#: the Keras release whose file layout these writers follow (``keras_version`` in the files)
KERAS_FORMAT_VERSION = "3.15.1"

#: rnncore-only layer options (Keras has no such arguments), by Keras class name
_RNNCORE_ONLY_OPTIONS = {"LSTM": tuple(LSTM_VARIANTS)}

#: the name Keras gives an RNN's cell (recorded next to the cell's weights)
_CELL_NAMES = {"SimpleRNN": "simple_rnn_cell", "LSTM": "lstm_cell", "GRU": "gru_cell"}

_MODEL_CLASSES = ("Sequential", "Functional")

#: the functions of ``keras.layers``: Keras's legacy ``.h5`` reader replaces a layer option
#: whose string value names one of them by that function (``Attention``'s
#: ``score_mode='dot'`` becomes ``keras.layers.dot``), then the layer refuses it; Keras
#: cannot read such a file back, its own included, so it is not written
_LEGACY_H5_SHADOWED = frozenset(
    ("add", "average", "concatenate", "dot", "maximum", "minimum", "multiply", "subtract")
)


def _is_model(obj) -> bool:
    return getattr(obj, "_class_name", None) in _MODEL_CLASSES


def _check_writable(model) -> None:
    """Refuse what a Keras file cannot hold, naming the layer."""
    for layer in model._quantizable():
        held = layer.quantized_weights() or {}
        if held:
            mode = next(iter(held.values())).mode
            raise UnsupportedModelError(
                f"save: layer {layer.name!r} ({type(layer).__name__}) holds {mode} "
                f"quantized weights ({', '.join(sorted(held))}), which a Keras file cannot "
                f"hold: save to rnncore's own format (e.g. 'model.rnncore'), or save the "
                f"float model before quantizing"
            )


# ---------------------------------------------------------------------------------------
# config.json / model_config
# ---------------------------------------------------------------------------------------


class _Serializer:
    """Keras configs of rnncore models and layers. ``legacy`` gives the ``.h5`` form, as
    Keras's legacy saving writes it: the model's and its layers' entries without
    ``module``/``registered_name``/``build_config``, but a wrapped layer (Bidirectional,
    TimeDistributed) and initializers with them (Keras deserializes those itself)."""

    def __init__(self, legacy: bool):
        self.legacy = legacy

    def layer(self, layer) -> dict:
        """A model's layer entry (a nested model's too)."""
        if _is_model(layer):
            return self.model(layer)
        spec = {"class_name": type(layer).__name__, "config": layer.get_config()}
        return self.layer_spec(spec, tagged=not self.legacy)

    def layer_spec(self, spec: dict, tagged: bool = True) -> dict:
        """``{"class_name", "config"}`` of an rnncore layer in Keras's form."""
        class_name = spec["class_name"]
        config = dict(spec["config"])
        where = f"layer {config.get('name')!r} ({class_name})"
        own = [k for k in _RNNCORE_ONLY_OPTIONS.get(class_name, ()) if k in config]
        if own:
            raise UnsupportedModelError(
                f"save: {where} uses {', '.join(f'{k}={config[k]!r}' for k in own)}, which "
                f"Keras's {class_name} does not have: a Keras file cannot hold it; save to "
                f"rnncore's own format (e.g. 'model.rnncore') or export with to_onnx"
            )
        # a Keras 3 layer takes no batch_input_shape: the model's InputLayer gives it
        config.pop("batch_input_shape", None)
        if self.legacy and not tagged:
            shadowed = [
                k
                for k, v in config.items()
                if k != "name" and isinstance(v, str) and v in _LEGACY_H5_SHADOWED
            ]
            if shadowed:
                key = shadowed[0]
                raise UnsupportedModelError(
                    f"save: {where}: Keras cannot read {key}={config[key]!r} back from a "
                    f"legacy .h5 file (its legacy reader turns the string into the function "
                    f"keras.layers.{config[key]}): save as .keras"
                )
        for key, value in config.items():
            if key in ("layer", "backward_layer") and isinstance(value, dict):
                config[key] = self.layer_spec(value)
            elif key.endswith("_initializer") and isinstance(value, dict):
                config[key] = _tagged(
                    value["class_name"], value.get("config", {}), "keras.initializers"
                )
        if not tagged:
            return {"class_name": class_name, "config": config}
        return _tagged(class_name, config, "keras.layers")

    def model(self, model) -> dict:
        if model._class_name == "Sequential":
            return self._sequential(model)
        # the model's own functional config (its calls), each layer's entry in Keras's form
        config = model.get_config()
        layers = {layer.name: layer for layer in model.layers}
        config["layers"] = [
            {
                **self.layer(layers[entry["name"]]),
                **{k: entry[k] for k in ("name", "inbound_nodes")},
            }
            for entry in config["layers"]
        ]
        if self.legacy:
            return {"class_name": "Functional", "config": config}
        return {
            **_tagged("Functional", config, "keras.src.models.functional", "Functional"),
            "build_config": {"input_shape": None},
            "compile_config": None,  # set by keras_config for the top model
        }

    def _sequential(self, model) -> dict:
        layers = []
        for layer in model.layers:  # Sequential.add refuses a nested model
            layers.append(self.layer(layer))
        shape = getattr(model, "_build_input_shape", None)
        input_layer = getattr(model, "_input_layer", None)
        if input_layer is not None:
            layers.insert(0, self.layer(input_layer))
        elif shape is not None:
            # what Keras's Sequential.build adds: the model's input, the shape it was built for
            names = {layer.name for layer in model.layers}
            name, k = "input_layer", 0
            while name in names:
                k += 1
                name = f"input_layer_{k}"
            dtype = model.layers[0].dtype if model.layers else "float32"
            layers.insert(
                0,
                self.layer_spec(
                    {
                        "class_name": "InputLayer",
                        "config": {"batch_shape": list(shape), "dtype": dtype, "name": name},
                    },
                    tagged=not self.legacy,
                ),
            )
        config = {"name": model.name, "trainable": model.trainable, "layers": layers}
        if shape is not None:
            config["build_input_shape"] = list(shape)
        if self.legacy:
            return {"class_name": "Sequential", "config": config}
        out = _tagged("Sequential", config, "keras")
        out["build_config"] = {"input_shape": None if shape is None else list(shape)}
        out["compile_config"] = None
        return out


def keras_config(model, legacy: bool = False) -> dict:
    """The Keras config of an rnncore model (``config.json``; ``legacy``: ``model_config``
    of an ``.h5``); :class:`UnsupportedModelError` for what Keras cannot hold. The compile
    settings are not part of it (:func:`compile_config`)."""
    _check_writable(model)
    return copy.deepcopy(_Serializer(legacy).model(model))


# ---------------------------------------------------------------------------------------
# compile_config (.keras) / training_config (.h5)
# ---------------------------------------------------------------------------------------

#: Keras's Optimizer arguments rnncore's optimizers require at their defaults (Keras's
#: get_config lists them; written so the config is the one Keras writes)
_OPTIMIZER_DEFAULTS = {
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}

#: loss arguments rnncore's losses require at Keras's defaults, by class
_LOSS_DEFAULTS = {
    "MeanSquaredError": {},
    "MeanAbsoluteError": {},
    "BinaryCrossentropy": {"label_smoothing": 0.0, "axis": -1},
    "CategoricalCrossentropy": {"label_smoothing": 0.0, "axis": -1},
    "SparseCategoricalCrossentropy": {"ignore_class": None},
}


class _NotKeras(Exception):
    """A compile setting Keras cannot rebuild (the message names it)."""


def _tagged(class_name: str, config, module: str, registered=None) -> dict:
    """An object as ``keras.saving.serialize_keras_object`` writes it."""
    return {
        "module": module,
        "class_name": class_name,
        "config": config,
        "registered_name": registered,
    }


#: Keras's legacy .h5 reader looks a loss name up among Keras's metrics first, where these
#: short names are classes, not losses, and fails (on Keras's own files too): the full names
_LEGACY_LOSS_NAMES = {
    "mse": "mean_squared_error",
    "mae": "mean_absolute_error",
    "bce": "binary_crossentropy",
}

#: rnncore's optimizers, losses and schedules Keras has, by module (the models above
#: formats own them: they are recognised by class, not imported here)
_KERAS_CLASSES = {
    "rnncore.optimizers": {"SGD", "Adam", "AdamW", "RMSprop"},
    "rnncore.losses": set(_LOSS_DEFAULTS),
    "rnncore.optimizers.schedules": {
        "ExponentialDecay",
        "PiecewiseConstantDecay",
        "PolynomialDecay",
        "InverseTimeDecay",
        "CosineDecay",
    },
}


def _is_keras_class(obj) -> bool:
    """Exactly one of rnncore's classes that Keras has (a subclass may change the rule)."""
    cls = type(obj)
    return cls.__name__ in _KERAS_CLASSES.get(cls.__module__, ())


def _optimizer_config(opt) -> dict:
    if not _is_keras_class(opt):
        raise _NotKeras(f"the optimizer {type(opt).__name__} (Keras has no such optimizer)")
    config = opt.get_config()
    lr = opt._learning_rate
    if isinstance(config["learning_rate"], dict):  # a schedule, serialized
        if not _is_keras_class(lr):
            raise _NotKeras(f"the learning-rate schedule {type(lr).__name__}")
    elif callable(lr):
        raise _NotKeras(f"the learning rate {lr!r} (a callable: Keras can only hold a number)")
    if opt.weight_decay is not None and (opt._decay_excluded or opt._decay_pattern):
        # Keras's get_config does not hold exclude_from_weight_decay either: a Keras model
        # saved and loaded would decay those weights too
        raise _NotKeras(f"the optimizer {opt.name!r}'s exclude_from_weight_decay")
    # "keras.optimizers" names the class whatever the backend (Keras itself writes its
    # backend's subclass, keras.src.backend.torch.optimizers...; each backend maps the
    # public class to its own)
    return _tagged(type(opt).__name__, {**config, **_OPTIMIZER_DEFAULTS}, "keras.optimizers")


def _loss_config(spec, legacy=False):
    """One output's loss as Keras's compile config holds it: a name, or a tagged object."""
    if spec is None:
        return None
    if isinstance(spec, str):
        # Keras's names are rnncore's, lower case (rnncore also takes e.g. "Mse", Keras not)
        name = spec.lower()
        return _LEGACY_LOSS_NAMES.get(name, name) if legacy else name
    loss = spec() if isinstance(spec, type) else spec  # (rnncore's compile accepted it)
    name = type(loss).__name__
    if not _is_keras_class(loss):
        raise _NotKeras(f"the loss {name} (Keras has no such loss)")
    return _tagged(name, {**loss.get_config(), **_LOSS_DEFAULTS[name]}, "keras.losses")


def _metric_config(spec):
    if not isinstance(spec, str):
        raise _NotKeras(f"the metric object {spec!r} (give metrics by name)")
    # lower case: Keras reads "Accuracy" in a legacy .h5 as its Accuracy class (an exact
    # match), not as compile's "accuracy"; the metric's log name loses its capitals
    return spec.lower()


def _nested(convert, spec):
    """``convert`` over a compile argument: one value, a list or a dict of them (per
    output; metrics: lists in those)."""
    if spec is None:
        return None
    if isinstance(spec, dict):
        return {k: _nested(convert, v) for k, v in spec.items()}
    if isinstance(spec, (list, tuple)):
        return [_nested(convert, v) for v in spec]
    return convert(spec)


def compile_config(model, legacy: bool = False):
    """The compile settings of ``model`` as Keras 3 saves them (``compile_config`` in
    ``config.json``; ``legacy``: the ``.h5``'s ``training_config``), or None for a model
    that is not compiled.

    Only what Keras rebuilds as rnncore has it is written. A setting Keras lacks (an
    optimizer, schedule, loss or metric object of rnncore's own, a callable learning rate)
    leaves the model saved uncompiled, with a warning naming it, rather than refused: a
    Keras model loaded uncompiled is no different from what was saved, only incomplete,
    while refusing would stop the weights from being saved at all. (Nothing is written that
    Keras would load differently, so nothing needs refusing.)"""
    given = getattr(model, "_compile_config", None)
    if not model.compiled or given is None:
        return None
    try:
        optimizer = _optimizer_config(model.optimizer)
        config = {
            "optimizer": optimizer,
            "loss": _nested(lambda spec: _loss_config(spec, legacy), given["loss"]),
            "loss_weights": _nested(float, given["loss_weights"]),
            "metrics": _nested(_metric_config, given["metrics"]),
            "weighted_metrics": _nested(_metric_config, given["weighted_metrics"]),
            # rnncore runs eagerly, one step at a time; Keras's torch backend writes False
            "run_eagerly": False,
            "steps_per_execution": 1,
            "jit_compile": False,
        }
    except _NotKeras as e:
        warnings.warn(
            f"save: {model.name!r} is saved uncompiled: a Keras file cannot hold {e}; "
            f"compile the loaded model again, or save to rnncore's own format "
            f"(e.g. 'model.rnncore')",
            UserWarning,
            stacklevel=5,  # model.save/save_model -> write_model -> writer -> here
        )
        return None
    if legacy:  # Keras's legacy form: the optimizer untagged, under optimizer_config
        del config["optimizer"]
        config["optimizer_config"] = {k: optimizer[k] for k in ("class_name", "config")}
    return copy.deepcopy(config)


# ---------------------------------------------------------------------------------------
# model.weights.h5 (.keras)
# ---------------------------------------------------------------------------------------


def _vars(parent, path: str, name: str, weights=()) -> None:
    """``path/vars`` holding ``weights`` as datasets 0..n-1, named as Keras names it."""
    group = parent.create_group(f"{path}/vars" if path else "vars")
    group.attrs["name"] = name
    for k, v in enumerate(weights):
        group.create_dataset(str(k), data=np.asarray(v.value))


def _layer_weights(h5, path: str, layer) -> None:
    class_name = type(layer).__name__
    if _is_model(layer):
        _model_weights(h5, path, layer)
    elif class_name in RNN_CLASSES:
        _vars(h5, path, layer.name)
        _vars(h5, f"{path}/cell", _CELL_NAMES[class_name], layer.weights)
    elif class_name == "Bidirectional":
        _vars(h5, path, layer.name)
        _layer_weights(h5, f"{path}/forward_layer", layer.forward_layer)
        _layer_weights(h5, f"{path}/backward_layer", layer.backward_layer)
    elif class_name == "TimeDistributed":
        _vars(h5, path, layer.name)
        _layer_weights(h5, f"{path}/layer", layer.layer)
    else:
        _vars(h5, path, layer.name, layer.weights)


def _model_weights(h5, path: str, model) -> None:
    """A model's own ``vars`` and its layers in ``model.layers`` order (Keras's numbering:
    a Sequential's input layer is not among them, a functional model's are)."""
    _vars(h5, path, model.name)
    used: dict[str, int] = {}
    prefix = f"{path}/layers" if path else "layers"
    for layer in model.layers:
        class_name = layer._class_name if _is_model(layer) else type(layer).__name__
        key = unique_name(to_snake_case(class_name), used)
        _layer_weights(h5, f"{prefix}/{key}", layer)


#: each optimizer's per-variable slots in the order Keras's ``build`` creates them: one
#: group after the other, within a group each trainable variable's slots in turn (rnncore's
#: slot names; Keras's: momentum, velocity, velocity_hat, average_gradient)
def _slot_groups(opt) -> list:
    if type(opt).__name__ in ("Adam", "AdamW"):
        return [("m", "v")] + ([("v_hat",)] if opt.amsgrad else [])
    if type(opt).__name__ == "RMSprop":
        return [("v",)] + [(k,) for k in ("m", "a") if k in opt._slot_names]
    return [opt._slot_names] if opt._slot_names else []  # SGD


def _optimizer_vars(h5, model) -> None:
    """``optimizer/vars``: the optimizer's state as Keras's optimizer holds it (its step
    count, its learning rate unless a schedule gives it, then the slots of each trainable
    variable), so that Keras's loaded optimizer goes on from rnncore's; a slot rnncore has
    not made yet (no step taken) is zeros, as Keras starts it. Keras builds the optimizer
    of a loaded model that is built, and warns unless the file holds as many variables."""
    opt = model.optimizer
    values = [np.asarray(opt.iterations, dtype=np.int64)]
    if not isinstance(opt.get_config()["learning_rate"], dict):  # not a schedule's
        values.append(np.asarray(opt.learning_rate, dtype=np.float32))
    trainable = model.trainable_weights
    for group in _slot_groups(opt):
        for v in trainable:
            own = opt._slots.get(id(v)) if opt._owners.get(id(v)) is v else None
            for k in group:
                values.append(own[k] if own is not None else np.zeros_like(v.value))
    group = h5.create_group("optimizer/vars")
    group.attrs["name"] = opt.name
    for k, value in enumerate(values):
        group.create_dataset(str(k), data=value)


def write_keras(model, filepath, overwrite=True) -> None:
    """Write ``model`` as a Keras 3 ``.keras`` archive (see the module documentation)."""
    filepath = os.fspath(filepath)
    h5py = optional_import("h5py", "save (.keras)")
    config = keras_config(model)
    config["compile_config"] = compile_config(model)
    # a built model's compiled optimizer has variables (an unbuilt one has none)
    with_optimizer = config["compile_config"] is not None and bool(model.weights)
    metadata = {
        "keras_version": KERAS_FORMAT_VERSION,
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
    }
    buf = io.BytesIO()
    with h5py.File(buf, "w") as h5:
        _model_weights(h5, "", model)
        if with_optimizer:
            _optimizer_vars(h5, model)

    def write(path):
        # Keras stores the members uncompressed, in this order
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr("metadata.json", json.dumps(metadata))
            zf.writestr("config.json", json.dumps(config))
            zf.writestr("model.weights.h5", buf.getvalue())

    check_overwrite(filepath, overwrite)
    write_atomically(filepath, write)


# ---------------------------------------------------------------------------------------
# legacy .h5
# ---------------------------------------------------------------------------------------


def _h5_names(group, name: str, names: list) -> None:
    """A list-of-names attribute (Keras's ``save_attributes_to_hdf5_group``; the lists
    here are far below HDF5's 64 KiB header limit, checked)."""
    data = np.asarray([n.encode("utf8") for n in names], dtype="S" if names else "S1")
    if data.nbytes > 64000:
        raise UnsupportedModelError(
            f"save: {group.name}: {len(names)} names are too many for one HDF5 attribute"
        )
    group.attrs[name] = data


def write_keras_h5(model, filepath, overwrite=True) -> None:
    """Write ``model`` as a legacy Keras HDF5 ``.h5`` file (see the module documentation)."""
    filepath = os.fspath(filepath)
    h5py = optional_import("h5py", "save (.h5)")
    config = keras_config(model, legacy=True)
    training = compile_config(model, legacy=True)

    def write(path):
        with h5py.File(path, "w") as f:
            f.attrs["keras_version"] = KERAS_FORMAT_VERSION
            f.attrs["backend"] = "numpy"
            f.attrs["model_config"] = json.dumps(config).encode("utf8")
            if training is not None:  # Keras's legacy loader compiles the model with it
                f.attrs["training_config"] = json.dumps(training).encode("utf8")
            group = f.create_group("model_weights")
            layers = model.layers
            _h5_names(group, "layer_names", [layer.name for layer in layers])
            group.attrs["backend"] = b"numpy"
            group.attrs["keras_version"] = KERAS_FORMAT_VERSION.encode("utf8")
            # Keras creates the groups sorted by name (no name a prefix of a later one)
            for layer in sorted(layers, key=lambda x: x.name):
                layer_group = group.create_group(layer.name)
                # Keras's legacy order: the trainable weights, then the others
                weights = layer.trainable_weights + layer.non_trainable_weights
                _h5_names(layer_group, "weight_names", [v.path for v in weights])
                for v in weights:
                    layer_group.create_dataset(v.path, data=np.asarray(v.value))
            _h5_names(group.create_group("top_level_model_weights"), "weight_names", [])

    check_overwrite(filepath, overwrite)
    write_atomically(filepath, write)


# ---------------------------------------------------------------------------------------
# the suffix picks the writer
# ---------------------------------------------------------------------------------------

#: file suffixes written as Keras files (any other: rnncore's own format)
KERAS_SUFFIXES = {".keras": write_keras, ".h5": write_keras_h5, ".hdf5": write_keras_h5}


def write_model(model, filepath, overwrite=True) -> None:
    """``model.save``: a Keras file for ``.keras``/``.h5``/``.hdf5`` (any case), else
    rnncore's own format (:func:`.saved_model.write_archive`)."""
    suffix = os.path.splitext(os.fspath(filepath))[1].lower()
    KERAS_SUFFIXES.get(suffix, write_archive)(model, filepath, overwrite=overwrite)

"""The weights of a Keras model file read into the layers :class:`~.keras_config.KerasPlan`
built: where each format files a layer's weights, their shapes checked before they are read,
and Keras 2's ``hard_sigmoid`` folded into them.
"""

from __future__ import annotations

import numpy as np

from ..layers._args import to_snake_case
from .archive import float_array
from .hdf5_check import h5_text, string_attr
from .keras_config import Entry, KerasPlan
from .keras_graph import RNN_CLASSES

__all__ = ["load_weights_v3", "load_weights_h5", "unique_name"]


def load_weights_v3(plan: KerasPlan, h5) -> None:
    """Weights of a ``.keras`` archive: layers matched by their order in the config."""
    _load_v3_layers(plan, _group(plan, h5, "layers", "the weights file", optional=True), "layers")


def _load_v3_layers(plan: KerasPlan, root, path: str) -> None:
    """The weights of ``plan``'s layers under ``root`` (``layers``, or a nested model's
    ``layers/functional/layers``: Keras numbers each model's layers on their own)."""
    used: dict[str, int] = {}
    for entry in plan.entries:
        # Keras files a nested model under its class: functional, sequential
        class_name = "Functional" if entry.class_name == "Model" else entry.class_name
        key = unique_name(to_snake_case(class_name), used)
        if not entry.has_weights():
            continue
        if root is None or key not in root:
            raise plan.fail(
                f"layer {entry.name!r} ({entry.class_name}): its weights "
                f"({path}/{key}) are missing from model.weights.h5"
            )
        group = root[key]
        recorded = _vars_name(group)
        if recorded is not None and entry.name is not None and recorded != entry.name:
            raise plan.fail(
                f"the weights at {path}/{key} belong to a layer named {recorded!r}, but "
                f"the config puts layer {entry.name!r} there: config.json and "
                f"model.weights.h5 do not match"
            )
        where = f"{path}/{key}"
        if entry.nested is not None:
            inner = _group(plan, group, "layers", where)
            _load_v3_layers(entry.nested, inner, where + "/layers")
            continue
        _assign(plan, entry, _v3_datasets(plan, group, entry.class_name, entry.config, where))


def _v3_datasets(plan: KerasPlan, group, class_name: str, config: dict, path: str) -> list:
    if class_name in RNN_CLASSES:
        cell = group.get("cell")
        return _vars(plan, cell if cell is not None else group, path + "/cell")
    if class_name == "Bidirectional":
        fwd = _group(plan, group, "forward_layer", path)
        bwd = _group(plan, group, "backward_layer", path)
        inner = config.get("layer") or {}
        back = config.get("backward_layer") or inner
        return _v3_datasets(
            plan, fwd, inner.get("class_name"), inner.get("config") or {}, path + "/forward_layer"
        ) + _v3_datasets(
            plan, bwd, back.get("class_name"), back.get("config") or {}, path + "/backward_layer"
        )
    if class_name == "TimeDistributed":
        inner = config.get("layer") or {}
        return _v3_datasets(
            plan,
            _group(plan, group, "layer", path),
            inner.get("class_name"),
            inner.get("config") or {},
            path + "/layer",
        )
    return _vars(plan, group, path)


def load_weights_h5(plan: KerasPlan, f) -> None:
    """Weights of a legacy ``.h5`` file: ``model_weights/<layer name>``."""
    weights = _group(plan, f, "model_weights", "the file")
    for entry in plan.entries:
        if not entry.has_weights():
            continue
        if entry.name not in weights:
            raise plan.fail(
                f"layer {entry.name!r} ({entry.class_name}): no weights "
                f"under model_weights/{entry.name}"
            )
        group = weights[entry.name]
        names = _h5_names(plan, group, "weight_names")
        datasets = []
        for n in names:
            try:
                ds = group[n]
            except (KeyError, OSError) as e:
                raise plan.fail(
                    f"layer {entry.name!r}: weight {n!r} is missing or unreadable ({e})"
                ) from None
            datasets.append((f"model_weights/{entry.name}/{n}", ds))
        if entry.nested is None:
            _assign(plan, entry, datasets)
        else:
            _assign_nested(plan, entry, datasets)


def _assign_nested(plan: KerasPlan, entry: Entry, datasets: list) -> None:
    """A nested model's weights, listed as Keras's legacy ``.h5`` saving lists them: its
    trainable weights (its layers in config order), then the others (the non-trainable
    ones, and all those of frozen layers), each layer's weights taken in that order."""
    slots = []  # (leaf entry, index of the weight in the layer), in the file's order
    leaves = entry.nested.leaves(entry.nested.trainable)
    for want_trainable in (True, False):
        for leaf, trainable in leaves:
            layer = leaf.layer
            ids = {id(v) for v in layer.trainable_weights} if trainable else set()
            slots += [
                (leaf, k) for k, v in enumerate(layer.weights) if (id(v) in ids) == want_trainable
            ]
    if len(datasets) != len(slots):
        raise plan.fail(
            f"nested model {entry.name!r} ({entry.class_name}): the file has "
            f"{len(datasets)} weight(s), the model needs {len(slots)}"
        )
    per_leaf: dict[int, list] = {id(leaf): [None] * len(leaf.layer.weights) for leaf, _ in leaves}
    for (leaf, k), ds in zip(slots, datasets):
        per_leaf[id(leaf)][k] = ds
    for leaf, _ in leaves:
        _assign(plan, leaf, per_leaf[id(leaf)])


def _assign(plan: KerasPlan, entry: Entry, datasets: list) -> None:
    """Check count and shapes against the layer, then read and set the weights."""
    layer = entry.layer
    own = layer.weights
    where = f"layer {entry.name!r} ({entry.class_name})"
    if len(datasets) != len(own):
        raise plan.fail(
            f"{where}: the file has {len(datasets)} weight(s) "
            f"({', '.join(p for p, _ in datasets) or 'none'}), the layer "
            f"needs {len(own)} ({', '.join(v.name for v in own)})"
        )
    arrays = []
    for (path, ds), v in zip(datasets, own):
        shape = getattr(ds, "shape", None)
        if shape is None:
            raise plan.fail(f"{where}: {path} is not a dataset")
        if tuple(shape) != tuple(v.shape):
            raise plan.fail(
                f"{where}: weight {path} has shape {tuple(shape)}, but the "
                f"config describes {v.name!r} of shape {tuple(v.shape)}"
            )
        try:
            a = ds[()]
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise plan.fail(f"{where}: cannot read {path} (corrupted or truncated?): {e}") from None
        arrays.append(float_array(a, f"{plan.filepath}: {where}: {path}"))
    if plan.keras_version == 2:
        arrays = _keras2_hard_sigmoid(plan, entry.class_name, entry.config, arrays, where)
    try:
        layer.set_weights(arrays)
    except ValueError as e:
        raise plan.fail(f"{where}: the weights do not fit the layer ({e})") from None


def unique_name(name: str, used: dict) -> str:
    """Keras's ``_get_unique_name``: ``name``, ``name_1``, ``name_2``, ..."""
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _group(plan: KerasPlan, parent, key: str, where: str, optional=False):
    try:
        g = parent.get(key)
    except (OSError, KeyError, RuntimeError) as e:
        raise plan.fail(f"{where}: cannot read {key!r} (corrupted or truncated?): {e}") from None
    if g is None and not optional:
        raise plan.fail(f"{where}: {key!r} is missing")
    return g


def _vars_name(group):
    try:
        v = group.get("vars")
        name = None if v is None else string_attr(v, "name")
    except (OSError, KeyError, RuntimeError, TypeError):
        return None
    return None if name is None else h5_text(name)


def _vars(plan: KerasPlan, group, path: str) -> list:
    """The datasets ``vars/0``, ``vars/1``, ... of a Keras 3 weights group, in order."""
    v = _group(plan, group, "vars", path, optional=True)
    if v is None:
        return []
    try:
        keys = list(v.keys())
    except (OSError, RuntimeError) as e:
        raise plan.fail(f"{path}/vars: unreadable (corrupted or truncated?): {e}") from None
    if sorted(keys, key=lambda k: int(k) if k.isdigit() else -1) != [
        str(i) for i in range(len(keys))
    ]:
        raise plan.fail(
            f"{path}/vars: expected datasets named 0..{len(keys) - 1}, got {sorted(keys)}"
        )
    return [(f"{path}/vars/{i}", v[str(i)]) for i in range(len(keys))]


def _h5_names(plan: KerasPlan, group, attr: str) -> list[str]:
    """A list-of-names attribute, also when h5 split it into ``attr0``, ``attr1``, ..."""
    attrs = group.attrs
    try:
        if attr in attrs:
            values = list(string_attr(group, attr))
        else:
            values, k = [], 0
            while f"{attr}{k}" in attrs:
                values.extend(string_attr(group, f"{attr}{k}"))
                k += 1
    except (OSError, RuntimeError, KeyError, TypeError) as e:
        raise plan.fail(f"{group.name}: cannot read attribute {attr} ({e})") from None
    return [h5_text(x) for x in values]


# ---------------------------------------------------------------------------------------
# Keras 2 differences
# ---------------------------------------------------------------------------------------

_KERAS2_HS_SCALE = 1.2  # clip(0.2 x + 0.5) == clip((1.2 x) / 6 + 0.5)


def _keras2_hard_sigmoid(plan, class_name, config, arrays, where):
    """Scale the weights feeding a Keras 2 ``hard_sigmoid`` so rnncore's gives its values."""
    if class_name == "Bidirectional":
        inner = config.get("layer") or {}
        back = config.get("backward_layer") or inner
        half = len(arrays) // 2
        return _keras2_hard_sigmoid(
            plan, inner.get("class_name"), inner.get("config") or {}, arrays[:half], where
        ) + _keras2_hard_sigmoid(
            plan, back.get("class_name"), back.get("config") or {}, arrays[half:], where
        )
    if class_name == "TimeDistributed":
        inner = config.get("layer") or {}
        return _keras2_hard_sigmoid(
            plan, inner.get("class_name"), inner.get("config") or {}, arrays, where
        )
    if class_name == "Dense":
        if config.get("activation") == "hard_sigmoid":
            return [a * np.asarray(_KERAS2_HS_SCALE, a.dtype) for a in arrays]
        return arrays
    if class_name not in RNN_CLASSES:
        return arrays
    gates = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[class_name]
    recurrent_blocks = {"SimpleRNN": (), "LSTM": (0, 1, 3), "GRU": (0, 1)}[class_name]
    candidate_block = {"SimpleRNN": 0, "LSTM": 2, "GRU": 2}[class_name]
    blocks = []
    if config.get("recurrent_activation") == "hard_sigmoid" and class_name != "SimpleRNN":
        blocks += recurrent_blocks
    if config.get("activation") == "hard_sigmoid":
        blocks.append(candidate_block)
    if not blocks:
        return arrays
    units = arrays[1].shape[0]
    scale = np.ones(gates * units)
    for b in blocks:
        scale[b * units : (b + 1) * units] = _KERAS2_HS_SCALE
    return [a * scale.astype(a.dtype) for a in arrays]  # kernel, recurrent, bias: last axis

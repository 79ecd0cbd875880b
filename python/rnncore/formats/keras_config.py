"""A Keras model config (``config.json``, or ``model_config`` of an ``.h5``) read into
rnncore layers: which Keras layers are read, how a functional model's chain is found, and
what Keras 2 configs mean differently. The weights are :mod:`rnncore.formats.keras_weights`'s.
"""

from __future__ import annotations

from ..errors import ModelFileError, UnsupportedArgumentError, UnsupportedModelError
from ..layers import LAYER_CLASSES, InputLayer, Layer
from ..layers._args import shape_tuple
from ..layers._base import build_chain

__all__ = ["SUPPORTED_LAYERS", "KerasPlan"]

#: The Keras layer classes :func:`rnncore.formats.keras.read_keras` reads.
SUPPORTED_LAYERS = (
    "InputLayer",
    "Masking",
    "SimpleRNN",
    "LSTM",
    "GRU",
    "Bidirectional",
    "Dense",
    "TimeDistributed",
    "Dropout",
    "Activation",
    "Softmax",
)

RNN_CLASSES = ("SimpleRNN", "LSTM", "GRU")

#: Config keys that only matter for training or speed: not carried over.
_DROPPED_KEYS = frozenset(
    (
        "kernel_initializer",
        "recurrent_initializer",
        "bias_initializer",
        "kernel_regularizer",
        "recurrent_regularizer",
        "bias_regularizer",
        "activity_regularizer",
        "kernel_constraint",
        "recurrent_constraint",
        "bias_constraint",
        "unit_forget_bias",
        "seed",
        "unroll",
        "use_cudnn",
        "implementation",
    )
)

#: Keras operations (not layers) a functional model records to compute a Masking's mask.
_MASK_OPS = frozenset(("NotEqual", "Any"))


class Entry:
    """One top-level Keras layer: its spec, the rnncore layer built from it."""

    def __init__(self, spec: dict, layer):
        self.spec = spec
        self.class_name = spec["class_name"]
        self.config = spec.get("config") or {}
        self.name = self.config.get("name", spec.get("name"))
        self.layer = layer


class KerasPlan:
    """A Keras config read into rnncore layers, and then the weights into those layers."""

    def __init__(self, filepath: str, config, keras_version: int):
        self.filepath = filepath
        self.keras_version = keras_version
        if not isinstance(config, dict) or "class_name" not in config:
            raise ModelFileError(f"{filepath}: the model config is not a Keras model description")
        self.config = config
        #: the model's layers in config order (Keras's weight numbering), InputLayer included
        self.entries: list[Entry] = []

    def fail(self, msg, cls=ModelFileError):
        return cls(f"{self.filepath}: {msg}")

    def build(self) -> tuple[list[Layer], str | None, tuple | None]:
        """The model's layers (an InputLayer first when it has one), built when the config
        gives the input shape; the model's name; the batch input shape they were built for
        (``None`` when unknown)."""
        class_name = self.config["class_name"]
        body = self.config.get("config")
        _check_module(self, self.config, "model")
        if class_name == "Sequential":
            if isinstance(body, list):  # Keras 2.0 / 2.1
                body = {"layers": body}
            specs = self._specs(body)
            chain = list(specs)
            n_outputs = None
        elif class_name in ("Functional", "Model"):
            specs = self._specs(body)
            chain, n_outputs = _functional_chain(self, body, specs)
        else:
            raise self.fail(
                f"model class {class_name!r} is not supported: only Sequential models and "
                f"functional models (a chain of layers) can be read without the model's "
                f"Python code",
                UnsupportedModelError,
            )
        # the Keras weight numbering counts every layer of the config (in order)
        for spec in specs:
            if spec["class_name"] in _MASK_OPS and _is_op(spec):
                continue
            self.entries.append(Entry(spec, None))
        by_id = {id(e.spec): e for e in self.entries}
        model_layers = []
        for spec in chain:
            entry = by_id[id(spec)]
            entry.layer = self._layer(spec)
            model_layers.append(entry.layer)
        input_layers = [x for x in model_layers if isinstance(x, InputLayer)]
        if len(input_layers) > 1 or (input_layers and model_layers[0] is not input_layers[0]):
            raise self.fail("an InputLayer can only be the first layer of the model")
        name = (body or {}).get("name")
        stack = [x for x in model_layers if not isinstance(x, InputLayer)]
        input_shape = self._build(stack, input_layers, body, name)
        if n_outputs is not None and n_outputs > 1:
            last = stack[-1]
            outputs = last.compute_output_shape(input_shape) if input_shape is not None else None
            if outputs is not None and (
                not isinstance(outputs, tuple)
                or not outputs
                or not isinstance(outputs[0], tuple)
                or len(outputs) != n_outputs
            ):
                raise self.fail(
                    f"the model's {n_outputs} outputs are not the outputs of its "
                    f"last layer {last.name!r}",
                    UnsupportedModelError,
                )
        return model_layers, name, input_shape

    def _build(self, stack: list, input_layers: list, body, name) -> tuple | None:
        """Build the layers as ``Sequential(layers, name=name)`` followed by ``build`` of
        the config's input shape would: for the declared input shape (an InputLayer's, or
        the first layer's ``input_shape``), else the shape the config records."""
        owner = name if name is not None else "the model"
        try:
            for k, layer in enumerate(stack):
                if any(other.name == layer.name for other in stack[:k]):
                    raise ValueError(
                        f"{owner}: all layers must have unique names; "
                        f"{layer.name!r} is already in the model"
                    )
            declared = (
                input_layers[0].batch_shape
                if input_layers
                else (stack[0]._input_shape_arg if stack else None)
            )
            if declared is not None and stack:
                return build_stack(stack, declared, owner)
        except (ValueError, MemoryError) as e:
            raise self.fail(f"cannot assemble the model ({e})") from None
        shape = (body or {}).get("build_input_shape") or (
            self.config.get("build_config") or {}
        ).get("input_shape")
        if shape is None or not stack:
            return None
        try:
            return build_stack(stack, tuple(shape), owner)
        except (ValueError, TypeError, MemoryError) as e:
            raise self.fail(f"cannot build the model for input shape {shape} ({e})") from None

    def _specs(self, body) -> list:
        if not isinstance(body, dict) or not isinstance(body.get("layers"), list):
            raise self.fail("the model config has no list of layers")
        specs = body["layers"]
        for spec in specs:
            if not isinstance(spec, dict) or not isinstance(spec.get("class_name"), str):
                raise self.fail(f"malformed layer entry in the config: {str(spec)[:200]}")
        return specs

    def _layer(self, spec: dict):
        """An rnncore layer from a Keras layer spec ``{"class_name", "config"}``."""
        class_name = spec["class_name"]
        config = spec.get("config")
        name = config.get("name") if isinstance(config, dict) else None
        where = f"layer {name!r} ({class_name})" if name else f"a {class_name} layer"
        _check_module(self, spec, where)
        if class_name not in SUPPORTED_LAYERS:
            raise self.fail(
                f"{where}: the Keras layer class {class_name} is not supported by rnncore "
                f"(supported: {', '.join(SUPPORTED_LAYERS)})",
                UnsupportedModelError,
            )
        if not isinstance(config, dict):
            raise self.fail(f"{where}: malformed layer config")
        kwargs = {k: v for k, v in config.items() if k not in _DROPPED_KEYS}
        for key in ("sparse", "ragged"):  # Keras writes False, its default
            if key in kwargs and kwargs[key] in (False, None):
                del kwargs[key]
        if self.keras_version == 2:
            _keras2_defaults(self, class_name, kwargs, where)
        try:
            if class_name == "Bidirectional":
                inner = kwargs.pop("layer", None)
                back = kwargs.pop("backward_layer", None)
                if kwargs.get("num_constants"):
                    raise self.fail(
                        f"{where}: num_constants is not supported", UnsupportedModelError
                    )
                kwargs.pop("num_constants", None)
                if not isinstance(inner, dict):
                    raise self.fail(f"{where}: the config has no wrapped layer")
                kwargs["layer"] = self._layer(inner)
                if back is not None:
                    kwargs["backward_layer"] = self._layer(back)
            elif class_name == "TimeDistributed":
                inner = kwargs.pop("layer", None)
                if not isinstance(inner, dict):
                    raise self.fail(f"{where}: the config has no wrapped layer")
                kwargs["layer"] = self._layer(inner)
            return LAYER_CLASSES[class_name](**kwargs)
        except (ModelFileError, UnsupportedModelError):
            raise
        except UnsupportedArgumentError as e:
            raise self.fail(f"{where}: {e}", UnsupportedModelError) from None
        except TypeError as e:
            raise self.fail(
                f"{where}: an option rnncore does not know ({e})", UnsupportedModelError
            ) from None
        except ValueError as e:
            raise self.fail(f"{where}: invalid config ({e})") from None


def build_stack(layers: list, input_shape, owner: str) -> tuple:
    """Build a chain of layers as ``Sequential.build`` does; the input shape as a tuple."""
    build_chain(layers, input_shape, owner)
    return shape_tuple(input_shape, f"{owner}: build")


def _is_op(spec: dict) -> bool:
    module = spec.get("module") or ""
    return (
        module.startswith("keras.src.ops")
        or module.startswith("keras.ops")
        or ("inbound_nodes" in spec and spec.get("class_name") in _MASK_OPS)
    )


def _check_module(plan: KerasPlan, spec: dict, where: str) -> None:
    """Refuse classes from outside Keras (custom layers / models)."""
    module = spec.get("module")
    registered = spec.get("registered_name")
    custom = (module is not None and module != "keras" and not module.startswith("keras.")) or (
        isinstance(registered, str) and ">" in registered
    )
    if custom:
        raise plan.fail(
            f"{where}: the custom class {spec.get('class_name')!r} (module "
            f"{module!r}, registered as {registered!r}) is not supported: rnncore "
            f"reads only Keras's own layers",
            UnsupportedModelError,
        )


# ---------------------------------------------------------------------------------------
# Functional models: a chain of layers
# ---------------------------------------------------------------------------------------


def _tensor_refs(plan: KerasPlan, spec: dict) -> tuple[list, dict]:
    """A layer's inputs as ``[(layer, node, tensor)]`` and its call kwargs (one call only)."""
    nodes = spec.get("inbound_nodes") or []
    name = spec.get("name") or (spec.get("config") or {}).get("name")
    if len(nodes) > 1:
        raise plan.fail(
            f"layer {name!r} is called {len(nodes)} times (a shared layer); only "
            f"models where each layer is called once are supported",
            UnsupportedModelError,
        )
    if not nodes:
        return [], {}
    node = nodes[0]
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        refs = []
        for a in node.get("args", []):
            if isinstance(a, dict) and a.get("class_name") == "__keras_tensor__":
                refs.append(tuple(a["config"]["keras_history"]))
            elif isinstance(a, (list, tuple, dict)):
                raise plan.fail(
                    f"layer {name!r} is called on several tensors; only chains "
                    f"of single-input layers are supported",
                    UnsupportedModelError,
                )
        return refs, dict(node.get("kwargs") or {})
    refs, kwargs = [], {}  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
    for item in node:
        refs.append(tuple(item[:3]))
        if len(item) > 3 and item[3]:
            kwargs.update(item[3])
    return refs, kwargs


def _functional_chain(plan: KerasPlan, body: dict, specs: list) -> tuple[list, int]:
    """The layers of a functional model from input to output, if it is a chain."""
    by_name = {}
    for spec in specs:
        name = spec.get("name") or (spec.get("config") or {}).get("name")
        by_name[name] = spec

    def refs_list(value):
        if isinstance(value, list) and value and isinstance(value[0], str):
            return [value]
        return list(value or [])

    inputs = refs_list(body.get("input_layers"))
    outputs = refs_list(body.get("output_layers"))
    if len(inputs) != 1:
        raise plan.fail(
            f"the model has {len(inputs)} inputs; only single-input models are supported",
            UnsupportedModelError,
        )
    if (
        not outputs
        or len({o[0] for o in outputs}) != 1
        or [int(o[2]) for o in outputs] != list(range(len(outputs)))
    ):
        raise plan.fail(
            f"the model's outputs {outputs} are not the output(s) of one last "
            f"layer in order; only such models are supported",
            UnsupportedModelError,
        )
    chain = []
    current = outputs[0][0]
    seen = set()
    while True:
        spec = by_name.get(current)
        if spec is None:
            raise plan.fail(f"the config refers to an unknown layer {current!r}")
        if current in seen:
            raise plan.fail(f"the model graph has a cycle at layer {current!r}")
        seen.add(current)
        chain.append(spec)
        if current == inputs[0][0]:
            break
        if _is_op(spec) or spec["class_name"] not in SUPPORTED_LAYERS:
            raise plan.fail(
                f"layer {current!r}: the Keras class {spec['class_name']} is not "
                f"supported by rnncore (supported: {', '.join(SUPPORTED_LAYERS)})",
                UnsupportedModelError,
            )
        refs, kwargs = _tensor_refs(plan, spec)
        for key, value in kwargs.items():
            if key == "training" or value is None:
                continue
            if key == "mask" and _is_mask_op_tensor(value, by_name):
                continue  # Keras's implicit mask from a Masking layer: rnncore does the same
            raise plan.fail(
                f"layer {current!r} is called with {key}=..., which rnncore's "
                f"import does not support",
                UnsupportedModelError,
            )
        if len(refs) != 1:
            raise plan.fail(
                f"layer {current!r} has {len(refs)} inputs; only chains of "
                f"single-input layers are supported",
                UnsupportedModelError,
            )
        src, node_index, tensor_index = refs[0]
        if int(node_index) != 0 or int(tensor_index) != 0:
            raise plan.fail(
                f"layer {current!r} takes output {tensor_index} of layer {src!r}; "
                f"only the main output of each layer can feed the next",
                UnsupportedModelError,
            )
        current = src
    chain.reverse()
    on_chain = {id(s) for s in chain}
    for spec in specs:
        if id(spec) not in on_chain and not (_is_op(spec) and spec["class_name"] in _MASK_OPS):
            name = spec.get("name") or (spec.get("config") or {}).get("name")
            raise plan.fail(
                f"layer {name!r} ({spec['class_name']}) is not on the path from "
                f"the input to the output: only chain-shaped functional models "
                f"are supported",
                UnsupportedModelError,
            )
    if chain[0]["class_name"] != "InputLayer":
        raise plan.fail("the model's input is not an InputLayer")
    return chain, len(outputs)


def _is_mask_op_tensor(value, by_name) -> bool:
    """Whether a ``mask=`` argument is Keras's ``any(not_equal(x, v), -1)`` of a Masking."""
    if not isinstance(value, dict) or value.get("class_name") != "__keras_tensor__":
        return False
    src = by_name.get(value["config"]["keras_history"][0])
    return src is not None and src["class_name"] in _MASK_OPS and _is_op(src)


# ---------------------------------------------------------------------------------------
# Keras 2 differences
# ---------------------------------------------------------------------------------------


def _keras2_defaults(plan: KerasPlan, class_name: str, kwargs: dict, where: str) -> None:
    """Keras 2 configs: defaults that changed in Keras 3, activations that differ."""
    if class_name == "GRU":
        kwargs.setdefault("reset_after", False)  # Keras 2.0-2.2's default
    if class_name == "LSTM" and kwargs.get("activation") == "hard_sigmoid":
        raise plan.fail(
            f"{where}: activation='hard_sigmoid' as Keras 2 defines it "
            f"(clip(0.2 x + 0.5, 0, 1)) on the LSTM cell state has no rnncore "
            f"equivalent",
            UnsupportedModelError,
        )
    if class_name == "Activation" and kwargs.get("activation") == "hard_sigmoid":
        raise plan.fail(
            f"{where}: Keras 2's hard_sigmoid (clip(0.2 x + 0.5, 0, 1)) differs "
            f"from rnncore's (Keras 3: clip(x / 6 + 0.5, 0, 1))",
            UnsupportedModelError,
        )
    if kwargs.get("time_major"):
        raise plan.fail(f"{where}: time_major=True is not supported", UnsupportedModelError)
    kwargs.pop("time_major", None)

"""A Keras model config (``config.json``, or ``model_config`` of an ``.h5``) read into
rnncore layers: which Keras layers are read, how a functional model's chain is found, and
what Keras 2 configs mean differently. The weights are :mod:`rnncore.formats.keras_weights`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ModelFileError, UnsupportedArgumentError, UnsupportedModelError
from ..layers import LAYER_CLASSES, InputLayer
from ..layers._args import shape_tuple
from ..layers._base import build_chain
from .keras_graph import functional_graph, spec_name

__all__ = ["SUPPORTED_LAYERS", "KerasPlan", "KerasModelSpec"]

#: The Keras layer classes :func:`rnncore.formats.keras.read_keras` reads: rnncore's own,
#: which take Keras's names, arguments and weights.
SUPPORTED_LAYERS = tuple(LAYER_CLASSES)


#: the Keras model classes a functional model may use as a layer (a nested model)
MODEL_CLASSES = ("Functional", "Model", "Sequential")

#: how deep models may nest in one another: a file declaring more is damaged
_MAX_NESTING = 32

#: Config keys that only matter for training or speed: not carried over (nor any key
#: ending in _initializer, _regularizer or _constraint).
_DROPPED_KEYS = frozenset(("unit_forget_bias", "seed", "unroll", "use_cudnn", "implementation"))
_DROPPED_SUFFIXES = ("_initializer", "_regularizer", "_constraint")


def _carried(key: str) -> bool:
    return key not in _DROPPED_KEYS and not key.endswith(_DROPPED_SUFFIXES)


@dataclass
class KerasModelSpec:
    """What a Keras file describes, as rnncore layers, before its weights are read.

    ``graph`` is ``None`` for a ``Sequential`` model: the model is ``layers`` in order,
    built for ``input_shape`` when the file gives it. For a functional model it is the
    model's config in Keras 3's functional form (:func:`.keras_graph.functional_graph`), whose
    layers are ``layers`` (the same names), not yet built.
    """

    name: str | None
    layers: list
    input_shape: tuple | None = None
    graph: dict | None = None
    #: the plan of a nested model (its entries, for its weights): see :attr:`Entry.nested`
    plan: KerasPlan | None = field(default=None, repr=False, compare=False)


class Entry:
    """One top-level Keras layer: its spec, the rnncore layer built from it; for a nested
    model (a functional model or ``Sequential`` used as a layer) ``layer`` is ``None`` and
    ``nested`` is the nested model's plan, whose entries hold its layers."""

    def __init__(self, spec: dict, layer):
        self.spec = spec
        self.class_name = spec["class_name"]
        self.config = spec.get("config") or {}
        self.name = self.config.get("name", spec.get("name"))
        self.nested = layer.plan if isinstance(layer, KerasModelSpec) else None
        self.layer = None if self.nested is not None else layer

    def has_weights(self) -> bool:
        if self.nested is not None:
            return self.nested.has_weights()
        return self.layer is not None and bool(self.layer.weights)


class KerasPlan:
    """A Keras config read into rnncore layers, and then the weights into those layers."""

    def __init__(self, filepath: str, config, keras_version: int, depth: int = 0):
        self.filepath = filepath
        self.keras_version = keras_version
        if not isinstance(config, dict) or "class_name" not in config:
            raise ModelFileError(f"{filepath}: the model config is not a Keras model description")
        self.config = config
        #: how deep this model is nested in the file's model (0: the model itself)
        self.depth = depth
        #: the model's layers in config order (Keras's weight numbering), InputLayer included
        self.entries: list[Entry] = []
        #: what :meth:`build` made of the config
        self.spec: KerasModelSpec | None = None

    def fail(self, msg, cls=ModelFileError):
        return cls(f"{self.filepath}: {msg}")

    @property
    def trainable(self) -> bool:
        body = self.config.get("config")
        return not isinstance(body, dict) or body.get("trainable", True) is not False

    def has_weights(self) -> bool:
        """Whether any layer of the model, nested models' included, has weights."""
        return any(e.has_weights() for e in self.entries)

    def leaves(self, trainable: bool = True) -> list:
        """``(entry, trainable)`` of each layer with weights, nested models' layers in
        their place (config order); ``trainable`` is False under a frozen nested model."""
        out = []
        for e in self.entries:
            if e.nested is not None:
                out += e.nested.leaves(trainable and e.nested.trainable)
            elif e.has_weights():
                out.append((e, trainable))
        return out

    def build(self) -> KerasModelSpec:
        """The model the config describes, as rnncore layers (see :class:`KerasModelSpec`)."""
        class_name = self.config["class_name"]
        body = self.config.get("config")
        _check_module(self, self.config, "model")
        if class_name == "Sequential":
            if isinstance(body, list):  # Keras 2.0 / 2.1
                body = {"layers": body}
            specs = self._specs(body)
            return self._sequential(body, specs)
        if class_name in ("Functional", "Model"):
            specs = self._specs(body)
            graph = functional_graph(self, body, specs)
            for spec in graph["layers"]:
                nested = spec["class_name"] in MODEL_CLASSES
                layer = self._nested(spec) if nested else self._layer(spec)
                if layer.name != spec["name"]:  # the calls refer to layers by this name
                    raise self.fail(
                        f"layer {spec['name']!r} ({spec['class_name']}): its config names it "
                        f"{layer.name!r}"
                    )
                self.entries.append(Entry(spec, layer))
            layers = [e.layer if e.nested is None else e.nested.spec for e in self.entries]
            self.spec = KerasModelSpec(graph["name"], layers, None, graph, self)
            return self.spec
        else:
            raise self.fail(
                f"model class {class_name!r} is not supported: only Sequential and "
                f"functional models can be read without the model's Python code",
                UnsupportedModelError,
            )

    def _sequential(self, body, specs) -> KerasModelSpec:
        # the Keras weight numbering counts every layer of the config (in order)
        for spec in specs:
            self.entries.append(Entry(spec, None))
        by_id = {id(e.spec): e for e in self.entries}
        model_layers = []
        for spec in specs:
            entry = by_id[id(spec)]
            if spec["class_name"] in MODEL_CLASSES:
                raise self.fail(
                    f"the {spec['class_name']} model {entry.name!r} inside a Sequential model "
                    f"is not supported (nested models are read in functional models)",
                    UnsupportedModelError,
                )
            entry.layer = self._layer(spec)
            model_layers.append(entry.layer)
        input_layers = [x for x in model_layers if isinstance(x, InputLayer)]
        if len(input_layers) > 1 or (input_layers and model_layers[0] is not input_layers[0]):
            raise self.fail("an InputLayer can only be the first layer of the model")
        name = (body or {}).get("name")
        stack = [x for x in model_layers if not isinstance(x, InputLayer)]
        input_shape = self._build(stack, input_layers, body, name)
        self.spec = KerasModelSpec(name, model_layers, input_shape, None, self)
        return self.spec

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
        kwargs = {k: v for k, v in config.items() if _carried(k)}
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

    def _nested(self, spec: dict) -> KerasModelSpec:
        """A nested model's spec, read by a plan of its own (its layers and weights)."""
        where = f"the {spec['class_name']} model {spec_name(spec)!r}"
        if self.keras_version == 2:
            # tf.keras counted a nested model's own first call in the node indices of the
            # calls that use it (Keras 3 does not): not read rather than guessed
            raise self.fail(
                f"{where}: nested models in Keras 2 files are not supported",
                UnsupportedModelError,
            )
        if self.depth >= _MAX_NESTING:
            raise self.fail(f"{where}: models nested more than {_MAX_NESTING} levels deep")
        return KerasPlan(self.filepath, spec, self.keras_version, self.depth + 1).build()


def build_stack(layers: list, input_shape, owner: str) -> tuple:
    """Build a chain of layers as ``Sequential.build`` does; the input shape as a tuple."""
    build_chain(layers, input_shape, owner)
    return shape_tuple(input_shape, f"{owner}: build")


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

"""Non-recurrent layers: Dense, Activation, Softmax, Dropout, Masking, and the model input."""

from __future__ import annotations

import numpy as np

from .. import activations, functional, utils
from . import initializers
from ._args import batch_size_arg, declared_shape
from ._base import (
    InputTensor,
    Layer,
    UnsupportedArgumentError,
    check_allocation,
    positive_int,
    require_default,
    shape_tuple,
    standardize_dtype,
)
from ._quantized import Quantizable
from ._symbolic import Node, nodes_of

__all__ = [
    "Dense",
    "Activation",
    "Softmax",
    "Dropout",
    "Masking",
    "InputLayer",
    "Input",
    "InputTensor",
]


def _dense(x, kernel, bias, activation, quantized=None):
    """``act(x W + b)`` on the last axis: the one place Dense computes (the core's kernel);
    with ``quantized`` (a :class:`rnncore.quantization.Quantized` kernel) in low precision."""
    if quantized is not None:
        return functional.dense(x, quantized, bias, activation, quantize=quantized.mode)
    return functional.dense(x, kernel, bias, activation)


def set_kernel_options(layer, activation, use_bias, kernel_initializer, bias_initializer, seed):
    """The options Dense and Conv1D share: ``activation(x * kernel + bias)``."""
    layer.activation = activations.name_of(activation, type(layer).__name__)
    layer.use_bias = bool(use_bias)
    layer.kernel_initializer = initializers.get(kernel_initializer)
    layer.bias_initializer = initializers.get(bias_initializer)
    layer.seed = seed


class Dense(Quantizable, Layer):
    """``output = activation(inputs @ kernel + bias)`` on the last axis (any rank >= 2).

    On a sequence ``(batch, timesteps, features)`` it applies to every timestep, like
    Keras's Dense (and ``TimeDistributed(Dense)``). Weights: ``kernel (input_dim, units)``,
    ``bias (units,)``.
    """

    _builds_from_kernel = True
    _config = ("units", "activation", "use_bias", "kernel_initializer", "bias_initializer")
    _chain_kind = "dense"

    def _chainable(self) -> bool:
        # a quantized Dense runs its own low-precision product (call), not the chain's
        return super()._chainable() and self.quantization_mode is None

    def _chain_op(self, batch):
        bias = None if self.bias is None else self.bias.value
        return ("dense", self.kernel.value, bias, self.activation)

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 lora_rank=None, lora_alpha=None, quantization_config=None, **kwargs):  # fmt: skip
        require_default("Dense", kernel_regularizer=(kernel_regularizer, None),
                        bias_regularizer=(bias_regularizer, None),
                        activity_regularizer=(activity_regularizer, None),
                        kernel_constraint=(kernel_constraint, None),
                        bias_constraint=(bias_constraint, None), lora_rank=(lora_rank, None),
                        lora_alpha=(lora_alpha, None),
                        quantization_config=(quantization_config, None))  # fmt: skip
        seed = kwargs.pop("seed", None)
        super().__init__(**kwargs)
        self.units = positive_int(units, "Dense: units")
        set_kernel_options(self, activation, use_bias, kernel_initializer, bias_initializer, seed)
        self.kernel = self.bias = None

    def build(self, input_shape):
        input_shape = shape_tuple(input_shape, f"{self.name}: build")
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                f"Dense {self.name!r}: input shape must be (batch, ..., features) with a known "
                f"feature size, got {input_shape}"
            )
        check_allocation(  # all the weights, before allocating any
            f"Dense {self.name!r} (units={self.units})",
            [(input_shape[-1], self.units)] + ([(self.units,)] if self.use_bias else []),
            self._np_dtype,
        )
        rng = np.random.default_rng(utils.draw_seed(self.seed))
        self.kernel = self.add_weight(
            "kernel", (input_shape[-1], self.units), self.kernel_initializer, rng
        )
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.units,), self.bias_initializer, rng)
        super().build(input_shape)

    def call(self, inputs, mask=None, training=None):
        d = self.kernel.value.shape[0]
        if inputs.ndim < 2 or inputs.shape[-1] != d:
            raise ValueError(
                f"Dense {self.name!r}: expected input of shape (batch, ..., {d}), "
                f"got {inputs.shape}"
            )
        low = self.quantized_weights()
        return _dense(
            inputs,
            self.kernel.value,
            None if self.bias is None else self.bias.value,
            self.activation,
            None if low is None else low["kernel"],
        )

    def call_train(self, x, mask, rng):
        self._refuse_training()
        y = self.call(x)
        self._train_cache = (np.ascontiguousarray(x), y)
        return y

    def backward(self, dy):
        x, y = self._cached()
        dx, dW, db = functional.dense_backward(
            x,
            self.kernel.value,
            y,
            np.ascontiguousarray(dy, dtype=y.dtype),
            use_bias=self.use_bias,
            activation=self.activation,
        )
        self._grads = [dW, db] if self.use_bias else [dW]
        return dx

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.units,)


class Activation(Layer):
    """An activation function applied element-wise (``softmax``: over the last axis)."""

    _config = ("activation",)

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.name_of(activation, "Activation")

    def call(self, inputs, mask=None, training=None):
        return activations.get(self.activation)(inputs)

    def call_train(self, x, mask, rng):
        y = self.call(x)
        self._train_cache = (x, y)
        return y

    def backward(self, dy):
        x, y = self._cached()
        self._grads = []
        return activations.gradient(self.activation, y, dy).astype(x.dtype, copy=False)


class Softmax(Layer):
    """Softmax over ``axis``; with a mask, masked positions are excluded and output zero.

    As Keras: the mask must broadcast against the input (aligned on the trailing axes).
    """

    _config = ("axis",)

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def call(self, inputs, mask=None, training=None):
        axis = tuple(self.axis) if isinstance(self.axis, (list, tuple)) else self.axis
        if mask is None:
            return activations.softmax(inputs, axis=axis)
        mask = np.asarray(mask)
        if mask.ndim > inputs.ndim or any(
            m not in (1, i) for m, i in zip(mask.shape[::-1], inputs.shape[::-1])
        ):
            raise ValueError(
                f"Softmax {self.name!r}: the mask must be broadcastable to the inputs; got "
                f"inputs.shape={inputs.shape}, mask.shape={mask.shape}"
            )
        keep = mask if mask.dtype == np.bool_ else mask > 0.5
        big_negative = np.finfo(inputs.dtype).min / 2 if inputs.dtype.itemsize < 4 else -1e9
        y = activations.softmax(np.where(keep, inputs, big_negative), axis=axis)
        return np.where(keep, y, 0.0).astype(inputs.dtype, copy=False)

    def call_train(self, x, mask, rng):
        if isinstance(self.axis, (list, tuple)):
            raise NotImplementedError(f"Softmax {self.name!r}: training over several axes")
        y = self.call(x, mask)
        self._train_cache = (x, y)
        return y

    def backward(self, dy):
        x, y = self._cached()
        self._grads = []
        # masked positions output zero, so y = 0 there and their gradient is zero too
        return activations.gradient("softmax", y, dy, self.axis).astype(x.dtype, copy=False)


class Dropout(Layer):
    """Dropout (Keras's semantics): the identity at inference; in training each input unit
    is zeroed with probability ``rate`` and the others scaled by ``1 / (1 - rate)``.

    ``noise_shape`` (``None`` entries taken from the input) shares a mask along its axes of
    size 1, e.g. ``(batch, 1, features)`` for the same mask at every timestep.
    ``model.fit`` trains through it; a direct ``layer(x, training=True)`` call draws a mask
    from the layer's seed.
    """

    _config = ("rate", "noise_shape", "seed")
    _chain_kind = "identity"  # at inference

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate <= 1:
            raise ValueError(f"Dropout: rate must be in [0, 1], got {rate!r}")
        self.rate = float(rate)
        self.noise_shape = noise_shape
        self.seed = seed

    def call(self, inputs, mask=None, training=None):
        if training and self.rate > 0:
            return self.call_train(inputs, mask, None)
        return inputs

    def _noise(self, shape, dtype, rng):
        if self.noise_shape is None:
            noise_shape = shape
        else:
            noise_shape = tuple(d if n is None else int(n) for n, d in zip(self.noise_shape, shape))
        keep = 1.0 - self.rate
        if keep <= 0:
            return np.zeros(noise_shape, dtype)
        return ((self._noise_rng(rng).random(noise_shape) < keep) / keep).astype(dtype)

    def call_train(self, x, mask, rng):
        if self.rate <= 0:
            self._train_cache = (None,)
            return x
        noise = self._noise(x.shape, x.dtype, rng)
        self._train_cache = (noise,)
        return x * noise

    def backward(self, dy):
        (noise,) = self._cached()
        self._grads = []
        return dy if noise is None else dy * noise


class Masking(Layer):
    """Masks timesteps whose features all equal ``mask_value`` (Keras's ``Masking``).

    The output is the input with masked timesteps set to zero; the mask (``True`` where a
    step is used) goes to the following layers.
    """

    _config = ("mask_value",)
    _chain_kind = "masking"

    def _chainable(self) -> bool:
        value = self.mask_value
        return self._native_ok() and isinstance(value, (int, float)) and not isinstance(value, bool)

    def _chain_op(self, batch):
        return ("masking", float(self.mask_value))

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_value = mask_value

    def call(self, inputs, mask=None, training=None):
        keep = np.any(inputs != self.mask_value, axis=-1, keepdims=True)
        return np.where(keep, inputs, 0).astype(inputs.dtype, copy=False)

    def compute_mask(self, inputs, mask=None):
        return np.any(inputs != self.mask_value, axis=-1)

    def call_train(self, x, mask, rng):
        keep = np.any(x != self.mask_value, axis=-1, keepdims=True)
        self._train_cache = (keep,)
        return np.where(keep, x, 0).astype(x.dtype, copy=False)

    def backward(self, dy):
        (keep,) = self._cached()
        self._grads = []
        return np.where(keep, dy, 0).astype(dy.dtype, copy=False)


class InputLayer(Layer):
    """The input of a model: its batch shape and dtype (Keras's ``InputLayer``)."""

    _chain_kind = "identity"

    def __init__(self, shape=None, batch_size=None, dtype=None, sparse=None, ragged=None,
                 batch_shape=None, input_tensor=None, optional=False, name=None,
                 **kwargs):  # fmt: skip
        require_default(
            "InputLayer",
            sparse=(sparse or None, None),  # Keras configs write False
            ragged=(ragged or None, None),
            input_tensor=(input_tensor, None),
            optional=(optional, False),
        )
        if "input_shape" in kwargs and shape is None:  # Keras 2 spelling
            shape = kwargs.pop("input_shape")
        if "batch_input_shape" in kwargs and batch_shape is None:
            batch_shape = kwargs.pop("batch_input_shape")
        super().__init__(name=name, **kwargs)
        # an input may also hold integers (token ids for an Embedding), as in Keras
        self._np_dtype = standardize_dtype(dtype, "InputLayer", integers=True)
        if batch_shape is not None:
            if shape is not None or batch_size is not None:
                raise ValueError("InputLayer: give batch_shape, or shape (and batch_size)")
            batch_shape = declared_shape(batch_shape, "InputLayer: batch_shape", True)
        elif shape is not None:
            batch_size = batch_size_arg(batch_size, "InputLayer: batch_size")
            batch_shape = (batch_size,) + declared_shape(shape, "InputLayer: shape")
        else:
            raise ValueError("InputLayer: a shape (or batch_shape) is required")
        self.batch_shape = batch_shape
        self.built = True
        self._build_input_shape = batch_shape

    @property
    def output(self) -> InputTensor:
        """The layer's symbolic tensor (Keras's ``KerasTensor``), made once, with the input
        node that begins a functional graph."""
        if not nodes_of(self):
            Node(self, (), {}, InputTensor(self.batch_shape, self.dtype, self.name))
        return self._inbound_nodes[0].outputs[0]

    def call(self, inputs, mask=None, training=None):
        return inputs

    def call_train(self, x, mask, rng):
        return x

    def backward(self, dy):
        self._grads = []
        return dy

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "batch_shape": list(self.batch_shape)}


def Input(shape=None, batch_size=None, dtype=None, sparse=None, ragged=None, batch_shape=None,
          name=None, tensor=None, optional=False):  # fmt: skip
    """A model's input, as ``keras.Input``: a symbolic tensor (:class:`KerasTensor`) to call
    layers on (``rnncore.Model(inputs, outputs)``), or the first entry of a
    :class:`rnncore.Sequential`.

    ``shape`` excludes the batch dimension; timesteps may be ``None``. ``dtype`` may be an
    integer type (token ids for an ``Embedding``).
    """
    if dtype is not None:
        standardize_dtype(dtype, "Input", integers=True)
    if tensor is not None:
        raise UnsupportedArgumentError("Input: argument tensor= is not supported by rnncore")
    layer = InputLayer(
        shape=shape,
        batch_size=batch_size,
        dtype=dtype,
        sparse=sparse,
        batch_shape=batch_shape,
        name=name,
        optional=optional,
        ragged=ragged,
    )
    return layer.output

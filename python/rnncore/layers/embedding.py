"""Embedding: token ids -> rows of a trainable matrix (Keras's ``keras.layers.Embedding``)."""

from __future__ import annotations

import warnings

import numpy as np

from .. import functional, utils
from . import initializers
from ._base import InputTensor, Layer, positive_int, require_default, shape_tuple

__all__ = ["Embedding", "as_ids"]


def as_ids(value, input_dim: int, what: str) -> np.ndarray:
    """``value`` as an integer array of ids in ``[0, input_dim)``.

    Keras casts other inputs to int32; here a float array is taken only when it holds whole
    numbers (Keras would truncate 2.7 to 2: a wrong row, silently), and an id outside the
    vocabulary is an error naming it and where it is (NumPy would wrap a negative id round
    to the end of the matrix, Keras's backends read out of range or clip).
    """
    a = np.asarray(value)
    kind = a.dtype.kind
    if kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.trunc(a)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(a) | (a != np.trunc(a)))[0])
            raise ValueError(
                f"{what}: token ids must be whole numbers, got {a[bad].item()!r} at index {bad} "
                f"(dtype {a.dtype})"
            )
    elif kind not in "biu":
        raise TypeError(f"{what}: expected integer token ids, got dtype {a.dtype}")
    # the range is checked before a float array is converted: a whole float beyond int64's
    # range (1e30) has no defined integer, and NumPy's conversion of it varies by CPU
    if a.size:
        low, high = a.min(), a.max()
        if low < 0 or high >= input_dim:
            bad_id = low if low < 0 else high
            where = tuple(int(i) for i in np.argwhere(a == bad_id)[0])
            shown = int(bad_id) if kind != "f" else f"{bad_id.item():g}"
            raise ValueError(
                f"{what}: token id {shown} at index {where} is out of range for "
                f"input_dim={input_dim} (ids must be in [0, {input_dim - 1}])"
            )
    return a.astype(np.int64) if kind == "f" else a


class Embedding(Layer):
    """Turns token ids into dense vectors: ``output[..., :] = embeddings[ids[...]]``.

    Weight: ``embeddings (input_dim, output_dim)``. Inputs are integer ids of any shape
    (floats holding whole numbers are taken too); the output has one more axis,
    ``output_dim``, in the layer's float dtype. With ``mask_zero=True`` id 0 is padding: the
    output mask is ``ids != 0`` (so ``input_dim`` counts the padding id). ``input_length``
    is ignored with a warning, as Keras 3 does. Training: the embeddings' gradient is the
    output gradient summed into the rows that were read; ids have no gradient.
    """

    _config = ("input_dim", "output_dim", "embeddings_initializer", "mask_zero")
    _chain_kind = "embedding"  # the first op of a chain only (its input is the chain's ids)

    def _chain_op(self, batch):
        return ("embedding", self.embeddings.value, bool(self.mask_zero))

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform",
                 embeddings_regularizer=None, embeddings_constraint=None, mask_zero=False,
                 weights=None, lora_rank=None, lora_alpha=None, quantization_config=None,
                 **kwargs):  # fmt: skip
        require_default("Embedding", embeddings_regularizer=(embeddings_regularizer, None),
                        embeddings_constraint=(embeddings_constraint, None),
                        lora_rank=(lora_rank, None), lora_alpha=(lora_alpha, None),
                        quantization_config=(quantization_config, None))  # fmt: skip
        if kwargs.pop("input_length", None) is not None:
            warnings.warn("Argument `input_length` is deprecated. Just remove it.", stacklevel=2)
        seed = kwargs.pop("seed", None)
        super().__init__(**kwargs)
        self.input_dim = positive_int(input_dim, "Embedding: input_dim")
        self.output_dim = positive_int(output_dim, "Embedding: output_dim")
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        if not isinstance(mask_zero, (bool, np.bool_)):
            raise TypeError(f"Embedding: mask_zero must be a bool, got {mask_zero!r}")
        self.mask_zero = bool(mask_zero)
        self.seed = seed
        self.embeddings = None
        if weights is not None:  # Keras: one matrix, or a list holding it
            self.build()
            self.set_weights(weights if isinstance(weights, list) else [weights])

    @property
    def supports_masking(self) -> bool:
        return self.mask_zero

    def build(self, input_shape=None):
        if self.embeddings is None:
            rng = np.random.default_rng(utils.draw_seed(self.seed))
            shape = (self.input_dim, self.output_dim)
            self.embeddings = self.add_weight("embeddings", shape, self.embeddings_initializer, rng)
        if input_shape is None:  # the matrix does not depend on the input shape
            self.built = True
        else:
            super().build(input_shape)

    def _build_from_weights(self, weights):
        self.build()

    def _convert(self, inputs):
        if isinstance(inputs, InputTensor):
            return super()._convert(inputs)  # the functional-API message
        return as_ids(inputs, self.input_dim, f"Embedding {self.name!r}: inputs")

    def call(self, inputs, mask=None, training=None):
        return self.embeddings.value[inputs]

    def compute_mask(self, inputs, mask=None):
        return np.asarray(inputs) != 0 if self.mask_zero else None

    def compute_output_shape(self, input_shape):
        return shape_tuple(input_shape, f"{self.name}: input shape") + (self.output_dim,)

    def call_train(self, x, mask, rng):
        self._train_cache = (x,)
        return self.call(x)

    def backward(self, dy):
        # d embeddings[v] = sum of dy over the positions whose id is v, in the core: the
        # sums np.add.at computes (repeated ids add up), bit for bit
        (ids,) = self._cached()
        dy = np.asarray(dy, dtype=self.embeddings.value.dtype)
        self._grads = [functional.embedding_backward(ids, dy, self.input_dim)]
        return None  # ids have no gradient

"""SimpleRNN, LSTM and GRU layers over the compiled core.

Each declares its cell (the core's cell name, gate count, states, functional, bias shape and
cell options) and Keras 3's constructor, argument for argument; the mechanics (weights,
states, masks, the call through the core stream, training) are :class:`RNN`'s, in
:mod:`rnncore.layers.rnn`. Constructors hand their arguments to ``RNN`` by keyword only, so
that no reordering can swap two of them.
"""

from __future__ import annotations

import numpy as np

from .. import activations, functional
from . import initializers
from ._recurrent_docs import document
from .rnn import RNN, _stream_option

__all__ = ["RNN", "SimpleRNN", "LSTM", "GRU"]


def _hand_over(arguments: dict, *own: str) -> dict:
    """A constructor's arguments (its ``locals()``) as keywords for ``RNN``: passed on by
    name, so no reordering can swap two; ``self`` and the subclass's ``own`` stay behind."""
    kwargs = arguments.pop("kwargs")
    dropped = {"self", "__class__", *own}
    return {name: value for name, value in arguments.items() if name not in dropped} | kwargs


class SimpleRNN(RNN):
    _cell = "simple_rnn"
    _gates = 1
    _state_names = ("h",)
    _functional = staticmethod(functional.simple_rnn)
    _cell_options = ("activation",)

    def __init__(self, units, activation="tanh", use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros",
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, recurrent_constraint=None,
                 bias_constraint=None, dropout=0.0, recurrent_dropout=0.0, return_sequences=False,
                 return_state=False, go_backwards=False, stateful=False, unroll=False, seed=None,
                 **kwargs):  # fmt: skip
        super().__init__(**_hand_over(locals()))


class _GatedRNN(RNN):
    """LSTM and GRU: a recurrent activation on the gates."""

    recurrent_activation = _stream_option("recurrent_activation")

    def _init_gated(self, arguments: dict, option: str):
        """The constructor of LSTM and GRU after their signature: ``arguments`` is its
        ``locals()``, ``option`` the class's own flag (``unit_forget_bias``, ``reset_after``)."""
        # Keras's implementation (1 or 2) is a speed choice with the same numbers, except that
        # implementation=1 draws one dropout mask per gate in training, as any
        # recurrent_dropout does
        implementation = arguments["kwargs"].pop("implementation", 2)
        recurrent_activation, flag = arguments["recurrent_activation"], arguments[option]
        RNN.__init__(self, **_hand_over(arguments, "recurrent_activation", option))
        self.recurrent_activation = activations.name_of(
            recurrent_activation, type(self).__name__, "recurrent_activation", allow_softmax=False
        )
        self._implementation = implementation
        setattr(self, option, bool(flag))

    _config = ("recurrent_activation",)


class LSTM(_GatedRNN):
    _cell = "lstm"
    _gates = 4
    _state_names = ("h", "c")
    _functional = staticmethod(functional.lstm)
    _cell_options = ("activation", "recurrent_activation")

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", unit_forget_bias=True, kernel_regularizer=None,
                 recurrent_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None,
                 dropout=0.0, recurrent_dropout=0.0, seed=None, return_sequences=False,
                 return_state=False, go_backwards=False, stateful=False, unroll=False,
                 use_cudnn="auto", **kwargs):  # fmt: skip
        self._init_gated(locals(), "unit_forget_bias")

    def _bias_initializer(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        init, units = self.bias_initializer, self.units

        def bias_initializer(shape, dtype=None, rng=None):
            # [i, f, c, o]: the forget gate's bias starts at one
            def part(n):
                return initializers.materialize(init, (n,), dtype, rng)

            return np.concatenate([part(units), np.ones(units), part(2 * units)])

        return bias_initializer

    _config = ("unit_forget_bias",)


class GRU(_GatedRNN):
    _cell = "gru"
    _gates = 3
    _state_names = ("h",)
    _functional = staticmethod(functional.gru)
    _cell_options = ("activation", "recurrent_activation", "reset_after")

    reset_after = _stream_option("reset_after")

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, return_sequences=False, return_state=False,
                 go_backwards=False, stateful=False, unroll=False, reset_after=True,
                 use_cudnn="auto", **kwargs):  # fmt: skip
        self._init_gated(locals(), "reset_after")

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    _config = ("reset_after",)


document(
    SimpleRNN,
    """
Fully-connected recurrent layer, Keras's ``keras.layers.SimpleRNN``.

``h_t = activation(x_t W + h_{t-1} U + b)`` with ``kernel`` W (input_dim, units),
``recurrent_kernel`` U (units, units) and ``bias`` b (units,). The state is ``[h]``.
""",
)
document(
    LSTM,
    """
Long Short-Term Memory layer (Hochreiter 1997), Keras's ``keras.layers.LSTM``.

Gates in Keras's order ``i, f, c, o`` (``kernel`` (input_dim, 4*units), ``recurrent_kernel``
(units, 4*units), ``bias`` (4*units,)), with ``z = x_t W + h_{t-1} U + b``::

    i, f, o = recurrent_activation(z_i, z_f, z_o)      g = activation(z_c)
    c_t = f * c_{t-1} + i * g                          h_t = o * activation(c_t)

The states are ``[h, c]``.
""",
)
document(
    GRU,
    """
Gated Recurrent Unit (Cho 2014), Keras's ``keras.layers.GRU``.

Gates in Keras's order ``z, r, h`` (``kernel`` (input_dim, 3*units), ``recurrent_kernel``
(units, 3*units))::

    z, r = recurrent_activation(x_t W_zr + h_{t-1} U_zr + b_zr)
    hh = activation(x_t W_h + b_xh + r * (h_{t-1} U_h + b_hh))    (reset_after=True)
    hh = activation(x_t W_h + b_h + (r * h_{t-1}) U_h)             (reset_after=False)
    h_t = z * h_{t-1} + (1 - z) * hh

``bias`` is (2, 3*units), input and recurrent rows, with ``reset_after=True`` (Keras 3's
default), and (3*units,) without. The state is ``[h]``.
""",
)

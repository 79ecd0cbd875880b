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
from ._base import positive_int
from ._recurrent_docs import document
from .rnn import RNN

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

    def _init_gated(self, arguments: dict, option: str, *own: str):
        """The constructor of LSTM and GRU after their signature: ``arguments`` is its
        ``locals()``, ``option`` the class's own flag (``unit_forget_bias``, ``reset_after``),
        ``own`` its other locals that are not RNN's arguments."""
        # Keras's implementation (1 or 2) is a speed choice with the same numbers, except that
        # implementation=1 draws one dropout mask per gate in training, as any
        # recurrent_dropout does
        implementation = arguments["kwargs"].pop("implementation", 2)
        recurrent_activation, flag = arguments["recurrent_activation"], arguments[option]
        RNN.__init__(self, **_hand_over(arguments, "recurrent_activation", option, *own))
        self.recurrent_activation = activations.name_of(
            recurrent_activation, type(self).__name__, "recurrent_activation", allow_softmax=False
        )
        self._implementation = implementation
        setattr(self, option, bool(flag))

    _config = ("recurrent_activation",)


#: the LSTM variants' constructor keywords (Keras has none: taken from ``**kwargs``, so the
#: signature stays Keras's) and their defaults, which leave the plain Keras LSTM
LSTM_VARIANTS = {
    "use_peepholes": False,
    "peephole_initializer": "zeros",
    "projection_units": None,
    "projection_initializer": "glorot_uniform",
    "cell_clip": None,
    "input_forget": False,
    "output_activation": None,
}


class LSTM(_GatedRNN):
    _cell = "lstm"
    _gates = 4
    _state_names = ("h", "c")
    _functional = staticmethod(functional.lstm)
    _cell_options = ("activation", "recurrent_activation", "cell_clip", "input_forget",
                     "output_activation")  # fmt: skip
    _variant_weights = ("peephole", "projection")

    _options = ("use_peepholes", "projection_units") + _cell_options[2:]

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", unit_forget_bias=True, kernel_regularizer=None,
                 recurrent_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None,
                 dropout=0.0, recurrent_dropout=0.0, seed=None, return_sequences=False,
                 return_state=False, go_backwards=False, stateful=False, unroll=False,
                 use_cudnn="auto", **kwargs):  # fmt: skip
        variants = {k: kwargs.pop(k, default) for k, default in LSTM_VARIANTS.items()}
        self._init_gated(locals(), "unit_forget_bias", "variants")
        self._init_variants(**variants)

    def _init_variants(self, use_peepholes, peephole_initializer, projection_units,
                       projection_initializer, cell_clip, input_forget,
                       output_activation):  # fmt: skip
        owner = f"LSTM {self.name!r}"
        for name, flag in (("use_peepholes", use_peepholes), ("input_forget", input_forget)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{owner}: {name} must be True or False, got {flag!r}")
        self.use_peepholes, self.input_forget = bool(use_peepholes), bool(input_forget)
        self.peephole_initializer = initializers.get(peephole_initializer)
        self.projection_units = (
            None
            if projection_units is None
            else positive_int(projection_units, f"{owner}: projection_units")
        )
        self.projection_initializer = initializers.get(projection_initializer)
        if cell_clip is not None:
            clip = float(cell_clip) if isinstance(cell_clip, (int, float, np.number)) else None
            if isinstance(cell_clip, bool) or clip is None or not 0 < clip < np.inf:
                raise ValueError(
                    f"{owner}: cell_clip must be a finite number > 0 or None, got {cell_clip!r}"
                )
            cell_clip = clip
        self.cell_clip = cell_clip
        self.output_activation = (
            None
            if output_activation is None
            else activations.name_of(output_activation, owner, "output_activation", False)
        )
        self.peephole = self.projection = None

    @property
    def state_size(self) -> list[int]:
        """``[h, c]`` widths: ``h`` (and the output) is ``projection_units`` wide with a
        projection, ``c`` is always ``units`` wide."""
        return [self.projection_units or self.units, self.units]

    def _weight_specs(self, input_dim) -> list[tuple]:
        specs = super()._weight_specs(input_dim)
        if self.use_peepholes:
            specs.append(("peephole", (3, self.units), self.peephole_initializer))
        if self.projection_units is not None:
            shape = (self.units, self.projection_units)
            specs.append(("projection", shape, self.projection_initializer))
        return specs

    def get_config(self) -> dict:
        """Keras's config; the variants' keys only where they differ from their defaults
        (so a plain LSTM's config is exactly Keras's)."""
        config = super().get_config()
        for name, default in LSTM_VARIANTS.items():
            value = getattr(self, name)
            if isinstance(value, initializers.Initializer):
                value = initializers.serialize(value)
                default = initializers.serialize(initializers.get(default))
            if value != default:
                config[name] = value
        return config

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

Variants (PyTorch's and ONNX's LSTMs; Keras has no names for them, so these keywords are
rnncore's own, given through ``**kwargs``; :func:`rnncore.functional.lstm` has the
equations), all off by default:

``use_peepholes`` : bool, default False
    Adds the weight ``peephole`` (3, units), rows ``p_i, p_f, p_o`` (initialised by
    ``peephole_initializer``, default ``'zeros'``): ``z_i += p_i * c_{t-1}``,
    ``z_f += p_f * c_{t-1}``, ``z_o += p_o * c_t`` (ONNX's ``P``).
``projection_units`` : int or None, default None
    Adds the weight ``projection`` W_hr (units, projection_units) (initialised by
    ``projection_initializer``, default ``'glorot_uniform'``): ``h_t = (o * act(c_t)) W_hr``
    (PyTorch's ``proj_size``). The output and ``h`` are ``projection_units`` wide,
    ``recurrent_kernel`` is (projection_units, 4*units); ``c`` stays ``units`` wide.
``cell_clip`` : float > 0 or None, default None
    ONNX's ``clip``: the gates' pre-activations are clipped to ``[-cell_clip, cell_clip]``.
``input_forget`` : bool, default False
    ONNX's coupled gates: ``f = 1 - i`` (the forget gate's weights are unused).
``output_activation`` : str or None, default None
    The activation of ``c_t`` in ``h_t`` (ONNX's ``h``); None uses ``activation``.

The weights are ``kernel, recurrent_kernel, bias`` (with ``use_bias``), then ``peephole``
and ``projection`` when present. Each variant key appears in ``get_config`` only when it
differs from its default.
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

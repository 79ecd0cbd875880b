"""The reference documentation of the recurrent layers, numpydoc style, written once.

Each argument is described once here; :func:`document` lists a layer's arguments in the
order and with the defaults of its own signature (so ``help(LSTM)`` cannot drift from
``LSTM.__init__``), followed by the call arguments and what a call returns.
"""

from __future__ import annotations

import inspect
import textwrap

__all__ = ["document"]

_INITIALIZER = "str, dict or callable"
_UNSUPPORTED = "Keras's argument; only the default is supported (anything else is refused)."

#: name -> (type, description) of every constructor argument of SimpleRNN, LSTM and GRU
PARAMETERS = {
    "units": ("int", "Number of units: the size of the output and of each state."),
    "activation": (
        "str, callable or None",
        "Activation of the new state (SimpleRNN), of the candidate state (LSTM, GRU) and of "
        "``c`` in the LSTM's output: ``tanh``, ``sigmoid``, ``relu``, ``hard_sigmoid`` or "
        "``linear`` (``None``), by name or as a function of that name.",
    ),
    "recurrent_activation": (
        "str, callable or None",
        "Activation of the gates (``i, f, o`` of the LSTM, ``z, r`` of the GRU); the same "
        "names as ``activation``.",
    ),
    "use_bias": ("bool", "Whether the layer has a bias."),
    "kernel_initializer": (_INITIALIZER, "Initializer of ``kernel`` (input_dim, G*units)."),
    "recurrent_initializer": (
        _INITIALIZER,
        "Initializer of ``recurrent_kernel`` (units, G*units).",
    ),
    "bias_initializer": (_INITIALIZER, "Initializer of the bias."),
    "unit_forget_bias": (
        "bool",
        "Whether the forget gate's bias starts at one (the rest from ``bias_initializer``).",
    ),
    "kernel_regularizer": ("None", _UNSUPPORTED),
    "recurrent_regularizer": ("None", _UNSUPPORTED),
    "bias_regularizer": ("None", _UNSUPPORTED),
    "activity_regularizer": ("None", _UNSUPPORTED),
    "kernel_constraint": ("None", _UNSUPPORTED),
    "recurrent_constraint": ("None", _UNSUPPORTED),
    "bias_constraint": ("None", _UNSUPPORTED),
    "dropout": (
        "float in [0, 1]",
        "Fraction of the input features dropped in training (one mask per sequence); the "
        "identity at inference.",
    ),
    "recurrent_dropout": (
        "float in [0, 1]",
        "Fraction of the recurrent state's units dropped where it enters the gates, in "
        "training only.",
    ),
    "seed": ("int or None", "Seed of the weight initializers and of the dropout masks."),
    "return_sequences": (
        "bool",
        "Return the output of every step ``(batch, timesteps, units)`` instead of the last "
        "``(batch, units)``.",
    ),
    "return_state": ("bool", "Also return the final states (see Returns)."),
    "go_backwards": (
        "bool",
        "Run the sequence from its last step to its first; the output sequence is in that "
        "processing order, as in Keras.",
    ),
    "stateful": (
        "bool",
        "Carry the final states of a call over to the next call as its initial states "
        "(row ``i`` to row ``i``), with a fixed batch size; ``reset_states()`` zeros them.",
    ),
    "unroll": ("bool", _UNSUPPORTED),
    "reset_after": (
        "bool",
        "GRU form: ``True`` (Keras 3, cuDNN, PyTorch) applies the reset gate after the "
        "recurrent product, with a bias ``(2, 3*units)``; ``False`` (the 2014 form) before "
        "it, with a bias ``(3*units,)``.",
    ),
    "use_cudnn": ("'auto' or False", "Keras's choice of GPU kernel; no effect on the CPU."),
    "kwargs": (
        "",
        "Keras's layer arguments: ``name``, ``dtype`` (``float32`` or ``float64``), "
        "``trainable``, ``input_shape`` / ``input_dim`` / ``batch_input_shape`` / "
        "``batch_size``, and for LSTM and GRU ``implementation`` (a speed choice in Keras; "
        "``1`` draws one dropout mask per gate).",
    ),
}

CALL = """
Call arguments
--------------
inputs : array_like, shape (batch, timesteps, input_dim)
    The sequences, converted to the layer's dtype.
mask : array_like of bool, shape (batch, timesteps), optional
    ``True`` where a step is used. A masked step keeps the states and repeats the previous
    output (zeros before the first used step). Taken from ``inputs._keras_mask`` (what
    ``Masking`` attaches) when not given.
training : bool, optional
    ``True`` applies ``dropout`` and ``recurrent_dropout``; otherwise they are the identity.
initial_state : array or list of arrays, each (batch, units), optional
    The states to start from, {states}: by default zeros, or the carried
    states of a stateful layer.
"""

RETURNS = """
Returns
-------
output : ndarray
    ``(batch, units)``, the output of the last processed step, or ``(batch, timesteps,
    units)`` with ``return_sequences``; in the layer's dtype.
{states} : ndarray, each (batch, units)
    Only with ``return_state``: the final states, returned as the tuple
    ``(output, {states})``.
"""


def _default(value) -> str:
    return "" if value is inspect.Parameter.empty else f", default {value!r}"


def document(cls, summary: str):
    """Set ``cls.__doc__``: ``summary``, then the Parameters of ``cls.__init__`` in its order
    and with its defaults, the call arguments and the returns."""
    lines = [summary.strip("\n"), "", "Parameters", "----------"]
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        kind, text = PARAMETERS[p.name]
        if p.kind is p.VAR_KEYWORD:
            lines.append(f"**{p.name}")
        else:
            lines.append(f"{p.name} : {kind}{_default(p.default)}")
        lines.append(textwrap.fill(text, 88, initial_indent="    ", subsequent_indent="    "))
    states = ", ".join(cls._state_names)
    state_list = "``[h, c]``" if len(cls._state_names) == 2 else "``h`` (or ``[h]``)"
    lines.append(CALL.format(states=state_list).rstrip("\n"))
    lines.append(RETURNS.format(states=states).rstrip("\n"))
    cls.__doc__ = "\n".join(lines) + "\n"
    return cls

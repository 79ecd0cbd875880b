"""PyTorch recurrent modules converted to rnncore: :func:`from_torch`.

``torch.nn.RNN`` (``tanh`` / ``relu``), ``nn.LSTM`` (``proj_size`` too) and ``nn.GRU`` with any
``num_layers``, ``bidirectional``, ``batch_first`` and ``bias``, given as the module or as its
``state_dict`` plus the constructor arguments. Torch is never imported here: a module is
read through its attributes and ``state_dict()``, and a state dict may hold NumPy arrays
(e.g. saved with ``{k: v.numpy() for k, v in sd.items()}``), so the conversion runs where
torch is not installed.

Weight mapping (torch -> Keras layouts, which rnncore uses):

* ``kernel = weight_ih.T``, ``recurrent_kernel = weight_hh.T``, per layer and direction
  (``_l{k}`` and ``_l{k}_reverse``);
* LSTM: torch's gates ``i, f, g, o`` are Keras's ``i, f, c, o``; ``bias = bias_ih + bias_hh``;
* GRU: torch's ``r, z, n`` become Keras's ``z, r, h``; torch's GRU is Keras's
  ``reset_after=True`` with ``bias = [bias_ih; bias_hh]`` of shape ``(2, 3H)``;
* RNN: ``bias = bias_ih + bias_hh``; ``nonlinearity`` is the activation.
* LSTM with ``proj_size = P > 0`` (LSTMP): ``h_t = (o * tanh(c_t)) W_hr^T``, so
  ``projection = weight_hr.T`` (H, P) (:func:`rnncore.functional.lstm`'s ``projection``)
  and ``recurrent_kernel = weight_hh.T`` (P, 4H); the output and ``h`` are ``P`` wide (a
  layer above the first takes ``num_directions * P`` inputs), ``c`` stays ``H`` wide:
  ``h_0`` / ``h_n`` are ``(num_layers * num_directions, B, P)``, ``c_0`` / ``c_n``
  ``(.., B, H)``.

The converted model computes what the module computes in ``eval()`` mode (dropout between
layers is a training feature). Every layer of the module is converted; a state dict with
fewer or more layers than ``num_layers`` is an error.
The cells ``nn.RNNCell`` / ``nn.LSTMCell`` / ``nn.GRUCell`` convert with the same mapping
(their weights are layer 0's) to a one-step :class:`TorchCell`; ``lengths=`` and
``PackedSequence`` inputs run under a mask (see :mod:`.torch_cells`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .. import functional
from ..errors import UnsupportedModelError
from ..formats.verify import verify_loaded
from ..layers import GRU, LSTM, Bidirectional, Input, SimpleRNN
from ..models import Sequential
from .torch_cells import (
    CELLS,
    TorchCell,
    is_packed,
    lengths_mask,
    module_array,
    pack,
    unpack,
)

__all__ = ["from_torch", "TorchRNN", "TorchCell"]

#: torch ``mode`` -> (rnncore cell, activation, gate count)
_MODES = {
    "RNN_TANH": ("simple_rnn", "tanh", 1),
    "RNN_RELU": ("simple_rnn", "relu", 1),
    "LSTM": ("lstm", "tanh", 4),
    "GRU": ("gru", "tanh", 3),
}

_GRU_ORDER = (1, 0, 2)  # torch r, z, n -> Keras z, r, h


def from_torch(
    module_or_state_dict,
    *,
    mode=None,
    input_size=None,
    hidden_size=None,
    num_layers=1,
    bias=True,
    batch_first=False,
    bidirectional=False,
    nonlinearity="tanh",
    proj_size=0,
    return_state=False,
    verify=None,
    verify_tol=None,
) -> TorchRNN | TorchCell:
    """An rnncore model computing what a torch ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` computes.

    ``from_torch(module)`` reads everything from the module. ``from_torch(state_dict,
    mode="LSTM", input_size=..., hidden_size=..., num_layers=..., bias=..., batch_first=...,
    bidirectional=...)`` does the same from the module's ``state_dict`` and its constructor
    arguments (``mode``: ``"RNN"`` with ``nonlinearity``, ``"LSTM"`` or ``"GRU"``), without
    torch. The result's ``model(x)`` returns torch's ``output``; with ``return_state=True``
    it returns ``(output, h_n)`` (RNN, GRU) or ``(output, (h_n, c_n))`` (LSTM), as torch.
    The weights keep their dtype (float32 or float64).

    ``nn.RNNCell`` / ``nn.LSTMCell`` / ``nn.GRUCell`` (or their state dicts with
    ``mode="RNNCell"`` / ``"LSTMCell"`` / ``"GRUCell"``, ``input_size``, ``hidden_size``,
    ``bias``, ``nonlinearity``) give a :class:`TorchCell`, called as the cell:
    ``cell(input, hx=None)`` returns ``h'`` or ``(h', c')``.

    ``verify=(x, expected)`` (or a path to a ``.npz`` of samples) checks that the result
    reproduces ``expected`` (what it returns for ``x``) within ``verify_tol``, raising
    :class:`rnncore.errors.VerificationError` otherwise (:mod:`rnncore.formats.verify`).
    """
    cell = _cell_kind(module_or_state_dict, mode)
    if cell is not None:
        layer_args = (num_layers, batch_first, bidirectional, proj_size, return_state)
        if layer_args != (1, False, False, 0, False):
            raise TypeError(
                f"from_torch: a {cell} takes none of num_layers, batch_first, bidirectional, "
                f"proj_size, return_state"
            )
        model = _from_cell(
            module_or_state_dict, cell, mode, input_size, hidden_size, bias, nonlinearity
        )
        return verify_loaded(model, verify, verify_tol, who="from_torch")
    if _is_module(module_or_state_dict):
        m = module_or_state_dict
        _refuse_given(mode, input_size, hidden_size)
        mode = m.mode
        input_size, hidden_size = m.input_size, m.hidden_size
        num_layers, bias, batch_first = m.num_layers, m.bias, m.batch_first
        bidirectional, proj_size = m.bidirectional, getattr(m, "proj_size", 0)
        nonlinearity = getattr(m, "nonlinearity", "tanh")
        state_dict = m.state_dict()
    elif isinstance(module_or_state_dict, Mapping):
        state_dict = module_or_state_dict
        if mode is None or input_size is None or hidden_size is None:
            raise TypeError(
                "from_torch: with a state_dict, mode, input_size and hidden_size "
                "are required (and num_layers, bias, batch_first, bidirectional "
                "when not the defaults)"
            )
    else:
        raise TypeError(
            f"from_torch: expected a torch nn.RNN, nn.LSTM or nn.GRU module or its "
            f"state_dict, got {type(module_or_state_dict).__name__}"
        )
    mode = _mode(mode, nonlinearity)
    for name, value in (
        ("input_size", input_size),
        ("hidden_size", hidden_size),
        ("num_layers", num_layers),
    ):
        _check_positive(name, value)
    proj_size = _check_proj_size(proj_size, mode, hidden_size)
    weights, dtype = _convert(
        state_dict,
        mode,
        int(input_size),
        int(hidden_size),
        int(num_layers),
        bool(bias),
        bool(bidirectional),
        proj_size,
    )
    model = TorchRNN(
        mode,
        int(input_size),
        int(hidden_size),
        int(num_layers),
        bool(bias),
        bool(batch_first),
        bool(bidirectional),
        weights,
        dtype,
        return_state=bool(return_state),
        proj_size=proj_size,
    )
    return verify_loaded(model, verify, verify_tol, who="from_torch")


def _check_proj_size(proj_size, mode, hidden_size) -> int:
    """torch's rules: ``0 <= proj_size < hidden_size``, and only for an LSTM."""
    if not isinstance(proj_size, (int, np.integer)) or isinstance(proj_size, bool) or proj_size < 0:
        raise ValueError(f"from_torch: proj_size must be an integer >= 0, got {proj_size!r}")
    if proj_size and mode != "LSTM":
        raise ValueError(f"from_torch: proj_size={proj_size} is for an LSTM only, not {mode}")
    if proj_size >= hidden_size:
        raise ValueError(
            f"from_torch: proj_size={proj_size} must be smaller than hidden_size={hidden_size}"
        )
    return int(proj_size)


def _refuse_given(mode, input_size, hidden_size):
    given = {
        k: v
        for k, v in dict(mode=mode, input_size=input_size, hidden_size=hidden_size).items()
        if v is not None
    }
    if given:
        raise TypeError(
            f"from_torch: {', '.join(given)} are read from the module; pass "
            f"them only with a state_dict"
        )


def _cell_kind(obj, mode):
    """``"RNNCell"`` / ``"LSTMCell"`` / ``"GRUCell"`` for a cell module or cell mode, else None."""
    if callable(getattr(obj, "state_dict", None)):
        return next((c.__name__ for c in type(obj).__mro__ if c.__name__ in CELLS), None)
    names = {k.upper(): k for k in CELLS}
    return names.get(str(mode).upper()) if isinstance(obj, Mapping) else None


def _from_cell(obj, cell, mode, input_size, hidden_size, bias, nonlinearity) -> TorchCell:
    """A cell's weights are layer 0 of the matching nn.RNN/LSTM/GRU, without ``_l0``."""
    if isinstance(obj, Mapping):
        state_dict = obj
        if input_size is None or hidden_size is None:
            raise TypeError(
                f"from_torch: with a {cell} state_dict, input_size and hidden_size are "
                f"required (and bias, nonlinearity when not the defaults)"
            )
    else:
        _refuse_given(mode, input_size, hidden_size)
        input_size, hidden_size, bias = obj.input_size, obj.hidden_size, obj.bias
        nonlinearity = getattr(obj, "nonlinearity", "tanh")
        state_dict = obj.state_dict()
    layer_mode = _mode(cell[: -len("Cell")], nonlinearity)
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        _check_positive(name, value)
    weights, dtype = _convert(
        {f"{k}_l0": v for k, v in state_dict.items()},
        layer_mode,
        int(input_size),
        int(hidden_size),
        1,
        bool(bias),
        False,
    )
    activation = _MODES[layer_mode][1]
    W, U, b, _ = weights[0][0]
    return TorchCell(cell, int(input_size), int(hidden_size), activation, (W, U, b), dtype)


def _check_positive(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"from_torch: {name} must be a positive integer, got {value!r}")


def _is_module(obj) -> bool:
    return (
        callable(getattr(obj, "state_dict", None))
        and hasattr(obj, "mode")
        and hasattr(obj, "hidden_size")
    )


def _mode(mode, nonlinearity) -> str:
    m = str(mode).upper()
    if m == "RNN":
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"from_torch: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}"
            )
        m = f"RNN_{nonlinearity.upper()}"
    if m not in _MODES:
        raise UnsupportedModelError(
            f"from_torch: mode {mode!r} is not supported (RNN_TANH, RNN_RELU, LSTM, GRU)"
        )
    return m


def _numpy(value, key: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, read without importing torch
        value = value.detach().cpu()
        try:
            value = value.numpy()
        except TypeError as e:
            raise TypeError(f"from_torch: {key}: cannot read the tensor as NumPy ({e})") from None
    a = np.asarray(value)
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"from_torch: {key} has dtype {a.dtype}; rnncore computes in float32 "
            f"or float64 (convert the module with .float() or .double())"
        )
    return a


def _convert(state_dict, mode, input_size, hidden_size, num_layers, bias, bidirectional,
             proj_size=0):  # fmt: skip
    """Per layer, per direction: ``(kernel, recurrent_kernel, bias, projection)`` in Keras
    layouts (``bias`` None without one, ``projection`` None without ``proj_size``)."""
    cell, _, gates = _MODES[mode]
    GH = gates * hidden_size
    out_size = proj_size or hidden_size  # the width of h and of each direction's output
    directions = ("", "_reverse") if bidirectional else ("",)
    keys = [k for k in state_dict]
    proj = [k for k in keys if k.startswith("weight_hr_l")]
    if proj and not proj_size:
        raise ValueError(
            f"from_torch: the state_dict has {proj[0]}, the projection of an LSTM with "
            f"proj_size > 0: pass the module's proj_size"
        )
    expected = []
    for layer in range(num_layers):
        for sfx in directions:
            names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])
            names += ["weight_hr"] if proj_size else []
            expected += [f"{n}_l{layer}{sfx}" for n in names]
    missing = [k for k in expected if k not in state_dict]
    extra = [k for k in keys if k not in expected]
    if missing:
        raise ValueError(
            f"from_torch: the state_dict lacks {', '.join(missing)} (expected for "
            f"mode={mode}, num_layers={num_layers}, bias={bias}, "
            f"bidirectional={bidirectional}, proj_size={proj_size})"
        )
    if extra:
        raise ValueError(
            f"from_torch: the state_dict has entries {', '.join(extra)} that "
            f"mode={mode}, num_layers={num_layers}, bias={bias}, "
            f"bidirectional={bidirectional} do not use; every layer must be "
            f"converted, so pass the module's actual constructor arguments"
        )
    arrays = {k: _numpy(state_dict[k], k) for k in expected}
    dtypes = {a.dtype for a in arrays.values()}
    if len(dtypes) != 1:
        raise TypeError(f"from_torch: the weights mix dtypes {sorted(map(str, dtypes))}")
    dtype = dtypes.pop()
    weights = []
    for layer in range(num_layers):
        in_size = input_size if layer == 0 else out_size * len(directions)
        per_dir = []
        for sfx in directions:
            w = {
                n: arrays.get(f"{n}_l{layer}{sfx}")
                for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
            }
            want = {
                "weight_ih": (GH, in_size),
                "weight_hh": (GH, out_size),
                "bias_ih": (GH,),
                "bias_hh": (GH,),
                "weight_hr": (proj_size, hidden_size),
            }
            for n, shape in want.items():
                if w[n] is not None and w[n].shape != shape:
                    raise ValueError(
                        f"from_torch: {n}_l{layer}{sfx} has shape {w[n].shape}, expected "
                        f"{shape} for mode={mode}, input_size={input_size}, "
                        f"hidden_size={hidden_size}, bidirectional={bidirectional}, "
                        f"proj_size={proj_size}"
                    )
            W, U, b_ih, b_hh = w["weight_ih"], w["weight_hh"], w["bias_ih"], w["bias_hh"]
            if cell == "gru":
                W, U = _blocks(W, _GRU_ORDER, 0), _blocks(U, _GRU_ORDER, 0)
                b = (
                    None
                    if not bias
                    else np.stack([_blocks(b_ih, _GRU_ORDER, 0), _blocks(b_hh, _GRU_ORDER, 0)])
                )
            else:
                b = None if not bias else b_ih + b_hh
            R = w["weight_hr"]  # h = (o * tanh(c)) weight_hr^T: projection = weight_hr.T
            per_dir.append(
                tuple(None if a is None else np.ascontiguousarray(a) for a in (W.T, U.T, b))
                + (None if R is None else np.ascontiguousarray(R.T),)
            )
        weights.append(per_dir)
    return weights, dtype


def _blocks(a: np.ndarray, order, axis: int) -> np.ndarray:
    parts = np.split(a, 3, axis=axis)
    return np.concatenate([parts[i] for i in order], axis=axis)


class TorchRNN:
    """A torch ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` computed by rnncore (from :func:`from_torch`).

    ``model(x, hx=None)`` takes what the torch module takes: ``x`` of shape
    ``(T, B, input_size)``, or ``(B, T, input_size)`` when ``batch_first``, or an unbatched
    ``(T, input_size)``; ``hx`` is ``h_0`` (``(h_0, c_0)`` for LSTM) of shape
    ``(num_layers * num_directions, B, hidden_size)``, zeros when ``None``. It returns torch's
    ``output`` (``(..., num_directions * hidden_size)``, the backward direction in input time
    order), or with ``return_state`` ``(output, h_n)`` / ``(output, (h_n, c_n))``. With
    ``proj_size = P > 0``, ``proj_size`` replaces ``hidden_size`` in the shapes of
    ``output``, ``h_0`` and ``h_n`` (not of ``c_0``, ``c_n``), as torch.

    Variable lengths, as torch: ``model(x, lengths=n)`` with a right-padded batch and ``n``
    the ``B`` true lengths returns ``output`` with zeros past each length (what
    ``pad_packed_sequence(..., total_length=T)`` gives) and ``h_n`` / ``c_n`` at each
    sequence's true last step (the backward direction starts there); ``model(packed)`` with
    a ``torch.nn.utils.rnn.PackedSequence`` returns a ``PackedSequence`` with the input's
    ``batch_sizes``, ``sorted_indices`` and ``unsorted_indices`` (states stay NumPy arrays,
    in the caller's batch order).

    :meth:`to_sequential` gives the same network as an :class:`rnncore.Sequential`
    (batch-major input ``(B, T, input_size)``, output ``(B, T, num_directions *
    hidden_size)``) for ``predict``, ``save`` and ``to_onnx``.
    """

    def __init__(
        self,
        mode,
        input_size,
        hidden_size,
        num_layers,
        bias,
        batch_first,
        bidirectional,
        weights,
        dtype,
        return_state=False,
        proj_size=0,
    ):
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.bidirectional = bidirectional
        self.weights = weights
        self.dtype = np.dtype(dtype)
        self.return_state = return_state
        self.proj_size = proj_size
        self._cell, self._activation, _ = _MODES[mode]

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def __call__(self, x, hx=None, *, lengths=None, return_state=None):
        if return_state is None:
            return_state = self.return_state
        packed, order, unorder = x if is_packed(x) else None, None, None
        if packed is not None:
            if lengths is not None:
                raise ValueError("TorchRNN: a PackedSequence carries its lengths; drop lengths=")
            x, lengths, order, unorder = unpack(packed, self.dtype)  # batch-major, sorted
        x = module_array(x, self.dtype, "TorchRNN: input")
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
            raise ValueError(
                f"TorchRNN: expected input of shape (T, B, {self.input_size})"
                f"{' batch_first (B, T, ...)' if self.batch_first else ''} or "
                f"unbatched (T, {self.input_size}), got {x.shape}"
            )
        unbatched = x.ndim == 2
        if unbatched:
            if lengths is not None:
                raise ValueError("TorchRNN: lengths= needs a batched input (B or T first)")
            x = x[None]
        elif not self.batch_first and packed is None:
            x = x.transpose(1, 0, 2)
        B = x.shape[0]
        # Right padding as a mask: masked steps keep the state (see torch_cells).
        mask = None if lengths is None else lengths_mask(lengths, B, x.shape[1])
        states = self._initial_states(hx, B, unbatched)
        if states is not None and order is not None:
            states = [s[:, order] for s in states]  # torch permutes hx by sorted_indices
        D = self.num_directions
        h_n, c_n = [], []
        for layer, per_dir in enumerate(self.weights):
            outs = []
            for d, (W, U, b, R) in enumerate(per_dir):
                init = None if states is None else [s[layer * D + d] for s in states]
                kw = dict(
                    initial_state=init,
                    mask=mask,
                    go_backwards=d == 1,
                    return_sequences=True,
                    activation=self._activation,
                )
                if self._cell == "gru":
                    kw["reset_after"] = True
                if R is not None:
                    kw["projection"] = R
                y, *finals = getattr(functional, self._cell)(x, W, U, b, **kw)
                outs.append(y[:, ::-1] if d == 1 else y)
                h_n.append(finals[0])
                if self._cell == "lstm":
                    c_n.append(finals[1])
            x = outs[0] if D == 1 else np.concatenate(outs, axis=-1)
            if mask is not None:
                x = np.where(mask[:, :, None], x, np.zeros((), x.dtype))  # padded outputs: 0
        if packed is not None:
            output = pack(x, packed)
        else:
            output = x[0] if unbatched else (x if self.batch_first else x.transpose(1, 0, 2))
            output = np.ascontiguousarray(output)
        if not return_state:
            return output
        if unorder is not None:  # back to the caller's batch order, as torch
            h_n, c_n = [h[unorder] for h in h_n], [c[unorder] for c in c_n]
        h = np.stack(h_n, axis=1 if unbatched else 0)
        if unbatched:
            h = h[0]
        if self._cell != "lstm":
            return output, h
        c = np.stack(c_n, axis=1 if unbatched else 0)
        return output, (h, c[0] if unbatched else c)

    def _initial_states(self, hx, batch, unbatched):
        if hx is None:
            return None
        n = 2 if self._cell == "lstm" else 1
        parts = list(hx) if n == 2 else [hx]
        if len(parts) != n:
            raise ValueError(f"TorchRNN: hx must be (h_0, c_0) for LSTM, got {len(parts)} array(s)")
        LD = self.num_layers * self.num_directions
        out = []
        for name, s, width in zip(("h_0", "c_0"), parts, (self.proj_size or self.hidden_size,
                                                          self.hidden_size)):  # fmt: skip
            want = (LD, width) if unbatched else (LD, batch, width)
            s = module_array(s, self.dtype, f"TorchRNN: {name}")
            if s.shape != want:
                raise ValueError(f"TorchRNN: {name} must have shape {want}, got {s.shape}")
            out.append(s[:, None] if unbatched else s)
        return [np.ascontiguousarray(s) for s in out]

    def to_sequential(self):
        """The network as an :class:`rnncore.Sequential` of rnncore layers (batch-major).

        Input ``(batch, timesteps, input_size)``; output ``(batch, timesteps,
        num_directions * hidden_size)`` (``proj_size`` for ``hidden_size`` with a projection:
        LSTM layers with ``projection_units``), equal to torch's ``output`` with
        ``batch_first``.
        """
        cls = {"simple_rnn": SimpleRNN, "lstm": LSTM, "gru": GRU}[self._cell]
        dtype = str(self.dtype)
        layers = [Input(shape=(None, self.input_size), dtype=dtype)]
        weights = []

        def make(go_backwards):
            kw = dict(
                units=self.hidden_size,
                activation=self._activation,
                use_bias=self.bias,
                return_sequences=True,
                go_backwards=go_backwards,
                dtype=dtype,
            )
            if self._cell == "gru":
                kw["reset_after"] = True
            if self.proj_size:
                kw["projection_units"] = self.proj_size
            return cls(**kw)

        for per_dir in self.weights:
            if self.bidirectional:
                layers.append(
                    Bidirectional(
                        make(False), backward_layer=make(True), merge_mode="concat", dtype=dtype
                    )
                )
            else:
                layers.append(make(False))
            for W, U, b, R in per_dir:  # get_weights order: projection after the bias
                weights += [a for a in (W, U, b, R) if a is not None]
        model = Sequential(layers)
        model.set_weights(weights)
        return model

    def __repr__(self):
        return (
            f"<TorchRNN mode={self.mode}, input_size={self.input_size}, "
            f"hidden_size={self.hidden_size}, num_layers={self.num_layers}, "
            f"{f'proj_size={self.proj_size}, ' if self.proj_size else ''}"
            f"bidirectional={self.bidirectional}, batch_first={self.batch_first}, "
            f"dtype={self.dtype}>"
        )

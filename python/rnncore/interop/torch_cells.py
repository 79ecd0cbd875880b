"""The one-step torch cells and the variable-length inputs of :mod:`.torch_io`.

* :class:`TorchCell`: ``nn.RNNCell`` / ``nn.LSTMCell`` / ``nn.GRUCell`` computed by rnncore's
  core, one time step of :func:`rnncore.functional.simple_rnn` / ``lstm`` / ``gru`` with the
  given state as ``initial_state``. The weights are those of layer 0 of ``nn.RNN`` /
  ``nn.LSTM`` / ``nn.GRU`` (same names without ``_l0``, same equations), converted once by
  :mod:`.torch_io`.
* Lengths: a right-padded batch with true lengths ``n_b`` runs under the mask
  ``m[b, t] = t < n_b``. A masked step keeps the state (``h_t = h_{t-1}``), so the forward
  direction ends holding ``h`` at ``t = n_b - 1``; the backward direction (``go_backwards``
  reverses the sequence and the mask) keeps its initial state through the padding and starts
  at ``t = n_b - 1``, ending at ``t = 0``: both are torch's ``h_n`` for a packed sequence.
  Outputs at padded steps are zero, as ``pad_packed_sequence`` gives them.
* ``PackedSequence``: ``data`` holds, for each ``t``, the rows of the ``batch_sizes[t]``
  longest sequences (in ``sorted_indices`` order). It is unpacked to a padded batch in that
  order, run with its lengths, and packed back with the same ``batch_sizes``,
  ``sorted_indices`` and ``unsorted_indices``; states given and returned are in the user's
  batch order (torch permutes ``hx`` by ``sorted_indices`` and ``h_n`` by
  ``unsorted_indices``). Read duck-typed; torch is imported only to build the output.
"""

from __future__ import annotations

import numpy as np

from .. import functional

__all__ = ["TorchCell", "lengths_mask", "is_packed", "unpack", "pack"]

#: torch cell class -> (rnncore cell, number of state arrays)
CELLS = {"RNNCell": ("simple_rnn", 1), "LSTMCell": ("lstm", 2), "GRUCell": ("gru", 1)}


class TorchCell:
    """A torch ``nn.RNNCell`` / ``nn.LSTMCell`` / ``nn.GRUCell`` computed by rnncore.

    ``cell(input, hx=None)`` as torch: ``input`` of shape ``(B, input_size)`` or unbatched
    ``(input_size,)``; ``hx`` is ``h`` (``RNNCell``, ``GRUCell``) or ``(h, c)``
    (``LSTMCell``) of shape ``(B, hidden_size)`` (``(hidden_size,)`` unbatched), zeros when
    ``None``. Returns ``h'`` or ``(h', c')`` with the input's batch dimensions.
    """

    def __init__(self, kind, input_size, hidden_size, activation, weights, dtype):
        self.kind = kind
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.activation = activation
        self.weights = weights  # (kernel, recurrent_kernel, bias or None), Keras layouts
        self.dtype = np.dtype(dtype)
        self._cell, self._n_states = CELLS[kind]

    @property
    def bias(self) -> bool:
        return self.weights[2] is not None

    def __call__(self, input, hx=None):
        x = module_array(input, self.dtype, f"{self.kind}: input")
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(
                f"{self.kind}: input must have shape (B, {self.input_size}) or "
                f"({self.input_size},), got {x.shape}"
            )
        unbatched = x.ndim == 1
        x = x.reshape(-1, 1, self.input_size)  # (B, 1 time step, input_size)
        init = None
        if hx is not None:
            parts = list(hx) if isinstance(hx, (tuple, list)) else [hx]
            if len(parts) != self._n_states:
                want = "(h, c)" if self._n_states == 2 else "one array h"
                raise ValueError(f"{self.kind}: hx must be {want}, got {len(parts)} array(s)")
            want = (self.hidden_size,) if unbatched else (x.shape[0], self.hidden_size)
            init = []
            for name, s in zip(("h", "c"), parts):
                s = module_array(s, self.dtype, f"{self.kind}: hx {name}")
                if s.shape != want:
                    raise ValueError(
                        f"{self.kind}: hx {name} must have shape {want}, got {s.shape}"
                    )
                init.append(np.ascontiguousarray(s.reshape(-1, self.hidden_size)))
        kw = dict(initial_state=init, activation=self.activation)
        if self._cell == "gru":
            kw["reset_after"] = True  # torch's n = tanh(W_in x + b_in + r (W_hn h + b_hn))
        _, *states = getattr(functional, self._cell)(x, *self.weights, **kw)
        states = [s[0] if unbatched else s for s in states]
        return tuple(states) if self._n_states == 2 else states[0]

    def __repr__(self):
        return (
            f"<TorchCell {self.kind}, input_size={self.input_size}, "
            f"hidden_size={self.hidden_size}, bias={self.bias}, dtype={self.dtype}>"
        )


def module_array(value, dtype: np.dtype, what: str) -> np.ndarray:
    """``value`` as an array of the converted module's ``dtype``. An array or tensor of
    another dtype is refused, as torch refuses it ("RNN input dtype (torch.float32) does
    not match weight dtype (torch.float64)"): cast, a float64 module would silently turn
    float32 input into float64 output. Python numbers and lists (no dtype) take the
    module's."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    a = np.asarray(value)
    if hasattr(value, "dtype") and a.dtype != dtype:
        raise ValueError(
            f"{what} dtype ({a.dtype}) does not match the weights' dtype ({dtype}), as torch "
            f"refuses it: convert the input (.astype(np.{dtype})), or the module before "
            f"from_torch (module.float() / module.double())"
        )
    return np.asarray(a, dtype=dtype)


def lengths_mask(lengths, batch: int, steps: int) -> np.ndarray:
    """``(batch, steps)`` mask ``t < lengths[b]`` from a 1-D array of true lengths."""
    a = np.asarray(lengths)
    if hasattr(lengths, "detach"):  # a torch tensor
        a = lengths.detach().cpu().numpy()
    whole = np.issubdtype(a.dtype, np.integer) or (
        np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(np.mod(a, 1) == 0)
    )
    if a.shape != (batch,) or not whole:
        raise ValueError(
            f"TorchRNN: lengths must be a 1-D array of {batch} integers (one per sequence), "
            f"got shape {a.shape} dtype {a.dtype}"
        )
    a = a.astype(np.int64)
    if a.size and (a.min() < 1 or a.max() > steps):
        raise ValueError(
            f"TorchRNN: lengths must lie in [1, {steps}] (the input's time steps), got "
            f"{a.min()}..{a.max()}"
        )
    return np.arange(steps)[None, :] < a[:, None]


def is_packed(x) -> bool:
    return all(hasattr(x, a) for a in ("data", "batch_sizes", "sorted_indices", "unsorted_indices"))


def _indices(t):
    return None if t is None else t.detach().cpu().numpy().astype(np.int64)


def _present(sizes: np.ndarray, batch: int) -> np.ndarray:
    """``(T, B)`` bool: whether sequence ``b`` (sorted) has a step ``t``; in C order, the
    order of a PackedSequence's rows."""
    return np.arange(batch)[None, :] < sizes[:, None]


def unpack(packed, dtype):
    """A PackedSequence as ``(x, lengths, sorted_indices, unsorted_indices)``.

    ``x`` is ``(B, T, D)`` in sorted (descending length) order, zeros past each length.
    """
    data = module_array(packed.data, dtype, "TorchRNN: PackedSequence data")
    sizes = packed.batch_sizes.detach().cpu().numpy().astype(np.int64)
    if data.ndim != 2 or data.shape[0] != sizes.sum():
        raise ValueError(
            f"TorchRNN: PackedSequence data must be (sum(batch_sizes), input_size), got "
            f"{data.shape} with sum(batch_sizes)={sizes.sum()}"
        )
    B = int(sizes[0])
    present = _present(sizes, B)
    x_tm = np.zeros((len(sizes), B, data.shape[1]), dtype=dtype)
    x_tm[present] = data  # PackedSequence data is time-major: step t holds batch_sizes[t] rows
    x = x_tm.transpose(1, 0, 2)
    lengths = present.sum(axis=0)
    return x, lengths, _indices(packed.sorted_indices), _indices(packed.unsorted_indices)


def pack(y: np.ndarray, like):
    """``y`` ``(B, T, F)`` in sorted order packed as ``like`` (its batch sizes and indices)."""
    import torch  # optional dependency: the input was a torch PackedSequence

    sizes = like.batch_sizes.detach().cpu().numpy().astype(np.int64)
    data = y.transpose(1, 0, 2)[_present(sizes, y.shape[0])]
    return torch.nn.utils.rnn.PackedSequence(
        torch.from_numpy(np.ascontiguousarray(data)),
        like.batch_sizes,
        like.sorted_indices,
        like.unsorted_indices,
    )

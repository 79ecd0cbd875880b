"""Every rnncore layer's constructor against Keras 3's: parameter names, the order of the
positional ones, keyword-only ones and defaults, so that a Keras call (positional or by
keyword) means the same thing here. Only the differences listed in DIFFERENCES, each with
its reason, are allowed."""

from __future__ import annotations

import inspect
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import keras  # noqa: E402
import pytest  # noqa: E402

import rnncore  # noqa: E402
from rnncore import layers as L  # noqa: E402

#: rnncore constructor -> its Keras counterpart
PAIRS = {
    "SimpleRNN": (L.SimpleRNN, keras.layers.SimpleRNN),
    "LSTM": (L.LSTM, keras.layers.LSTM),
    "GRU": (L.GRU, keras.layers.GRU),
    "Dense": (L.Dense, keras.layers.Dense),
    "Bidirectional": (L.Bidirectional, keras.layers.Bidirectional),
    "TimeDistributed": (L.TimeDistributed, keras.layers.TimeDistributed),
    "Activation": (L.Activation, keras.layers.Activation),
    "Softmax": (L.Softmax, keras.layers.Softmax),
    "Dropout": (L.Dropout, keras.layers.Dropout),
    "Masking": (L.Masking, keras.layers.Masking),
    "InputLayer": (L.InputLayer, keras.layers.InputLayer),
    "Input": (rnncore.Input, keras.Input),
}

#: (name, parameter) -> why rnncore differs from Keras there. Nothing else may differ.
DIFFERENCES: dict = {}


def _parameters(fn):
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    return params


def _layout(fn, skip=()):
    """(positional names in order, keyword-only names, defaults, takes **kwargs)."""
    params = [p for p in _parameters(fn) if p.name not in skip]
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    keyword_only = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
    defaults = {p.name: p.default for p in params if p.kind is not p.VAR_KEYWORD}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    return positional, keyword_only, defaults, var_kw


@pytest.mark.parametrize("name", list(PAIRS))
def test_constructor_matches_keras(name):
    ours, theirs = PAIRS[name]
    ours_fn = ours if inspect.isfunction(ours) else ours.__init__
    theirs_fn = theirs if inspect.isfunction(theirs) else theirs.__init__
    skip = {p for (n, p) in DIFFERENCES if n == name}
    pos, kw_only, defaults, var_kw = _layout(ours_fn, skip)
    k_pos, k_kw_only, k_defaults, k_var_kw = _layout(theirs_fn, skip)
    assert pos == k_pos, f"{name}: positional parameters differ from Keras's"
    assert kw_only == k_kw_only, f"{name}: keyword-only parameters differ from Keras's"
    assert var_kw == k_var_kw, f"{name}: **kwargs differs from Keras's"
    for p in defaults:
        assert defaults[p] == k_defaults[p], f"{name}({p}=...): default differs from Keras's"
    for n, p in DIFFERENCES:  # a listed difference must still exist: else drop its entry
        if n == name:
            assert p in {q.name for q in _parameters(ours_fn)}, (n, p)
            assert _layout(ours_fn) != _layout(theirs_fn), f"{n}.{p} no longer differs"


@pytest.mark.parametrize("name", ["SimpleRNN", "LSTM", "GRU"])
def test_recurrent_constructors_hand_over_by_keyword(name):
    """The subclasses pass their arguments to RNN by keyword: RNN takes only units
    positionally, so a reordered hand-over fails instead of swapping two arguments."""
    positional, *_ = _layout(L.RNN.__init__)
    assert positional == ["units"]
    cls = PAIRS[name][0]
    layer = cls(3, "relu", return_sequences=True, go_backwards=True, stateful=True)
    assert layer.activation == "relu"
    assert (layer.return_sequences, layer.go_backwards, layer.stateful) == (True, True, True)
    assert layer.return_state is False and layer.dropout == 0.0


@pytest.mark.parametrize("name", ["SimpleRNN", "LSTM", "GRU", "Bidirectional"])
def test_help_documents_arguments_call_and_returns(name):
    doc = inspect.getdoc(PAIRS[name][0])
    for section in ("Parameters\n----------", "Call arguments\n--------------", "Returns\n-------"):
        assert section in doc, f"{name}: no {section.splitlines()[0]} section"
    params = doc.split("Parameters\n----------")[1].split("Call arguments")[0]
    for p in _parameters(PAIRS[name][0].__init__):
        shown = f"**{p.name}" if p.kind is p.VAR_KEYWORD else f"{p.name} :"
        assert f"\n{shown}" in "\n" + params, f"{name}: argument {p.name} is not documented"
    call = doc.split("Call arguments\n--------------")[1].split("Returns")[0]
    for arg in ("inputs :", "mask :", "training :", "initial_state :"):
        assert arg in call, f"{name}: call argument {arg[:-2]} is not documented"

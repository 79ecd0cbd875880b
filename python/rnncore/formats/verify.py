"""Verify on load: a loaded model checked against sample outputs saved with the original.

:func:`rnncore.load_keras`, :func:`rnncore.load_onnx` and :func:`rnncore.from_torch` take
``verify=`` and ``verify_tol=`` and pass them to :func:`verify_loaded`, which runs the
loaded model once on the sample input and raises :class:`rnncore.errors.VerificationError`
(a ``ValueError``) when its outputs differ from the samples; otherwise the model is
returned as usual.

``verify`` is one of:

* ``None`` (the default): no check.
* ``(x, expected)``. ``x`` is one array (one input), a list or tuple of arrays (several
  inputs, in the model's input order; an element may itself be a tuple of arrays, e.g.
  PyTorch's ``(h_0, c_0)``), or a dict of arrays keyed by input name. Lists and tuples
  always mean several inputs: give one input as an array. ``expected`` is one array or a
  list / tuple (nested tuples allowed) / dict of arrays, compared with the model's outputs
  flattened in order (a dict by sorted key, as Keras orders them), so
  ``(output, (h_n, c_n))`` and ``[output, h_n, c_n]`` are the same three outputs. PyTorch
  tensors are accepted wherever an array is.
* A path (``str`` or ``os.PathLike``) to a ``.npz`` file (``np.savez``), or a dict with the
  same keys. The inputs are under ``x`` (one input), ``x0``, ``x1``, ... (several, in order)
  or ``x:NAME`` (by input name); the outputs under ``expected`` (one) or ``expected0``,
  ``expected1``, ... (several, in order). Any other key, a gap in the numbering, or a mix of
  the forms is an error. The file is read with ``allow_pickle=False``.

How each loader runs the model: ``load_keras``: ``model.predict_on_batch(x)`` (a stateful
model's states are reset afterwards, so it is returned as loaded); ``load_onnx``:
``model(x)``, ``model(*x)`` for a list, ``model(**x)`` for a dict (by input name);
``from_torch``: the same, so a list is ``(input, hx)`` and a dict gives keywords
(``{"x": x, "lengths": n}``), and the outputs are what the returned model returns
(``output``, or ``(output, h_n)`` / ``(output, (h_n, c_n))`` with ``return_state=True``).

Tolerance: output and sample agree where ``|actual - expected| <= atol + rtol * |expected|``
elementwise (NaN matches NaN, an infinity the same infinity). ``verify_tol`` is a number
(``atol``, with ``rtol = 0``) or a pair ``(atol, rtol)``; by default it follows the less
precise of the two dtypes compared, per output (:data:`DEFAULT_TOLERANCES`): float64
``atol 1e-10, rtol 1e-10``; float32 ``atol 1e-5, rtol 1e-4``; float16 ``atol 1e-3, rtol
1e-2``; integers and booleans exactly.

A mismatch raises :class:`~rnncore.errors.VerificationError` naming, for every output that
differs, its index, the maximum absolute difference, the index where it occurs, the two
values there, how many elements exceed the tolerance, and the tolerance; a differing shape
is reported as expected vs actual shape, a differing number of outputs as both counts.
Bad ``verify`` / ``verify_tol`` arguments raise ``TypeError`` / ``ValueError`` naming them,
as does a sample input the model cannot run on. Nothing the caller passes is modified.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping

import numpy as np

from ..errors import VerificationError

__all__ = ["verify_loaded", "default_tolerance", "DEFAULT_TOLERANCES"]

#: ``(atol, rtol)`` by the item size of the least precise floating dtype compared
DEFAULT_TOLERANCES = {8: (1e-10, 1e-10), 4: (1e-5, 1e-4), 2: (1e-3, 1e-2)}

_KEY = re.compile(r"^(x|expected)(\d*)$")


def verify_loaded(model, verify, verify_tol=None, *, who: str, run=None):
    """``model`` after checking it reproduces ``verify`` (see the module's help).

    ``run(model, x)`` computes the outputs; by default ``model(x)``, ``model(*x)`` for a
    list, ``model(**x)`` for a dict. ``who`` names the loader in the messages.
    """
    if verify is None:
        if verify_tol is not None:
            raise TypeError(f"{who}: verify_tol={verify_tol!r} given without verify")
        return model
    tol = _tolerance(verify_tol, who)
    x, expected = _samples(verify, who)
    x = _inputs(x, who)
    wanted = _leaves(expected, f"{who}: verify: expected")
    try:
        got = run(model, x) if run is not None else _call(model, x)
    except (TypeError, ValueError) as e:
        cls = TypeError if isinstance(e, TypeError) else ValueError
        raise cls(f"{who}: verify: the loaded model cannot run on the sample input x: {e}") from e
    finally:
        if callable(getattr(model, "reset_states", None)):
            model.reset_states()
    got = _leaves(got, f"{who}: verify: the model's output")
    if len(got) != len(wanted):
        raise VerificationError(
            f"{who}: verify: expected holds {len(wanted)} array(s), the loaded model returns "
            f"{len(got)} output(s)"
        )
    problems = [
        _compare(f"output {k}{path}", g, w, tol)
        for k, ((path, g), (_, w)) in enumerate(zip(got, wanted))
    ]
    problems = [p for p in problems if p]
    if problems:
        raise VerificationError(
            f"{who}: the loaded model does not reproduce the verify samples:\n  "
            + "\n  ".join(problems)
        )
    return model


def default_tolerance(*dtypes) -> tuple[float, float]:
    """``(atol, rtol)`` for comparing arrays of ``dtypes``: that of the least precise
    floating dtype among them (:data:`DEFAULT_TOLERANCES`), exact for integers / booleans."""
    sizes = [np.finfo(d).bits // 8 for d in map(np.dtype, dtypes) if d.kind in "fc"]
    return DEFAULT_TOLERANCES[min(*sizes, 8)] if sizes else (0.0, 0.0)


def _tolerance(verify_tol, who):
    if verify_tol is None:
        return None
    pair = verify_tol if isinstance(verify_tol, (tuple, list)) else (verify_tol, 0.0)
    if len(pair) != 2 or not all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        for v in pair
    ):
        raise TypeError(
            f"{who}: verify_tol must be a number (atol) or a pair (atol, rtol), got {verify_tol!r}"
        )
    if not all(np.isfinite(v) and v >= 0 for v in pair):
        raise ValueError(f"{who}: verify_tol must be finite and >= 0, got {verify_tol!r}")
    return float(pair[0]), float(pair[1])


def _samples(verify, who):
    """``(x, expected)`` from ``verify``'s pair, path or dict."""
    if isinstance(verify, (str, os.PathLike)):
        return _from_keys(_read_npz(verify, who), who, f"verify file {os.fspath(verify)!r}")
    if isinstance(verify, Mapping):
        return _from_keys(verify, who, "verify")
    if isinstance(verify, (tuple, list)):
        if len(verify) != 2:
            raise ValueError(
                f"{who}: verify must be a pair (x, expected), got a {type(verify).__name__} "
                f"of {len(verify)} item(s)"
            )
        return verify[0], verify[1]
    raise TypeError(
        f"{who}: verify must be None, a pair (x, expected), a path to a .npz file or a dict "
        f"of its keys, got {type(verify).__name__}"
    )


def _read_npz(path, who) -> dict:
    where = os.fspath(path)
    try:
        data = np.load(where, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"{who}: verify: no such file", where) from None
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{who}: verify: {where!r} is not a readable .npz file: {e}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{who}: verify: {where!r} holds one array (.npy), expected a .npz file with keys "
            f"x / x0, x1, ... and expected / expected0, expected1, ..."
        )
    with data:
        try:
            return {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"{who}: verify: cannot read {where!r}: {e}") from None


def _from_keys(arrays: Mapping, who, where):
    """``(x, expected)`` from the keys ``x`` / ``x0``... / ``x:NAME`` and ``expected`` /
    ``expected0``..."""
    parts = {"x": {}, "expected": {}}
    named = {}
    for key, value in arrays.items():
        m = _KEY.match(key) if isinstance(key, str) else None
        if isinstance(key, str) and key.startswith("x:") and len(key) > 2:
            named[key[2:]] = value
        elif m is None:
            raise ValueError(
                f"{who}: {where}: unexpected key {key!r}; the keys are x (or x0, x1, ... or "
                f"x:NAME) and expected (or expected0, expected1, ...)"
            )
        else:
            parts[m.group(1)][m.group(2)] = value
    if named:
        if parts["x"]:
            raise ValueError(f"{who}: {where}: give the inputs as x, x0... or x:NAME, not both")
        parts["x"] = named
    x = named or _numbered(parts["x"], "x", who, where)
    return x, _numbered(parts["expected"], "expected", who, where)


def _numbered(found: dict, name, who, where):
    if not found:
        raise ValueError(f"{who}: {where}: no {name} (or {name}0, {name}1, ...)")
    if "" in found:
        if len(found) > 1:
            raise ValueError(f"{who}: {where}: give {name} or {name}0, {name}1, ..., not both")
        return found[""]
    want = [str(k) for k in range(len(found))]
    if sorted(found, key=int) != want:
        raise ValueError(
            f"{who}: {where}: {name}0 ... {name}{len(found) - 1} expected, got "
            f"{', '.join(name + k for k in sorted(found, key=int))}"
        )
    return [found[k] for k in want]


def _array(value, what, copy=False) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        value = value.detach().cpu().numpy()
    a = np.array(value, copy=True) if copy else np.asarray(value)
    if a.dtype.kind not in "biufc":
        raise TypeError(
            f"{what} must hold numeric arrays, got {type(value).__name__} {value!r:.60}"
        )
    return a


def _inputs(x, who):
    """A copy of the sample input, lists and tuples as lists of arrays (or tuples of them)."""
    what = f"{who}: verify: x"
    if isinstance(x, Mapping):
        if not x:
            raise ValueError(f"{what} is an empty dict")
        return {k: _inputs_leaf(v, what) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        if not x:
            raise ValueError(f"{what} is empty: one array, or a list of arrays for several inputs")
        return [_inputs_leaf(v, what) for v in x]
    return _array(x, what, copy=True)


def _inputs_leaf(v, what):
    if isinstance(v, (tuple, list)):
        return tuple(_array(a, what, copy=True) for a in v)
    return _array(v, what, copy=True)


def _call(model, x):
    if isinstance(x, dict):
        return model(**x)
    if isinstance(x, list):
        return model(*x)
    return model(x)


def _leaves(tree, what, path="") -> list[tuple[str, np.ndarray]]:
    """``(dict keys on the way, array)`` for each array of ``tree``, flattened in order
    (dicts by sorted key)."""
    if isinstance(tree, Mapping):
        if not tree:
            raise ValueError(f"{what} is an empty dict")
        return [
            leaf for k in sorted(tree, key=str) for leaf in _leaves(tree[k], what, f"{path}[{k!r}]")
        ]
    if isinstance(tree, (tuple, list)):
        if not tree:
            raise ValueError(f"{what} is empty")
        return [leaf for item in tree for leaf in _leaves(item, what, path)]
    return [(path, _array(tree, what))]


def _compare(name, got, want, tol):
    """``None`` if ``got`` reproduces ``want``, else what differs."""
    if got.shape != want.shape:
        return f"{name}: shape {want.shape} expected, the model returns shape {got.shape}"
    atol, rtol = tol if tol is not None else default_tolerance(got.dtype, want.dtype)
    if got.size == 0:
        return None
    kind = np.complex128 if "c" in (got.dtype.kind, want.dtype.kind) else np.float64
    g, w = got.astype(kind), want.astype(kind)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(g - w)
    diff[(g == w) | (np.isnan(g) & np.isnan(w))] = 0.0  # equal infinities, NaN for NaN
    diff[np.isnan(diff)] = np.inf
    limit = atol + rtol * np.where(np.isfinite(w), np.abs(w), 0.0)
    bad = diff > limit
    if not bad.any():
        return None
    at = np.unravel_index(int(np.argmax(diff)), diff.shape)
    where = tuple(int(i) for i in at)
    dtypes = str(got.dtype) if got.dtype == want.dtype else f"{got.dtype} vs {want.dtype}"
    source = "" if tol is not None else f" (the default for {dtypes})"
    return (
        # str, not repr: a NumPy scalar's repr is np.float32(0.6459271); its str is the
        # shortest text that reads back as the same value in its own dtype
        f"{name}: max |actual - expected| = {diff[at]:.6g} at index {where} (actual "
        f"{got[at]}, expected {want[at]}); {int(bad.sum())} of {bad.size} element(s) "
        f"exceed the tolerance atol {atol:g} + rtol {rtol:g} * |expected|{source}"
    )

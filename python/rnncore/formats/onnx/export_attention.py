"""``Attention`` and ``AdditiveAttention`` as ONNX operators (:func:`export_attention`), the
same computation as :mod:`rnncore.layers.attention`'s ``_forward`` at inference:

* scores: ``dot`` a batched ``MatMul(q, Transpose(k))`` (``Mul`` by ``scale`` with
  ``use_scale``); ``concat`` ``csw * ReduceSum(Tanh(scale * (q_i + k_j)))`` and additive
  ``ReduceSum(scale_d * Tanh(q_i + k_j))`` on the ``(batch, Tq, Tv, dim)`` pairs, an
  ``Unsqueeze`` of each side added with broadcasting;
* hidden keys: ``Where(keep, S, S - 1e9)`` where ``keep`` is the value mask (``(batch, 1,
  Tv)``), the causal ``i >= j`` (a ``Range`` of each side compared) or their ``And``: the
  same subtraction as the layer's, so a fully masked row gets the layer's weights (the
  softmax of the shifted scores), not NaN;
* ``Softmax`` over the keys (dropout is the identity at inference), ``MatMul`` by the
  value, zero at the masked query steps (``Where``); the output mask is the query mask;
  ``return_attention_scores`` adds the softmax as a second output (no mask).
"""

from __future__ import annotations

import numpy as np

from ...layers.attention import _HIDDEN, AdditiveAttention
from .export_graph import Exporter

__all__ = ["export_attention"]


def export_attention(ex: Exporter, layer, xs, masks, return_scores=False, causal=False):
    """``(outputs as (name, tensor), output masks)`` of ``layer([q, v(, k)])`` with the
    inputs' ``masks`` (one per input, each None or a bool tensor)."""
    base = layer.name
    xs = [ex.as_float(x) for x in xs]
    q, v = xs[0], xs[1]
    k = xs[2] if len(xs) > 2 else v
    q_mask, v_mask = masks[0], masks[1]
    S = _scores(ex, layer, q, k)
    keep = None if v_mask is None else ex.unsqueeze(v_mask, [1], base=f"{base}/value_mask")
    if causal:
        mine = _causal(ex, q, k, base)
        keep = mine if keep is None else ex.node("And", [keep, mine], base=f"{base}/keep")
    if keep is not None:
        hidden = ex.node("Sub", [S, ex.scalar(f"{base}/hidden", _HIDDEN)])
        S = ex.node("Where", [keep, S, hidden], base=f"{base}/masked_scores")
    P = ex.node("Softmax", [S], base=f"{base}/weights", axis=-1)
    out = ex.node("MatMul", [P, v], base=base)
    if q_mask is not None:
        out = ex.zeros_where_not(ex.unsqueeze(q_mask, [-1]), out, base=base)
    outputs = [("output", out)] + ([("scores", P)] if return_scores else [])
    return outputs, [q_mask] + [None] * (len(outputs) - 1)


def _scores(ex, layer, q, k) -> str:
    """The raw scores ``(batch, Tq, Tv)``, in the layer's order of operations."""
    base = layer.name
    scale = None if layer.scale is None else ex.const(f"{base}/scale", layer.scale.value)
    if not isinstance(layer, AdditiveAttention) and layer.score_mode == "dot":
        kt = ex.node("Transpose", [k], base=f"{base}/key_t", perm=[0, 2, 1])
        S = ex.node("MatMul", [q, kt], base=f"{base}/scores")
        return S if scale is None else ex.node("Mul", [S, scale], base=f"{base}/scores")
    # every pair of steps: q_i + k_j, (batch, Tq, Tv, dim)
    u = ex.node("Add", [ex.unsqueeze(q, [2]), ex.unsqueeze(k, [1])], base=f"{base}/pairs")
    if isinstance(layer, AdditiveAttention):
        t = ex.node("Tanh", [u])
        t = t if scale is None else ex.node("Mul", [scale, t])
        return ex.reduce("ReduceSum", t, [-1], False, base=f"{base}/scores")
    t = ex.node("Tanh", [u if scale is None else ex.node("Mul", [scale, u])])
    sum_t = ex.reduce("ReduceSum", t, [-1], False)
    csw = ex.const(f"{base}/concat_score_weight", layer.concat_score_weight.value)
    return ex.node("Mul", [csw, sum_t], base=f"{base}/scores")


def _causal(ex, q, k, base) -> str:
    """``(Tq, Tv)`` bool: query step ``i`` sees key step ``j`` when ``i >= j``."""

    def steps(x):  # 0, 1, ..., T - 1 of x's steps axis
        t = ex.squeeze(ex.slice(ex.node("Shape", [x]), 1, 2, 0), [0])
        zero, one = (
            ex.const(nm, np.asarray(v, np.int64)) for nm, v in (("zero_i", 0), ("one_i", 1))
        )
        return ex.node("Range", [zero, t, one])

    later = ex.node("Less", [ex.unsqueeze(steps(q), [1]), steps(k)])  # j > i
    return ex.node("Not", [later], base=f"{base}/causal")

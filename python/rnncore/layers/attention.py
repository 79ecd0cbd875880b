"""``Attention`` (Luong, dot or concat scores) and ``AdditiveAttention`` (Bahdanau), as
Keras 3's layers: inputs ``[query, value]`` or ``[query, value, key]`` (key = value when not
given), masks ``[query_mask, value_mask]``, and the call arguments
``return_attention_scores`` and ``use_causal_mask``.

For query ``q (batch, Tq, dim)``, key ``k (batch, Tv, dim)``, value ``v (batch, Tv, dim_v)``::

    scores  S[b,i,j]:  dot      q_i . k_j                      (* scale with use_scale)
                       concat   csw * sum_d tanh(scale (q_i + k_j))   (scale 1 without)
                       additive sum_d scale_d tanh(q_i + k_j)         (scale 1 without)
    S = S - 1e9 where the value mask or the causal mask (j > i) hides a key
    P = softmax(S, over j)        W = dropout(P) in training        out = W v
    out = 0 at the masked query steps; the output mask is the query mask

All samples and steps at once: batched matrix products for ``dot``, one ``(batch, Tq, Tv,
dim)`` array for ``concat`` and ``additive``. Weights (Keras's names, shapes and order):
Attention ``scale ()`` (use_scale), ``concat_score_weight ()`` (score_mode="concat");
AdditiveAttention ``scale (dim,)`` (use_scale).
"""

from __future__ import annotations

import numpy as np

from .. import activations, utils
from ._base import check_allocation
from ._multi import MultiInputLayer

__all__ = ["Attention", "AdditiveAttention"]

#: what Keras subtracts from a hidden score (for float32 and float64)
_HIDDEN = 1.0e9


class Attention(MultiInputLayer):
    """Dot-product (Luong) attention, Keras's ``keras.layers.Attention``; see the module.

    Call: ``layer([query, value(, key)], mask=[query_mask, value_mask], training=None,
    return_attention_scores=False, use_causal_mask=False)``; with
    ``return_attention_scores`` the result is ``(output, scores)``, the scores after the
    softmax and the dropout, ``(batch, Tq, Tv)``.
    """

    _n_inputs = (2, 3)
    _n_masks = (2, 3)
    _config = ("use_scale", "score_mode", "dropout", "seed")

    def __init__(self, use_scale=False, score_mode="dot", dropout=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if score_mode not in ("dot", "concat"):
            raise ValueError(
                f"{type(self).__name__}: invalid score_mode {score_mode!r}; expected 'dot' or "
                f"'concat'"
            )
        if not 0 <= dropout <= 1:
            raise ValueError(f"{type(self).__name__}: dropout must be in [0, 1], got {dropout!r}")
        self.use_scale = bool(use_scale)
        self.score_mode = score_mode
        self.dropout = float(dropout)
        self.seed = seed
        self.scale = self.concat_score_weight = None

    def build(self, input_shape):
        shapes = self._shapes(input_shape)
        rng = np.random.default_rng(utils.draw_seed(self.seed))
        self._build_weights(shapes, rng)
        super().build(shapes)

    def _build_weights(self, shapes, rng):
        if self.use_scale:
            self.scale = self.add_weight("scale", (), "ones", rng)
        if self.score_mode == "concat":
            self.concat_score_weight = self.add_weight("concat_score_weight", (), "ones", rng)

    def _build_from_weights(self, weights):
        self.build([(None, None, None)] * 2)  # the weights are scalars

    # ---- scores ---------------------------------------------------------------------------

    def _scores(self, q, k):
        """``(S, cache)``: the raw scores ``(batch, Tq, Tv)`` and what their backward needs."""
        scale = None if self.scale is None else self.scale.value
        if self.score_mode == "dot":
            qk = q @ np.swapaxes(k, 1, 2)
            return (qk if scale is None else qk * scale), (q, k, qk)
        u = self._pairs(q, k)  # q_i + k_j, (batch, Tq, Tv, dim)
        t = np.tanh(u if scale is None else scale * u)
        sum_t = np.sum(t, axis=-1)
        return self.concat_score_weight.value * sum_t, (u, t, sum_t)

    def _scores_backward(self, dS, cache):
        """``(dq, dk, [dL/d(weight), ...])`` from ``dS``."""
        scale = None if self.scale is None else self.scale.value
        if self.score_mode == "dot":
            q, k, qk = cache
            dqk = dS if scale is None else dS * scale
            grads = [] if scale is None else [np.sum(dS * qk)]
            return dqk @ k, np.swapaxes(dqk, 1, 2) @ q, grads
        u, t, sum_t = cache
        csw = self.concat_score_weight.value
        du = activations.gradient("tanh", t, (csw * dS)[..., None])  # csw * sum_d tanh(.)
        grads = [np.sum(du * u)] if scale is not None else []
        dq, dk = self._pairs_backward(du if scale is None else du * scale)
        return dq, dk, grads + [np.sum(dS * sum_t)]

    def _pairs(self, q, k):
        """``q_i + k_j`` for every pair of steps: ``(batch, Tq, Tv, dim)``."""
        check_allocation(
            f"{type(self).__name__} {self.name!r}: the query-key pairs",
            [(q.shape[0], q.shape[1], k.shape[1], max(q.shape[2], k.shape[2]))],
            q.dtype,
        )
        return q[:, :, None, :] + k[:, None, :, :]

    @staticmethod
    def _pairs_backward(du):
        return np.sum(du, axis=2), np.sum(du, axis=1)

    # ---- the call -------------------------------------------------------------------------

    def _check(self, xs):
        q, v = xs[0], xs[1]
        k = xs[2] if len(xs) > 2 else v
        names = ("query", "value", "key")
        for name, a in zip(names, (q, v, k)):
            if a.ndim != 3:
                raise ValueError(
                    f"{self._owner()}: {name} must be 3-D (batch, steps, dim), got shape {a.shape}"
                )
        if not q.shape[0] == v.shape[0] == k.shape[0] or k.shape[1] != v.shape[1]:
            raise ValueError(
                f"{self._owner()}: expected query (batch, Tq, dim), value (batch, Tv, dim_v) "
                f"and key (batch, Tv, dim), got shapes {q.shape}, {v.shape}, {k.shape}"
            )
        want = self.scale.shape[0] if self.scale is not None and self.scale.ndim else None
        if q.shape[2] != k.shape[2] or want not in (None, q.shape[2]):
            raise ValueError(
                f"{self._owner()}: query and key must have the same last size"
                + (f" {want}" if want is not None else "")
                + f", got shapes {q.shape} and {k.shape}"
            )
        return q, v, k

    def _forward(self, xs, mask, noise_rng, use_causal_mask):
        q, v, k = self._check(xs)
        q_mask = mask[0] if mask else None
        v_mask = mask[1] if mask else None
        S, score_cache = self._scores(q, k)
        keep = None if v_mask is None else v_mask[:, None, :]
        if use_causal_mask:  # key j is hidden from query i when j > i
            tq, tv = S.shape[1:]
            causal = (np.arange(tq)[:, None] >= np.arange(tv)[None, :])[None]
            keep = causal if keep is None else keep & causal
        if keep is not None:
            S = np.where(keep, S, S - _HIDDEN)
        P = activations.softmax(S, axis=-1)
        noise = None
        if noise_rng is not None and self.dropout > 0:
            rate = self.dropout
            noise = np.zeros(P.shape, P.dtype)
            if rate < 1:
                noise = ((noise_rng.random(P.shape) >= rate) / (1 - rate)).astype(P.dtype)
        W = P if noise is None else P * noise
        out = W @ v
        if q_mask is not None:
            out = np.where(q_mask[..., None], out, 0).astype(out.dtype)
        return out, W, (P, noise, W, v, q_mask, score_cache, len(xs))

    def call(self, inputs, mask=None, training=False, return_attention_scores=False,
             use_causal_mask=False):  # fmt: skip
        rng = self._noise_rng(None) if training and self.dropout > 0 else None
        out, W, _ = self._forward(inputs, mask, rng, use_causal_mask)
        return (out, W) if return_attention_scores else out

    def call_train(self, x, mask, rng, return_attention_scores=False, use_causal_mask=False):
        rng = self._noise_rng(rng) if self.dropout > 0 else None
        out, W, cache = self._forward(x, mask, rng, use_causal_mask)
        self._train_cache = (cache, bool(return_attention_scores))
        return (out, W) if return_attention_scores else out

    def backward(self, dy):
        """``[dquery, dvalue(, dkey)]``; ``dy`` is ``(doutput, dscores)`` when the training
        call returned the scores too (either may be None)."""
        (P, noise, W, v, q_mask, score_cache, n_inputs), with_scores = self._cached()
        d_out, d_W = dy if with_scores else (dy, None)
        d_out = np.zeros((W.shape[0], W.shape[1], v.shape[2]), W.dtype) if d_out is None else d_out
        d_out = np.asarray(d_out)
        if q_mask is not None:
            d_out = np.where(q_mask[..., None], d_out, 0)
        dW = d_out @ np.swapaxes(v, 1, 2)
        if d_W is not None:
            dW = dW + np.asarray(d_W)
        dv = np.swapaxes(W, 1, 2) @ d_out
        dP = dW if noise is None else dW * noise
        dS = activations.gradient("softmax", P, dP)
        dq, dk, grads = self._scores_backward(dS, score_cache)
        dt = W.dtype
        self._grads = [
            np.asarray(g, dtype=dt).reshape(w.shape) for g, w in zip(grads, self.weights)
        ]
        if n_inputs == 2:  # the value was the key too
            return [dq.astype(dt, copy=False), (dv + dk).astype(dt, copy=False)]
        return [a.astype(dt, copy=False) for a in (dq, dv, dk)]

    def compute_mask(self, inputs, mask=None):
        return None if mask is None else mask[0]

    def compute_output_shape(self, input_shape, return_attention_scores=False):
        """``(*query[:-1], value[-1])``; with ``return_attention_scores`` also the scores'
        ``(*query[:-1], Tv)``."""
        shapes = self._shapes(input_shape)
        q, v = shapes[0], shapes[1]
        out = (*q[:-1], v[-1])
        if return_attention_scores:
            return out, (*q[:-1], shapes[-1][-2])
        return out

    def _symbolic_shapes(self, input_shape, kwargs):
        """On symbolic tensors (the functional API): two outputs with the scores."""
        if not self.built:
            self.build(input_shape)
        scores = bool(kwargs.get("return_attention_scores", False))
        return self.compute_output_shape(input_shape, return_attention_scores=scores)


class AdditiveAttention(Attention):
    """Additive (Bahdanau) attention, Keras's ``keras.layers.AdditiveAttention``:
    ``S[b,i,j] = sum_d scale_d tanh(q_i + k_j)``, then as :class:`Attention`. Weight:
    ``scale (dim,)`` (glorot_uniform) with ``use_scale``."""

    def __init__(self, use_scale=True, dropout=0.0, **kwargs):
        super().__init__(use_scale=use_scale, dropout=dropout, **kwargs)

    def _build_weights(self, shapes, rng):
        dim = shapes[0][-1]
        if self.use_scale:
            if dim is None:
                raise ValueError(f"{self._owner()}: the query's last size must be known")
            self.scale = self.add_weight("scale", (dim,), "glorot_uniform", rng)

    def _build_from_weights(self, weights):
        if weights and np.ndim(weights[0]) == 1:
            dim = np.shape(weights[0])[0]
            return self.build([(None, None, dim)] * 2)
        return self.build([(None, None, None)] * 2)

    def _scores(self, q, k):
        t = np.tanh(self._pairs(q, k))
        scaled = t if self.scale is None else self.scale.value * t
        return np.sum(scaled, axis=-1), (t,)

    def _scores_backward(self, dS, cache):
        (t,) = cache
        grads = [] if self.scale is None else [np.sum(dS[..., None] * t, axis=(0, 1, 2))]
        dt = dS[..., None] if self.scale is None else dS[..., None] * self.scale.value
        dq, dk = self._pairs_backward(activations.gradient("tanh", t, dt))
        return dq, dk, grads

    def get_config(self):
        config = super().get_config()
        del config["score_mode"]  # as Keras
        return config

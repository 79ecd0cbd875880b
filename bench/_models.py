"""What the model benchmarks share: weights drawn by seed."""

from __future__ import annotations

import numpy as np


def seeded(model, seed=0):
    """``model`` with weights drawn from ``seed``: N(0, 1) / sqrt(fan-in), in each weight's
    dtype, a scale that keeps the activations unsaturated."""
    rng = np.random.default_rng(seed)
    model.set_weights([(rng.standard_normal(w.shape) / np.sqrt(w.shape[0] if w.ndim else 1))
                       .astype(w.dtype) for w in model.get_weights()])  # fmt: skip
    return model

"""``set_random_seed``: one seed makes model building and training reproducible (Keras's
``keras.utils.set_random_seed``).

After ``set_random_seed(s)``, every weight initialisation of a layer built without its own
``seed`` and every ``fit`` call (shuffling, dropout masks) draws its seed, in order, from a
generator started at ``s``; Python's ``random`` and NumPy's global generator are seeded too.
Without it, layers without a seed and ``fit`` use fresh OS entropy.
"""

from __future__ import annotations

import random

import numpy as np

__all__ = ["set_random_seed", "draw_seed"]

_global = None


def set_random_seed(seed: int) -> None:
    """Seed rnncore's global seed generator (and ``random`` and ``numpy.random``)."""
    global _global
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"set_random_seed: expected an integer seed, got {seed!r}")
    _global = np.random.default_rng(int(seed))
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)  # noqa: NPY002 (Keras seeds NumPy's global generator too)


def draw_seed(explicit=None):
    """``explicit`` when given; else the next seed of the global generator (or None)."""
    if explicit is not None:
        return explicit
    if _global is None:
        return None
    return int(_global.integers(2**63))

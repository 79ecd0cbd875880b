"""What ``bench/run.py`` measures: the shapes, and the cases (shape x mode) it knows."""

from __future__ import annotations

from dataclasses import dataclass

import _impls as impls

CELLS = ("simple_rnn", "lstm", "gru")


@dataclass(frozen=True)
class Shape:
    name: str
    label: str
    B: int
    T: int
    D: int
    H: int


SHAPES = {
    "S1": Shape("S1", "streaming", 1, 1, 64, 128),  # T = 1 per call; `steps` calls
    "S2": Shape("S2", "small", 1, 100, 64, 128),
    "S3": Shape("S3", "medium", 32, 100, 128, 256),
    "S4": Shape("S4", "large", 128, 200, 256, 512),
}


@dataclass(frozen=True)
class Case:
    """What is timed: a shape, a mode (``stream`` / ``forward`` / ``train``, see _impls),
    the cells and the implementations taking part (rnncore always first)."""

    shape: str
    mode: str
    cells: tuple = CELLS
    impls: tuple = impls.IMPLS

    @property
    def key(self) -> str:
        return f"{self.shape}-{self.mode}"


# Every case the benchmark knows; --shapes/--cells select among them. A case whose rnncore
# builder returns None (no such API yet) is reported as skipped, never timed.
CASES = [
    Case("S1", "stream"),
    Case("S2", "forward"),
    Case("S3", "forward"),
    Case("S4", "forward"),
    # The backward issue: forward+backward (loss = out.sum(), grads for the weights and the
    # input) against PyTorch autograd. Skipped until _impls.rnncore_train_runner exists.
    Case("S3", "train", cells=("lstm", "gru"), impls=("rnncore", "torch")),
]

MEMORY_SHAPE = "S4"  # where a full run measures peak memory (quick mode: S2)

from collections.abc import Sequence
from typing import SupportsIndex

import numpy as np
from numpy.typing import NDArray

isa: str
has_openmp: bool
simd: str
eigen_version: str

__all__ = [
    "isa",
    "has_openmp",
    "simd",
    "eigen_version",
    "cpu_supports",
    "get_num_threads",
    "set_num_threads",
    "rnn_forward",
    "rnn_backward",
    "dense_forward",
    "dense_backward",
    "make_stream",
]

def cpu_supports(level: str) -> bool: ...
def get_num_threads() -> int: ...
def set_num_threads(n: SupportsIndex) -> None: ...
def rnn_forward(
    cell: str,
    x: NDArray[np.floating],
    kernel: NDArray[np.floating],
    recurrent_kernel: NDArray[np.floating],
    bias: NDArray[np.floating] | None,
    initial_state: Sequence[NDArray[np.floating]],
    mask: NDArray[np.bool_] | None,
    activation: str,
    recurrent_activation: str,
    reset_after: bool,
    go_backwards: bool,
    return_sequences: bool,
    training: bool,
) -> tuple[NDArray[np.floating], list[NDArray[np.floating]], list[NDArray[np.floating]] | None]: ...
def dense_forward(
    x: NDArray[np.floating],
    kernel: NDArray[np.floating],
    bias: NDArray[np.floating] | None,
    activation: str,
) -> NDArray[np.floating]: ...
def dense_backward(
    x: NDArray[np.floating],
    kernel: NDArray[np.floating],
    use_bias: bool,
    activation: str,
    y: NDArray[np.floating],
    dy: NDArray[np.floating],
) -> tuple[NDArray[np.floating], NDArray[np.floating], NDArray[np.floating] | None]: ...
def rnn_backward(
    cell: str,
    x: NDArray[np.floating],
    kernel: NDArray[np.floating],
    recurrent_kernel: NDArray[np.floating],
    bias: NDArray[np.floating] | None,
    initial_state: Sequence[NDArray[np.floating]],
    mask: NDArray[np.bool_] | None,
    activation: str,
    recurrent_activation: str,
    reset_after: bool,
    go_backwards: bool,
    return_sequences: bool,
    workspace: Sequence[NDArray[np.floating]],
    d_output: NDArray[np.floating],
    d_final_state: Sequence[NDArray[np.floating]],
) -> tuple[
    NDArray[np.floating],
    NDArray[np.floating],
    NDArray[np.floating],
    NDArray[np.floating] | None,
    list[NDArray[np.floating]],
]: ...

# What make_stream returns (the compiled classes Stream32 / Stream64, not exported).
class _Stream:
    @property
    def batch_size(self) -> int | None: ...
    @property
    def go_backwards(self) -> bool: ...
    def run(
        self,
        x: NDArray[np.floating],
        mask: NDArray[np.bool_] | None = None,
        return_sequences: bool = False,
        initial_state: Sequence[NDArray[np.floating]] | None = None,
        return_state: bool = False,
    ) -> NDArray[np.floating] | tuple[NDArray[np.floating], ...]: ...
    def get_states(self) -> list[NDArray[np.floating]]: ...
    def set_states(self, states: Sequence[NDArray[np.floating]]) -> None: ...
    def repack(self) -> None: ...

def make_stream(
    cell: str,
    kernel: NDArray[np.floating],
    recurrent_kernel: NDArray[np.floating],
    bias: NDArray[np.floating] | None,
    batch_size: int | None,
    activation: str,
    recurrent_activation: str,
    reset_after: bool,
    go_backwards: bool,
) -> _Stream: ...

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

isa: str
has_openmp: bool
simd: str
eigen_version: str

def cpu_supports(level: str) -> bool: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
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

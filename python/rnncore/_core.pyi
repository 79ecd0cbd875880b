from collections.abc import Sequence
from typing import SupportsIndex

import numpy as np
from numpy.typing import NDArray

isa: str
simd: str
eigen_version: str

# the list of _core.py, whose names these are
__all__ = ["isa", "simd", "eigen_version", "cpu_supports", "get_num_threads",
           "set_num_threads", "rnn_forward", "rnn_backward", "dense_forward", "dense_backward",
           "make_stream", "make_chain", "kernel_info", "set_blocking", "peak_flops", "team_check",
           "lowp_paths", "lowp_path_for", "set_lowp_path", "lowp_cpu_features",
           "embedding_backward", "optimizer_update", "conv1d_forward",
           "pool1d_forward", "layer_norm_forward"]  # fmt: skip

lowp_paths: tuple[str, ...]

_Array = NDArray[np.floating]
_Arrays = Sequence[NDArray[np.floating]]
_Mask = NDArray[np.bool_] | None

def cpu_supports(level: str) -> bool: ...
def lowp_cpu_features() -> dict[str, bool]: ...
def lowp_path_for(mode: str) -> str: ...
def set_lowp_path(name: str) -> None: ...
def get_num_threads() -> int: ...
def set_num_threads(n: SupportsIndex) -> None: ...
def kernel_info() -> dict[str, object]: ...
def set_blocking(dtype: str, kc: SupportsIndex, mc: SupportsIndex) -> None: ...
def peak_flops(threads: SupportsIndex = 1, dtype: str = "float32") -> float: ...

# for tests: runs of the thread team in which an item ran twice, not at all, or late
def team_check(runs: SupportsIndex, threads: SupportsIndex) -> int: ...

# rnn_forward returns (output, final states, workspace or None); rnn_backward returns
# (dx, dkernel, drecurrent_kernel, dbias or None, d initial states, dpeephole or None,
# dprojection or None). peephole ... output_activation: the LSTM variants (functional.lstm).
def rnn_forward(cell: str, x: _Array, kernel: _Array, recurrent_kernel: _Array,
                bias: _Array | None, initial_state: _Arrays, mask: _Mask, activation: str,
                recurrent_activation: str, reset_after: bool, go_backwards: bool,
                return_sequences: bool, training: bool, peephole: _Array | None = None,
                projection: _Array | None = None, cell_clip: float = 0.0,
                input_forget: bool = False, output_activation: str = ""
                ) -> tuple[_Array, list[_Array], list[_Array] | None]: ...  # fmt: skip
def rnn_backward(cell: str, x: _Array, kernel: _Array, recurrent_kernel: _Array,
                 bias: _Array | None, initial_state: _Arrays, mask: _Mask, activation: str,
                 recurrent_activation: str, reset_after: bool, go_backwards: bool,
                 return_sequences: bool, workspace: _Arrays, d_output: _Array,
                 d_final_state: _Arrays, peephole: _Array | None = None,
                 projection: _Array | None = None, cell_clip: float = 0.0,
                 input_forget: bool = False, output_activation: str = ""
                 ) -> tuple[_Array, _Array, _Array, _Array | None, list[_Array],
                            _Array | None, _Array | None]: ...  # fmt: skip

# quantize "bf16": kernel uint16 (bfloat16 bits); "int8": kernel int8 and kernel_scale
def dense_forward(x: _Array, kernel: NDArray, bias: _Array | None, activation: str,
                  quantize: str = "", kernel_scale: _Array | None = None
                  ) -> _Array: ...  # fmt: skip
def dense_backward(
    x: _Array, kernel: _Array, use_bias: bool, activation: str, y: _Array, dy: _Array
) -> tuple[_Array, _Array, _Array | None]: ...

# np.add.at(zeros((input_dim, D)), ids, dy), bit for bit; ids int32 or int64 (N,), dy (N, D)
def embedding_backward(ids: NDArray[np.integer], dy: _Array, input_dim: SupportsIndex
                       ) -> _Array: ...  # fmt: skip

# kind "sgd" | "adam" | "rmsprop"; in place; -1, or the first variable with a non-finite grad
def optimizer_update(kind: str, variables: _Arrays, gradients: _Arrays,
                     slots: Sequence[_Arrays], *, learning_rate: float,
                     decay: Sequence[float | None], clip_scale: Sequence[float | None],
                     clipvalue: float = 0.0, momentum: float = 0.0, nesterov: bool = False,
                     one_minus_beta_1: float = 0.0, one_minus_beta_2: float = 0.0,
                     alpha: float = 0.0, amsgrad: bool = False, epsilon: float = 0.0,
                     rho: float = 0.0, one_minus_rho: float = 0.0, centered: bool = False
                     ) -> int: ...  # fmt: skip

# Conv1D at inference (channels_last x (B, T, C), kernel (k, C / groups, F)), zero padding
# pad_before / pad_after steps: act(conv + bias) (B, To, F), one product per tap
def conv1d_forward(x: _Array, kernel: _Array, bias: _Array | None, groups: SupportsIndex,
                   strides: SupportsIndex, dilation: SupportsIndex, pad_before: SupportsIndex,
                   pad_after: SupportsIndex, activation: str) -> _Array: ...  # fmt: skip

# Max (average=False) or average pooling over the real steps of each window, channels_last
def pool1d_forward(x: _Array, pool_size: SupportsIndex, strides: SupportsIndex,
                   pad_before: SupportsIndex, pad_after: SupportsIndex, average: bool
                   ) -> _Array: ...  # fmt: skip

# LayerNormalization over the last axis of x (..., D): (x - mean) / sqrt(var + epsilon) * gamma
# + beta per row (rms_scaling: x / sqrt(var + epsilon) * gamma); statistics in double
def layer_norm_forward(
    x: _Array, gamma: _Array | None, beta: _Array | None, epsilon: float, rms_scaling: bool
) -> _Array: ...

# What make_stream returns (the compiled classes Stream32 / Stream64, not exported).
class _Stream:
    @property
    def batch_size(self) -> int | None: ...
    @property
    def go_backwards(self) -> bool: ...
    @property
    def quantize(self) -> str: ...
    def run(
        self,
        x: _Array,
        mask: _Mask = None,
        return_sequences: bool = False,
        initial_state: _Arrays | None = None,
        return_state: bool = False,
    ) -> _Array | tuple[_Array, ...]: ...
    def get_states(self) -> list[_Array]: ...
    def set_states(self, states: _Arrays) -> None: ...
    def repack(self) -> None: ...

def make_stream(cell: str, kernel: _Array, recurrent_kernel: _Array, bias: _Array | None,
                batch_size: int | None, activation: str, recurrent_activation: str,
                reset_after: bool, go_backwards: bool, peephole: _Array | None = None,
                projection: _Array | None = None, cell_clip: float = 0.0,
                input_forget: bool = False, output_activation: str = "",
                quantize: str = "", kernel_scale: _Array | None = None,
                recurrent_scale: _Array | None = None) -> _Stream: ...  # fmt: skip

# What make_chain returns (the compiled classes Chain32 / Chain64, not exported).
class _Chain:
    def run(self, x: _Array, mask: _Mask = None) -> tuple[_Array, NDArray[np.bool_] | None]: ...
    def run_slots(self, x: _Array, slots: NDArray[np.int64], table: _Arrays) -> _Array: ...

# ops: ("masking", mask_value) | ("recurrent", stream, return_sequences, zero_output_for_mask)
# | ("dense", kernel, bias or None, activation)
def make_chain(ops: list[tuple], float64: bool) -> _Chain: ...

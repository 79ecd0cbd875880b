"""rnncore: fast CPU recurrent neural networks with a Keras-like API.

The hot loops are C++ (Eigen matrix products, rnncore's own thread team); :mod:`rnncore.functional`
exposes them as NumPy-in / NumPy-out functions and :mod:`rnncore.reference` is the plain
NumPy reference they are tested against. :mod:`rnncore.layers` and :mod:`rnncore.models`
are the Keras-compatible layer API over them (``rnncore.Sequential``, ``rnncore.Input``,
``rnncore.Model(inputs, outputs)``).
"""

from . import (
    _core,
    activations,
    callbacks,
    functional,
    layers,
    losses,
    metrics,
    models,
    optimizers,
    reference,
    utils,
)
from ._core import get_num_threads, set_num_threads
from ._version import __version__
from .errors import (
    ModelFileError,
    UnsupportedArgumentError,
    UnsupportedModelError,
    VerificationError,
)
from .interop import from_torch, load_keras, load_onnx
from .layers import Input, KerasTensor
from .models import Model, Sequential, load_model, save_model
from .utils import set_random_seed


def build_info() -> dict:
    """What the compiled core was built with and which build this CPU runs."""
    return {
        "isa": _core.isa,
        "simd": _core.simd,
        "eigen": _core.eigen_version,
        "threads": _core.get_num_threads(),
        "kernel": _core.kernel_info(),  # cache sizes and the matrix kernel's blocking
        # quantize="bf16"/"int8": the path each mode takes now, the paths this module and CPU
        # run (lowest first; RNNCORE_LOWP_PATH caps them), and the CPU's bf16/int8 instructions
        "lowp_path": {mode: _core.lowp_path_for(mode) for mode in ("bf16", "int8")},
        "lowp_paths": list(_core.lowp_paths),
        "lowp_cpu": _core.lowp_cpu_features(),
    }


__all__ = [
    "functional",
    "reference",
    "build_info",
    "get_num_threads",
    "set_num_threads",
    "layers",
    "models",
    "Sequential",
    "Model",
    "Input",
    "KerasTensor",
    "load_model",
    "save_model",
    "from_torch",
    "load_keras",
    "load_onnx",
    "callbacks",
    "losses",
    "metrics",
    "optimizers",
    "utils",
    "set_random_seed",
    "activations",
    "ModelFileError",
    "UnsupportedArgumentError",
    "UnsupportedModelError",
    "VerificationError",
    "__version__",
]

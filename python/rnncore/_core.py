"""The compiled core, as the best build this CPU runs.

The extension is built once per instruction-set level (``_core_baseline`` for any x86-64,
``_core_x86_64_v3`` for AVX2/FMA, ``_core_x86_64_v4`` for AVX-512; or a single
``_core_native`` when built with ``RNNCORE_NATIVE=ON``). The baseline module, safe on every
CPU, is asked which levels the CPU supports; the best one present is imported. Set the
environment variable ``RNNCORE_ISA`` (``baseline``, ``x86_64_v3``, ``x86_64_v4``) to force a
level, e.g. to compare them.

Low precision (``quantize``): ``lowp_paths`` are the bf16/int8 kernels this module has and
this CPU runs, lowest first: ``"portable"`` (weights widened to float32 in registers, float32
FMA, at the module's vector width) everywhere; ``"avx_vnni"`` (x86_64_v3 module) and
``"avx512_vnni"`` (x86_64_v4) for int8, ``"avx512_bf16"`` (x86_64_v4) for bf16, where the
CPU has the instructions. Each mode takes the best path that serves it
(``lowp_path_for(mode)``). ``RNNCORE_LOWP_PATH`` (or ``set_lowp_path``) caps the path by
name, so that a lower path can be tested on a machine with a higher one: ``portable`` forces
the portable path for both modes; ``avx512_vnni`` keeps VNNI for int8 and bf16 portable. A
name this module or CPU does not run is refused at import. (AMX is not used.)
"""

from __future__ import annotations

import operator
import os
import warnings
from importlib import import_module
from importlib.util import find_spec

__all__ = ["isa", "simd", "eigen_version", "cpu_supports", "get_num_threads",
           "set_num_threads", "rnn_forward", "rnn_backward", "dense_forward", "dense_backward",
           "make_stream", "make_chain", "kernel_info", "set_blocking", "peak_flops", "team_check",
           "lowp_paths", "lowp_path_for", "set_lowp_path", "lowp_cpu_features",
           "embedding_backward", "optimizer_update", "conv1d_forward",
           "pool1d_forward", "layer_norm_forward"]  # fmt: skip

_PREFERENCE = ("x86_64_v4", "x86_64_v3")


def _load():
    try:
        probe = import_module("._core_baseline", __package__)
    except ImportError:
        return import_module("._core_native", __package__)
    forced = os.environ.get("RNNCORE_ISA", "").strip()
    if forced == "baseline":
        return probe
    for level in (forced,) if forced else _PREFERENCE:
        name = f"{__package__}._core_{level}"
        if find_spec(name) is None or not probe.cpu_supports(level):
            if forced:
                raise ImportError(
                    f"RNNCORE_ISA={forced!r}: this build or CPU does not provide that level"
                )
            continue
        return import_module(name)
    return probe


_module = _load()

isa: str = _module.isa
simd: str = _module.simd
eigen_version: str = _module.eigen_version
cpu_supports = _module.cpu_supports
get_num_threads = _module.get_num_threads


def _available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, which a
    container's or taskset's limit narrows), else the machine's count."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_num_threads(n) -> None:
    """The threads of rnncore's calls (the core's team, threads.hpp); 0 restores the default
    (``OMP_NUM_THREADS``, else the CPUs this process may run on). More threads than those CPUs
    only take turns on the same cores, so such an ``n`` is capped at that count with a
    ``UserWarning``."""
    _module.set_num_threads(n)  # checks n (type and range) and names it
    cpus = _available_cpus()
    if operator.index(n) > cpus:
        # the cap first, so that a warning turned into an error leaves no oversubscription
        _module.set_num_threads(cpus)
        warnings.warn(
            f"set_num_threads: n={operator.index(n)} is more than the {cpus} CPU(s) this "
            f"process may run on; using {cpus} threads (more would only slow every call)",
            UserWarning,
            stacklevel=2,
        )


rnn_forward = _module.rnn_forward
rnn_backward = _module.rnn_backward
dense_forward = _module.dense_forward
dense_backward = _module.dense_backward
make_stream = _module.make_stream
make_chain = _module.make_chain
kernel_info = _module.kernel_info
set_blocking = _module.set_blocking
peak_flops = _module.peak_flops
team_check = _module.team_check
lowp_paths: tuple = tuple(_module.lowp_paths)
lowp_path_for = _module.lowp_path_for
set_lowp_path = _module.set_lowp_path
lowp_cpu_features = _module.lowp_cpu_features
embedding_backward = _module.embedding_backward
optimizer_update = _module.optimizer_update
conv1d_forward = _module.conv1d_forward
pool1d_forward = _module.pool1d_forward
layer_norm_forward = _module.layer_norm_forward


def _cap_lowp_path() -> None:
    forced = os.environ.get("RNNCORE_LOWP_PATH", "").strip()
    if not forced:
        return
    if forced not in lowp_paths:
        raise ImportError(
            f"RNNCORE_LOWP_PATH={forced!r}: expected one of {lowp_paths} (the low-precision "
            f"paths this build and CPU run)"
        )
    set_lowp_path(forced)


_cap_lowp_path()

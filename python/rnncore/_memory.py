"""Sizes checked before they are allocated: the one memory budget of layers and loaders."""

from __future__ import annotations

import os

import numpy as np

try:  # POSIX only: the address-space limit a process may have been given
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None

__all__ = ["memory_budget", "check_allocation"]


def memory_budget() -> int:
    """The most bytes an allocation may take: physical memory (or a lower RLIMIT_AS)."""
    budget = 1 << 62
    try:
        budget = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        pass
    if resource is not None:
        try:
            soft, _ = resource.getrlimit(resource.RLIMIT_AS)
            if soft != resource.RLIM_INFINITY and 0 < soft < budget:
                budget = soft
        except (AttributeError, ValueError, OSError):
            pass
    return budget


def check_allocation(what: str, shapes, dtype, error=MemoryError) -> int:
    """Bytes of arrays of ``shapes`` and ``dtype``; ``error`` if they cannot fit in memory.

    Called *before* allocating sizes that come from arguments or files, so an absurd size
    (units=10**9, a file declaring 2**40 floats) fails with a clear message instead of an
    allocation that may succeed (overcommit) and end the process through the OOM killer.
    A negative or non-integer dimension is a ValueError (``error`` when it is one).
    """
    itemsize = np.dtype(dtype).itemsize
    total = 0
    for shape in shapes:
        n = 1
        for d in shape:
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
                cls = error if issubclass(error, ValueError) else ValueError
                raise cls(f"{what}: invalid dimension {d!r} in shape {tuple(shape)}")
            n *= int(d)
        total += n * itemsize
    budget = memory_budget()
    if total > budget:
        raise error(
            f"{what}: {_gib(total)} of arrays requested, more than the "
            f"{_gib(budget)} this machine can hold (shapes {[tuple(s) for s in shapes]})"
        )
    return total


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"

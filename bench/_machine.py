"""The machine a run is on: CPU, cores, memory, load, library versions, NumPy's BLAS, the
threading runtimes loaded, and where rnncore and the checkout come from."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import numpy as np

import rnncore

ROOT = Path(__file__).resolve().parent.parent  # the checkout


def _cpuinfo() -> dict:
    info = {"model": platform.processor() or platform.machine(), "flags": []}
    cores = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    phys = core = None
    for line in text.splitlines():
        k, _, v = line.partition(":")
        k, v = k.strip(), v.strip()
        if k == "model name":
            info["model"] = v
        elif k == "flags":
            fl = set(v.split())
            info["flags"] = [
                f for f in ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in fl
            ]
        elif k == "physical id":
            phys = v
        elif k == "core id":
            core = v
        elif not line.strip() and core is not None:
            cores.add((phys, core))
            phys = core = None
    if core is not None:
        cores.add((phys, core))
    info["physical_cores"] = len(cores) or None
    return info


def _meminfo_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _versions() -> dict:
    v = {"python": platform.python_version(), "numpy": np.__version__}
    v["rnncore"] = getattr(rnncore, "__version__", "?")
    for mod in ("torch", "onnxruntime", "onnx", "threadpoolctl", "matplotlib"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception:
            v[mod] = "not installed"
    return v


def _blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info

        libs = [
            f"{d.get('internal_api')} {d.get('version')} ({d.get('threading_layer')}, "
            f"{d.get('architecture')})"
            for d in threadpool_info()
            if d.get("user_api") == "blas"
        ]
        return "; ".join(libs) or "?"
    except Exception:
        return "? (threadpoolctl not installed)"


def loaded_runtimes() -> list[str]:
    """Threading/BLAS runtimes mapped in this process (one shared libgomp matters: rnncore
    and PyTorch then share one OpenMP thread pool)."""
    names = set()
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            p = line.split()[-1] if line.split() else ""
            base = os.path.basename(p)
            if any(s in base for s in ("gomp", "iomp", "omp.so", "openblas", "mkl_rt", "tbb")):
                names.add(base)  # the library's name only: no machine paths in results
    except OSError:
        pass
    return sorted(names)


def _where(path: Path) -> str:
    """Where rnncore was imported from: relative to this checkout, else 'site-packages'."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return "an installed copy (site-packages)"


def _git(*args: str) -> str:
    """The standard output of ``git args...`` run in the checkout."""
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
    ).stdout


def _git_state() -> str:
    """The checkout's commit (and whether it has uncommitted changes), or '?'."""
    try:
        commit = _git("rev-parse", "--short", "HEAD").strip()
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return f"{commit}{' + uncommitted changes' if dirty.strip() else ''}" if commit else "?"
    except Exception:
        return "?"


def machine_info() -> dict:
    cpu = _cpuinfo()
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "cpu": cpu["model"],
        "cpu_flags": cpu["flags"],
        "logical_cpus": os.cpu_count(),
        "physical_cores": cpu.get("physical_cores"),
        "usable_cpus": affinity,
        "memory_gib": _meminfo_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "rnncore_build": rnncore.build_info(),
        "rnncore_from": _where(Path(rnncore.__file__).parent),
        "git": _git_state(),
        "versions": _versions(),
        "numpy_blas": _blas_info(),
    }

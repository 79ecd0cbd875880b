"""Batch inference on Dask arrays: :func:`predict` scores a ``dask.array`` chunk by chunk.

Needs the optional extra ``pip install ".[dask]"`` in the source checkout (``dask[array]`` and
``distributed``).

``rnncore.dask.predict(model, x)`` takes a ``dask.array`` of shape ``(batch, timesteps,
features)`` (a functional model with one input: that input's shape) chunked along the batch
axis and returns a lazy ``dask.array`` of the model's
output, one output chunk per input chunk, computed wherever Dask runs the chunks: a local
thread pool, or the workers of a ``distributed`` cluster. Nothing runs before ``.compute()``
(or ``.to_zarr(...)``, ``.store(...)``, ...), except one tiny local call on a single zero row
that checks the input against the model and finds the output's shape and dtype, so a bad
input raises the same error as ``model.predict`` before any work is scheduled.

How the model travels: the model is one task of the graph (a key ``rnncore-model-<token>``
computed from its config and weights), which every chunk task depends on. Dask pickles it once
into the graph (rnncore models pickle as config and weights only); each worker that runs chunks
fetches it once and keeps it while the job's chunks run. If the worker holding it dies, the
scheduler simply recomputes that task elsewhere, like any lost chunk.

Threads: the rnncore core's thread count is a per-process setting. On a ``distributed``
cluster :func:`predict` registers a worker plugin (:class:`WorkerThreads`, also applied to
workers that join or restart later) that sets each worker's rnncore threads to that worker's
Dask thread count (``dask worker --nthreads k`` → ``rnncore.set_num_threads(k)``), and the
chunk tasks of one process run the model one at a time (a process-wide lock). So a worker
computes with exactly as many threads as Dask gave it, and several workers on one machine
whose ``--nthreads`` add up to its cores never oversubscribe it. The same lock keeps Dask's
local threaded scheduler from running several multi-threaded model calls at once.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

from ._core import get_num_threads, set_num_threads
from .errors import install_hint
from .models.base import ModelBase

__all__ = ["predict", "WorkerThreads", "match_worker_threads"]

#: One rnncore model call at a time per process: each call already uses all the threads
#: the process was given (set_num_threads), and a model object is not shared across calls.
_MODEL_LOCK = threading.Lock()

_PLUGIN_NAME = "rnncore-threads"

try:  # the optional extra; without it, predict still runs on Dask's local schedulers
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPluginBase
except ImportError:  # pragma: no cover - depends on the environment
    _WorkerPluginBase = object


def _worker_threads() -> int:
    """rnncore's thread count where it runs (sent to the workers by reference)."""
    return get_num_threads()


def _require_dask():
    try:
        import dask  # noqa: F401  (the top-level package: absolute import)
        import dask.array as da
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"rnncore.dask needs Dask: {install_hint('dask')} "
            '(or pip install "dask[array]" distributed)'
        ) from e
    return da


def _predict_chunk(chunk, model, batch_size, tail, dtype):
    """One output block: the model on one input chunk (runs on a worker)."""
    chunk = np.asarray(chunk)
    if chunk.shape[0] == 0:
        return np.empty((0,) + tuple(tail), dtype)
    with _MODEL_LOCK:
        y = model.predict(chunk, batch_size=batch_size)
    return np.asarray(y, dtype=dtype)


def _is_stateful(model) -> bool:
    if isinstance(model, ModelBase):  # nested models' layers included
        return bool(model.stateful_layers())
    return any(getattr(layer, "stateful", False) for layer in getattr(model, "layers", []))


def _model_key(model) -> str:
    from dask.base import tokenize

    try:
        token = tokenize(type(model).__qualname__, model.to_json(), model.get_weights())
    except Exception:  # a duck-typed model without to_json/get_weights
        token = tokenize(model)
    return f"rnncore-model-{token}"


def _current_client():
    """The active ``distributed`` Client, or None when there is none."""
    if "distributed" not in sys.modules:
        return None
    import distributed

    try:
        return distributed.default_client()
    except ValueError:
        return None


class WorkerThreads(_WorkerPluginBase):
    """A ``distributed`` worker plugin: rnncore threads = the worker's Dask threads.

    Register it with ``client.register_plugin(WorkerThreads())`` (or call
    :func:`match_worker_threads`); :func:`predict` does it for the active client. The
    scheduler also applies it to workers that join or are restarted later. ``nthreads``
    overrides the count (the same on every worker).
    """

    name = _PLUGIN_NAME
    idempotent = False

    def __init__(self, nthreads: int | None = None):
        self.nthreads = nthreads

    def setup(self, worker):
        n = self.nthreads if self.nthreads is not None else worker.state.nthreads
        set_num_threads(int(n))


_registered_clients: set = set()


def match_worker_threads(client=None, nthreads: int | None = None) -> dict:
    """Set every worker's rnncore threads to its Dask threads (or to ``nthreads``), now and on
    workers that join later. Returns ``{worker address: rnncore threads}``."""
    if client is None:
        client = _current_client()
        if client is None:
            raise ValueError("match_worker_threads: no distributed Client is active")
    plugin = WorkerThreads(nthreads)
    if hasattr(client, "register_plugin"):
        client.register_plugin(plugin, name=_PLUGIN_NAME)
    else:  # distributed < 2023.9
        client.register_worker_plugin(plugin, name=_PLUGIN_NAME)
    return client.run(_worker_threads)


def _ensure_worker_threads(client) -> None:
    ident = (id(client), getattr(client, "id", None))
    if ident in _registered_clients:
        return
    match_worker_threads(client)
    _registered_clients.add(ident)


def predict(model, x, batch_size=None, *, match_threads: bool = True):
    """Lazy ``model.predict`` over a ``dask.array`` ``x`` of shape (batch, timesteps, features).

    ``x`` is split along the batch axis as it is chunked (the time and feature axes are
    rechunked into one chunk each if they are not, so every chunk holds whole sequences);
    each chunk runs ``model.predict(chunk, batch_size=batch_size)`` (``None``: predict's
    default of 32 rows per call) on whichever worker Dask picks. Returns a ``dask.array``
    with the same batch chunks and the model's output shape (2-D for
    ``return_sequences=False``, 3-D for sequences) and dtype. Variable-length sequences are
    padded to a common length inside the array and masked by a ``Masking`` layer, as for
    ``model.predict``.

    The input is checked before anything is scheduled: one zero row runs through the model
    locally, so a wrong feature count (or dtype) raises the same ``ValueError`` as
    ``model.predict``. With an active ``distributed`` Client and ``match_threads=True``,
    each worker's rnncore threads are set to its Dask threads (:class:`WorkerThreads`).
    """
    da = _require_dask()
    if batch_size is not None and (int(batch_size) != batch_size or batch_size <= 0):
        raise ValueError(f"predict: batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(x, da.Array):
        raise TypeError(
            f"rnncore.dask.predict: x must be a dask.array, got {type(x).__name__} "
            f"(use dask.array.from_array(x, chunks=(rows, -1, -1)), or model.predict for "
            f"an in-memory array)"
        )
    inputs = getattr(model, "inputs", None)  # a functional model's
    if inputs is not None and len(inputs) > 1:
        raise NotImplementedError(
            f"rnncore.dask.predict: model {model.name!r} has {len(inputs)} inputs "
            f"({', '.join(repr(t.name) for t in inputs)}); only single-input models are "
            f"supported (call model.predict on each chunk's arrays instead)"
        )
    rank = len(inputs[0].shape) if inputs else 3
    if x.ndim != rank:
        want = "(batch, timesteps, features)" if rank == 3 else f"{inputs[0].shape}"
        raise ValueError(
            f"rnncore.dask.predict: x must have shape {want}, got {x.ndim} dimensions {x.shape}"
        )
    if any(np.isnan(d) for d in x.shape[1:]):
        raise ValueError(
            "rnncore.dask.predict: the timesteps and features sizes of x must be known "
            "(call x.compute_chunk_sizes() first)"
        )
    if _is_stateful(model):
        raise ValueError(
            "rnncore.dask.predict: stateful layers carry state from one batch to the next, "
            "which independent chunks cannot; use a stateless copy of the model"
        )
    if any(len(c) > 1 for c in x.chunks[1:]):
        x = x.rechunk({k: -1 for k in range(1, x.ndim)})

    # Local probe on one zero row: the same checks (and error) as model.predict, and the
    # output's shape and dtype, before anything is scheduled.
    probe_shape = (1,) + tuple(int(d) for d in x.shape[1:])
    try:
        probe = model.predict(np.zeros(probe_shape, x.dtype))
    except (ValueError, TypeError) as e:  # word it as model.predict(x) would: its 1st batch
        n = x.shape[0]
        first = (n if np.isnan(n) else min(int(n), int(batch_size or 32)),) + probe_shape[1:]
        message = str(e).replace(str(probe_shape), str(first))
        raise type(e)(message) from None
    if isinstance(probe, (tuple, list, dict)):
        raise NotImplementedError(
            "rnncore.dask.predict: models with several outputs (return_state=True, or a "
            "functional model's outputs) are not supported; end the model with a "
            "single-output layer"
        )
    probe = np.asarray(probe)
    tail, dtype = tuple(probe.shape[1:]), probe.dtype

    import dask

    model_ref = dask.delayed(model, name=_model_key(model), pure=True)

    if match_threads:
        client = _current_client()
        if client is not None:
            _ensure_worker_threads(client)

    out_ndim = 1 + len(tail)
    kwargs = {}
    if out_ndim < x.ndim:
        kwargs["drop_axis"] = list(range(out_ndim, x.ndim))
    elif out_ndim > x.ndim:
        kwargs["new_axis"] = list(range(x.ndim, out_ndim))
    return da.map_blocks(
        _predict_chunk,
        x,
        model_ref,
        batch_size,
        tail,
        dtype,
        chunks=(x.chunks[0],) + tuple((d,) for d in tail),
        dtype=dtype,
        meta=np.empty((0,) * out_ndim, dtype),
        token="rnncore-predict",
        **kwargs,
    )

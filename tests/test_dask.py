"""rnncore.dask: batch inference on dask arrays, on a local 2-process distributed cluster."""

from __future__ import annotations

import os
import signal
import time

import dask
import dask.array as da
import distributed
import numpy as np
import pytest

import rnncore
import rnncore.dask
import rnncore.dask as rdask
from rnncore import layers as L
from support import available_cpus

# distributed's own start-up / shutdown chatter must not fail the suite (filterwarnings=error)
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

T, D = 12, 5
BATCH = 16  # predict batch_size; chunks are multiples of it, so results match bit for bit


def _model(kind):
    rng = np.random.default_rng({"lstm": 1, "gru": 2, "bidir": 3}[kind])
    if kind == "lstm":
        model = rnncore.Sequential([rnncore.Input(shape=(T, D)), L.LSTM(8), L.Dense(3)])
    elif kind == "gru":
        model = rnncore.Sequential([rnncore.Input(shape=(T, D)), L.GRU(7, return_sequences=True)])
    else:
        model = rnncore.Sequential(
            [
                rnncore.Input(shape=(T, D)),
                L.Masking(0.0),
                L.Bidirectional(L.LSTM(6, return_sequences=True)),
                L.GRU(4),
            ]
        )
    model.set_weights(
        [rng.standard_normal(w.shape).astype(w.dtype) * 0.3 for w in model.get_weights()]
    )
    return model


def _data(n, seed=0):
    """Variable-length sequences, zero-padded at the end (lengths 1..T)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, T, D)).astype(np.float32)
    lengths = rng.integers(1, T + 1, n)
    x[np.arange(T)[None, :] >= lengths[:, None]] = 0.0
    return x


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.mark.parametrize("kind", ["lstm", "gru", "bidir"])
def test_matches_predict_on_cluster(client, kind):
    model = _model(kind)
    x = _data(150, seed=len(kind))
    dx = da.from_array(x, chunks=(2 * BATCH, T, D))  # 5 chunks on 2 workers
    assert dx.numblocks[0] > 2
    y = rdask.predict(model, dx, batch_size=BATCH)
    expected = model.predict(x, batch_size=BATCH)
    assert y.shape == expected.shape and y.dtype == expected.dtype
    assert y.chunks[0] == dx.chunks[0]
    got = y.compute()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # each worker's rnncore threads now match its Dask threads
    assert client.run(rnncore.get_num_threads) == {
        addr: w["nthreads"] for addr, w in client.scheduler_info()["workers"].items()
    }


def test_model_is_one_task(client):
    model = _model("lstm")
    y = rdask.predict(model, da.from_array(_data(100), chunks=(20, T, D)))
    graph = dict(y.__dask_graph__())
    model_keys = [k for k in graph if str(k).startswith("rnncore-model-")]
    assert len(model_keys) == 1
    assert y.numblocks[0] == 5
    # the same model again gives the same key (sent once per worker, not per chunk or call)
    y2 = rdask.predict(model, da.from_array(_data(100), chunks=(20, T, D)))
    assert [k for k in dict(y2.__dask_graph__()) if str(k).startswith("rnncore-model-")] == (
        model_keys
    )
    np.testing.assert_allclose(y.compute(), model.predict(_data(100)), rtol=1e-6, atol=1e-6)


def test_match_worker_threads(client):
    # the workers run on this machine's CPUs: more threads than those are capped to them
    cpus = available_cpus()
    threads = rdask.match_worker_threads(client, nthreads=min(3, cpus))
    assert set(threads.values()) == {min(3, cpus)}
    threads = rdask.match_worker_threads(client, nthreads=cpus + 5)
    assert set(threads.values()) == {cpus}
    threads = rdask.match_worker_threads(client)
    assert set(threads.values()) == {1}


def _boom(block):
    raise AssertionError("the input was computed")


def test_bad_feature_axis_raises_before_scheduling(client):
    model = _model("gru")
    bad = np.zeros((40, T, D + 2), np.float32)
    with pytest.raises(ValueError) as local:
        model.predict(bad)
    tasks_before = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
    dx = da.from_array(bad, chunks=(10, T, D + 2)).map_blocks(
        _boom, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32)
    )
    with pytest.raises(ValueError) as remote:
        rdask.predict(model, dx)
    assert str(remote.value) == str(local.value)
    assert "(32, 12, 7)" in str(remote.value)  # predict's first batch of 32 rows
    tasks_after = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
    assert tasks_after <= tasks_before


class _SlowModel:
    """A model wrapper that takes a while per chunk, so a worker can be killed mid-job."""

    def __init__(self, model, seconds):
        self.model, self.seconds = model, seconds

    def predict(self, x, batch_size=None):
        if len(x) > 1:  # not for the local one-row probe
            time.sleep(self.seconds)
        return self.model.predict(x, batch_size=batch_size)


def test_worker_killed_mid_job(client):
    model = _model("bidir")
    x = _data(24 * BATCH, seed=7)
    expected = model.predict(x, batch_size=BATCH)
    y = rdask.predict(
        _SlowModel(model, 0.15), da.from_array(x, chunks=(BATCH, T, D)), batch_size=BATCH
    )
    future = client.compute(y)
    # wait until the job is under way on both workers, then kill one worker process
    deadline = time.monotonic() + 30
    processing = client.processing()
    while not (sum(len(v) for v in processing.values()) and len(processing) == 2):
        assert time.monotonic() < deadline, f"job not under way on two workers: {processing}"
        time.sleep(0.05)
        processing = client.processing()
    time.sleep(0.5)
    assert not future.done()
    victim = max(processing, key=lambda a: len(processing[a]))
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    got = future.result(timeout=60)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert victim not in client.scheduler_info()["workers"]
    client.wait_for_workers(2, timeout=30)


def test_local_threaded_scheduler_rechunks_time_axis():
    model = _model("bidir")
    x = _data(70, seed=3)
    dx = da.from_array(x, chunks=(BATCH, 5, 2))  # time and feature axes split: rechunked
    y = rdask.predict(model, dx, batch_size=BATCH)
    assert y.chunks[0] == dx.chunks[0] and y.shape == (70, 4)
    with dask.config.set(scheduler="threads"):
        got = y.compute()
    np.testing.assert_array_equal(got, model.predict(x, batch_size=BATCH))


def test_rejects_non_dask_input():
    with pytest.raises(TypeError, match="dask.array"):
        rdask.predict(_model("lstm"), _data(4))


def test_stateful_layer_in_a_nested_model_is_refused():
    """Independent chunks cannot carry states: a stateful LSTM inside a nested model counts."""
    inner = rnncore.Sequential([rnncore.Input((5, 3), batch_size=2), L.LSTM(4, stateful=True)])
    x = rnncore.Input((5, 3), batch_size=2)
    model = rnncore.Model(x, L.Dense(1)(inner(x)))
    assert model.stateful_layers() == inner.layers
    with pytest.raises(ValueError, match="stateful layers carry state"):
        rnncore.dask.predict(model, da.zeros((4, 5, 3), chunks=2))

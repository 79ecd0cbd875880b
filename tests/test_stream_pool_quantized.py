"""A quantized model in the stream pool and in ragged predict runs its low-precision weights,
as its own calls do (issue 17 with issue 16): each stream bit for bit the model's predict."""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
from rnncore import layers as L


@pytest.mark.parametrize("mode", ["bf16", "int8"])
def test_pool_and_ragged_use_the_quantized_weights(mode):
    rng = np.random.default_rng(0)
    model = rnncore.Sequential([rnncore.Input((None, 6)), L.LSTM(8, return_sequences=True),
                                L.GRU(5, return_sequences=True), L.Dense(3)])  # fmt: skip
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.5
                       for w in model.get_weights()])  # fmt: skip
    x = rng.standard_normal((3, 7, 6)).astype(np.float32)
    before = model.predict(x)
    model.quantize(mode)
    want = model.predict(x)
    assert not np.array_equal(want, before)  # the quantized weights are what runs
    pool = model.stream_pool(4)
    sids = [pool.open() for _ in range(3)]
    steps = [pool.step({sid: x[k, t] for k, sid in enumerate(sids)}) for t in range(7)]
    for k, sid in enumerate(sids):
        np.testing.assert_array_equal(np.stack([s[sid] for s in steps]), want[k])
    for k, y in enumerate(model.predict([x[0], x[1, :4], x[2, :6]])):
        np.testing.assert_array_equal(y, model.predict(x[k : k + 1, : len(y)])[0])

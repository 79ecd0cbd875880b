"""Training (issue 25): one epoch of ``fit`` after a warm-up epoch, rnncore against a plain
PyTorch loop, side by side in one process.

    python3 bench/fit.py [--workloads W1 W2 W3] [--threads 1 2] [--repeats 3]
                         [--impls rnncore torch] [--profile W2] [--kernels]

Workloads (the issue's), Adam (learning rate 1e-3, epsilon 1e-7 in both), no shuffling, the
same data and the same initial weights in both (rnncore's, copied into the torch modules), so
that both do the same work and their losses after each epoch can be compared:

* W1 Input(50, 8) -> LSTM(64) -> Dense(1), mse, N=4096, batch 32;
* W2 Embedding(20000, 64) -> LSTM(64) -> Dense(1, sigmoid), binary crossentropy, T=200,
  N=2048, batch 64;
* W3 Input(100, 32) -> GRU(128, return_sequences) -> GRU(128) -> Dense(10), sparse
  categorical crossentropy from logits, N=2048, batch 32.

rnncore: ``model.fit(x, y, batch_size, epochs=1, shuffle=False, verbose=0)``, timed as a
whole call. PyTorch: nn.Embedding / nn.LSTM / nn.GRU (batch_first) / nn.Linear, a loop of
``zero_grad, forward, loss, backward, Adam.step`` over the same batches. For each thread
count, each implementation first runs one warm-up epoch, then --repeats rounds each time
one more epoch of every implementation in turn (interleaved, the first one rotating), so that
load from other processes hits all alike; the table gives the median and the losses of the
last epoch (the mean over its batches). --profile W2 prints cProfile's view of one rnncore
epoch of that workload (at the last thread count). --kernels times, instead, the training
kernels W2 calls besides the recurrent ones: one optimizer step (Adam, RMSprop, SGD) of W2's
variables and the embedding gradient of one batch, against NumPy (``rnncore.reference``'s
optimizer step and ``np.add.at``). Prints Markdown with the CPU and load.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import rnncore  # noqa: E402
from _impls import TORCH_ORDER, _blocks  # noqa: E402
from _machine import loadavg, machine_info  # noqa: E402
from rnncore import layers as L  # noqa: E402
from rnncore import losses, optimizers  # noqa: E402

LR, EPS = 1e-3, 1e-7


def _w1(rng):
    N = 4096
    x = rng.standard_normal((N, 50, 8)).astype(np.float32)
    y = x[:, :, 0].mean(1, keepdims=True).astype(np.float32)
    layers = [rnncore.Input((50, 8)), L.LSTM(64), L.Dense(1)]
    return layers, "mse", x, y, 32


def _w2(rng):
    N, T = 2048, 200
    x = rng.integers(1, 20000, size=(N, T))
    y = rng.integers(0, 2, size=(N, 1)).astype(np.float32)
    layers = [rnncore.Input((T,), dtype="int64"), L.Embedding(20000, 64), L.LSTM(64),
              L.Dense(1, activation="sigmoid")]  # fmt: skip
    return layers, "binary_crossentropy", x, y, 64


def _w3(rng):
    N = 2048
    x = rng.standard_normal((N, 100, 32)).astype(np.float32)
    y = rng.integers(0, 10, size=(N,))
    layers = [rnncore.Input((100, 32)), L.GRU(128, return_sequences=True), L.GRU(128),
              L.Dense(10)]  # fmt: skip
    return layers, losses.SparseCategoricalCrossentropy(from_logits=True), x, y, 32


WORKLOADS = {
    "W1": ("Input(50,8) → LSTM(64) → Dense(1), N=4096, batch 32", _w1),
    "W2": ("Embedding(20000,64) → LSTM(64) → Dense(1, sigmoid), T=200, N=2048, batch 64", _w2),
    "W3": ("Input(100,32) → GRU(128, seq) → GRU(128) → Dense(10), N=2048, batch 32", _w3),
}


class RnncoreRun:
    name = "rnncore"

    def __init__(self, workload, seed=0):
        rnncore.utils.set_random_seed(seed)  # the same initial weights in every run
        layers, loss, self.x, self.y, self.batch = WORKLOADS[workload][1](
            np.random.default_rng(seed)
        )
        self.model = rnncore.Sequential(layers)
        self.model.compile(optimizer=optimizers.Adam(LR, epsilon=EPS), loss=loss)
        self.loss_kind = loss if isinstance(loss, str) else "sparse_ce_logits"

    def epoch(self) -> float:
        h = self.model.fit(self.x, self.y, batch_size=self.batch, epochs=1, shuffle=False,
                           verbose=0)  # fmt: skip
        return float(h.history["loss"][-1])


class TorchRun:
    name = "torch"

    def __init__(self, ours: RnncoreRun):
        import torch
        from torch import nn

        self.torch = torch
        mods, self.rnns = [], []
        for layer in ours.model.layers:
            weights = [np.asarray(w, np.float32) for w in layer.get_weights()]
            kind = type(layer).__name__
            if kind == "Embedding":
                m = nn.Embedding(*weights[0].shape)
                with torch.no_grad():
                    m.weight.copy_(torch.from_numpy(weights[0]))
            elif kind in ("LSTM", "GRU"):
                W, U, b = weights
                cell, H = kind.lower(), U.shape[0]
                order = TORCH_ORDER[cell]
                m = getattr(nn, kind)(W.shape[0], H, batch_first=True)
                b_ih, b_hh = (b[0], b[1]) if cell == "gru" else (b, np.zeros_like(b))
                with torch.no_grad():
                    m.weight_ih_l0.copy_(torch.from_numpy(_blocks(W, H, order).T.copy()))
                    m.weight_hh_l0.copy_(torch.from_numpy(_blocks(U, H, order).T.copy()))
                    m.bias_ih_l0.copy_(torch.from_numpy(_blocks(b_ih, H, order)))
                    m.bias_hh_l0.copy_(torch.from_numpy(_blocks(b_hh, H, order)))
                self.rnns.append((len(mods), layer.return_sequences))
            elif kind == "Dense":
                m = nn.Linear(*weights[0].shape)
                with torch.no_grad():
                    m.weight.copy_(torch.from_numpy(weights[0].T.copy()))
                    m.bias.copy_(torch.from_numpy(weights[1]))
                if layer.get_config()["activation"] == "sigmoid":
                    m = nn.Sequential(m, nn.Sigmoid())
            else:
                raise TypeError(kind)
            mods.append(m)
        self.mods = nn.ModuleList(mods)
        self.opt = torch.optim.Adam(self.mods.parameters(), lr=LR, eps=EPS)
        self.loss = {
            "mse": nn.MSELoss(),
            "binary_crossentropy": nn.BCELoss(),
            "sparse_ce_logits": nn.CrossEntropyLoss(),
        }[ours.loss_kind]
        self.x, self.y, self.batch = torch.from_numpy(ours.x), torch.from_numpy(ours.y), ours.batch
        if ours.loss_kind == "sparse_ce_logits":
            self.y = self.y.long()

    def forward(self, x):
        seq = dict(self.rnns)
        for k, m in enumerate(self.mods):
            if k in seq:
                x, _ = m(x)
                if not seq[k]:
                    x = x[:, -1]
            else:
                x = m(x)
        return x

    def epoch(self) -> float:
        total, n = 0.0, 0
        for i in range(0, len(self.x), self.batch):
            self.opt.zero_grad()
            loss = self.loss(self.forward(self.x[i : i + self.batch]), self.y[i : i + self.batch])
            loss.backward()
            self.opt.step()
            total, n = total + float(loss.detach()), n + 1
        return total / n


def set_threads(n: int) -> None:
    rnncore.set_num_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


def measure(workload, threads, repeats, impls):
    set_threads(threads)
    runs = [RnncoreRun(workload)]
    if "torch" in impls:
        runs.append(TorchRun(runs[0]))
    if "rnncore" not in impls:
        runs = runs[1:]
    for r in runs:
        r.last_loss = r.epoch()  # warm-up
    times = {r.name: [] for r in runs}
    for k in range(repeats):
        for r in runs[k % len(runs) :] + runs[: k % len(runs)]:
            t0 = time.perf_counter()
            r.last_loss = r.epoch()
            times[r.name].append(time.perf_counter() - t0)
    return {r.name: (statistics.median(times[r.name]), times[r.name], r.last_loss) for r in runs}


def profile(workload, top=25) -> str:
    run = RnncoreRun(workload)
    run.epoch()  # warm-up
    prof = cProfile.Profile()
    prof.enable()
    run.epoch()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def kernels(threads, repeats=30) -> None:
    from rnncore import functional, reference
    from rnncore.layers import Variable

    rng = np.random.default_rng(0)
    shapes = [(20000, 64), (64, 256), (64, 256), (256,), (64, 1), (1,)]  # W2's variables
    start = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    ids = rng.integers(0, 20000, size=(64, 200))
    dy = rng.standard_normal((64, 200, 64)).astype(np.float32)

    def median_ms(fn):
        fn()
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples) * 1e3

    def step(make, apply):
        opt, vs = make(), [Variable(w.copy(), f"v{k}", f"v{k}") for k, w in enumerate(start)]
        return lambda: apply(opt, list(zip(grads, vs)))

    def add_at():
        out = np.zeros((20000, 64), np.float32)
        np.add.at(out, ids.reshape(-1), dy.reshape(-1, 64))

    makers = {"Adam": lambda: optimizers.Adam(LR), "RMSprop": optimizers.RMSprop,
              "SGD": optimizers.SGD}  # fmt: skip
    print("| kernel (W2's shapes) | threads | NumPy ms | rnncore ms |\n|---|---|---|---|")
    for n in threads:
        set_threads(n)
        for name, make in makers.items():
            ours = median_ms(step(make, lambda o, p: o.apply_gradients(p)))
            numpy = median_ms(step(make, reference.apply_gradients))
            print(f"| {name} step | {n} | {numpy:.2f} | {ours:.2f} |")
        ours = median_ms(lambda: functional.embedding_backward(ids, dy, 20000))
        print(f"| embedding gradient | {n} | {median_ms(add_at):.2f} | {ours:.2f} |", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--impls", nargs="+", default=["rnncore", "torch"], choices=["rnncore", "torch"])
    p.add_argument("--profile", choices=list(WORKLOADS), default=None)
    p.add_argument("--kernels", action="store_true", help="time the training kernels only")
    a = p.parse_args(argv)
    info = machine_info()
    print(f"CPU: {info['cpu']} ({', '.join(info['cpu_flags'])}), {info['usable_cpus']} usable; "
          f"rnncore from {info['rnncore_from']}; load average {loadavg()} at start")  # fmt: skip
    print()
    if a.kernels:
        kernels(a.threads)
        return 0
    print("| workload | threads | " + " | ".join(f"{i} s (runs)" for i in a.impls)
          + " | ratio | " + " | ".join(f"{i} loss" for i in a.impls) + " |")  # fmt: skip
    print("|---|---|" + "---|" * (2 * len(a.impls) + 1))
    for w in a.workloads:
        for n in a.threads:
            res = measure(w, n, a.repeats, a.impls)
            cells = [f"**{res[i][0]:.2f}** ({', '.join(f'{t:.2f}' for t in res[i][1])})"
                     for i in a.impls]  # fmt: skip
            ratio = (f"{res['torch'][0] / res['rnncore'][0]:.2f}×"
                     if len(res) == 2 else "")  # fmt: skip
            loss = [f"{res[i][2]:.5f}" for i in a.impls]
            print(f"| {w} | {n} | " + " | ".join(cells) + f" | {ratio} | " + " | ".join(loss)
                  + " |", flush=True)  # fmt: skip
    print(f"\nload average {loadavg()} at the end; ratio = PyTorch time / rnncore time")
    if a.profile:
        print(f"\ncProfile of one rnncore epoch of {a.profile} ({a.threads[-1]} threads):\n")
        set_threads(a.threads[-1])
        print(profile(a.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Accuracy of rnncore's low-precision weights (issue 17), written to
``bench/results/lowp-accuracy.md``:

1. each cell at the S1-S4 shapes, on each low-precision path this build and CPU run
   (bench/_cases.py; bench/_impls.py's weights and inputs, S1 as 200 streamed steps):
   max |y - y_f32| and that over max |y_f32|, for bf16 and int8;
2. the demo's model (``python -m rnncore demo``: the adding problem, LSTM(32) + Dense(1),
   trained the same way, same seed and epochs): held-out MSE in float32, bf16 and int8.

    python3 bench/lowp_accuracy.py
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _impls as impls  # noqa: E402
import rnncore  # noqa: E402
from _cases import SHAPES  # noqa: E402
from rnncore import demo, functional, optimizers  # noqa: E402
from rnncore.layers import LSTM, Dense, Input  # noqa: E402

MODES = ("bf16", "int8")


def _cases() -> list[tuple[str, str]]:
    """(mode, path) for each low-precision path this build and CPU run."""
    return [(mode, path) for mode in MODES for path in rnncore._core.lowp_paths
            if path == "portable" or (path == "avx512_bf16") == (mode == "bf16")]  # fmt: skip


@contextlib.contextmanager
def _on_path(path):
    rnncore._core.set_lowp_path(path)
    try:
        yield
    finally:
        rnncore._core.set_lowp_path(rnncore._core.lowp_paths[-1])


def cell_errors() -> list[str]:
    lines = [
        "| shape | cell | mode | path | max abs err | max rel err (/ max abs y) |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in SHAPES.items():
        T = 200 if name == "S1" else s.T
        x = impls.make_input(s.B, T, s.D)
        for cell in ("simple_rnn", "lstm", "gru"):
            w = impls.make_weights(cell, s.D, s.H)
            fn = getattr(functional, cell)
            y32 = fn(x, w.kernel, w.recurrent_kernel, w.bias, return_sequences=True)[0]
            for mode, path in _cases():
                with _on_path(path):
                    y = fn(x, w.kernel, w.recurrent_kernel, w.bias, return_sequences=True,
                           quantize=mode)[0]  # fmt: skip
                err = float(np.abs(y - y32).max())
                lines.append(f"| {name} | {cell} | {mode} | {path} | {err:.2e} | "
                             f"{err / np.abs(y32).max():.2e} |")  # fmt: skip
    return lines


def demo_mse(seed: int = 0, epochs: int = 8) -> list[str]:
    """The demo's adding problem, trained as ``python -m rnncore demo`` trains it."""
    rnncore.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = demo.adding_problem(5000, 30, rng)
    x_test, y_test = demo.adding_problem(1000, 30, rng)
    model = rnncore.Sequential([Input((30, 2)), LSTM(32), Dense(1)])
    model.compile(optimizer=optimizers.Adam(0.01), loss="mse")
    model.fit(x, y, batch_size=32, epochs=epochs, validation_split=0.1, verbose=0)
    weights = model.get_weights()
    lines = ["| weights | path | held-out MSE | max abs change of the predictions |",
             "|---|---|---|---|"]  # fmt: skip
    p32 = model.predict(x_test, verbose=0)
    for mode, path in [(None, "-")] + _cases():
        if mode:
            model.set_weights(weights)  # the model packs its weights for the path capped now
            with _on_path(path):
                model.quantize(mode)
                p = model.predict(x_test, verbose=0)
        else:
            p = p32
        mse = float(np.mean((p - y_test) ** 2))
        lines.append(f"| {mode or 'float32'} | {path} | {mse:.6f} | {np.abs(p - p32).max():.2e} |")
    baseline = float(np.mean((y_test - y.mean()) ** 2))
    lines.append(
        f"\n(always predicting the mean: MSE {baseline:.4f}; seed {seed}, {epochs} epochs)"
    )
    return lines


def main() -> int:
    info = rnncore.build_info()
    lines = [f"# Low-precision accuracy ({info['isa']}, lowp paths {info['lowp_paths']})", "",
             "Errors against rnncore float32 on the same inputs and weights (bench/_impls.py: "
             "Glorot-uniform kernel, U(+-1/sqrt(H)) recurrent kernel; inputs N(0, 1)).", "",
             *cell_errors(), "", "## The demo's model (adding problem, LSTM(32) + Dense(1))", "",
             *demo_mse()]  # fmt: skip
    out = Path(__file__).resolve().parent / "results" / "lowp-accuracy.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

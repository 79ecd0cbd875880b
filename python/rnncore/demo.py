"""Train a recurrent model end to end in rnncore and report how well and how fast it runs.

``python -m rnncore demo`` (or the ``rnncore demo`` console script): the adding problem, a
synthetic sequence task built in. Each sequence holds random numbers in [0, 1) with two of
them marked; the target is the sum of the two marked numbers, so the model must find and
remember them across the sequence. An LSTM(32) -> Dense(1) model is trained with Adam
(``model.fit``, a progress bar per epoch), scored on held-out sequences against the trivial
predictor (the mean), and its inference timed against the NumPy reference implementation.

``python -m rnncore demo --data sunspots``: a real series, the yearly sunspot numbers
1700-2008 that statsmodels ships (no download; ``pip install ".[demo]"`` in the source
checkout, or ``pip install statsmodels``). The model
reads the previous 24 years and forecasts the next; it is trained on the years before 1959
(early-stopped on a validation split) and scored on 1959-2008 by the mean absolute error,
beside the naive forecast "same as last year".
"""

from __future__ import annotations

import sys
import time

import numpy as np

from . import _core, callbacks, optimizers, reference
from ._core import get_num_threads
from ._version import __version__
from .errors import install_hint
from .layers import LSTM, Dense, Input
from .models import Sequential
from .utils import set_random_seed

__all__ = ["run", "adding_problem", "load_sunspots"]


def adding_problem(n: int, timesteps: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: x ``(n, timesteps, 2)`` = (value, marker); y ``(n, 1)`` the marked sum."""
    x = np.zeros((n, timesteps, 2), np.float32)
    x[:, :, 0] = rng.random((n, timesteps))
    first = rng.integers(0, timesteps // 2, n)
    second = rng.integers(timesteps // 2, timesteps, n)
    x[np.arange(n), first, 1] = 1.0
    x[np.arange(n), second, 1] = 1.0
    return x, (x[:, :, 0] * x[:, :, 1]).sum(axis=1, keepdims=True)


def load_sunspots() -> tuple[np.ndarray, np.ndarray]:
    """``(years, sunspot numbers)`` of statsmodels' yearly series (1700-2008)."""
    try:
        from statsmodels.datasets import sunspots
    except ImportError:
        raise SystemExit(
            "rnncore demo --data sunspots: the sunspot series comes with statsmodels, which "
            f"is not installed; install the demo extra: {install_hint('demo')} (or pip "
            "install statsmodels)"
        ) from None
    data = sunspots.load_pandas().data
    return (
        np.asarray(data["YEAR"], dtype=np.float64),
        np.asarray(data["SUNACTIVITY"], dtype=np.float64),
    )


def _median_time(fn, repeats=5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _reference_predict(model, x):
    """The same LSTM -> Dense forward in plain NumPy (rnncore.reference), float32."""
    lstm, dense = model.layers
    kernel, recurrent_kernel, bias = (v.value for v in lstm.weights)
    h = reference.lstm(x, kernel, recurrent_kernel, bias)[0]
    return h @ dense.kernel.value + dense.bias.value


def _inference_speed(model, x) -> None:
    y = model.predict(x, batch_size=len(x))
    y_ref = _reference_predict(model, x)
    t_core = _median_time(lambda: model.predict(x, batch_size=len(x)))
    t_ref = _median_time(lambda: _reference_predict(model, x), repeats=3)
    err = float(np.max(np.abs(y - y_ref)))
    print(
        f"Inference on {len(x)} sequences: rnncore {t_core * 1e3:.1f} ms, NumPy reference "
        f"{t_ref * 1e3:.1f} ms ({t_ref / t_core:.0f}x faster); "
        f"max |rnncore - reference| = {err:.1e}"
    )


def _header(title: str) -> None:
    print(f"rnncore {__version__} demo: {title}")
    print(f"(core build {_core.isa}, {get_num_threads()} thread(s))\n")


def _model(timesteps, features, units):
    return Sequential([Input((timesteps, features)), LSTM(units), Dense(1)])


def _verdict(ok: bool, why: str) -> int:
    """The exit status: 0 when the model learned, else 1 with the reason on stderr."""
    if not ok:
        print(f"demo FAILED: {why} (too few epochs?)", file=sys.stderr)
    return 0 if ok else 1


def run_adding(args) -> int:
    t_start = time.perf_counter()
    _header("the adding problem (synthetic, built in)")
    set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    timesteps = 30
    x, y = adding_problem(5000, timesteps, rng)
    x_test, y_test = adding_problem(1000, timesteps, rng)
    print(
        f"Task: {timesteps} random numbers in [0, 1), two of them marked; predict the sum of "
        f"the two marked ones.\nData: {len(x)} training and {len(x_test)} held-out "
        f"sequences.\n"
    )
    model = _model(timesteps, 2, 32)
    model.compile(optimizer=optimizers.Adam(0.01), loss="mse", metrics=["mae"])
    model.summary()
    print()
    history = model.fit(
        x,
        y,
        batch_size=32,
        epochs=8 if args.epochs is None else args.epochs,
        validation_split=0.1,
        verbose=args.verbose,
    )
    t_train = time.perf_counter() - t_start
    mse, mae = model.evaluate(x_test, y_test, verbose=0)
    baseline = float(np.mean((y_test - y.mean()) ** 2))
    close = float(np.mean(np.abs(model.predict(x_test) - y_test) < 0.1))
    print(
        f"\nLearning: training loss (MSE) {history.history['loss'][0]:.4f} after epoch 1 -> "
        f"{history.history['loss'][-1]:.4f} after epoch {len(history.epoch)}"
    )
    print(
        f"Held-out score: MSE {mse:.4f} (always predicting the mean: {baseline:.4f}), "
        f"R^2 = {1 - mse / baseline:.3f}; MAE {mae:.3f}; within 0.1 of the target: "
        f"{close:.1%}"
    )
    pred = model.predict(x_test[:5])
    print(
        "Examples (target -> predicted): "
        + ", ".join(f"{t:.3f} -> {p:.3f}" for t, p in zip(y_test[:5, 0], pred[:5, 0]))
    )
    _inference_speed(model, x_test)
    print(f"Total time: {time.perf_counter() - t_start:.1f} s (training {t_train:.1f} s)")
    return _verdict(
        mse < 0.5 * baseline,
        f"the held-out MSE {mse:.4f} is not below half that of always predicting the mean "
        f"({baseline:.4f}): the model did not learn the task",
    )


def run_sunspots(args) -> int:
    years, spots = load_sunspots()
    t_start = time.perf_counter()
    _header("forecasting the yearly sunspot numbers (statsmodels' series, 1700-2008)")
    set_random_seed(args.seed)
    window, scale = 24, 100.0
    x = np.stack([spots[i : i + window] for i in range(len(spots) - window)])[:, :, None]
    y = spots[window:, None]
    target_years = years[window:]
    test = target_years >= 1959
    x_train, y_train = (x[~test] / scale).astype(np.float32), y[~test] / scale
    x_test, y_test = (x[test] / scale).astype(np.float32), y[test]
    print(
        f"Task: from the previous {window} years, forecast the next year's sunspot number.\n"
        f"Data: {len(x_train)} windows with targets {int(target_years[0])}-"
        f"{int(target_years[~test][-1])} to train on (the last 15% for early stopping), "
        f"{len(x_test)} held out ({int(target_years[test][0])}-{int(target_years[-1])}).\n"
    )
    model = _model(window, 1, 32)
    model.compile(optimizer=optimizers.Adam(0.005), loss="mse")
    stop = callbacks.EarlyStopping(monitor="val_loss", patience=20, restore_best_weights=True)
    history = model.fit(
        x_train,
        y_train,
        batch_size=16,
        epochs=150 if args.epochs is None else args.epochs,
        validation_split=0.15,
        callbacks=[stop],
        verbose=args.verbose,
    )
    t_train = time.perf_counter() - t_start
    forecast = model.predict(x_test) * scale
    mae = float(np.mean(np.abs(forecast - y_test)))
    naive = float(np.mean(np.abs(x_test[:, -1] * scale - y_test)))
    best = int(np.argmin(history.history["val_loss"])) + 1
    print(
        f"\nTrained {len(history.epoch)} epochs (best validation loss at epoch {best}, "
        f"weights restored)."
    )
    print(
        f"Held-out forecast error, 1959-2008 (mean absolute error, in sunspots): LSTM "
        f"{mae:.1f}, naive 'same as last year' {naive:.1f} "
        f"({naive / mae:.1f}x the LSTM's error)"
    )
    print(
        "Examples (year: actual -> forecast): "
        + ", ".join(
            f"{int(yr)}: {a:.0f} -> {f:.0f}"
            for yr, a, f in list(zip(target_years[test], y_test[:, 0], forecast[:, 0]))[-5:]
        )
    )
    _inference_speed(model, x_test)
    print(f"Total time: {time.perf_counter() - t_start:.1f} s (training {t_train:.1f} s)")
    return _verdict(
        mae < naive,
        f"the LSTM's held-out error {mae:.1f} is not below the naive forecast's {naive:.1f}: "
        f"the model did not learn the series",
    )


def run(args) -> int:
    sys.stdout.reconfigure(line_buffering=True) if hasattr(sys.stdout, "reconfigure") else None
    return run_sunspots(args) if args.data == "sunspots" else run_adding(args)

"""``python -m rnncore``: the package's main job from the command line.

``python -m rnncore demo`` trains a small LSTM model end to end in rnncore (Keras-style
``compile``/``fit``) on a synthetic sequence task, the adding problem, and reports the
learning progress, the held-out score and inference speed against the NumPy reference.
``python -m rnncore demo --data sunspots`` forecasts the yearly sunspot numbers that
statsmodels ships (``pip install ".[demo]"`` in the source checkout), beside a naive forecast.
``python -m rnncore check`` builds an LSTM, runs it through the compiled core, checks it
against the NumPy reference and reports the build and the speed-up.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import rnncore
from rnncore import demo, functional, reference
from rnncore.demo import _median_time
from rnncore.errors import install_hint

# The --help text: plain words (the module docstring above is reST, for the docs).
_DESCRIPTION = """\
rnncore's main jobs from the command line.

  rnncore demo    train an LSTM model end to end (the adding problem, or with
                  --data sunspots the yearly sunspot numbers) and report its
                  held-out score and inference speed
  rnncore check   run one LSTM through the compiled core, check it against the
                  NumPy reference and report the build and the speed-up
"""


def _positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1, else a usage error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive whole number, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return value


def check(args) -> int:
    info = rnncore.build_info()
    print(
        f"rnncore {rnncore.__version__}: build {info['isa']} ({info['simd']}), "
        f"{info['threads']} thread(s), "
        f"Eigen {info['eigen']}"
    )
    rng = np.random.default_rng(0)
    B, T, D, H = args.batch, args.timesteps, args.input_dim, args.units
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    W = (rng.standard_normal((D, 4 * H)) / np.sqrt(D)).astype(np.float32)
    U = (rng.standard_normal((H, 4 * H)) / np.sqrt(H)).astype(np.float32)
    b = np.zeros(4 * H, np.float32)
    b[H : 2 * H] = 1.0  # unit_forget_bias, as Keras initialises an LSTM
    y, h, c = functional.lstm(x, W, U, b, return_sequences=True)
    ry, rh, rc = reference.lstm(
        *(a.astype(np.float64) for a in (x, W, U, b)), return_sequences=True
    )
    err = max(float(np.abs(a - r).max()) for a, r in ((y, ry), (h, rh), (c, rc)))
    ok = err < 1e-4
    print(
        f"LSTM  batch={B} timesteps={T} input_dim={D} units={H}: output {y.shape}, "
        f"max |core - reference| = {err:.2e} ({'OK' if ok else 'FAILED'})"
    )
    t_core = _median_time(lambda: functional.lstm(x, W, U, b, return_sequences=True))
    t_ref = _median_time(lambda: reference.lstm(x, W, U, b, return_sequences=True), repeats=3)
    print(
        f"forward time: core {t_core * 1e3:.2f} ms, NumPy reference {t_ref * 1e3:.2f} ms "
        f"({t_ref / t_core:.1f}x faster)"
    )
    if not ok:
        print(
            f"rnncore check FAILED: the core differs from the NumPy reference by {err:.2e}, "
            f"more than the 1e-4 allowed in float32",
            file=sys.stderr,
        )
    return 0 if ok else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="rnncore",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "demo",
        help="train an LSTM model end to end and report its scores",
        description="Train a recurrent model end to end in rnncore and report how well and "
        "how fast it runs.",
    )
    p.add_argument(
        "--data",
        choices=("adding", "sunspots"),
        default="adding",
        help="adding: a synthetic task built in (default); sunspots: the yearly "
        f"sunspot series shipped by statsmodels ({install_hint('demo')})",
    )
    p.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="training epochs, at least 1 (default: 8 for adding, 150 for sunspots)",
    )
    p.add_argument("--seed", type=int, default=0, help="the seed of data, weights and training")
    p.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="1: a progress bar per epoch; 2: one line per epoch; 0: none",
    )
    p.set_defaults(run=demo.run)
    p = sub.add_parser("check", help="run an LSTM and check it against the NumPy reference")
    p.add_argument("--batch", type=_positive_int, default=16)
    p.add_argument("--timesteps", type=_positive_int, default=50)
    p.add_argument("--input-dim", type=_positive_int, default=32)
    p.add_argument("--units", type=_positive_int, default=64)
    p.set_defaults(run=check)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

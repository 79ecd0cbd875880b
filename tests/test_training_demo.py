"""``python -m rnncore demo``: the default synthetic task, and the sunspots run (its loading
code on statsmodels' own CSV layout, through a stand-in module when statsmodels is absent)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from rnncore.__main__ import main


def test_default_demo_learns_and_reports(capsys):
    assert main(["demo", "--verbose", "2"]) == 0
    out = capsys.readouterr().out
    assert "Epoch 1/8" in out and "Epoch 8/8" in out
    score = out.split("Held-out score: MSE ")[1]
    assert float(score.split()[0]) < 0.01  # the mean predictor scores about 0.17
    assert "x faster" in out and "max |rnncore - reference|" in out


def _fake_statsmodels(monkeypatch):
    """A stand-in with statsmodels' API for the data: load_pandas().data columns."""
    t = np.arange(1700, 2009, dtype=float)
    activity = 80 * np.sin(2 * np.pi * (t - 1700) / 11.0) ** 2 + 5 * np.cos(t / 7.0) + 5
    dataset = types.SimpleNamespace(data={"YEAR": t, "SUNACTIVITY": activity})
    sunspots = types.ModuleType("statsmodels.datasets.sunspots")
    sunspots.load_pandas = lambda: dataset
    datasets = types.ModuleType("statsmodels.datasets")
    datasets.sunspots = sunspots
    root = types.ModuleType("statsmodels")
    root.datasets = datasets
    for name, module in (
        ("statsmodels", root),
        ("statsmodels.datasets", datasets),
        ("statsmodels.datasets.sunspots", sunspots),
    ):
        monkeypatch.setitem(sys.modules, name, module)


def test_sunspots_demo_reports_forecast_error_beside_naive(monkeypatch, capsys):
    try:
        import statsmodels.datasets.sunspots  # noqa: F401
    except ImportError:
        _fake_statsmodels(monkeypatch)
    assert main(["demo", "--data", "sunspots", "--verbose", "0", "--epochs", "60"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("Held-out forecast error"))
    lstm = float(line.split("LSTM ")[1].split(",")[0])
    naive = float(line.split("last year' ")[1].split()[0])
    assert lstm < naive, line


def test_sunspots_demo_without_statsmodels_says_what_to_install(monkeypatch):
    # rnncore is installed from its checkout, not from PyPI: the hint is the README's
    # `pip install ".[demo]"`, never `pip install "rnncore[demo]"` (another package's name)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert 'pip install ".[demo]" && python -m rnncore demo --data sunspots' in readme
    monkeypatch.setitem(sys.modules, "statsmodels", None)
    monkeypatch.setitem(sys.modules, "statsmodels.datasets", None)
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--data", "sunspots"])
    message = str(exc.value.code)
    assert 'pip install ".[demo]" in the rnncore source checkout' in message, message
    assert "or pip install statsmodels" in message and "rnncore[" not in message, message

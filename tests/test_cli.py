"""The command line: usage errors instead of tracebacks or silent defaults, plain-text help,
and a failing job that says why."""

from __future__ import annotations

import sys

import pytest

import rnncore
from rnncore.__main__ import main


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--epochs", "0"], "argument --epochs: expected a positive whole number, got 0"),
        (["demo", "--epochs", "-3"], "argument --epochs: expected a positive whole number, got -3"),
        (["check", "--units", "0"], "argument --units: expected a positive whole number, got 0"),
        (["check", "--batch", "0"], "argument --batch: expected a positive whole number, got 0"),
        (["check", "--batch", "2.5"], "argument --batch: expected a positive whole number"),
    ],
    ids=["epochs-0", "epochs-negative", "units-0", "batch-0", "batch-fraction"],
)
def test_bad_numbers_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_top_level_help_is_plain_text(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "rnncore demo" in out and "rnncore check" in out
    for markup in ("``", ":func:", ":class:", ":mod:"):
        assert markup not in out


def test_check_passes_and_reports(capsys):
    assert main(["check", "--batch", "2", "--timesteps", "3", "--units", "4"]) == 0
    out = capsys.readouterr().out
    assert "max |core - reference|" in out and "(OK)" in out


def test_failing_demo_exits_nonzero_and_says_why(capsys):
    # one epoch of the adding problem does not beat half the baseline's error
    assert main(["demo", "--epochs", "1", "--verbose", "0"]) == 1
    err = capsys.readouterr().err
    assert "demo FAILED" in err and "did not learn the task" in err


def test_exception_classes_are_importable_from_the_package():
    from rnncore.interop import UnsupportedModelError as from_interop
    from rnncore.layers import UnsupportedArgumentError as from_layers
    from rnncore.models import ModelFileError as from_models

    assert rnncore.ModelFileError is from_models
    assert rnncore.UnsupportedArgumentError is from_layers
    assert rnncore.UnsupportedModelError is from_interop
    assert issubclass(rnncore.ModelFileError, ValueError)
    assert issubclass(rnncore.UnsupportedModelError, rnncore.UnsupportedArgumentError)
    assert issubclass(rnncore.UnsupportedArgumentError, NotImplementedError)


def test_version_is_written_once():
    from importlib.metadata import version

    assert rnncore.__version__ == version("rnncore")


def test_demo_help_names_the_checkout_install(capsys):
    # the README installs extras from the checkout (`pip install ".[demo]"`): rnncore is not on
    # PyPI, so `pip install "rnncore[demo]"` would fetch another package
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    assert 'pip install ".[demo]" in the rnncore source checkout' in help_text
    assert "rnncore[" not in help_text


@pytest.mark.parametrize("module, extra", [("h5py", "keras"), ("onnx", "onnx")])
def test_missing_optional_package_names_the_checkout_install(monkeypatch, module, extra):
    from rnncore.formats.archive import optional_import

    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError) as exc:
        optional_import(module, "reading this file")
    message = str(exc.value)
    assert f'pip install ".[{extra}]" in the rnncore source checkout' in message
    assert f"or pip install {module}" in message
    assert "rnncore[" not in message


def test_missing_dask_names_the_checkout_install(monkeypatch):
    import rnncore.dask

    monkeypatch.setitem(sys.modules, "dask", None)
    with pytest.raises(ImportError, match=r'pip install "\.\[dask\]" in the rnncore source'):
        rnncore.dask._require_dask()

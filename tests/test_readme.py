"""Every ```python block of README.md runs as written.

The rule a reader copying an example expects: each block runs **on its own**, top to bottom,
in a fresh interpreter (a subprocess: no state from an earlier block, no pytest warning
filters, no imports of this test process) with an empty temporary directory as its working
directory, so a block that reads a file must first write it itself. Blocks run with
``KERAS_BACKEND=torch`` (the backend tests/requirements.txt installs) and
``PYTHONPATH`` pointing at the rnncore this test imports. A failing block is reported
by its line number in README.md with its output. ``bash`` and other blocks are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import rnncore

README = Path(__file__).resolve().parent.parent / "README.md"

_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number of the opening fence, dedented code)`` of every ```python block,
    including those indented inside list items."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = m.group(1), m.group(2), i
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"README.md:{start + 1}: code block is never closed")
        i += 1
        if lang == "python":
            code = "\n".join(
                line[len(indent) :] if line.startswith(indent) else line for line in body
            )
            blocks.append((start + 1, textwrap.dedent(code) + "\n"))
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def _params():
    for line, code in BLOCKS:
        yield pytest.param(line, code, id=f"line{line}")


def test_readme_has_python_blocks():
    # a change in the fence syntax must not silently leave nothing to run
    assert len(BLOCKS) >= 8, BLOCKS


def _run_block(code: str, workdir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["KERAS_BACKEND"] = "torch"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(rnncore.__file__).resolve().parent.parent)]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    # one thread: on a loaded 2-core machine, torch (Keras's backend here) with two OpenMP
    # threads runs a small LSTM tens of times slower; the blocks do not depend on it
    env["OMP_NUM_THREADS"] = "1"
    script = workdir / "block.py"
    script.write_text(code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def block_runs(request, tmp_path_factory):
    """The selected blocks, started two at a time when first asked for: most of a block's
    time is importing Keras and torch in one thread, so two cores halve the file's time."""
    selected = [
        item.callspec.params["line"]
        for item in request.session.items
        if item.originalname == "test_readme_block_runs"
    ]
    codes = dict(BLOCKS)
    pool = ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1))
    runs = {
        line: pool.submit(_run_block, codes[line], tmp_path_factory.mktemp(f"line{line}"))
        for line in selected
    }
    yield runs
    pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize("line, code", list(_params()))
def test_readme_block_runs(line, code, block_runs):
    run = block_runs[line].result()
    if run.returncode != 0:
        # the failing line in README.md: the block's code starts on the line after its fence
        where = re.findall(r'block\.py", line (\d+)', run.stderr)
        at = f" (README.md:{line + int(where[-1])})" if where else ""
        pytest.fail(
            f"README.md:{line}: the ```python block exits with {run.returncode}{at}:\n"
            f"{run.stdout[-2000:]}\n{run.stderr[-4000:]}",
            pytrace=False,
        )

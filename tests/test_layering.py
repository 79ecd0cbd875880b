"""The package's layering: arrows run one way, no import circle, imports at module top.

Every module of ``python/rnncore`` is read as source (its AST, nothing is imported) and each
import of another rnncore module must go to a module of a lower level below, or, within one
level, must not close a circle. An import inside a function is allowed only for the optional
dependencies. Each module must also import by itself in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parents[1] / "python" / "rnncore"

# Lowest first. A module may import modules of its own level (without a circle) or lower.
LEVELS = [
    ("foundations", ["rnncore._version", "rnncore.errors", "rnncore._memory", "rnncore._core"]),
    ("math", ["rnncore.activations", "rnncore.utils", "rnncore.quantization"]),
    ("kernels", ["rnncore.functional", "rnncore.reference"]),
    ("layers", ["rnncore.layers"]),
    ("training", ["rnncore.losses", "rnncore.metrics", "rnncore.optimizers"]),
    ("training loop", ["rnncore.callbacks", "rnncore.training"]),
    ("file formats", ["rnncore.formats"]),
    ("models", ["rnncore.models"]),
    ("importers", ["rnncore.interop"]),
    ("applications", ["rnncore.dask", "rnncore.demo"]),
    ("entry points", ["rnncore", "rnncore.__main__"]),
]

#: may be imported inside a function: optional dependencies only (google: onnx's protobuf;
#: ml_dtypes: onnx's sub-byte and float8 types)
OPTIONAL = {
    "h5py",
    "onnx",
    "google",
    "ml_dtypes",
    "onnxruntime",
    "torch",
    "dask",
    "distributed",
    "statsmodels",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SOURCE_DIR.rglob("*.py")):
        parts = list(path.relative_to(SOURCE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _level(module: str) -> int:
    best, best_len = None, -1
    for k, (_, prefixes) in enumerate(LEVELS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = k, len(p)
    assert best is not None, f"{module} is in no level of LEVELS: add it"
    return best


def _imports(module: str, path: Path):
    """``(imported rnncore module, line, inside a function)`` and the external top-level
    packages imported inside functions, for one module's source."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    internal, external_in_functions = [], []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "rnncore":
                        internal.append((alias.name, child.lineno, nested))
                    elif nested:
                        external_in_functions.append((alias.name, child.lineno))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    target = base[: len(base) - (child.level - 1)]
                    target = ".".join(target + ([child.module] if child.module else []))
                else:
                    target = child.module
                if target.split(".")[0] != "rnncore":
                    if nested:
                        external_in_functions.append((target, child.lineno))
                    continue
                for alias in child.names:  # `from . import x` may name a submodule
                    sub = f"{target}.{alias.name}"
                    internal.append((sub if sub in MODULES else target, child.lineno, nested))
            visit(child, nested)

    visit(tree, False)
    return internal, external_in_functions


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_every_module_has_a_level():
    for m in MODULES:
        _level(m)


def test_imports_run_down_the_levels():
    upward = []
    for m, (internal, _) in GRAPH.items():
        for target, line, _ in internal:
            if _level(target) > _level(m):
                upward.append(
                    f"{m}:{line} imports {target} ({LEVELS[_level(target)][0]} is above "
                    f"{LEVELS[_level(m)][0]})"
                )
    assert not upward, "\n".join(sorted(set(upward)))


def test_no_import_circle():
    edges = {m: sorted({t for t, _, _ in internal if t != m}) for m, (internal, _) in GRAPH.items()}
    state, stack, circles = {}, [], []

    def walk(m):
        state[m] = "open"
        stack.append(m)
        for t in edges.get(m, []):
            if state.get(t) == "open":
                circles.append(" -> ".join(stack[stack.index(t) :] + [t]))
            elif t not in state:
                walk(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            walk(m)
    assert not circles, "\n".join(circles)


def test_function_level_imports_only_for_optional_dependencies():
    found = []
    for m, (internal, external) in GRAPH.items():
        found += [f"{m}:{line} imports {t} in a function" for t, line, nested in internal if nested]
        found += [
            f"{m}:{line} imports {t} in a function"
            for t, line in external
            if t.split(".")[0] not in OPTIONAL
        ]
    assert not found, "\n".join(sorted(set(found)))


def test_no_python_file_over_600_lines():
    long = {
        str(p.relative_to(SOURCE_DIR)): n
        for p in MODULES.values()
        if (n := len(p.read_text().splitlines())) > 600
    }
    assert not long, long


def _import_alone(module: str) -> tuple[str, int, str]:
    # first the module itself, then every other one, last first: no order may fail
    others = [m for m in reversed(list(MODULES)) if m != module]
    code = "import importlib\n" + "".join(
        f"importlib.import_module({m!r})\n" for m in [module, *others]
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return module, r.returncode, r.stderr[-2000:]


def test_every_module_imports_first_in_a_fresh_interpreter():
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_import_alone, MODULES))
    failed = [f"{m}: {err}" for m, rc, err in results if rc != 0]
    assert not failed, "\n".join(failed)

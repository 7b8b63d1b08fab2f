"""The loops stay readable and CLI-free: short functions, no rich, no test-only hooks in the package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import fcos_cli

PACKAGE = Path(fcos_cli.__file__).parent
ENGINE = sorted((PACKAGE / "engine").glob("*.py"))
MAX_LINES = 60  # a function read in one screen, as DETR's `train_one_epoch`


def long_functions(source: str, limit: int = MAX_LINES) -> dict[str, int]:
    """Name -> length in lines (decorators and docstring included) of each function, nested or a method, longer
    than `limit`."""
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if node.end_lineno - first + 1 > limit:
                found[node.name] = node.end_lineno - first + 1
    return found


def test_the_length_check_finds_a_long_function() -> None:
    body = "".join(f"        x = {i}\n" for i in range(MAX_LINES - 2))
    source = f"class A:\n    def short(self):\n        pass\n\n    @staticmethod\n    def long():\n{body}"
    assert long_functions(source) == {}  # 60 lines, decorator and def line counted: allowed
    assert long_functions(source, limit=MAX_LINES - 1) == {"long": MAX_LINES}
    assert long_functions(source + "        return x\n") == {"long": MAX_LINES + 1}


def test_no_engine_function_is_longer_than_60_lines() -> None:
    assert len(ENGINE) >= 5
    too_long = {f"{path.name}:{name}": n for path in ENGINE for name, n in long_functions(path.read_text()).items()}
    assert not too_long, too_long


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_engine_imports_no_rich() -> None:
    assert not [path.name for path in ENGINE if "rich" in _imports(path)]
    modules = [f"fcos_cli.engine.{path.stem}" for path in ENGINE if path.stem != "__init__"]
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            "print(sorted(m for m in sys.modules if m == 'rich' or m.startswith('rich.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_no_test_hook_in_the_package() -> None:
    """Hooks that only tests use live in tests/ (e.g. tests/hooked_fcos.py), not in production modules."""
    hooks = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
             if "FCOS_CLI_TEST" in path.read_text() or "test-only" in path.read_text().lower()]
    assert not hooks

"""docs/ARCHITECTURE.md is the map of the package, and the package keeps to it.

Every module has a row; every module sits in one of the declared layers and imports only its own layer or
layers below (imports inside functions count); no import cycles; the torch-only core does not import timm.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
MODULES = {p.relative_to(ROOT).as_posix(): p for p in sorted((ROOT / "fcos_cli").rglob("*.py"))}


def test_every_package_module_is_in_the_map() -> None:
    mapped = set(re.findall(r"^\| `(fcos_cli/[\w/]+\.py)` \|", DOC, flags=re.M))
    assert set(MODULES) - mapped == set(), f"modules missing from docs/ARCHITECTURE.md: {sorted(set(MODULES) - mapped)}"
    assert mapped - set(MODULES) == set(), f"docs/ARCHITECTURE.md lists modules that do not exist: {sorted(mapped - set(MODULES))}"


# ---- layers and cycles -----------------------------------------------------------------------------------


def declared_layers(text: str = DOC) -> list[tuple[str, list[str]]]:
    """(name, paths) top layer first, from the numbered list of the "Layers" section; a path ending in / is a
    package (every module under it)."""
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    items = re.findall(r"^\d+\. \*\*([^*]+)\*\*(.*?)(?=^\d+\. |\Z)", section, flags=re.M | re.S)
    return [(name.strip(), re.findall(r"`(fcos_cli/[\w/.]*)`", rest)) for name, rest in items]


def layer_of(path: str, layers: list[tuple[str, list[str]]]) -> int:
    """Index of the layer that declares `path` (0: the top); -1 when none does."""
    found = [i for i, (_, paths) in enumerate(layers) for entry in paths
             if path == entry or (entry.endswith("/") and path.startswith(entry))]
    return found[0] if len(found) == 1 else -1


def _name(path: str) -> str:
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


NAMES = {_name(path): path for path in MODULES}


def imports_of(path: str, source: str | None = None) -> set[str]:
    """The package modules (as paths) that the module at `path` imports anywhere in it."""
    tree = ast.parse(source if source is not None else MODULES[path].read_text())
    package = _name(path).split(".") if path.endswith("__init__.py") else _name(path).split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                if node.level else node.module or ""
            # `from . import checkpoint` imports the module `checkpoint`; `from .config import X` the module config
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in NAMES else base for alias in node.names]
        else:
            continue
        found |= {NAMES[t] for t in targets if t in NAMES}
    return found - {path}


def upward_imports(graph: dict[str, set[str]], layers: list[tuple[str, list[str]]]) -> list[str]:
    """'a -> b (layer x above layer y)' for each import of a module from a higher layer than its own."""
    return [f"{a} -> {b} ({layers[layer_of(b, layers)][0]} is above {layers[layer_of(a, layers)][0]})"
            for a, targets in sorted(graph.items()) for b in sorted(targets)
            if layer_of(b, layers) < layer_of(a, layers)]


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as [a, b, ..., a], or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


GRAPH = {path: imports_of(path) for path in MODULES}
LAYERS = declared_layers()


def test_every_module_sits_in_one_declared_layer() -> None:
    assert [name for name, _ in LAYERS][:3] == ["front", "cli", "engine"] and len(LAYERS) >= 5
    assert [p for p in MODULES if layer_of(p, LAYERS) < 0] == []


def test_imports_run_down_the_layers() -> None:
    assert upward_imports(GRAPH, LAYERS) == []


def test_no_import_cycles() -> None:
    assert find_cycle(GRAPH) == []


def test_the_checks_catch_an_upward_import_and_a_cycle() -> None:
    """The checks above can fail: a core module importing the model package, and a loop of three modules."""
    fake = dict(GRAPH)
    fake["fcos_cli/losses.py"] = imports_of("fcos_cli/losses.py", "from .model.head import FCOSHead\n"
                                            "def f():\n    from . import checkpoint\n")
    assert fake["fcos_cli/losses.py"] == {"fcos_cli/model/head.py", "fcos_cli/checkpoint.py"}
    assert upward_imports(fake, LAYERS) == [
        "fcos_cli/losses.py -> fcos_cli/checkpoint.py (model / data is above core)",
        "fcos_cli/losses.py -> fcos_cli/model/head.py (model / data is above core)"]
    fake["fcos_cli/config.py"] = imports_of("fcos_cli/config.py", "from fcos_cli.cli import app\n")
    assert "fcos_cli/config.py -> fcos_cli/cli.py (cli is above base)" in upward_imports(fake, LAYERS)
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) == []


def test_only_the_cli_imports_typer() -> None:
    """The library works from Python without the CLI: no module below the cli layer imports Typer."""
    def top_names(path: str) -> set[str]:
        nodes = list(ast.walk(ast.parse(MODULES[path].read_text())))
        return ({alias.name.split(".")[0] for n in nodes if isinstance(n, ast.Import) for alias in n.names}
                | {n.module.split(".")[0] for n in nodes if isinstance(n, ast.ImportFrom) and n.module and not n.level})

    assert "typer" in top_names("fcos_cli/cli.py")
    assert [p for p in MODULES if layer_of(p, LAYERS) > 1 and "typer" in top_names(p)] == []


def test_the_core_imports_no_timm() -> None:
    """targets, losses, postprocess and pipeline run with torch alone (the model package pulls in timm)."""
    code = ("import sys, fcos_cli.targets, fcos_cli.losses, fcos_cli.postprocess, fcos_cli.pipeline; "
            "print(sorted(m for m in ('timm', 'fcos_cli.model') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
    out = subprocess.run([sys.executable, "-c", code.replace("fcos_cli.targets,", "fcos_cli.model,")],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "['fcos_cli.model', 'timm']"  # the check sees timm when it is there

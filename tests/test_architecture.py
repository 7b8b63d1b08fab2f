"""docs/ARCHITECTURE.md maps every module of the package: a new module without a line there fails here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_module_is_in_the_map() -> None:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    mapped = set(re.findall(r"^\| `(fcos_cli/[\w/]+\.py)` \|", text, flags=re.M))
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "fcos_cli").rglob("*.py")}
    assert modules - mapped == set(), f"modules missing from docs/ARCHITECTURE.md: {sorted(modules - mapped)}"
    assert mapped - modules == set(), f"docs/ARCHITECTURE.md lists modules that do not exist: {sorted(mapped - modules)}"

"""ruff (pyflakes, isort, bugbear; configured in pyproject.toml) passes on the package, tests, benchmarks and
examples: unused names, import order, loop-variable closures and zips of unequal lengths fail the suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    done = subprocess.run([ruff, "check", "--no-cache", "fcos_cli", "tests", "benchmarks", "examples", "docs"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]

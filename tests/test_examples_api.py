"""The training and Python-API examples run end to end with tiny settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_train_custom_coco_then_python_api(tmp_path: Path) -> None:
    out = run("examples/train_custom_coco.py", "--backbone", "test_resnet", "--epochs", "1", "--img-size", "128",
              "--fpn-channels", "32", "--batch-size", "4", "--out", str(tmp_path))
    weights = tmp_path / "run" / "best.safetensors"
    assert "mAP50" in out and weights.is_file()
    images = sorted((tmp_path / "data" / "images").glob("val_*.jpg"))[:2]
    out = run("examples/python_api.py", "--weights", str(weights), *map(str, images), "--conf", "0",
              "--out", str(tmp_path / "drawn"))
    assert "PIL and tensor input agree: True" in out
    assert len(list((tmp_path / "drawn").glob("*.png"))) == 2


def test_explain_targets() -> None:
    out = run("examples/explain_targets.py", "--preset", "paper", "--img-size", "256", "--box", "10,10,120,120",
              "--box", "50,50,200,200")
    assert "1364 points on 5 levels" in out  # 32x32 + 16x16 + 8x8 + 4x4 + 2x2
    assert "taken_by_smaller_box" in out and "ambiguous points" in out


def test_every_example_is_run_by_a_test() -> None:
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_examples*.py"))
    for example in (ROOT / "examples").glob("*.py"):
        assert f"examples/{example.name}" in tests or f'"examples", "{example.name}"' in tests, example.name

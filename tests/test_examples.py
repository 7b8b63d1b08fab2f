"""examples/quickstart.py runs end to end at a tiny size and writes loadable weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fcos_cli import checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart(tmp_path):
    out = tmp_path / "quickstart"
    env = {**os.environ, "COLUMNS": "200"}  # rich tables: no wrapped titles
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--backbone", "test_resnet", "--steps", "3",
         "--img-size", "160", "--fpn-channels", "32", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    stdout = proc.stdout
    assert "Target assignment" in stdout
    assert "Detections" in stdout
    assert "3 steps in" in stdout
    for level in ("P3", "P4", "P5", "P6", "P7"):
        assert level in stdout

    weights = out / "model.safetensors"
    assert weights.is_file()
    assert not list(out.glob("*.tmp"))
    model, cfg, names = checkpoint.load(weights)
    assert names == ["square", "bar", "dot"]
    assert cfg.model.backbone.name == "test_resnet"
    assert cfg.model.fpn.out_channels == 32
    assert cfg.model.num_classes == 3
    assert model.strides == [8, 16, 32, 64, 128]

"""The training and Python-API examples run end to end with tiny settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

import fcos_cli
from fcos_cli.data.synthetic import write_demo_data

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


def test_predict_maps_boxes_to_each_images_own_pixels(tmp_path: Path) -> None:
    """The same picture at two sizes gives boxes scaled by the size ratio."""
    from PIL import Image

    from fcos_cli.config import preset
    from fcos_cli.model import build_model

    cfg = preset("improved")
    cfg.model.num_classes, cfg.model.backbone.name, cfg.model.fpn.out_channels = 3, "test_resnet", 32
    cfg.data.img_size, cfg.post.score_thresh = 128, 0.0
    torch.manual_seed(0)
    model = build_model(cfg.model)
    root = write_demo_data(tmp_path, num_train=1, num_val=1, max_side=256, seed=4)
    image = Image.open(next((root / "images").glob("train_*.jpg")))
    big = image.resize((image.width * 2, image.height * 2))
    small_det, big_det = fcos_cli.predict(model, cfg, [image, big])
    assert len(small_det["boxes"]) > 10
    torch.testing.assert_close(big_det["boxes"][:5], small_det["boxes"][:5] * 2, atol=2.0, rtol=0.02)

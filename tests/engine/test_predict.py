"""`fcos_cli.predict` on in-memory images: no library warning reaches the user's output."""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image

import fcos_cli
from fcos_cli.config import FCOSConfig, resolve
from fcos_cli.model import build_model


def test_an_image_already_at_size_predicts_without_warnings() -> None:
    cfg = FCOSConfig()
    cfg.model.backbone.name, cfg.model.backbone.pretrained, cfg.model.num_classes = "test_resnet", False, 3
    cfg.data.img_size = 80
    resolve(cfg)
    model = build_model(cfg.model, load_pretrained=False)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the resize is a no-op here: PIL's read-only pixels reached torch
        detections = fcos_cli.predict(model, cfg, [image, np.asarray(image)])
    assert len(detections) == 2 and detections[0]["boxes"].shape[1] == 4

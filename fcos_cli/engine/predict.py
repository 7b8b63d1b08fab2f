"""Inference on in-memory images: any size, boxes returned in each image's own pixels."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from ..config import FCOSConfig
from ..data.dataset import collate
from ..data.transforms import build_transform
from ..model import FCOS
from ..pipeline import detections_for
from ..postprocess import Detections
from .common import autocast

__all__ = ["ImageLike", "predict"]

ImageLike = Image.Image | np.ndarray | Tensor  # PIL, HxWx3 uint8, or (3, H, W) float 0-1


def _as_uint8(image: ImageLike) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    if isinstance(image, Tensor):
        return (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return np.asarray(image, dtype=np.uint8)


@torch.no_grad()
def predict(model: FCOS, cfg: FCOSConfig, images: list[ImageLike], batch_size: int = 8,
            amp: bool = False) -> list[Detections]:
    """Detections per image (boxes xyxy in that image's pixels, labels 0..K-1), resized as in training."""
    model.eval()
    device = next(model.parameters()).device
    transform = build_transform(cfg.data.img_size, train=False)
    results: list[Detections] = []
    for start in range(0, len(images), batch_size):
        items = []
        for image in images[start:start + batch_size]:
            pixels = _as_uint8(image)
            resized = transform(image=pixels, bboxes=np.zeros((0, 4), np.float32), labels=np.zeros(0))["image"]
            scale = torch.tensor([resized.shape[1] / pixels.shape[1], resized.shape[0] / pixels.shape[0]] * 2)
            items.append((torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float() / 255, scale))
        batch = collate([(pixels, {}, None) for pixels, _ in items], model.backbone.mean, cfg.model.size_divisor)
        with autocast(device, amp):
            outputs = model(batch.images.to(device))
        for det, (_, scale) in zip(detections_for(outputs, model.strides, batch.sizes, cfg), items):
            results.append(Detections(boxes=det["boxes"].cpu() / scale, scores=det["scores"].cpu(),
                                      labels=det["labels"].cpu()))
    return results

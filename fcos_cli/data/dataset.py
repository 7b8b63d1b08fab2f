"""A torch Dataset over image records: read pixels, apply a transform, batch with padding."""

from __future__ import annotations

import io
from typing import NamedTuple, TypedDict

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from ..errors import UserError
from .records import ImageRecord

__all__ = ["Target", "ImageMeta", "Batch", "DetectionDataset", "read_image", "collate"]


class Target(TypedDict):
    boxes: Tensor  # (M, 4) float32 xyxy in the pixels of the transformed image
    labels: Tensor  # (M,) int64


class ImageMeta(NamedTuple):
    image_id: int
    original_size: tuple[int, int]  # (H, W) of the file, after EXIF orientation
    scale: tuple[float, float]  # (x, y): transformed pixel = original * scale (no offset: pads right/bottom)


class Batch(NamedTuple):
    images: Tensor  # (B, 3, H, W) 0-1, padded with the backbone mean
    targets: list[Target]
    metas: list[ImageMeta]
    sizes: list[tuple[int, int]]  # (H, W) of each image before padding


def read_image(path) -> np.ndarray:
    """HxWx3 uint8 RGB: EXIF orientation applied; grey, palette, CMYK, RGBA and 16-bit converted.

    JPEGs (by their first bytes, whatever the name) go through OpenCV's libjpeg-turbo: PIL's pixels at 1.3-1.8x its
    speed with the EXIF step (benchmarks/e2e.py, `jpeg_readers`; torchvision's decoder is deprecated); other
    formats through PIL."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as e:
        raise UserError(f"cannot read image {path}: {e.strerror or e}") from None
    if data[:3].tobytes() == b"\xff\xd8\xff":
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)  # EXIF orientation applied; grey and CMYK converted
        if bgr is None:
            raise UserError(f"cannot read image {path}: a truncated or corrupt JPEG")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit: keep the top 8 bits
                im = Image.fromarray((np.asarray(im, dtype=np.float32) / 256).clip(0, 255).astype(np.uint8))
            return np.array(im.convert("RGB"))  # writable: torch.from_numpy warns on read-only arrays
    except (OSError, ValueError, SyntaxError) as e:
        raise UserError(f"cannot read image {path}: {e}") from None


class DetectionDataset(torch.utils.data.Dataset):
    """(image (3, H, W) 0-1, Target, ImageMeta) per record, after `transform` (albumentations)."""

    def __init__(self, records: list[ImageRecord], transform, seed: int = 0) -> None:
        self.records, self.transform = records, transform
        self.seed, self.epoch = seed, 0  # the loop sets `epoch`; workers get a copy per epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, Target, ImageMeta]:
        record = self.records[index]
        image = read_image(record.path)
        # A function of (seed, epoch, index) alone: the same augmentation whichever worker, rank or
        # resumed mid-epoch run loads this image.
        self.transform.set_random_seed(int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]))
        height, width = image.shape[:2]
        out = self.transform(image=image, bboxes=record.boxes.reshape(-1, 4), labels=record.labels)
        pixels = torch.from_numpy(np.ascontiguousarray(out["image"])).permute(2, 0, 1).float() / 255
        boxes = torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4))
        labels = torch.as_tensor(np.asarray(out["labels"], dtype=np.int64).reshape(-1))  # floats back to int
        scale = (pixels.shape[2] / width, pixels.shape[1] / height)
        return pixels, Target(boxes=boxes, labels=labels), ImageMeta(record.image_id, (height, width), scale)


def collate(items: list[tuple[Tensor, Target, ImageMeta]], pad_value: tuple[float, float, float] = (0.0, 0.0, 0.0),
            size_divisor: int = 32) -> Batch:
    """Stack images padded right/bottom to a common size, a multiple of `size_divisor`."""
    sizes = [tuple(img.shape[-2:]) for img, _, _ in items]
    height = -(-max(h for h, _ in sizes) // size_divisor) * size_divisor
    width = -(-max(w for _, w in sizes) // size_divisor) * size_divisor
    images = torch.tensor(pad_value, dtype=torch.float32).view(1, 3, 1, 1).repeat(len(items), 1, height, width)
    for i, (img, _, _) in enumerate(items):
        images[i, :, : img.shape[1], : img.shape[2]] = img
    return Batch(images, [t for _, t, _ in items], [m for _, _, m in items], sizes)

"""Albumentations pipelines: bbox-safe resize (longest side, or short side with a cap on the long one), and for
training a box-safe random crop, flip and colour jitter."""

from __future__ import annotations

import math
import os
from typing import Any, Literal

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # its import would otherwise call the network

import albumentations as A  # noqa: E402
from albumentations.augmentations.geometric import functional as fgeometric  # noqa: E402
from albumentations.augmentations.geometric.resize import MaxSizeTransform  # noqa: E402

__all__ = ["build_transform", "resized_size", "ShortSideResize", "MIN_VISIBILITY", "MIN_BOX_SIDE"]

MIN_VISIBILITY = 0.3  # a box cut to less than 30% of its area is dropped, never kept as a sliver
MIN_BOX_SIDE = 2.0  # pixels
Rounding = Literal["round", "floor"]


def resized_size(width: int, height: int, short: int, max_size: int,
                 rounding: Rounding = "round") -> tuple[int, int]:
    """(width, height) with the short side at `short` unless the long side would pass `max_size`.

    The detectron2/mmdetection rule (`scale = min(short / min(w, h), max_size / max(w, h))`). `round` is
    mmdet's `int(x * scale + 0.5)` (detectron2 the same); `floor` is torchvision's `GeneralizedRCNNTransform`,
    whose `interpolate(scale_factor=...)` truncates: 640x480 is 1067x800 in mmdet, 1066x800 in torchvision.
    """
    scale = min(short / min(width, height), max_size / max(width, height))
    if rounding == "floor":
        return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    return max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5))


class ShortSideResize(MaxSizeTransform):
    """Short side to `max_size` (one of them, drawn, when a list), long side at most `long_max`, aspect kept.

    Albumentations' own `SmallestMaxSize` has no cap and rounds half to even: the size must be the
    reference implementations' to the pixel, so it comes from `resized_size`.
    """

    def __init__(self, max_size: int | list[int], long_max: int, rounding: Rounding = "round", p: float = 1.0):
        super().__init__(max_size=max_size, p=p)
        self.long_max, self.rounding = long_max, rounding

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        short = self.py_random.choice(self.max_size) if isinstance(self.max_size, list) else self.max_size
        new_width, new_height = resized_size(width, height, short, self.long_max, self.rounding)
        return {"scale": new_width / width, "size": (new_height, new_width)}

    def apply(self, img, size: tuple[int, int], **params: Any):
        return fgeometric.resize(img, size, interpolation=self.interpolation)

    def apply_to_mask(self, mask, size: tuple[int, int], **params: Any):
        return fgeometric.resize(mask, size, interpolation=self.mask_interpolation)


def build_transform(img_size: int, train: bool, multi_scale: tuple[int, ...] = (),
                    hflip: float = 0.5, color_jitter: bool = True, max_size: int | None = None,
                    rounding: Rounding = "round", crop: float = 0.0) -> A.Compose:
    """Longest side to `img_size` (or one of `multi_scale` when training), aspect kept, no padding.

    Training may first crop (probability `crop`) a random region holding every box, so that the resize
    zooms in: scale jitter that never cuts an object.

    With `max_size`, `img_size` (and `multi_scale`) is the short side and `max_size` caps the long side, as
    every COCO-trained detector resizes (800 / 1333). Padding to a multiple of 32 happens per batch in
    `collate` (with the backbone mean, as the model pads). Call as `t(image=HxWx3 uint8, bboxes=(M, 4) xyxy px,
    labels=(M,))`.
    """
    sizes = list(multi_scale) if train and multi_scale else img_size
    resize = A.LongestMaxSize(max_size=sizes) if max_size is None else ShortSideResize(sizes, max_size, rounding)
    steps: list[A.BasicTransform] = [resize]
    if train and crop > 0:
        steps.insert(0, A.BBoxSafeRandomCrop(erosion_rate=0.0, p=crop))
    if train:
        if hflip > 0:
            steps.append(A.HorizontalFlip(p=hflip))
        if color_jitter:
            steps.append(A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8))
    bbox_params = A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=MIN_VISIBILITY,
                               min_width=MIN_BOX_SIDE, min_height=MIN_BOX_SIDE, clip=True)
    return A.Compose(steps, bbox_params=bbox_params)

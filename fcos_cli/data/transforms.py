"""Albumentations pipelines: bbox-safe resize (longest side), flip and colour jitter for training."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # its import would otherwise call the network

import albumentations as A  # noqa: E402

__all__ = ["build_transform", "MIN_VISIBILITY", "MIN_BOX_SIDE"]

MIN_VISIBILITY = 0.3  # a box cut to less than 30% of its area is dropped, never kept as a sliver
MIN_BOX_SIDE = 2.0  # pixels


def build_transform(img_size: int, train: bool, multi_scale: tuple[int, ...] = (),
                    hflip: float = 0.5, color_jitter: bool = True) -> A.Compose:
    """Longest side to `img_size` (or one of `multi_scale` when training), aspect kept, no padding.

    Padding to a multiple of 32 happens per batch in `collate` (with the backbone mean, as the model
    pads). Call as `t(image=HxWx3 uint8, bboxes=(M, 4) xyxy px, labels=(M,))`.
    """
    sizes = list(multi_scale) if train and multi_scale else img_size
    steps: list[A.BasicTransform] = [A.LongestMaxSize(max_size=sizes)]
    if train:
        if hflip > 0:
            steps.append(A.HorizontalFlip(p=hflip))
        if color_jitter:
            steps.append(A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8))
    bbox_params = A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=MIN_VISIBILITY,
                               min_width=MIN_BOX_SIDE, min_height=MIN_BOX_SIDE, clip=True)
    return A.Compose(steps, bbox_params=bbox_params)

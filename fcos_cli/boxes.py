"""Box helpers: a point and its (l, t, r, b) distances to the sides of a box, and back (xyxy pixels)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ltrb_to_boxes", "boxes_to_ltrb"]


def ltrb_to_boxes(xy: Tensor, ltrb: Tensor) -> Tensor:
    """Points (..., 2) and distances (..., 4) -> boxes (..., 4) xyxy."""
    return torch.cat([xy - ltrb[..., :2], xy + ltrb[..., 2:]], dim=-1)


def boxes_to_ltrb(xy: Tensor, boxes: Tensor) -> Tensor:
    """Points (..., 2) and boxes (..., 4) xyxy -> distances (..., 4) from the point to the left, top, right and
    bottom sides; all positive when the point is inside the box."""
    return torch.cat([xy - boxes[..., :2], boxes[..., 2:] - xy], dim=-1)

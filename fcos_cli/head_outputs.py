"""What the head predicts, per level (`HeadOutputs`), and the one place levels are flattened and split back.

Torch only (no timm): the targets, losses and postprocess import it without the model package.
Shapes: B images, K classes, (H_l, W_l) the map of level l, P = sum(H_l * W_l) points over all levels.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["HeadOutputs", "flatten_levels", "unflatten_levels"]


class HeadOutputs(NamedTuple):
    """Raw per-level outputs, finest level first (a NamedTuple of lists so that export can trace it).

    cls_logits (B, K, H_l, W_l): one sigmoid classifier per class, no background column.
    box_regression (B, 4, H_l, W_l): positive (l, t, r, b) distances, in pixels or in strides.
    centerness (B, 1, H_l, W_l): center-ness logits.
    """

    cls_logits: list[Tensor]
    box_regression: list[Tensor]
    centerness: list[Tensor]


def flatten_levels(outputs: HeadOutputs) -> tuple[Tensor, Tensor, Tensor]:
    """Concatenate levels point-major in float32: cls (B, P, K), box (B, P, 4), centerness (B, P)."""

    def cat(maps: list[Tensor]) -> Tensor:
        return torch.cat([m.float().flatten(2) for m in maps], dim=2).permute(0, 2, 1)  # (B, P, C)

    return cat(outputs.cls_logits), cat(outputs.box_regression), cat(outputs.centerness).squeeze(2)


def unflatten_levels(cls_logits: Tensor, box_regression: Tensor, centerness: Tensor,
                     sizes: list[tuple[int, int]]) -> HeadOutputs:
    """Inverse of `flatten_levels`: (B, P, K), (B, P, 4), (B, P) and (H_l, W_l) per level -> HeadOutputs."""
    counts = [h * w for h, w in sizes]

    def split(flat: Tensor) -> list[Tensor]:
        parts = flat.split(counts, dim=1)
        return [p.permute(0, 2, 1).reshape(p.shape[0], -1, h, w) for p, (h, w) in zip(parts, sizes, strict=True)]  # (B, C, H, W)

    return HeadOutputs(split(cls_logits), split(box_regression), split(centerness[..., None]))

"""FCOS head shared by all levels: cls and box towers, per-class sigmoid logits, ltrb, center-ness."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["FCOSHead", "HeadOutputs", "Scale", "flatten_levels", "unflatten_levels"]


class HeadOutputs(NamedTuple):
    """Raw per-level outputs, finest level first (a NamedTuple of lists so that export can trace it).

    cls_logits (B, K, H_l, W_l): one sigmoid classifier per class, no background column.
    box_regression (B, 4, H_l, W_l): positive (l, t, r, b) distances, in pixels or in strides.
    centerness (B, 1, H_l, W_l): center-ness logits.
    """

    cls_logits: list[Tensor]
    box_regression: list[Tensor]
    centerness: list[Tensor]


class Scale(nn.Module):
    """The learnable per-level scalar s_i of exp(s_i * x) (paper Sec. 3.2)."""

    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _tower(channels: int, num_convs: int, norm: str, num_groups: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(channels, channels, 3, padding=1))
        if norm == "group":
            layers.append(nn.GroupNorm(num_groups, channels))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """Shared towers of `num_convs` conv(+GroupNorm)+ReLU and the three prediction convs.

    Args:
        in_channels: FPN channels (divisible by `num_groups` with group norm).
        num_classes: K; background is not a class here (all K sigmoids low).
        num_levels: number of FPN levels, one `Scale` each when `learnable_scale`.
        box_activation: "exp" (paper: exp(s_i x)) or "relu" (improved FCOS, torchvision: relu(s_i x)).
        centerness_on_reg: center-ness branch on the regression tower (improved) or the cls tower (paper).
    """

    def __init__(self, in_channels: int, num_classes: int, num_levels: int, num_convs: int = 4,
                 norm: str = "group", num_groups: int = 32, prior_prob: float = 0.01,
                 box_activation: str = "relu", learnable_scale: bool = True,
                 centerness_on_reg: bool = True) -> None:
        super().__init__()
        self.cls_tower = _tower(in_channels, num_convs, norm, num_groups)
        self.box_tower = _tower(in_channels, num_convs, norm, num_groups)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        self.box_regression = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(in_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale() for _ in range(num_levels)) if learnable_scale else None
        self.box_activation = box_activation
        self.centerness_on_reg = centerness_on_reg
        self.grad_checkpointing = False  # FCOS.set_grad_checkpointing
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        # Focal-loss prior (RetinaNet Sec. 4.1): every class starts at probability prior_prob.
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: list[Tensor]) -> HeadOutputs:
        cls_logits, box_regression, centerness = [], [], []
        for level, x in enumerate(features):
            if self.grad_checkpointing and torch.is_grad_enabled():
                # Keep only the towers' input; backward recomputes their activations (--grad-checkpoint).
                cls_feature = checkpoint(self.cls_tower, x, use_reentrant=False)
                box_feature = checkpoint(self.box_tower, x, use_reentrant=False)
            else:
                cls_feature, box_feature = self.cls_tower(x), self.box_tower(x)
            # float32 before the activation: exp/relu of bf16 would round distances to whole pixels.
            box = self.box_regression(box_feature).float()
            if self.scales is not None:
                box = self.scales[level](box)
            box_regression.append(torch.exp(box) if self.box_activation == "exp" else F.relu(box))
            cls_logits.append(self.cls_logits(cls_feature))
            centerness.append(self.centerness(box_feature if self.centerness_on_reg else cls_feature))
        return HeadOutputs(cls_logits, box_regression, centerness)


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
        return [p.permute(0, 2, 1).reshape(p.shape[0], -1, h, w) for p, (h, w) in zip(parts, sizes)]  # (B, C, H, W)

    return HeadOutputs(split(cls_logits), split(box_regression), split(centerness[..., None]))

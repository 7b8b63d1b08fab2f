"""FCOS head shared by all levels: cls and box towers, per-class sigmoid logits, ltrb, center-ness."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..head_outputs import HeadOutputs

__all__ = ["FCOSHead", "Scale"]


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

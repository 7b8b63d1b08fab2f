"""FCOS losses: sigmoid focal loss, IoU/GIoU box loss and center-ness BCE (paper Sec. 3, eq. 2).

Shapes: B images, P points over all levels, K classes, Q positive points in the batch.
All losses are computed in float32, whatever the head's dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from .boxes import ltrb_to_boxes
from .head_outputs import HeadOutputs, flatten_levels
from .targets import AssignedTargets, Points

__all__ = ["FCOSLosses", "fcos_loss", "iou_loss"]

EPS = 1e-6


class FCOSLosses(NamedTuple):
    cls: Tensor
    box: Tensor
    centerness: Tensor
    total: Tensor


def iou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """-log IoU of two boxes around the same point, from their (l, t, r, b) distances (Q, 4) -> (Q,).

    UnitBox / FCOS's IoU loss; torchvision.ops has only the GIoU/DIoU/CIoU variants.
    """
    pred_area = (pred[:, 0] + pred[:, 2]) * (pred[:, 1] + pred[:, 3])
    target_area = (target[:, 0] + target[:, 2]) * (target[:, 1] + target[:, 3])
    overlap = torch.minimum(pred, target)
    inter = (overlap[:, 0] + overlap[:, 2]) * (overlap[:, 1] + overlap[:, 3])
    iou = inter / (pred_area + target_area - inter).clamp(min=EPS)
    return -torch.log(iou.clamp(min=EPS))


def fcos_loss(outputs: HeadOutputs, targets: AssignedTargets, points: Points, *, num_classes: int,
              norm_reg_targets: bool, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
              box_loss: str = "giou", box_loss_norm: str = "num_pos", cls_weight: float = 1.0,
              box_weight: float = 1.0, centerness_weight: float = 1.0,
              average_normalizer: Callable[[Tensor], Tensor] | None = None) -> FCOSLosses:
    """Focal loss over all points and classes; box and center-ness losses over positives only.

    Args:
        outputs: head outputs, per-level lists.
        targets: `assign_targets` result for the same points.
        norm_reg_targets: the head predicts distances in strides (multiplied by the stride here).
        box_loss: "giou" (torchvision's generalized_box_iou_loss on decoded boxes) or "iou" (-log IoU).
        box_loss_norm: "num_pos" (sum / positives) or "centerness" (weighted by center-ness targets,
            divided by their sum, as the original FCOS and mmdetection).
        average_normalizer: maps a local normaliser (the number of positives, the sum of center-ness
            targets) to its mean over data-parallel ranks, as the original FCOS code does; None: local.
    """
    cls_logits, box_regression, centerness = flatten_levels(outputs)  # (B,P,K) (B,P,4) (B,P)
    positive = targets.labels < num_classes  # (B, P)
    average = average_normalizer or (lambda t: t)
    num_positives = average(positive.sum().float()).clamp(min=1.0)
    cls_targets = F.one_hot(targets.labels, num_classes + 1)[..., :num_classes].to(cls_logits.dtype)
    loss_cls = sigmoid_focal_loss(cls_logits, cls_targets, focal_alpha, focal_gamma, reduction="sum")

    pred_ltrb = box_regression[positive]  # (Q, 4)
    if norm_reg_targets:
        pred_ltrb = pred_ltrb * points.strides.expand_as(positive)[positive, None]
    target_ltrb = targets.box_targets[positive]
    target_centerness = targets.centerness[positive]
    if box_loss == "giou":
        xy = points.xy.expand(*positive.shape, 2)[positive]  # (Q, 2)
        per_point = generalized_box_iou_loss(ltrb_to_boxes(xy, pred_ltrb), ltrb_to_boxes(xy, target_ltrb))
    else:
        per_point = iou_loss(pred_ltrb, target_ltrb)
    if box_loss_norm == "centerness":
        loss_box = (per_point * target_centerness).sum() / average(target_centerness.sum().detach()).clamp(min=EPS)
    else:
        loss_box = per_point.sum() / num_positives
    loss_centerness = F.binary_cross_entropy_with_logits(
        centerness[positive], target_centerness, reduction="sum") / num_positives
    loss_cls = loss_cls / num_positives
    total = cls_weight * loss_cls + box_weight * loss_box + centerness_weight * loss_centerness
    return FCOSLosses(loss_cls, loss_box, loss_centerness, total)

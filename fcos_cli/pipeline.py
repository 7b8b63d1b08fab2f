"""Config-driven glue between the model's outputs and the pure core: points, losses, detections."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .config import FCOSConfig, level_size_ranges
from .head_outputs import HeadOutputs
from .losses import FCOSLosses, fcos_loss
from .postprocess import Detections, postprocess
from .targets import AssignedTargets, Points, assign_targets, make_points

__all__ = ["points_for", "targets_for", "loss_for", "detections_for"]


def points_for(outputs: HeadOutputs, strides: list[int], cfg: FCOSConfig) -> Points:
    sizes = tuple((m.shape[-2], m.shape[-1]) for m in outputs.cls_logits)
    device = outputs.cls_logits[0].device
    return make_points(sizes, tuple(strides), cfg.targets.point_offset, cfg.targets.point_spacing, device)


def targets_for(points: Points, gt_boxes: list[Tensor], gt_labels: list[Tensor], cfg: FCOSConfig) -> AssignedTargets:
    t = cfg.targets
    return assign_targets(points, gt_boxes, gt_labels, cfg.model.num_classes, level_size_ranges(cfg),
                          t.inclusive_size_ranges, t.center_sampling_radius, t.torchvision_area_rounding)


def loss_for(outputs: HeadOutputs, strides: list[int], gt_boxes: list[Tensor], gt_labels: list[Tensor],
             cfg: FCOSConfig, average_normalizer: Callable[[Tensor], Tensor] | None = None) -> FCOSLosses:
    """Assign targets for the batch's boxes (per image (M, 4) xyxy px, (M,) labels) and compute losses."""
    points = points_for(outputs, strides, cfg)
    targets = targets_for(points, gt_boxes, gt_labels, cfg)
    lc = cfg.loss
    return fcos_loss(outputs, targets, points, num_classes=cfg.model.num_classes,
                     norm_reg_targets=cfg.model.head.norm_reg_targets, focal_alpha=lc.focal_alpha,
                     focal_gamma=lc.focal_gamma, box_loss=lc.box_loss, box_loss_norm=lc.box_loss_norm,
                     cls_weight=lc.cls_weight, box_weight=lc.box_weight,
                     centerness_weight=lc.centerness_weight, average_normalizer=average_normalizer)


def detections_for(outputs: HeadOutputs, strides: list[int], image_sizes: list[tuple[int, int]],
                   cfg: FCOSConfig) -> list[Detections]:
    """Detections per image, boxes in the pixels of the (unpadded) model input."""
    p = cfg.post
    return postprocess(outputs, points_for(outputs, strides, cfg), image_sizes,
                       norm_reg_targets=cfg.model.head.norm_reg_targets, score_thresh=p.score_thresh,
                       threshold_on=p.threshold_on, score_rule=p.score_rule, topk_per_level=p.topk_per_level,
                       nms_iou=p.nms_iou, max_detections=p.max_detections)

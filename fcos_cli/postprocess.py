"""From head outputs to detections: score, per-level top-k, decode, clip, class-wise NMS.

Shapes: B images, P points, K classes, C candidates per image (top-k of every level), N detections.
`top_candidates` is the one decode, shared with the ONNX graph (`export.py`): traceable, any input size.
"""

from __future__ import annotations

from typing import TypedDict

import torch
from torch import Tensor
from torchvision.models.detection._utils import _topk_min
from torchvision.ops import batched_nms

from .boxes import ltrb_to_boxes
from .head_outputs import HeadOutputs, flatten_levels
from .targets import Points

__all__ = ["Detections", "postprocess", "top_candidates"]


class Detections(TypedDict):
    boxes: Tensor  # (N, 4) xyxy in input-image pixels
    scores: Tensor  # (N,)
    labels: Tensor  # (N,) 0..K-1


def top_candidates(cls_logits: Tensor, box_regression: Tensor, centerness: Tensor, xy_per_level: list[Tensor],
                   strides: list[int], limits: Tensor, *, norm_reg_targets: bool, score_thresh: float | Tensor,
                   threshold_on: str, score_rule: str, topk_per_level: int) -> tuple[Tensor, Tensor, Tensor]:
    """Score every (point, class), keep the best `topk_per_level` per level, decode their boxes, clip.

    Args:
        cls_logits (B, P, K), box_regression (B, P, 4), centerness (B, P): flattened head outputs.
        xy_per_level: (P_l, 2) points of each level, in the order of P.
        limits: (B, 1, 4) or (4,) (W, H, W, H) to clip boxes to.
        score_thresh: a float, or a 0-d tensor (a graph input in ONNX).

    Returns scores (B, C) with -1 for a candidate under the gate, boxes (B, C, 4) xyxy px, labels (B, C).
    """
    num_classes = cls_logits.shape[2]
    cls_prob = cls_logits.sigmoid()
    scores = cls_prob * centerness.sigmoid()[..., None]  # (B, P, K)
    if score_rule == "sqrt":
        scores = scores.sqrt()
    gate = cls_prob if threshold_on == "cls" else scores
    scores = torch.where(gate > score_thresh, scores, -1.0)  # -1 marks a dropped candidate

    top_scores, top_boxes, top_labels = [], [], []
    start = 0
    for xy, stride in zip(xy_per_level, strides, strict=True):
        count = xy.shape[0]
        level = scores[:, start:start + count].flatten(1)  # (B, count * K)
        # _topk_min: min(k, count * K), traced as a graph value so that small ONNX inputs work too.
        level_scores, idx = level.topk(_topk_min(level, topk_per_level, 1), dim=1)
        point = torch.div(idx, num_classes, rounding_mode="floor")  # (B, k) within the level
        ltrb = box_regression[:, start:start + count].gather(1, point[..., None].expand(-1, -1, 4))  # (B, k, 4)
        if norm_reg_targets:
            ltrb = ltrb * stride
        top_scores.append(level_scores)
        top_boxes.append(ltrb_to_boxes(xy[point], ltrb))
        top_labels.append(idx % num_classes)
        start = start + count
    boxes = torch.cat(top_boxes, dim=1)
    boxes = torch.minimum(boxes.clamp(min=0), limits)
    return torch.cat(top_scores, dim=1), boxes, torch.cat(top_labels, dim=1)


@torch.no_grad()
def postprocess(outputs: HeadOutputs, points: Points, image_sizes: list[tuple[int, int]], *,
                norm_reg_targets: bool, score_thresh: float = 0.05, threshold_on: str = "cls",
                score_rule: str = "sqrt", topk_per_level: int = 1000, nms_iou: float = 0.6,
                max_detections: int = 100) -> list[Detections]:
    """Detections per image, best first.

    Args:
        outputs: head outputs for B images.
        points: the P points of those outputs.
        image_sizes: (H, W) per image before padding; boxes are clipped to it.
        threshold_on: "cls" keeps candidates whose class probability exceeds `score_thresh` (FCOS,
            mmdet); "score" thresholds the final score (torchvision).
        score_rule: "sqrt" for sqrt(cls * ctr) (original FCOS, torchvision) or "product" (mmdet).
    """
    cls_logits, box_regression, centerness = flatten_levels(outputs)  # (B,P,K) (B,P,4) (B,P)
    num_images, _, num_classes = cls_logits.shape
    limits = torch.tensor([[w, h, w, h] for h, w in image_sizes], dtype=torch.float32, device=cls_logits.device)
    cand_scores, boxes, cand_labels = top_candidates(
        cls_logits, box_regression, centerness, list(points.xy.split(points.num_per_level)), points.level_strides,
        limits[:, None, :], norm_reg_targets=norm_reg_targets, score_thresh=score_thresh, threshold_on=threshold_on,
        score_rule=score_rule, topk_per_level=topk_per_level)

    image_index = torch.arange(num_images, device=boxes.device)[:, None].expand_as(cand_scores)
    valid = cand_scores >= 0
    boxes, cand_scores, cand_labels, image_index = boxes[valid], cand_scores[valid], cand_labels[valid], image_index[valid]
    keep = batched_nms(boxes, cand_scores, image_index * num_classes + cand_labels, nms_iou)  # best first
    # Group by image, best first within each (stable sort), with one device->host copy for all images.
    keep = keep[torch.sort(image_index[keep], stable=True).indices]
    counts = torch.bincount(image_index[keep], minlength=num_images).tolist()
    detections = []
    for kept in keep.split(counts):
        kept = kept[:max_detections]
        detections.append(Detections(boxes=boxes[kept], scores=cand_scores[kept], labels=cand_labels[kept]))
    return detections

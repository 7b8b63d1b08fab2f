"""From head outputs to detections: score, per-level top-k, decode, clip, class-wise NMS.

Shapes: B images, P points, K classes, C candidates per image (top-k of every level), N detections.
"""

from __future__ import annotations

from typing import TypedDict

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from .boxes import ltrb_to_boxes
from .head_outputs import HeadOutputs, flatten_levels
from .targets import Points

__all__ = ["Detections", "postprocess"]


class Detections(TypedDict):
    boxes: Tensor  # (N, 4) xyxy in input-image pixels
    scores: Tensor  # (N,)
    labels: Tensor  # (N,) 0..K-1


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
    cls_prob = cls_logits.sigmoid()
    scores = cls_prob * centerness.sigmoid()[..., None]  # (B, P, K)
    if score_rule == "sqrt":
        scores = scores.sqrt()
    gate = cls_prob if threshold_on == "cls" else scores
    scores = torch.where(gate > score_thresh, scores, -1.0)  # -1 marks a dropped candidate

    top_scores, top_points, top_labels = [], [], []
    start = 0
    for count in points.num_per_level:
        level = scores[:, start:start + count].flatten(1)  # (B, count * K)
        level_scores, idx = level.topk(min(topk_per_level, level.shape[1]), dim=1)
        top_scores.append(level_scores)
        top_points.append(start + torch.div(idx, num_classes, rounding_mode="floor"))
        top_labels.append(idx % num_classes)
        start += count
    cand_scores, cand_points, cand_labels = (torch.cat(t, dim=1) for t in (top_scores, top_points, top_labels))

    ltrb = box_regression.gather(1, cand_points[..., None].expand(-1, -1, 4))  # (B, C, 4)
    if norm_reg_targets:
        ltrb = ltrb * points.strides[cand_points][..., None]
    boxes = ltrb_to_boxes(points.xy[cand_points], ltrb)
    limits = torch.tensor([[w, h, w, h] for h, w in image_sizes], dtype=boxes.dtype, device=boxes.device)
    boxes = torch.minimum(boxes.clamp(min=0), limits[:, None, :])

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

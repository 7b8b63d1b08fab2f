"""Eval diagnostics at IoU 0.5: per-class precision/recall, the confidence to deploy (best F1), a confusion
matrix with a background row and column, and drawings of predictions beside the ground truth.

Shapes: N detections, M ground-truth boxes, C crowd regions, K classes, T confidence thresholds. Boxes are
xyxy in original-image pixels; labels 0..K-1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_area, box_iou

__all__ = ["ImageBoxes", "Diagnostics", "match_detections", "confidence_curves", "best_f1_confidence",
           "confusion_matrix", "diagnose", "conf_text", "side_by_side", "plot_confidence_curves", "plot_confusion_matrix"]

TP, FP, IGNORED = 1, 0, -1  # match outcome of a detection


@dataclass
class ImageBoxes:
    """One image's ground truth and detections (the ground truth's crowd regions apart)."""

    gt_boxes: Tensor  # (M, 4)
    gt_labels: Tensor  # (M,)
    crowd_boxes: Tensor  # (C, 4): a detection on a crowd is neither right nor wrong (COCO's iscrowd)
    pred_boxes: Tensor  # (N, 4)
    pred_scores: Tensor  # (N,)
    pred_labels: Tensor  # (N,)


@dataclass
class Diagnostics:
    confidences: np.ndarray  # (T,) thresholds of the curves
    precision: np.ndarray  # (K, T) precision of detections with score >= threshold
    recall: np.ndarray  # (K, T)
    best_conf: float  # the threshold of the best F1 (mean over the classes present)
    best_f1: float
    class_precision: np.ndarray  # (K,) at best_conf
    class_recall: np.ndarray  # (K,)
    num_images: np.ndarray  # (K,) images holding the class
    num_instances: np.ndarray  # (K,) its (non-crowd) boxes
    confusion: np.ndarray  # (K + 1, K + 1) rows: true class, columns: predicted; index K is background
    confusion_conf: float  # the threshold the confusion matrix was counted at


def _on_crowd(pred_boxes: Tensor, crowd_boxes: Tensor, iou_thresh: float) -> Tensor:
    """(N,) whether each detection lies on a crowd region: COCO's crowd IoU is intersection over the detection."""
    if not len(crowd_boxes) or not len(pred_boxes):
        return torch.zeros(len(pred_boxes), dtype=torch.bool)
    lt = torch.max(pred_boxes[:, None, :2], crowd_boxes[None, :, :2])
    rb = torch.min(pred_boxes[:, None, 2:], crowd_boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)  # (N, C)
    return (inter / box_area(pred_boxes).clamp(min=1e-9)[:, None] >= iou_thresh).any(dim=1)


def match_detections(image: ImageBoxes, iou_thresh: float = 0.5) -> Tensor:
    """(N,) TP, FP or IGNORED per detection: in descending score, each takes the unmatched box of its class
    it overlaps most (IoU >= `iou_thresh`), as COCOeval does at one IoU; unmatched detections on a crowd are
    ignored."""
    outcome = np.full(len(image.pred_boxes), FP, dtype=np.int64)
    iou = box_iou(image.pred_boxes.double(), image.gt_boxes.double()).numpy()  # (N, M); numpy: a loop of scalars
    iou[(image.pred_labels[:, None] != image.gt_labels[None, :]).numpy()] = -1.0
    if iou.shape[1]:
        for i in torch.argsort(image.pred_scores, descending=True, stable=True).tolist():
            best = int(iou[i].argmax())
            if iou[i, best] >= iou_thresh:
                outcome[i] = TP
                iou[:, best] = -1.0  # taken
    crowd = _on_crowd(image.pred_boxes, image.crowd_boxes, iou_thresh).numpy()
    outcome[(outcome == FP) & crowd] = IGNORED
    return torch.from_numpy(outcome)


def _class_curves(scores: np.ndarray, labels: np.ndarray, outcome: np.ndarray, num_gt: np.ndarray,
                  confidences: np.ndarray, classes: list[int]):
    """(k, precision (T,), recall (T,)) for each class of `classes`, from one sort of all detections."""
    order = np.lexsort((scores, labels))  # by class, then score ascending
    scores, labels, outcome = scores[order], labels[order], outcome[order]
    bounds = np.searchsorted(labels, np.arange(len(num_gt) + 1))
    for k in classes:
        first, last = bounds[k], bounds[k + 1]
        # suffix[i]: true positives (detections) from the i-th lowest score up; a threshold keeps a suffix.
        true_pos = np.append(np.cumsum((outcome[first:last] == TP)[::-1])[::-1], 0)
        detected = np.append(np.cumsum((outcome[first:last] != IGNORED)[::-1])[::-1], 0)
        kept = np.searchsorted(scores[first:last], confidences, side="left")  # (T,) first index >= threshold
        yield k, true_pos[kept] / np.maximum(detected[kept], 1), true_pos[kept] / max(int(num_gt[k]), 1)


def confidence_curves(scores: np.ndarray, labels: np.ndarray, outcome: np.ndarray, num_gt: np.ndarray,
                      confidences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall (K, T) of the detections with score >= each threshold, per class.

    Args:
        scores, labels, outcome: (N,) all images' detections and their `match_detections` outcome.
        num_gt: (K,) ground-truth boxes per class. confidences: (T,) thresholds.
    A class with nothing detected above a threshold has precision 0 there (and recall 0).
    """
    precision, recall = np.zeros((len(num_gt), len(confidences))), np.zeros((len(num_gt), len(confidences)))
    for k, p, r in _class_curves(scores, labels, outcome, num_gt, confidences, list(range(len(num_gt)))):
        precision[k], recall[k] = p, r
    return precision, recall


def conf_text(conf: float) -> str:
    """A threshold as printed: rounded down to 3 decimals, so that `--conf` at it keeps the boxes scored exactly
    at the threshold (0.4339 would otherwise print as 0.434 and drop them)."""
    return f"{math.floor(conf * 1000 + 1e-9) / 1000:.3f}"


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    return 2 * precision * recall / np.maximum(precision + recall, 1e-12)


def best_f1_confidence(scores: np.ndarray, labels: np.ndarray, outcome: np.ndarray,
                       num_gt: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising the F1 averaged over the classes with boxes, the thresholds being the
    detections' own scores: `--conf` at one of them keeps exactly these boxes (a grid falls between scores).

    Ties go to the highest threshold: the same F1 with fewer boxes to look at.
    """
    candidates = np.unique(scores)  # ascending
    present = [k for k in range(len(num_gt)) if num_gt[k] > 0]
    if not len(candidates) or not present:
        return 1.0, 0.0
    mean_f1 = np.zeros(len(candidates))
    for _, precision, recall in _class_curves(scores, labels, outcome, num_gt, candidates, present):
        mean_f1 += _f1(precision, recall) / len(present)  # (T,) memory for COCO's ~10^5 scores, not (K, T)
    best = int(np.flatnonzero(mean_f1 >= mean_f1.max() - 1e-12).max())
    return float(candidates[best]), float(mean_f1[best])


def confusion_matrix(image: ImageBoxes, num_classes: int, conf: float, iou_thresh: float = 0.5) -> np.ndarray:
    """(K + 1, K + 1) counts of one image: [true, predicted], class-agnostic matching by IoU >= `iou_thresh`.

    Pairs are taken in descending IoU, each box and detection at most once. A box left over is a miss
    [true, K]; a detection left over a false alarm [K, predicted], unless it lies on a crowd (not counted).
    """
    keep = image.pred_scores >= conf
    pred_boxes, pred_labels = image.pred_boxes[keep], image.pred_labels[keep]
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    iou = box_iou(image.gt_boxes, pred_boxes)  # (M, N)
    pairs = (iou >= iou_thresh).nonzero().tolist()
    pairs.sort(key=lambda p: -float(iou[p[0], p[1]]))
    gt_used, pred_used = set(), set()
    for g, p in pairs:
        if g not in gt_used and p not in pred_used:
            gt_used.add(g), pred_used.add(p)
            matrix[int(image.gt_labels[g]), int(pred_labels[p])] += 1
    for g in set(range(len(image.gt_boxes))) - gt_used:
        matrix[int(image.gt_labels[g]), num_classes] += 1
    crowd = _on_crowd(pred_boxes, image.crowd_boxes, iou_thresh)
    for p in set(range(len(pred_boxes))) - pred_used:
        if not crowd[p]:
            matrix[num_classes, int(pred_labels[p])] += 1
    return matrix


def diagnose(images: list[ImageBoxes], num_classes: int, conf: float | None = None,
             iou_thresh: float = 0.5, num_thresholds: int = 101) -> Diagnostics:
    """Curves, best-F1 threshold, per-class counts and the confusion matrix (at `conf`, else the best F1)."""
    def joined(parts: list[Tensor], dtype) -> np.ndarray:
        return torch.cat(parts).numpy().astype(dtype) if parts else np.zeros(0, dtype)

    scores = joined([im.pred_scores.double() for im in images], np.float64)
    labels = joined([im.pred_labels for im in images], np.int64)
    outcome = joined([match_detections(im, iou_thresh) for im in images], np.int64)
    num_gt, num_images = np.zeros(num_classes, dtype=np.int64), np.zeros(num_classes, dtype=np.int64)
    for im in images:
        num_gt += np.bincount(im.gt_labels.numpy(), minlength=num_classes)
        num_images[np.unique(im.gt_labels.numpy())] += 1
    best_conf, best_f1 = best_f1_confidence(scores, labels, outcome, num_gt)
    at_best = confidence_curves(scores, labels, outcome, num_gt, np.array([best_conf]))
    grid = np.linspace(0, 1, num_thresholds)
    precision, recall = confidence_curves(scores, labels, outcome, num_gt, grid)
    used = best_conf if conf is None else conf
    confusion = sum((confusion_matrix(im, num_classes, used, iou_thresh) for im in images),
                    np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64))
    return Diagnostics(grid, precision, recall, best_conf, best_f1, at_best[0][:, 0], at_best[1][:, 0],
                       num_images, num_gt, confusion, used)


def side_by_side(image: np.ndarray, boxes: ImageBoxes, class_names: list[str], conf: float) -> Tensor:
    """(3, H, 2W + 8) uint8: the ground truth left (crowd regions grey), the detections >= `conf` right."""
    from .predict_outputs import PALETTE

    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # (3, H, W) uint8
    truth = _draw(pixels, torch.cat([boxes.gt_boxes, boxes.crowd_boxes]),
                  [class_names[k] for k in boxes.gt_labels.tolist()] + ["crowd"] * len(boxes.crowd_boxes),
                  [PALETTE[k % len(PALETTE)] for k in boxes.gt_labels.tolist()] + ["#808080"] * len(boxes.crowd_boxes))
    keep = boxes.pred_scores >= conf
    labels, scores = boxes.pred_labels[keep].tolist(), boxes.pred_scores[keep].tolist()
    predicted = _draw(pixels, boxes.pred_boxes[keep], [f"{class_names[k]} {s:.2f}" for k, s in zip(labels, scores, strict=True)],
                      [PALETTE[k % len(PALETTE)] for k in labels])
    gap = torch.full((3, pixels.shape[1], 8), 255, dtype=torch.uint8)
    return torch.cat([truth, gap, predicted], dim=2)


def _draw(pixels: Tensor, boxes: Tensor, text: list[str], colors: list[str]) -> Tensor:
    from torchvision.utils import draw_bounding_boxes

    if not len(boxes):  # draw_bounding_boxes warns on an empty set
        return pixels.clone()
    width = max(2, round(max(pixels.shape[1:]) / 300))
    # A black outline under each box: a class colour stays visible on a region of the same colour.
    outlined = draw_bounding_boxes(pixels, boxes, colors="black", width=width + 2)
    return draw_bounding_boxes(outlined, boxes, text, colors=colors, width=width)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confidence_curves(diag: Diagnostics, class_names: list[str], path) -> None:
    """F1, precision and recall over the confidence threshold (IoU 0.5): one thin line per class, the mean bold."""
    from ..atomic import atomic_write

    plt = _pyplot()
    present = diag.num_instances > 0
    f1 = _f1(diag.precision, diag.recall)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, values, title in zip(axes, (f1, diag.precision, diag.recall), ("F1", "precision", "recall"), strict=True):
        for k, name in enumerate(class_names):
            if present[k]:
                ax.plot(diag.confidences, values[k], linewidth=1, alpha=0.6, label=name if len(class_names) <= 15 else None)
        if present.any():
            ax.plot(diag.confidences, values[present].mean(axis=0), color="black", linewidth=2.5, label="all classes")
        ax.axvline(diag.best_conf, color="grey", linestyle="--", linewidth=1)
        ax.set(xlabel="confidence", ylabel=title, xlim=(0, 1), ylim=(0, 1.02), title=f"{title}-confidence (IoU 0.5)")
    axes[0].set_title(f"F1-confidence: best {diag.best_f1:.2f} at {conf_text(diag.best_conf)}")
    axes[0].legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def plot_confusion_matrix(diag: Diagnostics, class_names: list[str], path) -> None:
    from ..atomic import atomic_write

    plt = _pyplot()
    names = [*class_names, "background"]
    size = min(4 + 0.45 * len(names), 30)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(diag.confusion, cmap="Blues")
    if len(names) <= 30:  # numbers in the cells while they stay readable
        for (i, j), count in np.ndenumerate(diag.confusion):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                        color="white" if count > diag.confusion.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true",
           title=f"Confusion matrix (IoU 0.5, confidence >= {conf_text(diag.confusion_conf)})")
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)

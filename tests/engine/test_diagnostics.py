"""Eval diagnostics on a tiny hand-made case: matches, best-F1 confidence, per-class P/R, confusion counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcos_cli.engine.diagnostics import (
    FP,
    IGNORED,
    TP,
    ImageBoxes,
    confusion_matrix,
    diagnose,
    match_detections,
    side_by_side,
)


def _image(gt, crowd, preds) -> ImageBoxes:
    """gt: [(x0, y0, x1, y1, label)], crowd: [(x0, y0, x1, y1)], preds: [(x0, y0, x1, y1, label, score)]."""
    gt_t = torch.tensor([g[:4] for g in gt], dtype=torch.float32).reshape(-1, 4)
    pred_t = torch.tensor([p[:4] for p in preds], dtype=torch.float32).reshape(-1, 4)
    return ImageBoxes(gt_t, torch.tensor([g[4] for g in gt], dtype=torch.int64),
                      torch.tensor(crowd, dtype=torch.float32).reshape(-1, 4), pred_t,
                      torch.tensor([p[5] for p in preds], dtype=torch.float32),
                      torch.tensor([p[4] for p in preds], dtype=torch.int64))


# Two classes. Image A: a right class-0 box (0.9), a class-0 detection on the class-1 box (0.8), a class-1
# detection on a crowd (0.7) and a duplicate of the first (0.3). Image B: a right class-0 box (0.6) and a
# class-1 detection on nothing (0.5). Ground truth: two class-0 boxes, one class-1 box (never found).
IMAGE_A = _image([(0, 0, 10, 10, 0), (20, 20, 30, 30, 1)], [(40, 40, 60, 60)],
                 [(0, 0, 10, 10, 0, 0.9), (20, 20, 30, 30, 0, 0.8), (41, 41, 59, 59, 1, 0.7), (0, 0, 10, 11, 0, 0.3)])
IMAGE_B = _image([(0, 0, 20, 20, 0)], [], [(0, 0, 20, 19, 0, 0.6), (50, 50, 60, 60, 1, 0.5)])


def test_matching_is_per_class_once_per_box_and_ignores_crowds() -> None:
    assert match_detections(IMAGE_A).tolist() == [TP, FP, IGNORED, FP]
    assert match_detections(IMAGE_B).tolist() == [TP, FP]


def test_best_f1_confidence_and_per_class_precision_recall_by_hand() -> None:
    # Mean F1 over the two classes (class 1 is never found: F1 0) at each detection score:
    #   0.9: class 0 P 1,   R 1/2 -> F1 2/3 -> mean 1/3     0.6: P 2/3, R 1 -> 0.8 -> mean 0.4
    #   0.8: P 1/2, R 1/2 -> 1/2 -> 1/4 (0.7 the same)      0.5: the same 0.4 (a tie: the higher 0.6 wins)
    #   0.3: P 1/2, R 1 -> 2/3 -> 1/3
    diag = diagnose([IMAGE_A, IMAGE_B], num_classes=2)
    assert diag.best_conf == pytest.approx(0.6) and diag.best_f1 == pytest.approx(0.4)
    assert diag.class_precision.tolist() == pytest.approx([2 / 3, 0.0])
    assert diag.class_recall.tolist() == pytest.approx([1.0, 0.0])
    assert diag.num_images.tolist() == [2, 1] and diag.num_instances.tolist() == [2, 1]
    at_half = int(np.searchsorted(diag.confidences, 0.5))  # the curves on their grid agree with the counts
    assert diag.precision[0, at_half] == pytest.approx(2 / 3) and diag.recall[0, at_half] == pytest.approx(1.0)


def test_confusion_matrix_counts_by_hand() -> None:
    # Rows true (class 0, class 1, background), columns predicted. At the best-F1 confidence 0.6: both
    # class-0 boxes found as class 0, the class-1 box taken for class 0; the crowd detection is not counted.
    diag = diagnose([IMAGE_A, IMAGE_B], num_classes=2)
    assert diag.confusion.tolist() == [[2, 0, 0], [1, 0, 0], [0, 0, 0]]
    # At 0.3 the duplicate and the class-1 detection on nothing are false alarms (background row).
    assert diag.confusion_conf == pytest.approx(0.6)
    assert diagnose([IMAGE_A, IMAGE_B], 2, conf=0.3).confusion.tolist() == [[2, 0, 0], [1, 0, 0], [1, 1, 0]]
    # Above every score: every box is a miss (background column).
    assert confusion_matrix(IMAGE_A, 2, conf=0.95).tolist() == [[0, 0, 1], [0, 0, 1], [0, 0, 0]]


def test_no_detections_and_no_images_give_zeros() -> None:
    empty = _image([(0, 0, 10, 10, 1)], [], [])
    diag = diagnose([empty], num_classes=2)
    assert diag.best_f1 == 0.0 and diag.confusion.tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 0]]
    assert diagnose([], num_classes=2).num_instances.tolist() == [0, 0]


def test_side_by_side_draws_truth_left_and_detections_right() -> None:
    drawn = side_by_side(np.zeros((80, 80, 3), np.uint8), IMAGE_B, ["a", "b"], conf=0.55)
    assert drawn.shape == (3, 80, 168) and drawn.dtype == torch.uint8
    assert drawn[:, :21, :21].any() and drawn[:, :21, 88:109].any()  # the class-0 box on both halves
    assert not drawn[:, 48:62, 88 + 48:88 + 62].any()  # the 0.5 detection is under the threshold: not drawn
    lower = side_by_side(np.zeros((80, 80, 3), np.uint8), IMAGE_B, ["a", "b"], conf=0.4)
    assert lower[:, 48:62, 88 + 48:88 + 62].any() and not lower[:, 48:62, 48:62].any()


def test_printed_confidence_is_rounded_down_so_that_conf_keeps_the_best_boxes() -> None:
    from fcos_cli.engine.diagnostics import conf_text

    assert conf_text(0.4339) == "0.433" and conf_text(0.45) == "0.450" and conf_text(0.57) == "0.570"

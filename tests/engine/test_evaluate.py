"""COCO evaluation: ground truth routed through our results writer scores AP 1; a hand-computed partial AP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fcos_cli.data.dataset import DetectionDataset
from fcos_cli.data.records import DatasetIndex, ImageRecord
from fcos_cli.data.transforms import build_transform
from fcos_cli.engine.evaluate import coco_metrics, to_coco_results
from fcos_cli.postprocess import Detections

CATEGORY_IDS = [3, 7, 90]


@pytest.fixture()
def index(tmp_path: Path) -> DatasetIndex:
    """Three images of different aspect ratios, four boxes of class 0 and two each of classes 1, 2."""
    from PIL import Image

    specs = [
        ((300, 500), [[10, 20, 110, 90, 0], [200, 30, 480, 280, 1], [300, 200, 350, 260, 0]]),
        ((640, 200), [[5, 5, 150, 300, 2], [20, 400, 180, 630, 0]]),
        ((256, 256), [[30, 30, 90, 120, 1], [100, 100, 250, 250, 2], [2, 150, 60, 250, 0]]),
    ]
    records = []
    for i, ((h, w), objects) in enumerate(specs):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (w, h), (100, 120, 140)).save(path)
        data = np.array(objects, dtype=np.float32)
        records.append(ImageRecord(path, data[:, :4], data[:, 4].astype(np.int64), image_id=100 + i, width=w, height=h))
    return DatasetIndex(records, ["a", "b", "c"], CATEGORY_IDS)


def _ground_truth_as_detections(index: DatasetIndex, keep=lambda label, k: True):
    """The boxes after the letterbox resize to 160 px, as perfect detections, plus their metas."""
    dataset = DetectionDataset(index.records, build_transform(160, train=False))
    detections, metas, sizes = [], [], {}
    for i in range(len(dataset)):
        _, target, meta = dataset[i]
        seen: dict[int, int] = {}
        mask = []
        for label in target["labels"].tolist():
            mask.append(keep(label, seen.get(label, 0)))
            seen[label] = seen.get(label, 0) + 1
        mask = torch.tensor(mask, dtype=torch.bool)
        detections.append(Detections(boxes=target["boxes"][mask], scores=torch.ones(int(mask.sum())),
                                     labels=target["labels"][mask]))
        metas.append(meta)
        sizes[meta.image_id] = meta.original_size
    return detections, metas, sizes


def test_ground_truth_through_results_writer_scores_ap_one(index: DatasetIndex) -> None:
    detections, metas, sizes = _ground_truth_as_detections(index)
    assert metas[0].scale[0] < 1 and metas[1].scale[1] < 1  # really resized
    results = to_coco_results(detections, metas, CATEGORY_IDS)
    assert {r["category_id"] for r in results} == set(CATEGORY_IDS)
    first = results[0]["bbox"]  # xywh in original pixels
    assert first == pytest.approx([10, 20, 100, 70], abs=0.05)
    result = coco_metrics(index, results, sizes)
    assert result.metrics["AP"] == pytest.approx(1.0)
    assert all(ap == pytest.approx(1.0) for ap in result.per_class_ap.values())


def test_half_of_one_class_dropped_gives_hand_computed_ap(index: DatasetIndex) -> None:
    # Class 0 has 4 boxes: keep the first two met in image order, drop the other two.
    kept = {"n": 0}

    def keep(label: int, k: int) -> bool:
        if label != 0:
            return True
        kept["n"] += 1
        return kept["n"] <= 2

    detections, metas, sizes = _ground_truth_as_detections(index, keep)
    result = coco_metrics(index, to_coco_results(detections, metas, CATEGORY_IDS), sizes)
    # Recall reaches 0.5 at precision 1: 51 of COCO's 101 recall thresholds (0, 0.01, ..., 0.5) score 1.
    assert result.per_class_ap["a"] == pytest.approx(51 / 101, abs=1e-6)
    assert result.metrics["AP"] == pytest.approx((2 + 51 / 101) / 3, abs=1e-6)


def test_no_detections_give_ap_zero(index: DatasetIndex) -> None:
    result = coco_metrics(index, [])
    assert result.metrics["AP"] == 0.0 and result.metrics["AP50"] == 0.0

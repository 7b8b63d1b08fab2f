"""COCO evaluation: ground truth routed through our results writer scores AP 1; a hand-computed partial AP."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fcos_cli.data.dataset import DetectionDataset
from fcos_cli.data.records import DatasetIndex, ImageRecord
from fcos_cli.data.transforms import build_transform
from fcos_cli.engine.evaluate import coco_metrics, to_coco_results
from fcos_cli.metadata import WeightsInfo
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


# ------------------------------------------- a COCO file is scored against itself, as pycocotools does

# (file name, (W, H), annotations as (category id, xywh, area or None for the box's, iscrowd),
#  detections as (category id, xywh, score)); the images are non-square, resized to a longest side of 128.
OFFICIAL = [
    ("a.png", (500, 300), [(3, [10, 20, 100, 70], 50, 0),  # area moves the box from medium to small
                           (7, [200, 30, 280, 250], 900, 0),  # from large to small
                           (3, [300, 150, 190, 140], None, 1)],  # a crowd: a detection on it is ignored
     [(3, [10, 20, 100, 70], 0.9), (7, [205, 35, 270, 240], 0.8), (3, [305, 155, 180, 130], 0.95),
      (90, [40, 200, 60, 60], 0.3)]),
    ("b.png", (200, 640), [(90, [5, 5, 145, 295], None, 0), (3, [20, 400, 160, 230], 5000, 0)],
     [(90, [8, 8, 140, 290], 0.7), (3, [30, 420, 160, 210], 0.6), (7, [10, 300, 100, 100], 0.85)]),
    ("c.png", (256, 256), [], [(3, [30, 30, 60, 90], 0.4)]),  # no annotations: only a false positive
    ("gone.png", (400, 300), [(7, [50, 50, 200, 150], None, 0)], []),  # missing: scored with no detections
    ("e.png", (320, 180), [(7, [10, 10, 20, 15], 300, 0), (90, [100, 50, 120, 100], None, 0)],
     [(7, [10, 10, 21, 15], 0.5), (90, [110, 60, 120, 90], 0.45)]),
]


def _write_official_coco(root: Path) -> Path:
    from PIL import Image

    images, annotations = [], []
    for image_id, (name, (w, h), anns, _) in enumerate(OFFICIAL, start=11):
        if name != "gone.png":
            Image.new("RGB", (w, h), (90, 100, 110)).save(root / name)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for category, box, area, crowd in anns:
            annotations.append({"id": 500 + len(annotations), "image_id": image_id, "category_id": category,
                                "bbox": box, "area": box[2] * box[3] if area is None else area, "iscrowd": crowd})
    categories = [{"id": 90, "name": "c"}, {"id": 3, "name": "a"}, {"id": 7, "name": "b"}]  # ids not in order
    path = root / "val.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def _fake_detect(monkeypatch: pytest.MonkeyPatch) -> None:
    """`detect` returning OFFICIAL's detections, in the pixels of the resized images the loader made."""
    queue = [dets for name, _, _, dets in OFFICIAL if name != "gone.png"]
    sizes_of = [size for name, size, _, _ in OFFICIAL if name != "gone.png"]
    label_of = {3: 0, 7: 1, 90: 2}

    def detect(model, cfg, images, sizes, amp=False):
        out = []
        for height, width in sizes:
            dets, (w0, h0) = queue.pop(0), sizes_of.pop(0)
            boxes = torch.tensor([[x, y, x + w, y + h] for _, (x, y, w, h), _ in dets], dtype=torch.float32)
            scale = torch.tensor([width / w0, height / h0] * 2)
            out.append(Detections(boxes=boxes.reshape(-1, 4) * scale, scores=torch.tensor([d[2] for d in dets]),
                                  labels=torch.tensor([label_of[d[0]] for d in dets], dtype=torch.int64)))
        return out

    monkeypatch.setattr("fcos_cli.engine.evaluate.detect", detect)


def _official_stats(annotation_file: Path, results_file: Path) -> np.ndarray:
    """pycocotools run directly on the file and a results.json, the way the COCO evaluation server does."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotation_file))
        evaluator = COCOeval(gt, gt.loadRes(str(results_file)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def _tiny_model():
    from fcos_cli.model import build_model
    from tests.conftest import tiny_config

    cfg = tiny_config(epochs=1, img_size=128)
    cfg.model.num_classes = 3
    torch.manual_seed(0)
    return build_model(cfg.model), cfg


def test_evaluate_of_a_coco_file_equals_pycocotools_on_the_file(tmp_path: Path, monkeypatch) -> None:
    """The evaluate function `fcos train` validates with: crowds, file areas, ids and a missing image."""
    from dataclasses import replace

    from fcos_cli.data import open_split
    from fcos_cli.engine.evaluate import evaluate

    path = _write_official_coco(tmp_path)
    index = open_split(path, "val")
    assert len(index.records) == 4 and index.unreadable_ids == [14]
    _fake_detect(monkeypatch)
    model, cfg = _tiny_model()
    result = evaluate(model, cfg, index, torch.device("cpu"), batch_size=2)  # as the training loop calls it
    (tmp_path / "results.json").write_text(json.dumps(result.results))
    official = _official_stats(path, tmp_path / "results.json")
    assert min(official) > 0  # every statistic is defined (objects of each size), none is the -1 of "absent"
    assert list(result.metrics.values()) == pytest.approx(list(official), abs=1e-9)
    assert result.num_unread == 1
    # The records alone (crowd dropped, areas from boxes, the missing image gone) score differently.
    _fake_detect(monkeypatch)
    rebuilt = evaluate(model, cfg, replace(index, coco_file=None, unreadable_ids=[]), torch.device("cpu"))
    assert rebuilt.metrics["AP"] != pytest.approx(result.metrics["AP"], abs=1e-3)
    assert rebuilt.metrics["APs"] != pytest.approx(result.metrics["APs"], abs=1e-3)


def test_fcos_eval_of_a_coco_file_equals_pycocotools_on_the_file(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from fcos_cli import checkpoint
    from fcos_cli.cli import app

    path = _write_official_coco(tmp_path)
    model, cfg = _tiny_model()
    weights = checkpoint.save(tmp_path / "w.safetensors", model, WeightsInfo(cfg, ["a", "b", "c"]))
    _fake_detect(monkeypatch)
    result = CliRunner().invoke(app, ["eval", "-w", str(weights), "--data", str(path), "--device", "cpu",
                                      "--project", str(tmp_path / "runs"), "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    assert "1 image could not be read" in result.stdout
    out = tmp_path / "runs" / "exp"
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    official = _official_stats(path, out / "results.json")
    assert list(metrics.values()) == pytest.approx(list(official), abs=1e-9)
    # The diagnostics: files, the best-F1 line, and the confusion matrix as numbers (rows true, columns predicted).
    assert {"confidence_curves.png", "confusion_matrix.png", "pr_curve.png", "samples"} <= {p.name for p in out.iterdir()}
    assert len(list((out / "samples").glob("*.png"))) == 4
    saved = json.loads((out / "metrics.json").read_text())
    best = saved["best_f1"]["confidence"]
    assert best in {d[2] for *_, dets in OFFICIAL for d in dets}  # one of the scores, as results.json has it
    assert f"deploy with fcos predict --conf {math.floor(best * 1000 + 1e-9) / 1000:.3f}" in result.stdout
    confusion = np.array(saved["confusion_matrix"]["matrix"])
    assert saved["confusion_matrix"]["classes"] == ["a", "b", "c", "background"] and confusion.shape == (4, 4)
    non_crowd = sum(1 for _, _, anns, _ in OFFICIAL for *_, crowd in anns if not crowd)
    assert confusion[:3].sum() == non_crowd  # every true box once: found as some class, or missed
    assert [row["instances"] for row in saved["per_class"]] == [2, 3, 2]  # crowds apart; the missing image too
    assert "AP per class" in result.stdout and "instances" in result.stdout

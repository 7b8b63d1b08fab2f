"""COCO and YOLO loaders read the same boxes; their user mistakes are one clear error naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcos_cli.data import open_data
from fcos_cli.data.coco import load_coco
from fcos_cli.data.yolo import load_yolo
from fcos_cli.errors import UserError

IMAGES = {  # name: ((width, height), [(x0, y0, x1, y1, label), ...])
    "a.jpg": ((320, 200), [(10, 20, 110, 120, 0), (200.5, 30, 300, 190.25, 2)]),
    "b.png": ((150, 400), [(5, 5, 145, 395, 1)]),
    "c.jpg": ((256, 256), []),
}
NAMES = ["cat", "dog", "bird"]
CATEGORY_IDS = [3, 7, 90]


def write_both(root: Path) -> tuple[Path, Path]:
    (root / "coco" / "images").mkdir(parents=True)
    (root / "yolo" / "images" / "train").mkdir(parents=True)
    (root / "yolo" / "labels" / "train").mkdir(parents=True)
    images, annotations = [], []
    for i, (name, ((w, h), objects)) in enumerate(sorted(IMAGES.items())):
        Image.new("RGB", (w, h), (90, 90, 90)).save(root / "coco" / "images" / name)
        Image.new("RGB", (w, h), (90, 90, 90)).save(root / "yolo" / "images" / "train" / name)
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        lines = []
        for x0, y0, x1, y1, label in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": CATEGORY_IDS[label],
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
            lines.append(f"{label} {(x0 + x1) / 2 / w:.8f} {(y0 + y1) / 2 / h:.8f} {(x1 - x0) / w:.8f} {(y1 - y0) / h:.8f}")
        if lines:
            (root / "yolo" / "labels" / "train" / Path(name).with_suffix(".txt")).write_text("\n".join(lines) + "\n")
    annotations.append({"id": 99, "image_id": 1, "category_id": 7, "bbox": [0, 0, 50, 50], "iscrowd": 1})
    categories = [{"id": c, "name": n} for c, n in zip(CATEGORY_IDS, NAMES, strict=True)][::-1]  # order must not matter
    coco = root / "coco" / "train.json"
    coco.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    data_yaml = root / "yolo" / "data.yaml"
    data_yaml.write_text("path: .\ntrain: images/train\nval: images/train\nnames:\n  0: cat\n  1: dog\n  2: bird\n")
    return coco, data_yaml


def test_coco_and_yolo_agree(tmp_path: Path) -> None:
    coco_path, yolo_path = write_both(tmp_path)
    coco, yolo = load_coco(coco_path), load_yolo(yolo_path)
    assert coco.class_names == yolo.class_names == NAMES
    assert coco.category_ids == CATEGORY_IDS
    assert [r.path.name for r in coco.records] == [r.path.name for r in yolo.records] == sorted(IMAGES)
    for c, y in zip(coco.records, yolo.records, strict=True):
        expected = IMAGES[c.path.name][1]
        np.testing.assert_allclose(c.boxes, np.array([o[:4] for o in expected], np.float32).reshape(-1, 4))
        np.testing.assert_allclose(y.boxes, c.boxes, atol=1e-3)  # crowd box ignored in COCO
        assert c.labels.tolist() == y.labels.tolist() == [o[4] for o in expected]
    assert len(coco.records[2].boxes) == 0  # the negative image is kept


def test_val_fraction_splits_a_single_coco_file(tmp_path: Path) -> None:
    coco_path, _ = write_both(tmp_path)
    train, val = open_data(coco_path, val_fraction=0.34, seed=1)
    assert len(train.records) == 2 and len(val.records) == 1
    assert {r.image_id for r in train.records}.isdisjoint(r.image_id for r in val.records)


def test_boxes_outside_the_image_are_clipped_and_empty_ones_counted(tmp_path: Path) -> None:
    coco_path, yolo_path = write_both(tmp_path)
    data = json.loads(coco_path.read_text())
    data["annotations"] += [{"id": 50, "image_id": 1, "category_id": 3, "bbox": [300, 150, 100, 100], "iscrowd": 0},
                            {"id": 51, "image_id": 1, "category_id": 3, "bbox": [10, 10, 0, 5], "iscrowd": 0}]
    coco_path.write_text(json.dumps(data))
    index = load_coco(coco_path)
    assert index.records[0].boxes[-1].tolist() == [300, 150, 320, 200]
    assert index.skipped == {"boxes with zero or negative size": 1} and index.clipped == 1
    label = tmp_path / "yolo" / "labels" / "train" / "c.txt"
    label.write_text("0 0.5 0.5 0 0.2\n1 0.9 0.9 0.4 0.4\n")
    record = load_yolo(yolo_path).records[2]
    np.testing.assert_allclose(record.boxes, [[179.2, 179.2, 256, 256]], atol=1e-3)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("categories"), "categories"),
    (lambda d: d["annotations"].append({"id": 77, "image_id": 1, "category_id": 5, "bbox": [0, 0, 9, 9]}),
     "category id 5"),
    (lambda d: d.update(images=[]), "no images"),
])
def test_coco_mistakes(tmp_path: Path, mutate, message: str) -> None:
    coco_path, _ = write_both(tmp_path)
    data = json.loads(coco_path.read_text())
    mutate(data)
    coco_path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=message) as error:
        load_coco(coco_path)
    assert str(coco_path) in str(error.value)


def test_coco_not_json_and_images_missing(tmp_path: Path) -> None:
    coco_path, _ = write_both(tmp_path)
    (coco_path.parent / "images").rename(tmp_path / "moved")
    with pytest.raises(UserError, match="--images"):
        load_coco(coco_path)
    assert len(load_coco(coco_path, images_dir=tmp_path / "moved").records) == 3
    coco_path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_coco(coco_path)


@pytest.mark.parametrize("line, message", [("0 0.5 0.5 0.2", "expected 'class cx cy w h'"),
                                           ("3 0.5 0.5 0.2 0.2", "not in 0..2")])
def test_yolo_bad_label_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    _, yolo_path = write_both(tmp_path)
    label = tmp_path / "yolo" / "labels" / "train" / "c.txt"
    label.write_text("\n" + line + "\n")
    with pytest.raises(UserError, match=message) as error:
        load_yolo(yolo_path)
    assert f"{label}:2" in str(error.value)


def test_yolo_names_from_classes_txt_and_missing_split(tmp_path: Path) -> None:
    _, yolo_path = write_both(tmp_path)
    yolo_path.write_text("train: images/train\n")
    (yolo_path.parent / "classes.txt").write_text("cat\ndog\nbird\n")
    assert load_yolo(yolo_path.parent).class_names == NAMES
    with pytest.raises(UserError, match="'val'"):
        load_yolo(yolo_path, "val")

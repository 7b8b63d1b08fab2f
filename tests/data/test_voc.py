"""Pascal VOC through the format table: a root or an ImageSets file, 1-based boxes, difficult objects as crowds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fcos_cli import checkpoint
from fcos_cli.cli import app
from fcos_cli.data import format_of, open_data, open_split
from fcos_cli.engine.evaluate import coco_metrics

# id: ((width, height), [(name, xmin, ymin, xmax, ymax, difficult), ...]) in VOC's 1-based pixels
IMAGES = {
    "2008_000001": ((96, 64), [("dog", 11, 6, 50, 40, 0), ("person", 60, 10, 90, 60, 1)]),
    "2008_000002": ((80, 80), [("cat", 1, 1, 80, 80, 0)]),
    "2008_000003": ((64, 96), [("dog", 5, 5, 30, 40, 0), ("dog", 35, 50, 60, 90, 1)]),
}
SPLITS = {"train": ["2008_000001", "2008_000002"], "val": ["2008_000003"]}
NAMES = ["cat", "dog", "person"]  # sorted over every annotation file


def write_voc(root: Path) -> Path:
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / folder).mkdir(parents=True)
    for image_id, ((w, h), objects) in IMAGES.items():
        Image.new("RGB", (w, h), (120, 90, 60)).save(root / "JPEGImages" / f"{image_id}.jpg")
        xml = "".join(f"<object><name>{n}</name><pose>Left</pose><truncated>0</truncated>"
                      f"<difficult>{d}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
                      f"<ymax>{y1}</ymax></bndbox></object>" for n, x0, y0, x1, y1, d in objects)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename><size><width>{w}</width>"
            f"<height>{h}</height><depth>3</depth></size><segmented>0</segmented>{xml}</annotation>")
    for split, ids in SPLITS.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    return write_voc(tmp_path_factory.mktemp("VOC2012"))


def test_boxes_labels_and_class_names(voc: Path) -> None:
    index = open_split(voc, "train")
    assert index.class_names == NAMES and index.category_ids == [1, 2, 3]
    first, second = index.records
    assert (first.path, first.width, first.height) == (voc / "JPEGImages" / "2008_000001.jpg", 96, 64)
    # 1-based to 0-based: xmin and ymin lose one pixel, xmax and ymax stay (detectron2 / mmdet).
    np.testing.assert_array_equal(first.boxes, [[10, 5, 50, 40]])
    assert first.labels.tolist() == [1]
    np.testing.assert_array_equal(first.crowd_boxes, [[59, 9, 90, 60]])  # difficult: not trained on
    assert first.crowd_labels.tolist() == [2]
    np.testing.assert_array_equal(second.boxes, [[0, 0, 80, 80]])
    assert second.labels.tolist() == [0] and len(second.crowd_boxes) == 0


def test_root_carries_its_val_split_and_an_imagesets_file_is_one_split(voc: Path) -> None:
    listing = voc / "ImageSets" / "Main" / "val.txt"
    assert format_of(voc).name == format_of(listing).name == "voc"
    train, val = open_data(voc)
    assert [r.path.stem for r in train.records] == SPLITS["train"]
    assert [r.path.stem for r in val.records] == SPLITS["val"] and val.class_names == NAMES
    only, none = open_data(listing)
    assert [r.path.stem for r in only.records] == SPLITS["val"] and none is None


def test_difficult_objects_are_ignored_in_evaluation(voc: Path) -> None:
    """A detection on a difficult box is neither right nor wrong, and missing one costs no recall."""
    val = open_split(voc, "val")
    image_id = val.records[0].image_id
    normal = {"image_id": image_id, "category_id": 2, "bbox": [4, 4, 26, 36], "score": 0.5}
    on_difficult = {"image_id": image_id, "category_id": 2, "bbox": [34, 49, 26, 41], "score": 0.9}
    assert coco_metrics(val, [normal]).metrics["AP"] == pytest.approx(1.0)  # a missed real box would halve recall
    assert coco_metrics(val, [on_difficult, normal]).metrics["AP"] == pytest.approx(1.0)  # no false positive


def test_trains_from_a_voc_root(voc: Path, tmp_path: Path) -> None:
    args = ["train", "--data", str(voc), "--backbone", "test_resnet", "--no-pretrained", "--img-size", "64",
            "--fpn-channels", "32", "--head-convs", "1", "--batch-size", "2", "--workers", "0", "--optimizer",
            "adamw", "--epochs", "1", "--project", str(tmp_path), "--name", "voc"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "mAP50" in result.output  # evaluated on ImageSets/Main/val.txt
    info = checkpoint.read_info(tmp_path / "voc" / "best.safetensors")
    assert info.class_names == NAMES and info.config.data.train == str(voc)

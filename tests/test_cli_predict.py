"""`fcos predict`: folders with bad files, converted image modes, boxes in original pixels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fcos_cli.cli import app

runner = CliRunner()


def test_folder_with_bad_files_predicts_the_good_ones(overfit, tmp_path: Path) -> None:
    result, root = overfit
    source = tmp_path / "in"
    (source / "nested").mkdir(parents=True)
    images = sorted((root / "images").glob("train_*.jpg"))
    shutil.copy(images[0], source / "a.jpg")
    shutil.copy(images[1], source / "nested" / "b.jpg")
    Image.open(images[2]).convert("L").save(source / "gray.png")
    Image.open(images[3]).convert("RGBA").save(source / "rgba.png")
    (source / "corrupt.jpg").write_bytes(images[0].read_bytes()[:300])
    (source / "notes.txt").write_text("not an image")
    out = runner.invoke(app, ["predict", str(source), "-w", str(result.best), "--conf", "0.05",
                              "--project", str(tmp_path / "runs"), "--name", "p"])
    assert out.exit_code == 0, out.output
    assert "corrupt.jpg" in out.output and "notes.txt" in out.output and "2 files skipped" in out.output
    run = tmp_path / "runs" / "p"
    drawn = sorted(p.relative_to(run).as_posix() for p in run.rglob("*.*g"))
    assert drawn == ["a.jpg", "gray.png", "nested/b.jpg", "rgba.png"]  # each at its own path, in its own format
    predictions = json.loads((run / "predictions.json").read_text())
    per_file = {Path(p["file_name"]).name: 0 for p in predictions}
    for p in predictions:
        per_file[Path(p["file_name"]).name] += 1
    assert set(per_file) == {"a.jpg", "b.jpg", "gray.png", "rgba.png"}
    assert min(per_file.values()) >= 10, per_file
    assert {p["category_id"] for p in predictions} <= {1, 2, 3}


def test_boxes_of_a_twice_larger_image_are_twice_larger(overfit, tmp_path: Path) -> None:
    result, root = overfit
    image = Image.open(sorted((root / "images").glob("train_*.jpg"))[0])
    image.save(tmp_path / "small.png")
    image.resize((image.width * 2, image.height * 2), Image.BILINEAR).save(tmp_path / "large.png")
    out = runner.invoke(app, ["predict", str(tmp_path / "*.png"), "-w", str(result.best), "--conf", "0.3",
                              "--project", str(tmp_path / "runs"), "--no-save-images"])
    assert out.exit_code == 0, out.output
    predictions = json.loads((tmp_path / "runs" / "exp" / "predictions.json").read_text())
    small = np.array([p["bbox"] for p in predictions if p["file_name"].endswith("small.png")][:10])
    large = np.array([p["bbox"] for p in predictions if p["file_name"].endswith("large.png")])
    assert len(small) >= 3 and len(large) >= len(small)
    for box in small * 2:  # each confident box has its twice-larger twin (order may differ on near-ties)
        error = np.abs(large - box).max(axis=1).min()
        assert error <= 4.0 + 0.05 * box[2:].max(), (box, error)


def test_no_images_or_no_weights_is_one_line_error(overfit, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    out = runner.invoke(app, ["predict", str(tmp_path), "-w", str(overfit[0].best), "--project", str(tmp_path)])
    assert out.exit_code == 2 and "no images in" in out.output and "Traceback" not in out.output
    out = runner.invoke(app, ["predict", str(tmp_path), "-w", str(tmp_path / "none.safetensors")])
    assert out.exit_code == 2 and "does not exist" in out.output.replace("\n", " ")


def _yolo_boxes(labels: Path, images: dict[str, Path], tmp_path: Path) -> dict[str, np.ndarray]:
    """The boxes of --save-txt files read back through our own YOLO loader: file name -> (N, 4) xyxy px."""
    from fcos_cli.data.yolo import load_yolo

    root = tmp_path / "readback"
    for name, image in images.items():
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, root / "images" / name)
    shutil.copytree(labels, root / "labels")
    (root / "data.yaml").write_text("path: .\ntrain: images\nval: images\nnames: [ellipse, rectangle, triangle]\n")
    index = load_yolo(root / "data.yaml")
    return {r.path.relative_to(root / "images").as_posix(): r.boxes for r in index.records}


def test_outputs_mirror_the_inputs_and_never_collide(overfit, tmp_path: Path) -> None:
    """imgs/a/x.jpg, imgs/b/x.jpg and imgs/x.png: three annotated files at their own paths in their own formats,
    three files in predictions.json, and YOLO labels that read back as the same boxes."""
    result, root = overfit
    train = sorted((root / "images").glob("train_*.jpg"))
    source = tmp_path / "imgs"
    inputs = {"a/x.jpg": train[0], "b/x.jpg": train[2], "x.png": train[3]}  # train[1] has no objects
    for name, image in inputs.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        Image.open(image).save(source / name)
    out = runner.invoke(app, ["predict", str(source), "-w", str(result.best), "--conf", "0.3", "--save-txt",
                              "--project", str(tmp_path / "runs"), "--name", "p"])
    assert out.exit_code == 0, out.output
    run = tmp_path / "runs" / "p"
    for name, fmt in (("a/x.jpg", "JPEG"), ("b/x.jpg", "JPEG"), ("x.png", "PNG")):
        with Image.open(run / name) as drawn:
            assert drawn.format == fmt and drawn.size == Image.open(source / name).size
    predictions = json.loads((run / "predictions.json").read_text())
    assert {p["file_name"] for p in predictions} == set(inputs)
    assert sorted(p.relative_to(run / "labels").as_posix() for p in (run / "labels").rglob("*.txt")) == \
        ["a/x.txt", "b/x.txt", "x.txt"]
    read_back = _yolo_boxes(run / "labels", {n: source / n for n in inputs}, tmp_path)
    for name in inputs:
        written = np.array([p["bbox"] for p in predictions if p["file_name"] == name]).reshape(-1, 4)
        written[:, 2:] += written[:, :2]  # xywh -> xyxy
        assert len(written) >= 3, name
        np.testing.assert_allclose(read_back[name], written, atol=0.02)


def test_classes_crops_and_scores_in_labels(overfit, tmp_path: Path) -> None:
    result, root = overfit
    source = tmp_path / "in"
    source.mkdir()
    for image in sorted((root / "images").glob("train_*.jpg"))[::3]:  # two with ellipses
        shutil.copy(image, source / image.name)
    out = runner.invoke(app, ["predict", str(source), "-w", str(result.best), "--conf", "0.3", "--classes", "0",
                              "--save-txt", "--save-conf", "--save-crop", "--hide-conf", "--line-width", "1",
                              "--project", str(tmp_path / "runs"), "--name", "p"])
    assert out.exit_code == 0, out.output
    run = tmp_path / "runs" / "p"
    predictions = json.loads((run / "predictions.json").read_text())
    assert predictions and {p["category_id"] for p in predictions} == {1}  # class 0, ellipse
    lines = [line.split() for f in (run / "labels").glob("*.txt") for line in f.read_text().splitlines()]
    assert len(lines) == len(predictions) and all(len(v) == 6 and v[0] == "0" for v in lines)
    assert sorted(float(v[5]) for v in lines) == pytest.approx(sorted(p["score"] for p in predictions), abs=1e-4)
    crops = sorted((run / "crops").rglob("*.jpg"))
    assert len(crops) == len(predictions) and {c.relative_to(run / "crops").parts[0] for c in crops} == {"ellipse"}


def test_blank_image_has_no_warning_and_conf_zero_lowers_the_gate(overfit, tmp_path: Path) -> None:
    """No detections (--conf 0.9 on a grey image): the image is written as it is, without torchvision's "boxes
    doesn't contain any box" warning. --conf 0, below the weights' 0.05 gate, lowers it: more boxes than the
    gate lets through."""
    import warnings

    from fcos_cli import checkpoint
    from fcos_cli.engine.predict import predict

    result, _ = overfit
    Image.new("RGB", (200, 150), (128, 128, 128)).save(tmp_path / "blank.png")
    args = ["predict", str(tmp_path / "blank.png"), "-w", str(result.best), "--project", str(tmp_path / "runs")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = runner.invoke(app, [*args, "--name", "none", "--conf", "0.9"])
    assert out.exit_code == 0, out.output
    assert [str(w.message) for w in caught] == [] and "Warning" not in out.output
    assert json.loads((tmp_path / "runs" / "none" / "predictions.json").read_text()) == []
    assert (tmp_path / "runs" / "none" / "blank.png").is_file()
    out = runner.invoke(app, [*args, "--name", "zero", "--conf", "0", "--max-det", "5000", "--no-save-images", "--fp32"])
    assert out.exit_code == 0, out.output
    lowered = json.loads((tmp_path / "runs" / "zero" / "predictions.json").read_text())
    model, cfg, _ = checkpoint.load(result.best)
    cfg.post.max_detections = 5000
    assert cfg.post.score_thresh == 0.05
    gated = predict(model, cfg, [np.asarray(Image.open(tmp_path / "blank.png"))])[0]
    assert len(lowered) > len(gated["scores"]) + 100 and min(p["score"] for p in lowered) < gated["scores"].min()

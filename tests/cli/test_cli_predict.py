"""`fcos predict`: folders with bad files, converted image modes, boxes in original pixels, videos."""

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
    assert out.exit_code == 2 and "no images or videos in" in out.output and "Traceback" not in out.output
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


def _moving_video(path: Path, image: np.ndarray, num_frames: int, fps: float) -> None:
    """`image`'s demo shapes sliding right 5 px a frame (wrapping), written with OpenCV (MPEG-4 Part 2)."""
    import cv2

    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2  # the codec wants even sides
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for i in range(num_frames):
        writer.write(cv2.cvtColor(np.roll(image[:height, :width], 5 * i, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()


def _decoded(path: Path) -> tuple[list[np.ndarray], float]:
    """Every frame of a video (RGB) and its frame rate, read separately from `fcos predict`."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames = []
    while (read := capture.read())[0]:
        frames.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


def test_video_gives_an_annotated_video_and_the_detections_of_its_frames(overfit, tmp_path: Path) -> None:
    """A folder with a 24-frame video of moving demo shapes and an image: the annotated video has the input's frame
    count, rate and size; its JSON lines hold per frame what `fcos_cli.predict` finds on the frames decoded
    separately. --vid-stride 4 predicts frames 0, 4, ... into a video at a quarter of the rate."""
    import fcos_cli
    from fcos_cli.data.dataset import read_image

    result, root = overfit
    source = tmp_path / "in"
    source.mkdir()
    train = sorted((root / "images").glob("train_*.jpg"))
    _moving_video(source / "clip.mp4", read_image(train[3]), num_frames=24, fps=12.0)  # an ellipse, triangles ...
    shutil.copy(train[2], source / "still.jpg")
    args = ["predict", str(source), "-w", str(result.best), "--conf", "0.3", "--fp32", "--project", str(tmp_path)]
    out = runner.invoke(app, [*args, "--name", "all"])
    assert out.exit_code == 0, out.output
    assert "1 image and 24 frames of 1 video" in out.output and out.stderr == ""
    run = tmp_path / "all"
    frames, fps = _decoded(source / "clip.mp4")
    annotated, annotated_fps = _decoded(run / "clip.mp4")
    assert len(frames) == len(annotated) == 24 and fps == annotated_fps == 12.0
    assert annotated[0].shape == frames[0].shape and np.abs(annotated[0].astype(int) - frames[0]).mean() > 0.5
    assert [p["file_name"] for p in json.loads((run / "predictions.json").read_text())][:1] == ["still.jpg"]

    lines = [json.loads(line) for line in (run / "clip.mp4.jsonl").read_text().splitlines()]
    assert [(line["frame"], line["time"]) for line in lines] == [(i, round(i / 12, 4)) for i in range(24)]
    model, cfg, _ = fcos_cli.load(result.best)
    reference = fcos_cli.predict(model, cfg, frames)
    for line, ref in zip(lines, reference, strict=True):
        keep = ref["scores"] >= 0.3
        boxes = np.array([d["bbox"] for d in line["detections"]]).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        assert [d["category_id"] for d in line["detections"]] == (ref["labels"][keep] + 1).tolist()
        np.testing.assert_allclose(boxes, ref["boxes"][keep].numpy(), atol=0.02)
        np.testing.assert_allclose([d["score"] for d in line["detections"]], ref["scores"][keep].numpy(), atol=1e-4)
    assert sum(len(line["detections"]) for line in lines) >= 3 * 24

    out = runner.invoke(app, ["predict", str(source / "clip.mp4"), *args[2:], "--name", "stride", "--vid-stride",
                              "4", "--save-txt"])
    assert out.exit_code == 0, out.output
    strided = [json.loads(line) for line in (tmp_path / "stride" / "clip.mp4.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in strided] == [0, 4, 8, 12, 16, 20]
    assert strided == [lines[i] for i in range(0, 24, 4)]
    kept, kept_fps = _decoded(tmp_path / "stride" / "clip.mp4")
    assert len(kept) == 6 and kept_fps == 3.0
    labels = (tmp_path / "stride" / "labels" / "clip.mp4" / "000004.txt").read_text().splitlines()
    assert len(labels) == len(strided[1]["detections"]) >= 3


def test_batches_are_one_image_on_a_cpu_unless_asked(overfit, tmp_path: Path, monkeypatch) -> None:
    import fcos_cli.engine.predict as predict_module

    result, root = overfit
    batches: list[int] = []
    real = predict_module.predict

    def counted(model, cfg, images, batch_size=8, amp=False):
        batches.append(len(images))
        return real(model, cfg, images, batch_size, amp)

    monkeypatch.setattr(predict_module, "predict", counted)
    images = sorted((root / "images").glob("train_*.jpg"))[:5]
    assert len(images) >= 4
    for image in images:
        shutil.copy(image, tmp_path / image.name)
    for extra, expected in (([], [1] * len(images)), (["--batch-size", "3"], [3, len(images) - 3])):
        batches.clear()
        out = runner.invoke(app, ["predict", str(tmp_path / "*.jpg"), "-w", str(result.best), "--device", "cpu",
                                  "--project", str(tmp_path / "runs"), "--no-save-images", *extra])
        assert out.exit_code == 0, out.output
        assert batches == expected

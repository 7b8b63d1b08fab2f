"""`fcos predict`: folders with bad files, converted image modes, boxes in original pixels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
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
    assert sorted(p.name for p in run.glob("*.png")) == ["a.png", "b.png", "gray.png", "rgba.png"]
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

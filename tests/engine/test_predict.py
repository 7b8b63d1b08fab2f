"""`fcos_cli.predict` on in-memory images (no library warning reaches the user's output); `predict_files`
reading ahead and writing behind the model."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fcos_cli
import fcos_cli.engine.predict as predict_module
from fcos_cli.config import FCOSConfig, resolve
from fcos_cli.engine.predict import PredictOutputs, predict_files
from fcos_cli.model import build_model


def test_an_image_already_at_size_predicts_without_warnings() -> None:
    cfg = FCOSConfig()
    cfg.model.backbone.name, cfg.model.backbone.pretrained, cfg.model.num_classes = "test_resnet", False, 3
    cfg.data.img_size = 80
    resolve(cfg)
    model = build_model(cfg.model, load_pretrained=False)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the resize is a no-op here: PIL's read-only pixels reached torch
        detections = fcos_cli.predict(model, cfg, [image, np.asarray(image)])
    assert len(detections) == 2 and detections[0]["boxes"].shape[1] == 4


def _fake_detect(images: list[np.ndarray]) -> list[dict]:
    """One box per image, its width the image's: which detection went with which image shows in the output."""
    return [{"boxes": torch.tensor([[0.0, 0.0, float(im.shape[1]), 4.0]]), "scores": torch.tensor([0.9]),
             "labels": torch.tensor([0])} for im in images]


def test_files_read_ahead_and_written_behind_keep_their_pairing(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    widths = [40 + 8 * i for i in range(7)]
    for i, width in enumerate(widths):
        Image.new("RGB", (width, 24), (i * 30, 0, 0)).save(source / f"{i}.png")
    (source / "3b.jpg").write_bytes(b"not a jpeg")  # skipped in the middle of a batch, the run goes on
    files = sorted(source.iterdir())
    run = predict_files(_fake_detect, ["a"], files, tmp_path / "out", [1], batch_size=3,
                        outputs=PredictOutputs(save_txt=True))
    assert [p.name for p, _ in run.skipped] == ["3b.jpg"] and run.num_images == 7
    by_file = {r["file_name"]: r["bbox"][2] for r in run.results}
    assert by_file == {f"{i}.png": float(w) for i, w in enumerate(widths)}
    for i in range(7):  # every file written, and written from its own pixels
        assert Image.open(tmp_path / "out" / f"{i}.png").getpixel((20, 20))[0] in range(i * 30 - 3, i * 30 + 4)
        assert (tmp_path / "out" / "labels" / f"{i}.txt").read_text().startswith("0 0.5")


def test_a_failed_write_stops_the_run_with_its_error(tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for i in range(5):
        Image.new("RGB", (32, 24)).save(source / f"{i}.png")
    calls = []

    def full_disk(*args) -> None:
        calls.append(args[1])
        raise OSError(28, "No space left on device", str(args[1]))

    monkeypatch.setattr(predict_module, "write_outputs", full_disk)
    with pytest.raises(OSError, match="No space left"):
        predict_files(_fake_detect, ["a"], sorted(source.iterdir()), tmp_path / "out", [1], batch_size=1)
    assert not (tmp_path / "out" / "predictions.json").exists()  # no results file that looks complete
    assert len(calls) < 5  # it stopped early, not after every image


def test_read_ahead_yields_every_item_in_order_and_raises_where_the_source_did() -> None:
    def source():
        yield from range(5)
        raise ValueError("unreadable frame")

    seen = []
    with pytest.raises(ValueError, match="unreadable frame"):
        for item in predict_module._read_ahead(source()):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]

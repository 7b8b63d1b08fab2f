"""Output paths of `fcos predict`: relative to the source folder, unique even where names differ only in case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fcos_cli.engine.predict_outputs import PredictOutputs, relative_names, source_root, write_outputs


def test_names_keep_the_folder_structure_and_never_collide(tmp_path: Path) -> None:
    files = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg", tmp_path / "x.jpg", tmp_path / "X.JPG"]
    names = relative_names(files, tmp_path)
    assert [n.as_posix() for n in names] == ["a/x.jpg", "b/x.jpg", "x.jpg", "X_2.JPG"]
    assert source_root(str(tmp_path), files) == tmp_path
    assert source_root(str(tmp_path / "*.jpg"), files[2:]) == tmp_path  # a glob: the files' common folder


def test_crops_and_labels_of_one_image(tmp_path: Path) -> None:
    pixels = np.zeros((40, 60, 3), np.uint8)
    boxes = torch.tensor([[10.0, 5.0, 30.0, 25.0], [0.0, 0.0, 60.0, 40.0], [50.5, 10.0, 50.9, 10.2]])
    outputs = PredictOutputs(save_images=False, save_txt=True, save_crop=True)
    write_outputs(tmp_path, Path("d/img.png"), pixels, boxes, torch.tensor([0.9, 0.5, 0.3]), torch.tensor([1, 1, 0]),
                  ["cat", "dog"], outputs, set())
    assert (tmp_path / "labels" / "d" / "img.txt").read_text().splitlines() == [
        "1 0.333333 0.375000 0.333333 0.500000", "1 0.500000 0.500000 1.000000 1.000000",
        "0 0.845000 0.252500 0.006667 0.005000"]
    assert Image.open(tmp_path / "crops" / "dog" / "d" / "img.png").size == (20, 20)
    assert Image.open(tmp_path / "crops" / "dog" / "d" / "img_2.png").size == (60, 40)
    assert Image.open(tmp_path / "crops" / "cat" / "d" / "img.png").size == (1, 1)  # a sliver still gets a pixel

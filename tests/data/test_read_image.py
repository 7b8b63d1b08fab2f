"""Image reading: EXIF orientation applied, grey / palette / RGBA / 16-bit converted, corrupt files a UserError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcos_cli.data.dataset import read_image
from fcos_cli.errors import UserError


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255  # white left band of a 40-wide, 20-high image
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # stored as is, to be shown rotated 90 degrees clockwise
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    loaded = read_image(tmp_path / "rotated.jpg")
    assert loaded.shape == (40, 20, 3)
    assert loaded[:10].mean() > 200 and loaded[-10:].mean() < 50  # the band is now on top


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "I;16"])
def test_modes_are_converted_to_rgb_uint8(tmp_path: Path, mode: str) -> None:
    if mode == "I;16":
        image = Image.fromarray((np.arange(30 * 50, dtype=np.uint16).reshape(30, 50) * 40).astype(np.uint16))
    else:
        image = Image.new("RGB", (50, 30), (200, 100, 50)).convert(mode)
    image.save(tmp_path / "x.png")
    loaded = read_image(tmp_path / "x.png")
    assert loaded.shape == (30, 50, 3) and loaded.dtype == np.uint8
    if mode == "I;16":
        assert loaded.max() > 200  # scaled from 16 bits, not clipped to a white or black image
        assert loaded.min() < 10


def test_corrupt_image_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(UserError, match="bad.jpg"):
        read_image(tmp_path / "bad.jpg")

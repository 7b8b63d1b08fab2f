"""Image reading: EXIF orientation applied, grey / palette / RGBA / 16-bit converted, corrupt files a UserError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

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


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpegs_read_as_pil_shows_them(tmp_path: Path, orientation: int) -> None:
    """The JPEG decoder (OpenCV) gives PIL's pixels, every EXIF orientation applied as PIL applies it."""
    pixels = np.random.default_rng(orientation).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(tmp_path / "x.jpg", exif=exif, quality=90)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "x.jpg")).convert("RGB"))
    loaded = read_image(tmp_path / "x.jpg")
    np.testing.assert_array_equal(loaded, expected)
    assert loaded.flags.writeable and loaded.flags.c_contiguous


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grey_and_cmyk_jpegs_become_rgb(tmp_path: Path, mode: str) -> None:
    Image.new("RGB", (30, 20), (200, 100, 50)).convert(mode).save(tmp_path / "x.jpg", quality=95)
    expected = np.asarray(Image.open(tmp_path / "x.jpg").convert("RGB")).astype(int)
    difference = np.abs(read_image(tmp_path / "x.jpg").astype(int) - expected).max()
    assert difference <= (0 if mode == "L" else 1)  # CMYK to RGB rounds differently by one level


def test_a_truncated_jpeg_and_a_missing_file_are_user_errors(tmp_path: Path) -> None:
    Image.new("RGB", (64, 48), (10, 200, 30)).save(tmp_path / "full.jpg", quality=95)
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:400])
    with pytest.raises(UserError, match=r"cut\.jpg: a truncated or corrupt JPEG"):
        read_image(tmp_path / "cut.jpg")
    with pytest.raises(UserError, match="gone.jpg"):
        read_image(tmp_path / "gone.jpg")


def test_a_png_named_jpg_is_read_by_its_content(tmp_path: Path) -> None:
    Image.new("RGBA", (30, 20), (1, 2, 3, 4)).save(tmp_path / "x.jpg", format="PNG")
    assert read_image(tmp_path / "x.jpg")[0, 0].tolist() == [1, 2, 3]

"""Augmentation keeps boxes on their pixels: flip twice is the identity, the val resize maps back."""

from __future__ import annotations

import numpy as np
import pytest

from fcos_cli.data.transforms import build_transform


def _image_with_boxes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.zeros((300, 500, 3), dtype=np.uint8)
    boxes = np.array([[20, 30, 120, 200], [300, 100, 480, 160]], dtype=np.float32)
    for x0, y0, x1, y1 in boxes.astype(int):
        image[y0:y1, x0:x1] = 255
    return image, boxes, np.array([0, 2])


def test_flip_twice_is_identity_and_boxes_follow_pixels() -> None:
    image, boxes, labels = _image_with_boxes()
    flip = build_transform(250, train=True, hflip=1.0, color_jitter=False)
    once = flip(image=image, bboxes=boxes, labels=labels)
    for x0, y0, x1, y1 in np.asarray(once["bboxes"]).round().astype(int):  # white exactly under each box
        assert once["image"][y0 + 2:y1 - 2, x0 + 2:x1 - 2].min() > 200
    assert once["image"][:, :, 0].sum() == pytest.approx(image[:, :, 0].sum() / 4, rel=0.03)
    twice = flip(image=once["image"], bboxes=np.asarray(once["bboxes"]), labels=once["labels"])
    resized = build_transform(250, train=False)(image=image, bboxes=boxes, labels=labels)
    np.testing.assert_array_equal(twice["image"], resized["image"])
    np.testing.assert_allclose(np.asarray(twice["bboxes"]), np.asarray(resized["bboxes"]), atol=1e-3)
    assert [int(v) for v in twice["labels"]] == [0, 2]


def test_val_resize_maps_back_to_original_pixels() -> None:
    image, boxes, labels = _image_with_boxes()
    out = build_transform(160, train=False)(image=image, bboxes=boxes, labels=labels)
    height, width = out["image"].shape[:2]
    assert max(height, width) == 160
    scale = np.array([width / 500, height / 300] * 2)
    np.testing.assert_allclose(np.asarray(out["bboxes"]) / scale, boxes, atol=0.5)


def test_boxes_mostly_cut_off_are_dropped_not_kept_as_slivers() -> None:
    import albumentations as A

    from fcos_cli.data.transforms import MIN_VISIBILITY
    from fcos_cli.data.transforms import build_transform as build

    image, _, _ = _image_with_boxes()
    boxes = np.array([[0, 0, 100, 100], [240, 0, 340, 100]], dtype=np.float32)  # second is 40% left of x=280
    crop = A.Compose([A.Crop(0, 0, 280, 300)], bbox_params=build(300, train=False).processors["bboxes"].params)
    out = crop(image=image, bboxes=boxes, labels=np.array([1, 1]))
    assert MIN_VISIBILITY == 0.3 and len(out["bboxes"]) == 2  # 40% visible: kept, cut to its visible part
    assert np.asarray(out["bboxes"])[1, 2] == pytest.approx(280)
    out = crop(image=image, bboxes=np.array([[260, 0, 360, 100]], dtype=np.float32), labels=np.array([1]))
    assert len(out["bboxes"]) == 0  # 20% visible: dropped


def _random_sizes(count: int = 20) -> list[tuple[int, int]]:
    rng = np.random.default_rng(16)
    return [(int(w), int(h)) for w, h in rng.integers(40, 2200, size=(count, 2))]


def test_short_long_resize_gives_torchvisions_size() -> None:
    import torch
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    reference = GeneralizedRCNNTransform(min_size=800, max_size=1333, image_mean=[0.0] * 3, image_std=[1.0] * 3).eval()
    ours = build_transform(800, train=False, max_size=1333, rounding="floor")
    for width, height in _random_sizes():
        expected = tuple(reference([torch.zeros(3, height, width)])[0].image_sizes[0])  # (H, W)
        out = ours(image=np.zeros((height, width, 3), np.uint8), bboxes=np.zeros((0, 4)), labels=np.zeros(0))
        assert out["image"].shape[:2] == expected, (width, height)


def test_short_long_resize_gives_mmdetections_size() -> None:
    ours = build_transform(800, train=False, max_size=1333)
    rounded_differently = 0
    for width, height in _random_sizes():
        # mmcv.rescale_size, as mmdet's Resize(scale=(1333, 800), keep_ratio=True) calls it.
        scale = min(1333 / max(width, height), 800 / min(width, height))
        expected = int(height * scale + 0.5), int(width * scale + 0.5)
        out = ours(image=np.zeros((height, width, 3), np.uint8), bboxes=np.zeros((0, 4)), labels=np.zeros(0))
        assert out["image"].shape[:2] == expected, (width, height)
        rounded_differently += int(height * scale) != expected[0] or int(width * scale) != expected[1]
    assert rounded_differently >= 3  # the sizes really tell the two rounding rules apart


def test_short_long_resize_of_a_4_by_3_photo_keeps_boxes_on_their_pixels() -> None:
    image, boxes, labels = _image_with_boxes()  # 500 x 300
    out = build_transform(800, train=False, max_size=1333)(image=image, bboxes=boxes, labels=labels)
    assert out["image"].shape[:2] == (800, 1333)  # the short side would make it 1333.3 wide: the cap wins
    out = build_transform(800, train=False, max_size=1333)(image=np.zeros((480, 640, 3), np.uint8),
                                                           bboxes=boxes, labels=labels)
    assert out["image"].shape[:2] == (800, 1067)
    np.testing.assert_allclose(np.asarray(out["bboxes"]), boxes * np.array([1067 / 640, 800 / 480] * 2), rtol=1e-5)


def test_crop_zooms_in_and_keeps_every_box_on_its_pixels() -> None:
    image = np.zeros((300, 500, 3), dtype=np.uint8)
    boxes, labels = np.array([[200, 100, 260, 180], [280, 150, 320, 200]], dtype=np.float32), np.array([0, 2])
    for x0, y0, x1, y1 in boxes.astype(int):
        image[y0:y1, x0:x1] = 255
    crop = build_transform(250, train=True, hflip=0.0, color_jitter=False, crop=1.0)
    zooms = []
    for seed in range(8):
        crop.set_random_seed(seed)
        out = crop(image=image, bboxes=boxes, labels=labels)
        assert max(out["image"].shape[:2]) == 250 and [int(v) for v in out["labels"]] == [0, 2]
        out_boxes = np.asarray(out["bboxes"])
        for x0, y0, x1, y1 in out_boxes.round().astype(int):  # white exactly under each box
            assert out["image"][y0 + 2:y1 - 2, x0 + 2:x1 - 2].min() > 200
        zooms.append((out_boxes[0, 2] - out_boxes[0, 0]) / (60 * 250 / 500))  # box width / after a plain resize
    assert min(zooms) >= 1 - 1e-3 and sum(z > 1.2 for z in zooms) >= 4
    plain = build_transform(250, train=True, hflip=0.0, color_jitter=False)
    assert len(plain.transforms) == 1  # crop 0: no crop step at all

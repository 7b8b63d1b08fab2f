"""Our torchvision preset on timm's resnet50 equals torchvision's FCOS: head, matching, losses, detections."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models.detection.image_list import ImageList

from fcos_cli.compat import from_torchvision_state_dict
from fcos_cli.config import preset
from fcos_cli.head_outputs import flatten_levels, unflatten_levels
from fcos_cli.inspect_targets import explain_image
from fcos_cli.model import build_model
from fcos_cli.pipeline import detections_for, loss_for, points_for, targets_for

NUM_CLASSES = 91
TOL = dict(rtol=1e-4, atol=1e-4)
BOXES = torch.tensor([
    [40.0, 30.0, 1080.0, 780.0],  # P7: max(l,t,r,b) > 512 near its centre
    [100.0, 100.0, 800.0, 600.0],  # P6
    [700.0, 120.0, 1000.0, 370.0],  # P5
    [850.0, 500.0, 1000.0, 620.0],  # P4
    [300.0, 500.0, 420.0, 620.0],  # A: A and B share points on P4 (A is smaller and must win)
    [310.0, 505.0, 430.0, 640.0],  # B
    [60.0, 650.0, 100.0, 700.0],  # P3
    [500.5, 700.25, 531.0, 733.75],  # P3, off-grid corners
])
LABELS = torch.tensor([1, 5, 17, 3, 7, 9, 90, 0])


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    tv = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None,
                                                        num_classes=NUM_CLASSES).eval()
    tv.score_thresh = 0.0
    cfg = preset("torchvision")
    cfg.model.num_classes = NUM_CLASSES
    cfg.post.score_thresh = 0.0
    ours = build_model(cfg.model).eval()
    state, unused = from_torchvision_state_dict(tv.state_dict())
    assert not unused
    ours.load_state_dict(state, strict=True)
    return tv, ours, cfg


def _torchvision_forward(tv, images: torch.Tensor):
    """torchvision's FCOS.forward minus resizing: normalise, pad to 32, backbone, head, anchors."""
    sizes = [tuple(img.shape[-2:]) for img in images]
    batched = tv.transform.batch_images([tv.transform.normalize(img) for img in images], size_divisible=32)
    image_list = ImageList(batched, sizes)
    features = list(tv.backbone(batched).values())
    head_outputs = tv.head(features)
    anchors = tv.anchor_generator(image_list, features)
    return head_outputs, anchors, [f.shape[2] * f.shape[3] for f in features], sizes


def _torchvision_matching(tv, targets, head_outputs, anchors, num_per_level):
    captured = {}
    original = tv.head.compute_loss

    def capture(targets, head_outputs, anchors, matched_idxs):
        captured["matched"] = torch.stack(matched_idxs)
        return original(targets, head_outputs, anchors, matched_idxs)

    tv.head.compute_loss = capture
    try:
        losses = tv.compute_loss(targets, head_outputs, anchors, num_per_level)
    finally:
        tv.head.compute_loss = original
    return losses, captured["matched"]


@pytest.mark.parametrize("height,width", [(800, 1100), (517, 731)])
def test_matches_torchvision(models, height: int, width: int) -> None:
    tv, ours, cfg = models
    torch.manual_seed(1)
    images = torch.rand(2, 3, height, width)
    with torch.no_grad():
        tv_out, anchors, num_per_level, sizes = _torchvision_forward(tv, images)
        our_out = ours(images)

    # 1. Head outputs.
    cls, box, ctr = flatten_levels(our_out)
    torch.testing.assert_close(cls, tv_out["cls_logits"], **TOL)
    torch.testing.assert_close(box, tv_out["bbox_regression"], **TOL)
    torch.testing.assert_close(ctr, tv_out["bbox_ctrness"].squeeze(2), **TOL)

    # 2. Points equal torchvision's anchor centres, its odd P6/P7 spacing included.
    level_sizes = [tuple(c.shape[-2:]) for c in our_out.cls_logits]
    points = points_for(our_out, ours.strides, cfg)
    torch.testing.assert_close(points.xy, (anchors[0][:, :2] + anchors[0][:, 2:]) / 2, rtol=0, atol=0)

    # 3. Matching and losses on identical head outputs; image 1 has no boxes.
    keep = (BOXES[:, 2] <= width) & (BOXES[:, 3] <= height)
    gt_boxes, gt_labels = [BOXES[keep], torch.zeros(0, 4)], [LABELS[keep], torch.zeros(0, dtype=torch.long)]
    targets = [{"boxes": b, "labels": lb} for b, lb in zip(gt_boxes, gt_labels, strict=True)]
    tv_losses, tv_matched = _torchvision_matching(tv, targets, tv_out, anchors, num_per_level)
    shared = unflatten_levels(tv_out["cls_logits"], tv_out["bbox_regression"], tv_out["bbox_ctrness"].squeeze(2),
                              level_sizes)
    assigned = targets_for(points, gt_boxes, gt_labels, cfg)
    assert torch.equal(assigned.matched, tv_matched)
    explained = explain_image("0", points, gt_boxes[0], gt_labels[0], NUM_CLASSES, cfg.targets)
    assert torch.equal(explained.matched, tv_matched[0])  # inspect-targets explains torchvision's own matching
    assert len(explained.positives) == int((tv_matched[0] >= 0).sum())
    assert (assigned.matched[1] == -1).all()
    our_losses = loss_for(shared, ours.strides, gt_boxes, gt_labels, cfg)
    torch.testing.assert_close(our_losses.cls, tv_losses["classification"], **TOL)
    torch.testing.assert_close(our_losses.box, tv_losses["bbox_regression"], **TOL)
    torch.testing.assert_close(our_losses.centerness, tv_losses["bbox_ctrness"], **TOL)
    if height == 800:  # the full box set: positives on every level and a contested point
        level_of_point = torch.repeat_interleave(torch.arange(len(num_per_level)), torch.tensor(num_per_level))
        assert set(level_of_point[assigned.matched[0] >= 0].tolist()) == {0, 1, 2, 3, 4}
        alone = [targets_for(points, [BOXES[i:i + 1]], [LABELS[i:i + 1]], cfg).matched[0] >= 0 for i in (4, 5)]
        contested = alone[0] & alone[1]
        assert contested.any() and (assigned.matched[0][contested] == 4).all()

    # 4. Detections, score threshold 0 in both.
    split_out = {k: list(v.split(num_per_level, dim=1)) for k, v in tv_out.items()}
    split_anchors = [list(a.split(num_per_level)) for a in anchors]
    tv_dets = tv.postprocess_detections(split_out, split_anchors, sizes)
    our_dets = detections_for(our_out, ours.strides, sizes, cfg)
    for tv_det, our_det in zip(tv_dets, our_dets, strict=True):
        assert len(our_det["boxes"]) >= 100
        torch.testing.assert_close(our_det["boxes"], tv_det["boxes"], **TOL)
        torch.testing.assert_close(our_det["scores"], tv_det["scores"], **TOL)
        assert torch.equal(our_det["labels"], tv_det["labels"])

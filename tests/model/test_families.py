"""One timm model per family trains a step and detects: conv nets, NHWC transformers, and plain ViTs via the
simple pyramid. Presets and head/FPN units are in test_model_sweep.py; GPU (fp16) checks at the bottom."""

from __future__ import annotations

import pytest
import timm
import torch

from fcos_cli.config import preset
from fcos_cli.metadata import WeightsInfo
from fcos_cli.model import build_model
from fcos_cli.pipeline import detections_for, loss_for

B, H, W = 2, 120, 150  # not multiples of 32 (nor of 16 or swin's window): the model pads to 128 x 160

# name -> the timm model class it is, as timm builds it (features_only wraps it in FeatureListNet or
# FeatureGetterNet, so the family is read from a meta-device build of the plain model).
FAMILIES = {
    "test_resnet": "ResNet",
    "regnetx_002": "RegNet",  # 2.3 M parameters: the smallest RegNet
    "test_efficientnet": "EfficientNet",
    "mobilenetv3_small_050": "MobileNetV3",
    "test_convnext": "ConvNeXt",
    "swin_tiny_patch4_window7_224": "SwinTransformer",  # NHWC out, window 7 on a 32 x 40 grid (padded inside)
    "test_vit": "VisionTransformer",  # single stride 16: simple feature pyramid
    "cspresnet50": "CspNet",  # no test_ variant: 20 M parameters, still ~1 s per step at this size
    "test_byobnet": "ByobNet",
    "test_nfnet": "NormFreeNet",
    "test_mambaout": "MambaOut",  # NHWC out
    "hgnetv2_b0": "HighPerfGpuNet",
    "ghostnet_100": "GhostNet",
    "efficientvit_b0": "EfficientVit",
    "pvt_v2_b0": "PyramidVisionTransformerV2",
    "hrnet_w18_small": "HighResolutionNet",  # its features_only net adds incre/downsamp layers of its own
}
NHWC = {"swin_tiny_patch4_window7_224", "test_mambaout"}
PYRAMID = {"test_vit"}


def _config(backbone: str):
    cfg = preset("improved")
    cfg.model.num_classes = 3
    cfg.model.backbone.name = backbone
    cfg.model.fpn.out_channels, cfg.model.head.num_groups, cfg.model.head.num_convs = 32, 8, 2
    cfg.post.score_thresh = 0.0  # an untrained head scores ~0.01: keep every candidate to check the boxes
    return cfg


def _ground_truth():
    boxes = [torch.tensor([[10.0, 12.0, 40.0, 50.0], [50.0, 20.0, 140.0, 110.0]]),
             torch.tensor([[5.0, 5.0, 25.0, 20.0], [30.0, 30.0, 100.0, 90.0]])]
    return boxes, [torch.tensor([0, 2]), torch.tensor([1, 1])]


def test_families_are_distinct_timm_classes():
    with torch.device("meta"):  # no weights allocated
        classes = {name: type(timm.create_model(name)).__name__ for name in FAMILIES}
    assert classes == FAMILIES
    assert len(set(classes.values())) >= 8


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_trains_a_step_and_detects(name):
    torch.manual_seed(0)
    cfg = _config(name)
    model = build_model(cfg.model)
    backbone = model.backbone
    assert backbone.strides == [8, 16, 32]
    assert backbone.nhwc == (name in NHWC)
    assert (backbone.pyramid is not None) == (name in PYRAMID)

    model.train()
    images = torch.rand(B, 3, H, W)
    outputs = model(images)
    for level, stride in enumerate(model.strides):  # padded 128 x 160, ceil for P6/P7
        assert outputs.cls_logits[level].shape[-2:] == (-(-128 // stride), -(-160 // stride))
    gt_boxes, gt_labels = _ground_truth()
    losses = loss_for(outputs, model.strides, gt_boxes, gt_labels, cfg)
    for term in ("cls", "box", "centerness", "total"):
        assert torch.isfinite(getattr(losses, term)), term
    losses.total.backward()
    grads = [p.grad for p in backbone.body.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0  # the loss reaches the timm body (through the pyramid too)
    if backbone.pyramid is not None:
        assert all(p.grad is not None and p.grad.abs().sum() > 0
                   for p in backbone.pyramid.parameters() if p.ndim > 1)

    model.eval()
    with torch.no_grad():
        detections = detections_for(model(images), model.strides, [(H, W)] * B, cfg)
    for det in detections:
        boxes = det["boxes"]
        assert boxes.shape[0] > 0 and torch.isfinite(boxes).all()
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= W).all() and (boxes[:, 3] <= H).all()
        assert (boxes[:, :2] <= boxes[:, 2:]).all()


# ---- GPU: deselected by the README's test command (`-m "not cuda"`), run where a CUDA GPU is present ----


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["test_resnet", "test_vit"])
def test_fp16_autocast_step_with_grad_scaler(name):
    device = torch.device("cuda")
    torch.manual_seed(0)
    cfg = _config(name)
    model = build_model(cfg.model).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10)
    gt_boxes, gt_labels = _ground_truth()
    gt_boxes, gt_labels = [b.to(device) for b in gt_boxes], [lb.to(device) for lb in gt_labels]
    before = [p.detach().clone() for p in model.backbone.body.parameters()]
    for _ in range(3):  # GradScaler skips a step whose fp16 gradients overflow, then lowers its scale
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            outputs = model(torch.rand(B, 3, H, W, device=device))
        assert outputs.cls_logits[0].dtype == torch.float16  # autocast really ran the convs in half
        losses = loss_for(outputs, model.strides, gt_boxes, gt_labels, cfg)
        assert losses.total.dtype == torch.float32 and torch.isfinite(losses.total)
        scaler.scale(losses.total).backward()
        scaler.step(optimizer)
        scaler.update()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, model.backbone.body.parameters(), strict=True))


@pytest.mark.cuda
def test_predict_half_on_cuda(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from fcos_cli import checkpoint
    from fcos_cli.cli import app

    torch.manual_seed(0)
    cfg = _config("test_resnet")
    cfg.data.img_size = 160
    weights = checkpoint.save(tmp_path / "w.safetensors", build_model(cfg.model),
                              WeightsInfo(cfg, ["a", "b", "c"]))
    Image.new("RGB", (150, 120), (120, 60, 30)).save(tmp_path / "img.png")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "img.png"), "-w", str(weights), "--half",
                                      "--device", "cuda", "--conf", "0", "--project", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "exp" / "predictions.json").is_file()

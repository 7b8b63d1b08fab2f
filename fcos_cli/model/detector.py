"""FCOS: 0-1 images -> raw per-level head outputs (no loss, no NMS); `build_model` from config; `check_backbone`
(a full FCOS on a timm model, run once: the shapes `fcos backbones --check` shows)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig, group_count
from ..errors import UserError
from ..head_outputs import HeadOutputs
from .backbone import Backbone
from .fpn import FPN
from .head import FCOSHead

__all__ = ["FCOS", "build_model"]


class FCOS(nn.Module):
    """Backbone -> FPN -> shared head.

    Takes images (B, 3, H, W) RGB with values in 0-1 (any H, W): normalises them with the backbone's
    mean/std (RGB, 0-1 units), reverses the channels for a BGR-trained backbone (`bgr`), then pads
    right/bottom with zeros to a multiple of `size_divisor`, as torchvision does after normalisation.
    Returns `HeadOutputs`, per-level lists of (B, C, H_l, W_l).
    """

    def __init__(self, backbone: Backbone, fpn: FPN, head: FCOSHead, strides: list[int],
                 size_divisor: int = 32, bgr: bool = False) -> None:
        super().__init__()
        self.backbone, self.fpn, self.head = backbone, fpn, head
        self.strides = strides
        self.size_divisor = size_divisor
        self.bgr = bgr
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> HeadOutputs:
        x = (images - self.mean) / self.std
        if self.bgr:  # caffe-trained weights: after normalising, so padding (at the mean) still becomes 0
            x = x.flip(1)
        h, w = x.shape[-2:]
        d = self.size_divisor
        x = F.pad(x, (0, (d - w % d) % d, 0, (d - h % d) % d))
        return self.head(self.fpn(self.backbone(x)))

    def set_grad_checkpointing(self, enable: bool = True) -> bool:
        """Recompute activations in backward instead of keeping them: the backbone's stages where timm supports
        it and the head towers. Returns whether the backbone supports it (the head always does)."""
        self.head.grad_checkpointing = enable
        return self.backbone.set_grad_checkpointing(enable)


def build_model(cfg: ModelConfig, load_pretrained: bool = True, backbone_trained: bool | None = None) -> FCOS:
    """Build an FCOS from the model part of the config (random head; backbone per its config).

    `load_pretrained=False` skips the backbone's pretrained weights (the caller loads a checkpoint over them);
    `backbone_trained` overrides whether the backbone counts as trained for the freezing defaults (fine-tuning).
    Writes back into `cfg.backbone` what it resolved: the freezing settings and the weights' tag and sha256.
    """
    levels = list(cfg.fpn.levels)
    if levels != list(range(levels[0], levels[0] + len(levels))) or not 1 <= levels[0] <= 5 or levels[-1] < 5:
        raise UserError(f"FPN levels must be consecutive, start at P1..P5 and reach P5 or above, got {levels}")
    cfg.head.num_groups = group_count(cfg.fpn.out_channels, cfg.head.num_groups)
    if cfg.head.norm == "group" and cfg.fpn.out_channels % cfg.head.num_groups:
        raise UserError(f"FPN channels {cfg.fpn.out_channels} are not divisible by {cfg.head.num_groups} groups")
    if cfg.num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {cfg.num_classes}")
    backbone_levels = [lvl for lvl in levels if lvl <= 5]
    bc = cfg.backbone
    trained = bool(bc.pretrained or bc.pretrained_file) if backbone_trained is None else backbone_trained
    backbone = Backbone(bc.name, tuple(2**lvl for lvl in backbone_levels), bool(bc.pretrained) and load_pretrained,
                        bc.pretrained_file if load_pretrained else None, bc.freeze_stages, bc.freeze_bn, trained)
    bc.freeze_stages, bc.freeze_bn = backbone.freeze_stages, backbone.freeze_bn
    if backbone.load_report is not None:
        bc.pretrained_tag, bc.pretrained_sha256 = backbone.pretrained_tag, backbone.pretrained_sha256
    backbone.lr_mult = bc.lr_mult
    _apply_input_options(backbone, cfg)
    fpn = FPN(backbone.channels, cfg.fpn.out_channels, len(levels) - len(backbone_levels), cfg.fpn.extra_from)
    h = cfg.head
    head = FCOSHead(cfg.fpn.out_channels, cfg.num_classes, len(levels), h.num_convs, h.norm, h.num_groups,
                    h.prior_prob, h.box_activation, h.learnable_scale, h.centerness_on_reg)
    strides = [2**lvl for lvl in levels]
    if cfg.size_divisor % backbone.strides[-1]:
        raise UserError(f"size_divisor {cfg.size_divisor} must be a multiple of the backbone stride "
                        f"{backbone.strides[-1]}")
    return FCOS(backbone, fpn, head, strides, cfg.size_divisor, bgr=cfg.channel_order == "bgr")


def _apply_input_options(backbone: Backbone, cfg: ModelConfig) -> None:
    """Options of imported (caffe-trained) weights: mean/std override and the stride on the 1x1 conv.

    `backbone.mean`/`std` stay in RGB 0-1 units (the engines pad batches with `backbone.mean`), so a
    0-255 BGR mean m becomes reversed(m) / 255: (x - m_rgb/255) / (s_rgb/255), then reversed, equals
    (x_bgr * 255 - m) / s.
    """
    if (cfg.pixel_mean is None) != (cfg.pixel_std is None):
        raise UserError("pixel_mean and pixel_std must be given together")
    if cfg.pixel_mean is not None and cfg.pixel_std is not None:
        order = slice(None, None, -1) if cfg.channel_order == "bgr" else slice(None)
        backbone.mean = tuple(m / 255 for m in cfg.pixel_mean[order])
        backbone.std = tuple(s / 255 for s in cfg.pixel_std[order])
    if cfg.stride_in_1x1:
        _stride_in_1x1(backbone.body, cfg.backbone.name)


def _stride_in_1x1(body: nn.Module, name: str) -> None:
    """Move each bottleneck's stride from its 3x3 conv (timm, torchvision) to its 1x1 conv.

    MSRA/caffe ResNets (mmdet `style='caffe'`, maskrcnn-benchmark `STRIDE_IN_1X1`) downsample in
    conv1 of the first block of layer2-4; the weights are the same shapes either way, the features not.
    """
    from timm.models.resnet import Bottleneck

    moved = 0
    for block in body.modules():
        if isinstance(block, Bottleneck) and block.conv2.stride != (1, 1):
            block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)
            moved += 1
    if not moved:
        raise UserError(f"stride_in_1x1 needs a timm ResNet with strided bottleneck blocks; {name!r} has none")


def check_backbone(name: str, img_size: tuple[int, int]) -> list[tuple[str, int, tuple[int, ...]]]:
    """Build a full FCOS on `name` (random weights, 256-wide FPN) and run it once on a zero (1, 3, H, W) image.

    Returns (part, stride, shape) rows: timm's raw maps, the maps given to the FPN (from the simple
    pyramid for single-stride models), the FPN outputs and the head's class logits.
    """
    cfg = ModelConfig()
    cfg.backbone.name = name
    model = build_model(cfg).eval()
    seen: dict[str, object] = {}
    hooks = [module.register_forward_hook(lambda _m, _i, out, key=key: seen.__setitem__(key, out))
             for key, module in (("timm", model.backbone.body), ("backbone", model.backbone), ("fpn", model.fpn))]
    try:
        with torch.no_grad():
            outputs = model(torch.zeros(1, 3, *img_size))
    except (RuntimeError, AssertionError, ValueError) as e:
        raise UserError(f"timm {name!r} builds but fails on a {img_size[0]}x{img_size[1]} image (it may take only "
                        f"its training size or multiples of a window): {str(e).splitlines()[0][:200]}") from e
    finally:
        for hook in hooks:
            hook.remove()
    backbone = model.backbone
    rows = [("timm", r, tuple(f.shape)) for r, f in zip(backbone.body.feature_info.reduction(), seen["timm"], strict=True)]
    part = "pyramid" if backbone.pyramid is not None else "backbone"
    rows += [(part, s, tuple(f.shape)) for s, f in zip(backbone.strides, seen["backbone"], strict=True)]
    rows += [("fpn", s, tuple(f.shape)) for s, f in zip(model.strides, seen["fpn"], strict=True)]
    rows += [("head cls", s, tuple(f.shape)) for s, f in zip(model.strides, outputs.cls_logits, strict=True)]
    return rows

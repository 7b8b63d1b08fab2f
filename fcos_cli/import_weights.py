"""COCO FCOS checkpoints of torchvision, mmdetection or the original FCOS repo as fcos_cli weights."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import checkpoint
from .compat import COCO_CATEGORY_IDS, COCO_NAMES, KEY_RULES, TORCHVISION_COCO_SLOTS, rename_state_dict
from .config import FCOSConfig, preset
from .errors import UserError
from .metadata import WeightsInfo
from .model import build_model

__all__ = ["SOURCES", "VARIANTS", "ImportReport", "read_checkpoint", "import_weights",
           "CAFFE_PIXEL_MEAN", "CAFFE_PIXEL_STD"]

SOURCES: tuple[str, ...] = ("torchvision", "mmdet", "fcos-original")
VARIANTS: tuple[str, ...] = ("auto", "paper", "improved")
TITLES = {"torchvision": "torchvision", "mmdet": "mmdetection", "fcos-original": "original FCOS (maskrcnn-benchmark)"}

# Detectron's MSRA ResNet-50/101 (mmdet `style='caffe'`, the FCOS repo): BGR, 0-255, mean only.
CAFFE_PIXEL_MEAN = (102.9801, 115.9465, 122.7717)
CAFFE_PIXEL_STD = (1.0, 1.0, 1.0)
COCO_SHORT_SIDE, COCO_MAX_SIZE = 800, 1333  # the scale all three trained and tested at: short 800, long <= 1333
RESNET_DEPTHS = {(3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101", (3, 8, 36, 3): "resnet152"}
BN_EPS = 1e-5  # torch BatchNorm2d's; maskrcnn-benchmark's FrozenBatchNorm2d divides by sqrt(var) alone
IMPROVED_HINTS = ("imprv", "centeronreg", "normbbox", "tricks")  # FCOS repo / mmdet model-zoo file names
REQUIRED = {"backbone.body.conv1.weight": "ResNet stem", "fpn.lateral.0.weight": "FPN", "head.cls_logits.weight":
            "classifier", "head.box_tower.0.weight": "box tower"}  # our key: the part a source must have


@dataclass
class ImportReport:
    """What came from where: every source tensor used or left over, every one of ours filled or not."""

    source: str
    variant: str = ""
    variant_reason: str = ""
    backbone: str = ""
    used: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)  # (source key, our key, shape)
    left_over: list[str] = field(default_factory=list)  # source keys nothing of ours took
    unfilled: list[str] = field(default_factory=list)  # our keys left at their random init
    filled: list[tuple[str, str]] = field(default_factory=list)  # (our key, why a constant is exact)
    notes: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    written: Path | None = None

    @property
    def complete(self) -> bool:
        return not self.left_over and not self.unfilled


def _weights_only_refusal(path: Path, global_name: str) -> UserError:
    return UserError(
        f"{path} holds Python objects beyond tensors (it pickles {global_name}); fcos_cli reads checkpoints only "
        f"with torch.load(weights_only=True), which runs no pickled code. If you trust the file, load it with the "
        f"framework that wrote it, torch.save its plain state dict (checkpoint['state_dict'] or ['model']) and "
        f"import that file")


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors of a .pth checkpoint (`state_dict`/`model` nesting and `module.` prefixes removed) and its `meta`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure here is the file's, reported in one line
        text = str(e)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            raise _weights_only_refusal(path, found[1]) from e
        # The weights-only unpickler wraps its own errors in a long preamble: keep the error itself.
        inner = re.search(r"WeightsUnpickler error: ([^\n]+)", text)
        first = (inner[1] if inner else (text.splitlines() or [""])[0]).split(". ")[0][:200] or "end of file"
        raise UserError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {first}); "
                        f"the file may be truncated or not a .pth file") from e
    meta: dict[str, Any] = {}
    while isinstance(obj, dict):
        if isinstance(obj.get("meta"), dict):  # mmdet: {'meta': {...}, 'state_dict': {...}}
            meta = obj["meta"]
        nested = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)), None)
        if nested is None:
            break
        obj = nested
    tensors = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, Tensor)} \
        if isinstance(obj, dict) else {}
    if not tensors:
        raise UserError(f"{path} holds no state dict (a mapping of names to tensors, possibly under "
                        f"'state_dict' or 'model')")
    return tensors, meta


def _variant(requested: str, source: str, meta: dict[str, Any], path: Path) -> tuple[str, str]:
    """paper or improved, and why: --variant, the mmdet config saved in the checkpoint, or the file name."""
    if source == "torchvision":
        return "torchvision", "the only FCOS torchvision has"
    if requested != "auto":
        return requested, "--variant"
    text = meta.get("config") or meta.get("cfg")  # mmdet 2.x / mmengine save the config text here
    if isinstance(text, str) and "FCOSHead" in text:
        on_reg = bool(re.search(r"centerness_on_reg\s*=\s*True", text))
        norm = bool(re.search(r"norm_on_bbox\s*=\s*True", text))
        if on_reg != norm:
            raise UserError(f"{path}: its config has centerness_on_reg={on_reg} but norm_on_bbox={norm}; fcos_cli's "
                            f"presets set both (improved) or neither (paper): pass --variant to choose")
        return ("improved" if on_reg else "paper"), "the mmdet config saved in the checkpoint"
    hint = next((h for h in IMPROVED_HINTS if h in path.name.lower()), None)
    if hint:
        return "improved", f"the file name contains {hint!r}"
    return "paper", ("default: neither the file name nor its metadata names an improved (imprv/tricks) model; "
                     "pass --variant improved for one")


def _backbone_name(ours: dict[str, tuple[str, Tensor]], path: Path) -> str:
    blocks = tuple(len({m[1] for k in ours if (m := re.match(rf"backbone\.body\.layer{i}\.(\d+)\.conv1\.weight$", k))})
                   for i in range(1, 5))
    name = RESNET_DEPTHS.get(blocks)
    if name is None:
        raise UserError(f"{path}: a ResNet with {list(blocks)} blocks per stage is not supported "
                        f"(R-50 [3, 4, 6, 3], R-101 [3, 4, 23, 3], R-152 [3, 8, 36, 3])")
    conv1, conv2 = (ours.get(f"backbone.body.layer1.0.{c}.weight", ("", None))[1] for c in ("conv1", "conv2"))
    if conv1 is not None and conv2 is not None and (conv2.shape[0] != conv2.shape[1] or conv1.shape[0] != 64):
        raise UserError(f"{path}: grouped or widened bottlenecks (ResNeXt, wide ResNet) are not supported")
    return name


def _class_names(meta: dict[str, Any], num_classes: int, report: ImportReport) -> tuple[list[str], list[int]]:
    """Class names and their COCO category ids (empty: 1..K)."""
    names = meta.get("CLASSES") or (meta.get("dataset_meta") or {}).get("classes")  # mmdet 2.x / 3.x
    if names is not None and len(names) == num_classes:
        names = [str(n) for n in names]
        if names == COCO_NAMES:
            return names, list(COCO_CATEGORY_IDS)
        report.notes.append(f"class names from the checkpoint's metadata ({num_classes} classes)")
        return names, []
    if num_classes == len(COCO_NAMES):
        report.notes.append("the checkpoint names no classes: its 80 outputs are taken as COCO's 80 categories")
        return list(COCO_NAMES), list(COCO_CATEGORY_IDS)
    report.notes.append(f"the checkpoint names none of its {num_classes} classes: "
                        f"called class_0..class_{num_classes - 1}")
    return [f"class_{i}" for i in range(num_classes)], []


def _build_config(source: str, variant: str, backbone: str, ours: dict[str, tuple[str, Tensor]],
                  num_classes: int) -> FCOSConfig:
    cfg = preset(variant)
    m = cfg.model
    m.num_classes, m.backbone.name = num_classes, backbone
    m.fpn.out_channels = ours["fpn.lateral.0.weight"][1].shape[0]
    m.head.num_convs = len([k for k in ours if re.match(r"head\.cls_tower\.\d+\.weight$", k) and ours[k][1].dim() == 4])
    if "fpn.extra.0.weight" in ours:  # P6 from C5 (RetinaNet, mmdet 'on_input') or from P5 (FCOS)
        m.fpn.extra_from = "c5" if ours["fpn.extra.0.weight"][1].shape[1] != m.fpn.out_channels else "p5"
    if source != "torchvision":  # both train on Detectron's caffe ResNets
        m.pixel_mean, m.pixel_std, m.channel_order, m.stride_in_1x1 = CAFFE_PIXEL_MEAN, CAFFE_PIXEL_STD, "bgr", True
    if source == "mmdet":  # mmdet's FCOS test_cfg: score cls * centerness, NMS IoU 0.5
        cfg.post.score_rule, cfg.post.nms_iou = "product", 0.5
    cfg.data.img_size, cfg.data.max_size = COCO_SHORT_SIDE, COCO_MAX_SIZE
    cfg.data.train = ""  # trained elsewhere: no data to fall back on (`fcos eval` without --data says so)
    # torchvision's transform truncates the resized sides, as maskrcnn-benchmark (the original FCOS) does for the
    # long one; mmdet rounds them.
    cfg.data.size_rounding = "round" if source == "mmdet" else "floor"
    return cfg


def _fold_frozen_bn(ours: dict[str, tuple[str, Tensor]], report: ImportReport) -> None:
    """maskrcnn-benchmark's FrozenBatchNorm2d computes w * x / sqrt(var) + ...; ours adds eps to var.

    Lowering var by eps (or, where var <= eps, folding 1/sqrt(var) into the weight) makes them equal.
    """
    count = 0
    for key in [k for k in ours if k.startswith("backbone.") and k.endswith(".running_var")]:
        prefix = key.removesuffix("running_var")
        src, var = ours[key]
        if bool((var > 2 * BN_EPS).all()):
            ours[key] = (src, var - BN_EPS)
        elif prefix + "weight" in ours:
            wsrc, weight = ours[prefix + "weight"]
            ours[prefix + "weight"] = (wsrc, weight * (var + BN_EPS).sqrt() / var.sqrt())
        count += 1
    if count:
        report.notes.append(f"{count} FrozenBatchNorm layers have no eps in maskrcnn-benchmark: running_var lowered "
                            f"by {BN_EPS} so that our BatchNorm computes the same")


def _match(ours: dict[str, tuple[str, Tensor]], own: dict[str, Tensor], source: str, report: ImportReport) -> None:
    """Fit the renamed source tensors to our state dict: fill exact constants, record left-overs and gaps."""
    for key in [k for k in ours if k not in own]:
        report.left_over.append(ours.pop(key)[0])
    for key, value in own.items():
        if key in ours:
            continue
        if key.endswith("num_batches_tracked"):
            ours[key] = ("", torch.zeros_like(value))
            report.filled.append((key, "BatchNorm step counter, unused at inference: 0"))
        elif (source == "mmdet" and re.match(r"head\.(cls|box)_tower\.\d+\.bias$", key)
              and own[key.removesuffix("bias") + "weight"].dim() == 4):
            ours[key] = ("", torch.zeros_like(value))  # mmdet ConvModule with GN: no conv bias unless conv_bias=True
            report.filled.append((key, "the source conv has no bias: exact zeros"))
        else:
            report.unfilled.append(key)
    for key, (src, value) in ours.items():  # maskrcnn-benchmark's Scale is a (1,) tensor, ours 0-d
        if value.shape != own[key].shape and value.numel() == own[key].numel() == 1:
            ours[key] = (src, value.reshape(own[key].shape))
    mismatched = [k for k, (_, v) in ours.items() if v.shape != own[k].shape]
    for key in mismatched:
        src, value = ours.pop(key)
        report.left_over.append(src)
        report.unfilled.append(key)
        report.notes.append(f"{src} {tuple(value.shape)} does not fit {key} {tuple(own[key].shape)}")


def import_weights(path: str | Path, source: str, output: str | Path | None = None, variant: str = "auto",
                   allow_partial: bool = False) -> ImportReport:
    """Map a COCO FCOS checkpoint onto an fcos_cli model and write it (config, class names, COCO category ids).

    Writes only when every source tensor found a place and every tensor of ours was filled, or with
    `allow_partial`; `report.written` says where. Raises UserError for unreadable or foreign files.
    """
    path = Path(path)
    if source not in SOURCES:
        raise UserError(f"unknown source {source!r} (choose from {', '.join(SOURCES)})")
    if variant not in VARIANTS:
        raise UserError(f"unknown variant {variant!r} (choose from {', '.join(VARIANTS)})")
    state, meta = read_checkpoint(path)
    ours, left_over = rename_state_dict(state, KEY_RULES[source])
    missing = [k for k in REQUIRED if k not in ours]
    if missing:
        raise UserError(f"{path} is not an FCOS checkpoint from {TITLES[source]}: {len(ours)} of its {len(state)} "
                        f"tensors have its FCOS parameter names, too few for an FCOS (no {REQUIRED[missing[0]]} by "
                        f"its names; its first keys: {', '.join(list(state)[:3])}); check --from, or the file holds "
                        f"another architecture")
    report = ImportReport(source=source, left_over=left_over)
    report.variant, report.variant_reason = _variant(variant, source, meta, path)
    report.backbone = _backbone_name(ours, path)

    num_classes = ours["head.cls_logits.weight"][1].shape[0]
    if source == "torchvision" and num_classes == TORCHVISION_COCO_SLOTS:
        # Slot k is COCO category id k; keep the 80 real ones (the 11 others are never labelled, so
        # trained to stay below any score threshold): labels become 0..79, mapped back by category_ids.
        for key in [k for k in ("head.cls_logits.weight", "head.cls_logits.bias") if k in ours]:
            src, value = ours[key]
            ours[key] = (src, value[COCO_CATEGORY_IDS])
        num_classes = len(COCO_CATEGORY_IDS)
        report.notes.append("torchvision's 91 COCO class slots (indexed by category id) cut to the 80 categories; "
                            "the 11 unused slots (__background__, N/A) dropped")
        names, ids = list(COCO_NAMES), list(COCO_CATEGORY_IDS)
    else:
        names, ids = _class_names(meta, num_classes, report)
    if source == "fcos-original":
        _fold_frozen_bn(ours, report)

    cfg = _build_config(source, report.variant, report.backbone, ours, num_classes)
    model = build_model(cfg.model)
    own = model.state_dict()
    _match(ours, own, source, report)
    report.used = [(src, key, tuple(v.shape)) for key, (src, v) in ours.items() if src]
    report.class_names = names
    if not report.complete and not allow_partial:
        return report
    with torch.no_grad():
        for key, (_, value) in ours.items():
            own[key].copy_(value.to(own[key].dtype))  # state_dict tensors share storage with the model
    out = Path(output) if output else path.with_suffix(".safetensors")
    imported = {"file": path.name, "source": source, "variant": report.variant, "complete": report.complete}
    checkpoint.save(out, model, WeightsInfo(cfg, names, ids, imported_from=imported))
    report.written = out
    return report

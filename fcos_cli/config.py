"""One dataclass tree for the whole detector, its presets, and JSON round trips."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import UserError

__all__ = [
    "BackboneConfig", "FPNConfig", "HeadConfig", "ModelConfig", "TargetsConfig", "LossConfig",
    "PostprocessConfig", "DataConfig", "TrainConfig", "FCOSConfig", "PRESETS", "preset",
    "to_dict", "from_dict", "load_config", "CONFIG_VERSION",
]

CONFIG_VERSION = 1
Preset = Literal["paper", "improved", "torchvision"]


@dataclass
class BackboneConfig:
    name: str = "resnet50"
    pretrained: bool = False
    pretrained_file: str | None = None  # local weights only: no hub download at run time
    freeze_stages: int = -1  # -1 trains all; 0 freezes the stem; N the stem and the first N stages
    freeze_bn: bool = False  # BatchNorm -> FrozenBatchNorm2d (statistics and affine fixed, as in the paper)
    lr_mult: float = 1.0  # learning rate of the timm body relative to the rest (FPN, head, simple pyramid)


@dataclass
class FPNConfig:
    out_channels: int = 256
    levels: tuple[int, ...] = (3, 4, 5, 6, 7)  # P_l has stride 2**l; levels above 5 are stride-2 convs
    extra_from: Literal["p5", "c5"] = "p5"  # input of the first extra level (P6)


@dataclass
class HeadConfig:
    num_convs: int = 4
    norm: Literal["group", "none"] = "group"
    num_groups: int = 32
    prior_prob: float = 0.01
    box_activation: Literal["exp", "relu"] = "relu"  # exp(s*x) in the paper, relu(s*x) improved
    learnable_scale: bool = True  # one learnable scalar s_i per level (torchvision has none)
    norm_reg_targets: bool = True  # predict distances in units of the level's stride
    centerness_on_reg: bool = True  # branch on the regression tower (improved) or the cls tower (paper)


@dataclass
class ModelConfig:
    num_classes: int = 80
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn: FPNConfig = field(default_factory=FPNConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    size_divisor: int = 32  # inputs are padded to a multiple of this (after normalisation)
    # Input normalisation of imported weights, in 0-255 units and the backbone's channel order (as
    # detectron2/mmdet write it); None: the backbone's timm mean/std. Caffe-trained ResNets use
    # mean (102.9801, 115.9465, 122.7717), std (1, 1, 1) on BGR.
    pixel_mean: tuple[float, float, float] | None = None
    pixel_std: tuple[float, float, float] | None = None
    channel_order: Literal["rgb", "bgr"] = "rgb"
    stride_in_1x1: bool = False  # ResNet: stride 2 on the bottleneck's 1x1 conv (caffe/MSRA), not its 3x3 (timm)


@dataclass
class TargetsConfig:
    size_ranges: tuple[float, ...] = (64, 128, 256, 512)  # m_1..m_{L-1}; m_0 = 0 and m_L = inf
    inclusive_size_ranges: bool = True  # m_{i-1} <= max(ltrb) <= m_i (paper); torchvision is strict
    center_sampling_radius: float = 1.5  # in strides; 0 turns center sampling off
    point_offset: float = 0.5  # point of cell i at (i + offset) * stride: 0.5 cell centre, 0 torchvision
    point_spacing: Literal["stride", "torchvision"] = "stride"  # torchvision: padded_size // feature_size
    torchvision_area_rounding: bool = False  # break min-area ties as torchvision's float32 1e8 - area


@dataclass
class LossConfig:
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    box_loss: Literal["giou", "iou"] = "giou"
    box_loss_norm: Literal["num_pos", "centerness"] = "centerness"  # centerness: weighted, / sum
    cls_weight: float = 1.0
    box_weight: float = 1.0
    centerness_weight: float = 1.0


@dataclass
class PostprocessConfig:
    score_thresh: float = 0.05
    threshold_on: Literal["cls", "score"] = "cls"  # class probability, or the final combined score
    score_rule: Literal["sqrt", "product"] = "sqrt"  # sqrt(cls * ctr) or cls * ctr
    topk_per_level: int = 1000
    nms_iou: float = 0.6
    max_detections: int = 100


@dataclass
class DataConfig:
    train: str = "demo"  # COCO .json, YOLO data.yaml or "demo"
    val: str | None = None  # default: the data's own val split
    val_fraction: float = 0.0  # held out of `train` when it has no val split
    images: str | None = None  # image folder of a COCO file
    img_size: int = 640  # longest side after resize; batches are padded to a multiple of size_divisor
    multi_scale: tuple[int, ...] = ()  # training picks one longest side per image from these
    hflip: float = 0.5
    color_jitter: bool = True


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 8
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    schedule: Literal["cosine", "step"] = "cosine"  # step: x0.1 at 2/3 and 8/9 of training
    grad_clip: float = 10.0  # max gradient norm; 0 turns clipping off
    amp: bool = False  # bf16 autocast on CPU, fp16 with GradScaler on CUDA
    ema: bool = False
    compile: bool = False  # torch.compile the model (the first steps compile: seconds to minutes)
    eval_interval: int = 1  # validate every N epochs (and after the last)
    max_nonfinite_steps: int = 20  # stop after this many non-finite losses/gradients in a row
    seed: int = 0
    workers: int = 2
    time_limit: float | None = None  # seconds: stop at a step boundary before they run out, saved and resumable


@dataclass
class FCOSConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    post: PostprocessConfig = field(default_factory=PostprocessConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "improved"
    version: int = CONFIG_VERSION


def _improved() -> FCOSConfig:
    return FCOSConfig()


def _paper() -> FCOSConfig:
    """The FCOS paper and the original code's default (non-"imprv") configuration."""
    cfg = FCOSConfig(preset="paper")
    cfg.model.head = HeadConfig(box_activation="exp", norm_reg_targets=False, centerness_on_reg=False)
    cfg.targets.center_sampling_radius = 0.0
    cfg.loss.box_loss = "iou"
    return cfg


def _torchvision() -> FCOSConfig:
    """Point-for-point torchvision.models.detection.FCOS (its defaults, quirks included)."""
    cfg = FCOSConfig(preset="torchvision")
    cfg.model.head.learnable_scale = False
    cfg.targets = TargetsConfig(
        inclusive_size_ranges=False, point_offset=0.0, point_spacing="torchvision",
        torchvision_area_rounding=True,
    )
    cfg.loss.box_loss_norm = "num_pos"
    cfg.post = PostprocessConfig(score_thresh=0.2, threshold_on="score")
    return cfg


PRESETS = {"paper": _paper, "improved": _improved, "torchvision": _torchvision}


def preset(name: str) -> FCOSConfig:
    """A fresh config for a preset name: `paper`, `improved` (the default) or `torchvision`."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    return PRESETS[name]()


def to_dict(cfg: FCOSConfig) -> dict[str, Any]:
    return asdict(cfg)


def _convert(tp: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config {where}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if origin is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    if origin in (typing.Union, types.UnionType) and value is not None:
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(inner[0], value, where)
    if origin is Literal and value not in typing.get_args(tp):
        raise UserError(f"config {where}: {value!r} is not one of {typing.get_args(tp)}")
    return value


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"config {where or 'root'}: unknown key(s) {', '.join(unknown)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}".lstrip(".")) for k, v in data.items()}
    return cls(**kwargs)


def from_dict(data: dict[str, Any]) -> FCOSConfig:
    """Rebuild a config from `to_dict` output (or JSON); unknown keys are rejected by name."""
    if not isinstance(data, dict):
        raise UserError(f"config: expected a JSON object of sections, got {type(data).__name__}")
    version = data.get("version", CONFIG_VERSION)
    if version != CONFIG_VERSION:
        raise UserError(f"config version {version} is not supported (this fcos_cli reads {CONFIG_VERSION})")
    return _from_dict(FCOSConfig, data, "")


def load_config(path: str | Path) -> FCOSConfig:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read config {path}: {e}") from None
    return from_dict(data)

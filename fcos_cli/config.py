"""One dataclass tree for the whole detector, its presets, and JSON round trips."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from .errors import UserError, one_line

__all__ = [
    "BackboneConfig", "FPNConfig", "HeadConfig", "ModelConfig", "TargetsConfig", "LossConfig",
    "PostprocessConfig", "DataConfig", "TrainConfig", "FCOSConfig", "Preset", "PRESETS", "preset", "SIZES", "apply_size",
    "level_size_ranges", "group_count", "resolve", "set_value", "merge", "assemble", "config_keys", "parse_set",
    "read_config_file", "learning_rate",
    "to_dict", "from_dict", "load_config", "CONFIG_VERSION",
]

CONFIG_VERSION = 1
Preset = Literal["paper", "improved", "torchvision"]


@dataclass
class BackboneConfig:
    name: str = "resnet50"  # any timm name; `resnet50.fb_swsl_ig1b_ft_in1k` picks a pretrained tag
    # None: timm's pretrained weights (Hugging Face hub cache) unless training on the demo data (offline);
    # build_model only loads them when True.
    pretrained: bool | None = None
    pretrained_file: str | None = None  # local weights instead of the hub
    pretrained_tag: str | None = None  # filled when hub weights load: the timm tag (`resnet50.a1_in1k`)
    pretrained_sha256: str | None = None  # filled when weights load: sha256 of the weights file
    # None: the original recipe from trained weights on a BatchNorm CNN (stem + first stage frozen, BatchNorm
    # frozen), nothing frozen otherwise; build_model writes the resolved values back.
    freeze_stages: int | None = None  # -1 trains all; 0 freezes the stem; N the stem and the first N stages
    freeze_bn: bool | None = None  # BatchNorm -> FrozenBatchNorm2d (statistics and affine fixed, as in the paper)
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
    num_groups: int | None = None  # GroupNorm groups; None: 32, fewer for a narrow FPN (2+ channels a group)
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
    # m_1..m_{L-1} (m_0 = 0, m_L = inf) in resized-image pixels; None: 8 strides of the finer level, the paper's
    # 64, 128, 256, 512 for P3-P7, at every image size (half that on the built-in demo; `level_size_ranges`).
    size_ranges: tuple[float, ...] | None = None
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
    train: str = "demo"  # a --data value (fcos_cli.data.FORMATS) ("": none, imported weights)
    val: str | None = None  # default: the data's own val split
    val_fraction: float = 0.0  # held out of `train` when it has no val split
    images: str | None = None  # image folder of a COCO file
    img_size: int = 640  # longest side after resize (short side with max_size); batches pad to size_divisor
    max_size: int | None = None  # set: img_size is the short side and this caps the long one (COCO: 800/1333)
    size_rounding: Literal["round", "floor"] = "round"  # short/long sizes: mmdet/detectron2, or torchvision's
    multi_scale: tuple[int, ...] = ()  # training picks one longest (short, with max_size) side per image
    # training augmentation; 0 turns each off (hflip=0 for digits, text and other mirror-sensitive objects)
    hflip: float = 0.5  # probability of a horizontal flip
    color_jitter: bool = True  # brightness, contrast, saturation 0.2 and hue 0.02 on 80% of the images
    crop: float = 0.0  # probability of a random crop keeping every box, before the resize (zoom-in scale jitter)
    # training batches of one orientation (landscape or portrait), as detectron2 and mmdetection: less padding, which
    # the head's GroupNorm statistics include, so one image alone scores as well as in a batch
    aspect_grouping: bool = True


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 8
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float | None = None  # None: 0.01 for sgd, 0.001 for adamw
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    schedule: Literal["cosine", "step"] = "cosine"  # step: x0.1 at 2/3 and 8/9 of training
    grad_clip: float = 10.0  # max gradient norm; 0 turns clipping off
    amp: bool = False  # bf16 autocast on CPU, fp16 with GradScaler on CUDA
    ema: bool = False
    compile: bool = False  # torch.compile the model (the first steps compile: seconds to minutes)
    grad_checkpoint: bool = False  # recompute backbone stages and head towers in backward: less memory, ~30% slower
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
    preset: Preset = "improved"
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
        size_ranges=(64, 128, 256, 512), inclusive_size_ranges=False, point_offset=0.0, point_spacing="torchvision",
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


# ---- size profiles: a model and the recipe that fits it ----------------------------------------------------------

SIZE_FIELDS = ("model.backbone.name", "model.fpn.out_channels", "model.head.num_convs", "data.img_size",
               "data.max_size", "train.optimizer", "train.lr", "train.warmup_steps", "train.epochs")
SIZES: dict[str, tuple] = {  # values of SIZE_FIELDS
    # 2 CPU cores, about 4 minutes on the demo data (the Quickstart): mAP50 about 0.58
    "n": ("regnetx_002", 64, 2, 320, None, "adamw", 0.003, 50, 32),
    "s": ("resnet18", 128, 3, 512, None, "adamw", 0.001, 300, 24),
    "m": ("resnet50", 256, 4, 640, None, "sgd", 0.01, 500, 12),  # the presets' own defaults
    "l": ("resnet50", 256, 4, 800, 1333, "sgd", 0.01, 500, 12),  # the paper's R-50 1x: short side 800, long 1333
}


def apply_size(cfg: FCOSConfig, size: str) -> FCOSConfig:
    """Set the fields of size profile `size` (n, s, m, l) on `cfg`."""
    if size not in SIZES:
        raise UserError(f"unknown size {size!r} (choose from {', '.join(SIZES)})")
    for key, value in zip(SIZE_FIELDS, SIZES[size], strict=True):
        set_value(cfg, key, value)
    return cfg


# ---- defaults that depend on other fields --------------------------------------------------------------------

def level_size_ranges(cfg: FCOSConfig) -> tuple[float, ...]:
    """`targets.size_ranges`, or when None the paper's rule: the boundary between levels P_l and P_l+1 at 8 strides
    of P_l (64, 128, 256, 512 for P3-P7); half that on the built-in demo.

    The boundaries stay fixed in pixels as the strides do; they follow the image size through the boxes, which are
    measured after the resize. Halving them with the image as well (32..256 at 320 px, the rule before) put small
    objects on coarse levels with few cells: on the digit scenes of benchmarks/accuracy.py it cost 0.32 mAP at
    160 px. The demo's shapes fill up to the whole image, and there the halved ranges scored higher (Quickstart
    mAP 0.375 against 0.310).
    """
    levels = cfg.model.fpn.levels
    if cfg.targets.size_ranges is not None:
        ranges = tuple(cfg.targets.size_ranges)
        if len(ranges) != len(levels) - 1 or any(b <= a for a, b in pairwise(ranges)):
            raise UserError(f"targets.size_ranges {list(ranges)}: expected {len(levels) - 1} increasing boundaries "
                            f"for {len(levels)} levels, e.g. 64,128,256,512")
        return ranges
    strides_per_range = 4.0 if cfg.data.train == "demo" else 8.0
    return tuple(strides_per_range * 2**level for level in levels[:-1])


def learning_rate(train: TrainConfig) -> float:
    """`train.lr`, or the optimizer's usual peak rate when None: 0.01 for SGD, 0.001 for AdamW."""
    return train.lr if train.lr is not None else 0.01 if train.optimizer == "sgd" else 0.001


def group_count(channels: int, num_groups: int | None) -> int:
    """GroupNorm groups: as given, else 32, or channels // 2 for a narrow FPN (1-channel groups on 1x1 maps
    normalise every value to zero)."""
    return num_groups if num_groups is not None else max(1, min(32, channels // 2))


def resolve(cfg: FCOSConfig) -> FCOSConfig:
    """Fill the fields left None with what they mean for this config (the values a run records):
    pretrained (timm's weights for every dataset but the built-in demo, which trains from scratch offline),
    the learning rate of the optimizer, GroupNorm groups, and the size ranges of the image size."""
    bc, t = cfg.model.backbone, cfg.train
    if bc.pretrained is None:
        bc.pretrained = cfg.data.train != "demo"
    t.lr = learning_rate(t)
    cfg.model.head.num_groups = group_count(cfg.model.fpn.out_channels, cfg.model.head.num_groups)
    cfg.targets.size_ranges = level_size_ranges(cfg)
    return cfg


def to_dict(cfg: FCOSConfig) -> dict[str, Any]:
    return asdict(cfg)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, where: str) -> Any:
    """`value` as a field of type `tp`, or a UserError naming the key `where` and what it expects."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _convert(next(a for a in args if a is not type(None)), value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config {where}: expected a mapping of its fields, got {value!r}")
        return _from_dict(tp, value, where)
    if origin is Literal:
        if value not in args:
            raise UserError(f"config {where}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        if isinstance(value, str):  # `--set targets.size_ranges=32,64,128,256`
            value = [v.strip() for v in value.split(",")]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config {where}: expected a list, got {value!r}")
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise UserError(f"config {where}: expected {len(items)} values, got {len(value)}")
        return tuple(_convert(t, v, f"{where}[{i}]") for i, (t, v) in enumerate(zip(items, value, strict=True)))
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    ok = (isinstance(value, bool) if tp is bool else
          isinstance(value, (int, float)) and not isinstance(value, bool) if tp is float else
          isinstance(value, int) and not isinstance(value, bool) if tp is int else
          isinstance(value, str) if tp is str else True)
    if not ok:
        raise UserError(f"config {where}: expected {_type_name(tp)}, got {value!r}")
    return float(value) if tp is float else value


def config_keys(cls: type = None, prefix: str = "") -> list[str]:
    """Every field as a dotted key (`train.weight_decay`), the names `--set` takes."""
    keys = []
    for f in dataclasses.fields(cls or FCOSConfig):
        tp = typing.get_type_hints(cls or FCOSConfig)[f.name]
        keys += config_keys(tp, f"{prefix}{f.name}.") if dataclasses.is_dataclass(tp) else [f"{prefix}{f.name}"]
    return keys


def _unknown(key: str) -> UserError:
    close = difflib.get_close_matches(key, config_keys(), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else " (`fcos config` prints every key)"
    return UserError(f"config key {key} does not exist{hint}")


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        errors = [str(_unknown(f"{where}.{key}".lstrip("."))) for key in unknown]
        raise UserError("; ".join(errors))
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}".lstrip(".")) for k, v in data.items()}
    return cls(**kwargs)


def merge(obj: Any, data: dict[str, Any], where: str = "") -> Any:
    """Set the fields a (partial) nested mapping names on the config `obj`, checking names and types."""
    if not isinstance(data, dict):
        raise UserError(f"config {where or 'file'}: expected a mapping of sections, got {type(data).__name__}")
    hints = typing.get_type_hints(type(obj))
    for key, value in data.items():
        path = f"{where}.{key}".lstrip(".")
        if key not in hints:
            raise _unknown(path)
        if key == "version" and not where:
            if value != CONFIG_VERSION:
                raise UserError(f"config version {value} is not supported (this fcos_cli reads {CONFIG_VERSION})")
            continue
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            merge(current, value, path)
        else:
            setattr(obj, key, _convert(hints[key], value, path))
    return obj


def set_value(cfg: FCOSConfig, key: str, value: Any) -> FCOSConfig:
    """One dotted field: `set_value(cfg, "train.lr", 0.003)`."""
    *sections, name = key.split(".")
    data: dict[str, Any] = {name: value}
    for section in reversed(sections):
        data = {section: data}
    return merge(cfg, data)


def parse_set(text: str) -> tuple[str, Any]:
    """`section.field=value` (the value read as YAML: 0.003, true, null, [32, 64]) for `--set`."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {text!r}: expected section.field=value, e.g. train.lr=0.003")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A (partial) config as YAML or JSON: the schema `fcos config` prints and run folders keep in config.json."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read config {path}: {one_line(str(e))}") from e
    if not isinstance(data, dict):
        raise UserError(f"config {path}: expected a mapping of sections (model, train, ...)")
    return data


def assemble(preset_name: str = "improved", size: str | None = None, weights: FCOSConfig | None = None,
             files: Sequence[str | Path] = (), sets: Sequence[str] = (), flags: dict[str, Any] | None = None,
             ) -> FCOSConfig:
    """The one way a training config is made, by the CLI and from Python alike. Later wins:

    preset -> size profile -> weights (their model, targets, loss, postprocessing and image size; freezing back
    to its rule for trained weights) -> config files -> `--set key=value` -> flags (dotted keys).
    Without a size, the built-in demo data takes the CPU profile `n`. Fields left None are filled by `resolve`.
    """
    def build(profile: str | None) -> FCOSConfig:
        cfg = preset(preset_name)
        if profile is not None:
            apply_size(cfg, profile)
        if weights is not None:
            cfg.model, cfg.targets, cfg.loss, cfg.post = (copy.deepcopy(getattr(weights, k))
                                                          for k in ("model", "targets", "loss", "post"))
            cfg.data.img_size, cfg.data.max_size = weights.data.img_size, weights.data.max_size
            cfg.data.size_rounding = weights.data.size_rounding
            cfg.model.backbone.freeze_stages = cfg.model.backbone.freeze_bn = None
        for path in files:
            merge(cfg, read_config_file(path))
        for text in sets:
            set_value(cfg, *parse_set(text))
        for key, value in (flags or {}).items():
            set_value(cfg, key, value)
        return cfg

    cfg = build(size)
    if size is None and weights is None and cfg.data.train == "demo":
        cfg = build("n")
    return cfg


def from_dict(data: dict[str, Any]) -> FCOSConfig:
    """Rebuild a config from `to_dict` output (or JSON); unknown keys are rejected by name."""
    if not isinstance(data, dict):
        raise UserError(f"config: expected a JSON object of sections, got {type(data).__name__}")
    version = data.get("version", CONFIG_VERSION)
    if version != CONFIG_VERSION:
        raise UserError(f"config version {version} is not supported (this fcos_cli reads {CONFIG_VERSION})")
    return _from_dict(FCOSConfig, data, "")


def load_config(path: str | Path) -> FCOSConfig:
    """A whole config file (YAML or JSON) over the defaults."""
    return merge(FCOSConfig(), read_config_file(path))

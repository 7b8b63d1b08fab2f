"""Which timm models can be FCOS backbones: names (with close matches), `features_only` creation, the levels
that give strides 8/16/32, and a cheap probe of a model's feature maps on the meta device (`fcos backbones`)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import timm
import torch
from torch import nn

from ..errors import UserError
from .simple_pyramid import SimplePyramid

__all__ = ["FCOS_STRIDES", "BackboneProbe", "check_backbone_name", "create_features", "is_nhwc", "plan_levels",
           "probe_backbone", "suggest_backbones"]

FCOS_STRIDES = (8, 16, 32)  # C3-C5 of the paper


def check_backbone_name(name: str) -> None:
    """A UserError with close matches for a name timm does not know (cheap: builds nothing)."""
    if not timm.is_model(name):
        close = suggest_backbones(name)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise UserError(f"unknown timm backbone {name!r}{hint}")


def suggest_backbones(name: str, limit: int = 5) -> list[str]:
    """Close timm model names: same-prefix pattern matches first, then fuzzy matches."""
    names = timm.list_models()
    prefix = name.split("_")[0]
    by_pattern = timm.list_models(f"{prefix}*") if prefix else []
    fuzzy = difflib.get_close_matches(name, names, n=limit, cutoff=0.6)
    return list(dict.fromkeys(fuzzy + difflib.get_close_matches(name, by_pattern, n=limit, cutoff=0.0)))[:limit]


def plan_levels(name: str, reductions: list[int], strides: tuple[int, ...]) -> list[int] | None:
    """Which timm levels give `strides`: their indices, or None for a simple pyramid from the last level.

    The last level per stride is used: it has seen the most layers at that resolution. A model lacking
    one of the strides 8/16/32 (a plain ViT has only 16) gets the pyramid; any other gap is an error.
    """
    missing = [s for s in strides if s not in reductions]
    if not missing:
        return [max(i for i, r in enumerate(reductions) if r == s) for s in strides]
    if len(set(reductions) & set(FCOS_STRIDES)) < len(FCOS_STRIDES):
        return None
    raise UserError(f"timm backbone {name!r} has feature strides {sorted(set(reductions))}, "
                    f"but FCOS needs {list(strides)} (missing {missing}); try e.g. resnet50, convnext_tiny")


def create_features(name: str, **kwargs) -> nn.Module:
    """timm `features_only` model; `dynamic_img_size=True` where the class takes it (ViT, DeiT, EVA, swin).

    Without it ViTs accept only their training size and swin only multiples of its window.
    """
    try:
        return timm.create_model(name, features_only=True, dynamic_img_size=True, **kwargs)
    except TypeError as e:
        if "dynamic_img_size" not in str(e):
            raise
    return timm.create_model(name, features_only=True, **kwargs)


def is_nhwc(body: nn.Module) -> bool:
    """swin, mambaout: (B, H, W, C); EfficientNetFeatures has no `output_fmt` and is NCHW."""
    return str(getattr(body, "output_fmt", "NCHW")).endswith("NHWC")


@dataclass
class BackboneProbe:
    """What `fcos backbones` shows for one timm model (from `feature_info`, built on the meta device)."""

    name: str
    reductions: list[int] = field(default_factory=list)
    channels: list[int] = field(default_factory=list)
    pyramid: bool = False  # needs the simple feature pyramid
    nhwc: bool = False
    error: str | None = None  # why it cannot work with FCOS at all


PROBE_SIZE = (320, 480)  # a non-square, non-224 input: exposes models fixed to their training size


def probe_backbone(name: str, strides: tuple[int, ...] = FCOS_STRIDES) -> BackboneProbe:
    """Feature strides and channels of a timm model without allocating weights (~0.1-0.3 s).

    Built and run on the meta device (shapes only): a forward at `PROBE_SIZE` catches models that take
    only their training size (levit, beit, hiera) or multiples of a window (maxvit, coatnet).
    """
    try:
        with torch.device("meta"):
            body = create_features(name)
            info = body.feature_info
            reductions, channels = list(info.reduction()), list(info.channels())
            pyramid = plan_levels(name, reductions, strides) is None
            if pyramid:
                SimplePyramid(channels[-1], reductions[-1], strides)  # raises for e.g. stride 14 (patch 14)
            try:
                body.eval()(torch.zeros(1, 3, *PROBE_SIZE))  # eval: BatchNorm on 1x1 maps needs batch > 1 in train
            except Exception as e:  # noqa: BLE001 - shape errors of all kinds
                if "meta" in str(e):  # data-dependent code (`.item()`) cannot run on meta: inconclusive, not a no
                    return BackboneProbe(name, reductions, channels, pyramid, is_nhwc(body))
                raise UserError(f"fails at {PROBE_SIZE[0]}x{PROBE_SIZE[1]} (input size fixed?): "
                                f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}") from e
        return BackboneProbe(name, reductions, channels, pyramid, is_nhwc(body))
    except UserError as e:
        return BackboneProbe(name, error=str(e))
    except Exception as e:  # noqa: BLE001 - any timm failure means "no features_only for this model"
        return BackboneProbe(name, error=f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")

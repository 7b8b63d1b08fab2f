"""Any timm model as a multi-scale feature extractor (timm `features_only`), always NCHW out."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
from torch import Tensor, nn

from ..errors import UserError

__all__ = ["Backbone", "suggest_backbones"]


def suggest_backbones(name: str, limit: int = 5) -> list[str]:
    """Close timm model names: same-prefix pattern matches first, then fuzzy matches."""
    names = timm.list_models()
    prefix = name.split("_")[0]
    by_pattern = timm.list_models(f"{prefix}*") if prefix else []
    fuzzy = difflib.get_close_matches(name, names, n=limit, cutoff=0.6)
    return list(dict.fromkeys(fuzzy + difflib.get_close_matches(name, by_pattern, n=limit, cutoff=0.0)))[:limit]


def _file_keys(path: Path) -> set[str]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return set(f.keys())
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    for nested in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(nested), dict):
            state = state[nested]
    return set(state) if isinstance(state, dict) else set()


def _check_fit(body: nn.Module, path: Path, name: str) -> None:
    """timm loads features_only weights non-strictly: refuse a file that fits under half the tensors."""
    own = list(body.state_dict())
    fitting = len(set(own) & _file_keys(path))
    if fitting < len(own) / 2:
        raise UserError(f"pretrained file {path} fits {fitting} of the {len(own)} tensors of timm {name!r}: "
                        f"it holds weights of another model")


class Backbone(nn.Module):
    """timm `features_only` model returning the feature maps at the requested strides.

    Args:
        name: any timm model name.
        strides: reductions to return, e.g. (8, 16, 32); for each, the last timm level with it is used.
        pretrained: load timm's pretrained weights (needs `pretrained_file`: no network at run time).
        pretrained_file: local weights file (safetensors or a timm checkpoint) for `name`.

    Forward: images (B, 3, H, W) -> list of (B, C_i, H / s_i, W / s_i), NCHW whatever timm returns.
    """

    def __init__(self, name: str, strides: tuple[int, ...] = (8, 16, 32), pretrained: bool = False,
                 pretrained_file: str | None = None) -> None:
        super().__init__()
        if not timm.is_model(name):
            close = suggest_backbones(name)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise UserError(f"unknown timm backbone {name!r}{hint}")
        if pretrained and pretrained_file is None:
            raise UserError(f"pretrained weights for {name!r} are read from a local file: give pretrained_file "
                            f"(--pretrained-file); fcos_cli downloads nothing at run time")
        try:
            self.body = timm.create_model(name, features_only=True)
        except (RuntimeError, AssertionError, TypeError, ValueError) as e:
            raise UserError(f"timm backbone {name!r} cannot return multi-scale features: {e}") from None
        if pretrained_file is not None:
            if not Path(pretrained_file).is_file():
                raise UserError(f"pretrained file {pretrained_file} does not exist")
            try:  # timm's own loader: it filters the classifier and remaps keys where a model needs it
                self.body = timm.create_model(name, features_only=True, pretrained=True,
                                              pretrained_cfg_overlay={"file": str(pretrained_file)})
            except Exception as e:  # noqa: BLE001 - any failure here is the file's, reported in one line
                raise UserError(f"cannot load pretrained file {pretrained_file} into timm {name!r}: "
                                f"{str(e).splitlines()[0][:300]}") from None
            _check_fit(self.body, Path(pretrained_file), name)
        info = self.body.feature_info
        reductions = info.reduction()
        missing = [s for s in strides if s not in reductions]
        if missing:
            raise UserError(
                f"timm backbone {name!r} has feature strides {sorted(set(reductions))}, "
                f"but FCOS needs {list(strides)} (missing {missing}); try e.g. resnet50, convnext_tiny"
            )
        # Last level per stride: it has seen the most layers at that resolution.
        self.indices = [max(i for i, r in enumerate(reductions) if r == s) for s in strides]
        self.channels = [info.channels()[i] for i in self.indices]
        self.strides = list(strides)
        self.nhwc = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")
        cfg = timm.data.resolve_model_data_config(self.body)
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])

    def forward(self, images: Tensor) -> list[Tensor]:
        features = self.body(images)
        features = [features[i] for i in self.indices]
        if self.nhwc:  # swin, mambaout: (B, H, W, C)
            features = [f.permute(0, 3, 1, 2) for f in features]
        return features

"""Any timm model as a multi-scale feature extractor (timm `features_only`), always NCHW out.

Models with features at strides 8/16/32 give them directly; single-stride models (plain ViT, DeiT, ...)
go through a simple feature pyramid. Also: pretrained weights (hub or file) and freezing stages / BatchNorm.
Which models qualify, and their probes, are in `catalog.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d  # what timm's freeze_batch_norm_2d makes

from ..atomic import sha256
from ..errors import UserError, one_line
from .catalog import FCOS_STRIDES, check_backbone_name, create_features, is_nhwc, plan_levels
from .simple_pyramid import SimplePyramid

__all__ = ["Backbone", "LoadReport", "hub_weights"]

_NESTED_KEYS = ("state_dict", "model", "state_dict_ema")  # timm / torchvision training checkpoints


# ---- pretrained weights: the Hugging Face hub (timm's own source) or a local file -------------------------

HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub loader tries, in its order


def hub_weights(name: str) -> tuple[Path, str]:
    """timm's pretrained weights of `name` (`resnet50` or `resnet50.fb_swsl_ig1b_ft_in1k`) as a local file.

    Downloads through `huggingface_hub` as timm does (the standard cache; `HF_HOME`, `HF_HUB_OFFLINE` and
    `HF_ENDPOINT` apply). Returns the file and the `architecture.tag` it holds.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    from timm.models import get_pretrained_cfg
    from timm.models._hub import hf_split

    cfg = get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        raise UserError(f"timm has no downloadable pretrained weights for {name!r}: give --pretrained-file FILE, "
                        f"or train from random weights with --no-pretrained")
    tag = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    repo, revision = hf_split(cfg.hf_hub_id)
    offline = False
    for filename in (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HUB_FILES:
        try:  # once the hub proved unreachable, the other file names only from the cache (no retries again)
            return Path(hf_hub_download(repo, filename, revision=revision, local_files_only=offline)), tag
        except LocalEntryNotFoundError:  # neither cached nor reachable (a subclass of the next one)
            offline = True
        except EntryNotFoundError:  # the hub has no such file: try the next
            continue
        except Exception as e:  # noqa: BLE001 - hub HTTP errors of all kinds: one line
            raise UserError(f"cannot download the pretrained weights of {tag} from the Hugging Face hub "
                            f"({repo}): {type(e).__name__}: {one_line(str(e))[:200]}") from e
    if offline:
        from huggingface_hub.constants import HF_HUB_CACHE

        raise UserError(f"the pretrained weights of {tag} ({repo} on the Hugging Face hub) are not in the cache "
                        f"{HF_HUB_CACHE} and the hub cannot be reached; connect to the internet, set HF_ENDPOINT to "
                        f"a mirror, download https://huggingface.co/{repo}/resolve/main/{HUB_FILES[0]} elsewhere "
                        f"and give --pretrained-file FILE, or train from random weights with --no-pretrained")
    raise UserError(f"the Hugging Face repo {repo} holds none of {', '.join(HUB_FILES)}: give --pretrained-file")


def has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


@dataclass
class LoadReport:
    """How a pretrained file fitted the backbone: names are the backbone's (timm) tensor names."""

    path: str
    matched: int
    total: int
    missing: list[str]  # backbone tensors the file lacks (left at random init)
    unexpected: list[str]  # file tensors the backbone does not use (classifier, final norm, ...)

    @property
    def summary(self) -> str:
        return f"{self.matched}/{self.total} tensors"

    def lines(self) -> list[str]:
        """What did not fit, if anything: one line each for missing and unused tensors."""
        def names(items: list[str]) -> str:
            return ", ".join(items[:6]) + (f" ... (+{len(items) - 6})" if len(items) > 6 else "")

        out = []
        if self.missing:
            out.append(f"  missing from the file (random init): {names(self.missing)}")
        if self.unexpected:
            out.append(f"  in the file but unused: {names(self.unexpected)}")
        return out


def _file_keys(path: Path) -> set[str]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return set(f.keys())
    state = torch.load(path, map_location="cpu", weights_only=True)
    for nested in _NESTED_KEYS:
        if isinstance(state, dict) and isinstance(state.get(nested), dict):
            state = state[nested]
    return {k.removeprefix("module.") for k in state} if isinstance(state, dict) else set()


def _source_name(key: str, file_keys: set[str]) -> str | None:
    """The full-model name of a features_only tensor: timm renames `stages.0` to `stages_0` (FeatureListNet)
    and nests getter models under `model.`."""
    candidates = [key, key.removeprefix("model.")]
    head, _, rest = key.partition(".")
    flat = re.fullmatch(r"(.+)_(\d+)", head)
    if flat and rest:
        candidates.append(f"{flat[1]}.{flat[2]}.{rest}")
    return next((c for c in candidates if c in file_keys), None)


def _load_report(body: nn.Module, path: Path) -> LoadReport:
    file_keys = _file_keys(path)
    own = [k for k in body.state_dict() if not k.endswith("num_batches_tracked")]
    sources = {k: _source_name(k, file_keys) for k in own}
    used = {s for s in sources.values() if s}
    unexpected = sorted(k for k in file_keys - used if not k.endswith("num_batches_tracked"))
    return LoadReport(str(path), len(used), len(own), sorted(k for k, s in sources.items() if s is None), unexpected)


# ---- the module ---------------------------------------------------------------------------------------


class Backbone(nn.Module):
    """timm `features_only` model returning the feature maps at the requested strides.

    Args:
        name: any timm model name.
        strides: reductions to return, e.g. (8, 16, 32); for each, the last timm level with it is used, or,
            for a single-stride model (plain ViT), a `SimplePyramid` over its last map.
        pretrained: load timm's pretrained weights of `name` (its default tag, or `arch.tag`) through the
            Hugging Face hub cache (`hub_weights`).
        pretrained_file: local weights file (safetensors or a timm checkpoint) for `name`, instead of the hub.
        freeze_stages: -1 trains everything; 0 freezes the stem; N the stem and the first N stages
            (timm feature levels of stride >= 4; for ViTs the patch embedding and the first N blocks).
            None: 1 for a BatchNorm CNN that starts `trained` (the original FCOS / mmdetection recipe), else -1.
        freeze_bn: BatchNorm layers become `FrozenBatchNorm2d` through timm's `freeze_batch_norm_2d`
            (running statistics and affine fixed, also in train mode). None: when it starts `trained`.
        trained: whether the body starts from trained weights, for the None rules [default: weights loaded
            here]; fine-tuning a detector passes True.

    Forward: images (B, 3, H, W) -> list of (B, C_i, H / s_i, W / s_i), NCHW whatever timm returns.
    Attributes the FPN reads: `channels`, `strides`. Also `start` (where the weights came from, one line),
    `frozen`, `load_report`, and the resolved `freeze_stages`, `freeze_bn`, `pretrained_tag`, `pretrained_sha256`.
    """

    def __init__(self, name: str, strides: tuple[int, ...] = FCOS_STRIDES, pretrained: bool = False,
                 pretrained_file: str | None = None, freeze_stages: int | None = -1, freeze_bn: bool | None = False,
                 trained: bool | None = None) -> None:
        super().__init__()
        check_backbone_name(name)
        self.load_report: LoadReport | None = None
        self.pretrained_tag: str | None = None
        self.pretrained_sha256: str | None = None
        self.start = "random init"
        if pretrained_file is None and pretrained:
            path, self.pretrained_tag = hub_weights(name)
            self.body = self._load(name, path)
            self.start = f"pretrained weights {self.pretrained_tag} ({self.load_report.summary})"
        elif pretrained_file is not None:
            self.body = self._load(name, Path(pretrained_file))
            self.start = f"pretrained file {pretrained_file} ({self.load_report.summary})"
        else:
            try:
                self.body = create_features(name)
            except (RuntimeError, AssertionError, TypeError, ValueError, NotImplementedError) as e:
                raise UserError(f"timm backbone {name!r} cannot return multi-scale features: {e}") from e
        if self.load_report is not None:
            self.pretrained_sha256 = sha256(Path(self.load_report.path))
        info = self.body.feature_info
        reductions = info.reduction()
        self.nhwc = is_nhwc(self.body)
        self.indices = plan_levels(name, reductions, strides)
        if self.indices is None:  # single-stride model: everything from its last (deepest) map
            self.indices = [len(reductions) - 1]
            self.pyramid: SimplePyramid | None = SimplePyramid(info.channels()[-1], reductions[-1], strides)
            self.channels = list(self.pyramid.channels)
        else:
            self.pyramid = None
            self.channels = [info.channels()[i] for i in self.indices]
        self.strides = list(strides)
        cfg = timm.data.resolve_model_data_config(self.body)
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        self.lr_mult = 1.0  # set by build_model; build_optimizer scales the timm body's learning rate by it
        # The original recipe (FCOS repo, mmdetection `frozen_stages=1, norm_eval`): ImageNet statistics stay, the
        # stem and first stage keep their generic filters. LayerNorm / GroupNorm backbones (ViT, ConvNeXt) train
        # whole, as mmdetection trains them.
        recipe = (pretrained or pretrained_file is not None) if trained is None else trained
        recipe = recipe and has_batch_norm(self.body)
        self.freeze_bn = recipe if freeze_bn is None else freeze_bn
        self.freeze_stages = (1 if recipe else -1) if freeze_stages is None else freeze_stages
        self.frozen: list[str] = []
        if self.freeze_bn:
            self.body = timm.layers.freeze_batch_norm_2d(self.body)
            num_bn = sum(isinstance(m, (FrozenBatchNorm2d, timm.layers.FrozenBatchNormAct2d))
                         for m in self.body.modules())
            self.frozen.append(f"{num_bn} BatchNorm layers (FrozenBatchNorm2d: fixed statistics and affine)"
                               if num_bn else "no BatchNorm layers to freeze")
        if self.freeze_stages >= 0:
            self.frozen.append(self._freeze_stages(name, self.freeze_stages))

    def _load(self, name: str, path: Path) -> nn.Module:
        """timm's own loader (it drops the classifier and remaps keys where a model needs it), then a report."""
        if not path.is_file():
            raise UserError(f"pretrained file {path} does not exist")
        try:
            body = create_features(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
        except Exception as e:  # noqa: BLE001 - any failure here is the file's, reported in one line
            raise UserError(f"cannot load pretrained file {path} into timm {name!r}: "
                            f"{str(e).splitlines()[0][:300]}") from e
        self.load_report = _load_report(body, path)
        # timm loads features_only weights non-strictly: refuse a file that fits under half the tensors.
        if self.load_report.matched < self.load_report.total / 2:
            raise UserError(f"pretrained file {path} fits {self.load_report.matched} of the "
                            f"{self.load_report.total} tensors of timm {name!r}: it holds weights of another model")
        return body

    def _stage_groups(self) -> list[tuple[str, list[str]]]:
        """(label, body parameter names) of the stem and of each stage, in forward order."""
        params = [n for n, _ in self.body.named_parameters()]
        model = getattr(self.body, "model", None)  # FeatureGetterNet (ViT, EVA): timm's own parameter groups
        if model is not None and hasattr(model, "group_matcher"):
            groups = timm.models.group_parameters(model, model.group_matcher(coarse=True))
            return [("stem" if i == 0 else ".".join(names[0].split(".")[:2]), [f"model.{n}" for n in names])
                    for i, names in enumerate(groups.values())]
        modules = dict(self.body.named_modules())
        labels, bounds = ["stem"], []  # bounds[k]: index of the first parameter after stage k's level module
        first = None
        for level in self.body.feature_info.get_dicts():
            if level["reduction"] < 4:  # stride-2 levels (resnet's act1, efficientnet's blocks.0) are stem
                continue
            module = level["module"]
            prefix = next(m for m in (module, module.replace(".", "_"), f"model.{module}") if m in modules)
            inside = [i for i, n in enumerate(params) if n.startswith(prefix + ".")]
            if first is None:
                first = inside[0] if inside else 0
            # FeatureListNet holds the modules in forward order: a stage ends at its level's last parameter.
            bounds.append(max([i + 1 for i in inside] + bounds[-1:] + [first]))
            labels.append(module)
        bounds = [0, first or 0] + bounds
        return [(label, params[bounds[i]:bounds[i + 1]]) for i, label in enumerate(labels)]

    def _freeze_stages(self, name: str, num_stages: int) -> str:
        """requires_grad=False on the body's stem and first `num_stages` stages."""
        groups = self._stage_groups()
        if num_stages >= len(groups):
            raise UserError(f"timm backbone {name!r} has {len(groups) - 1} stages after its stem "
                            f"({', '.join(label for label, _ in groups[1:])}); --freeze-stages must be at most "
                            f"{len(groups) - 1}")
        names = {n for _, group in groups[: num_stages + 1] for n in group}
        params = [p for n, p in self.body.named_parameters() if n in names]
        for p in params:
            p.requires_grad_(False)
        labels = ", ".join(label for label, _ in groups[: num_stages + 1])
        return f"{labels}: {len(params)} tensors, {sum(p.numel() for p in params) / 1e6:.2f} M parameters frozen"

    def set_grad_checkpointing(self, enable: bool = True) -> bool:
        """timm's activation checkpointing of the body's stages (FeatureListNet, EfficientNetFeatures) or blocks
        (ViT through FeatureGetterNet); False where the model has none."""
        for owner in (self.body, getattr(self.body, "model", None)):
            if owner is not None and hasattr(owner, "set_grad_checkpointing"):
                try:
                    owner.set_grad_checkpointing(enable)
                except (AssertionError, NotImplementedError):  # timm's way of saying "not for this model"
                    return False
                return True
        return False

    def forward(self, images: Tensor) -> list[Tensor]:
        features = self.body(images)
        features = [features[i] for i in self.indices]
        if self.nhwc:  # swin, mambaout: (B, H, W, C)
            features = [f.permute(0, 3, 1, 2) for f in features]
        if self.pyramid is not None:
            features = self.pyramid(features[0])
        return features

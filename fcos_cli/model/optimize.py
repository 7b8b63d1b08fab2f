"""Speed-ups that keep the results: BatchNorm folded into convs, channels_last, torch.compile.

`optimize_for_inference` works on a copy, so the model that training or `checkpoint.save` sees keeps its
plain BatchNorm layers and NCHW weights. Also `cpu_supports_bf16`, which picks the default CPU precision.
"""

from __future__ import annotations

import copy
from collections import Counter

import torch
from timm.layers import BatchNormAct2d, FrozenBatchNormAct2d
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["optimize_for_inference", "speed_up_training", "fold_batchnorm", "find_conv_norm_pairs", "cpu_supports_bf16"]

# Exact types whose eval forward is the per-channel affine map of running statistics (then, for the
# timm *Act2d ones, `act(drop(x))`). Subclasses may change the forward, so they are not folded.
_NORM_TYPES = (nn.BatchNorm2d, FrozenBatchNorm2d, BatchNormAct2d, FrozenBatchNormAct2d)


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions natively (AVX-512 BF16 or AMX), as oneDNN reports it.

    Without native support oneDNN emulates bf16 and autocast is slower than float32.
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # builds without oneDNN
        return False


class _Tracer(fx.Tracer):
    """Keeps convs and norms as single `call_module` nodes so that their wiring can be read off the graph."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (nn.Conv2d, *_NORM_TYPES)) or super().is_leaf_module(m, qualname)


def _traced_pairs(module: nn.Module) -> list[tuple[str, str]] | None:
    """(conv, norm) names of `module` where the norm's only input is the conv's output and nothing else
    reads that output, each module called once and no parameter of either read directly; None if the
    module cannot be traced (data-dependent control flow and the like)."""
    try:
        graph = _Tracer().trace(module)
    except Exception:  # noqa: BLE001 - any tracing failure only means "cannot prove it safe"
        return None
    modules = dict(module.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    read_directly = {node.target.rpartition(".")[0] for node in graph.nodes if node.op == "get_attr"}
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or type(modules[node.target]) not in _NORM_TYPES:
            continue
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if not isinstance(source, fx.Node) or source.op != "call_module":
            continue
        conv = modules[source.target]
        if (type(conv) is nn.Conv2d and len(source.users) == 1 and calls[source.target] == 1
                and calls[node.target] == 1 and not {source.target, node.target} & read_directly):
            pairs.append((source.target, node.target))
    return pairs


def find_conv_norm_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """Conv -> BatchNorm pairs of `module` that can be folded, proven on its torch.fx graph.

    When the whole module does not trace, a container whose forward is known to call each child at most
    once and to read none of its grandchildren (`FCOS`, `Backbone`, timm's `FeatureListNet` /
    `FeatureDictNet`) is searched child by child; anything else that does not trace gives no pairs:
    nothing is folded that cannot be shown to be a plain conv feeding only its norm.
    """
    pairs = _traced_pairs(module)
    if pairs is not None:
        return pairs
    from timm.models._features import FeatureDictNet  # FeatureListNet subclasses it

    from .backbone import Backbone
    from .detector import FCOS

    if not isinstance(module, (FCOS, Backbone, FeatureDictNet)):
        return []
    return [(f"{name}.{conv}", f"{name}.{norm}") for name, child in module.named_children()
            for conv, norm in find_conv_norm_pairs(child)]


def _after_norm(norm: nn.Module) -> nn.Module:
    """What remains of a folded norm: nothing, or timm's dropout and activation."""
    if isinstance(norm, (BatchNormAct2d, FrozenBatchNormAct2d)):
        return nn.Sequential(norm.drop, norm.act)
    return nn.Identity()


def fold_batchnorm(module: nn.Module) -> int:
    """Fold each provable conv -> BatchNorm pair of an eval-mode `module` into the conv, in place.

    w' = w * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta: one conv instead of
    a conv and a pass over its output. Norms in training mode (batch statistics) are left alone.
    Returns the number of norms folded.
    """
    num_folded = 0
    for conv_name, norm_name in find_conv_norm_pairs(module):
        conv, norm = module.get_submodule(conv_name), module.get_submodule(norm_name)
        if norm.training or norm.running_mean is None or norm.running_var is None:
            continue
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean, norm.running_var,
                                            norm.eps, norm.weight, norm.bias)
        conv.weight, conv.bias = weight, bias
        parent, _, child = norm_name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, child, _after_norm(norm))
        num_folded += 1
    return num_folded


def optimize_for_inference(model: nn.Module, fold_bn: bool = True, channels_last: bool = True,
                           compile: bool = False) -> nn.Module:
    """An eval-mode copy of `model` for inference only; the original is left untouched.

    Args:
        fold_bn: fold BatchNorm into the preceding convs where `find_conv_norm_pairs` proves it safe.
        channels_last: NHWC weights, so that oneDNN (CPU) / cuDNN run convs without layout reorders.
        compile: `torch.compile` the copy's forward (first calls compile: seconds to minutes).

    The copy's state dict differs (no BatchNorm entries): never save it; save the original.
    """
    optimized = copy.deepcopy(model).eval().requires_grad_(False)
    if fold_bn:
        optimized.num_folded_norms = fold_batchnorm(optimized)
    if channels_last:
        optimized = optimized.to(memory_format=torch.channels_last)
    if compile:
        optimized.compile()
    return optimized


def speed_up_training(model: nn.Module) -> nn.Module:
    """In place, for training: NHWC weights (gradients follow), so that oneDNN / cuDNN skip layout reorders.

    Parameter names and values are unchanged, so checkpoints and optimizers see the same model;
    `checkpoint.save` writes contiguous copies of NHWC weights. (`fcos train --compile` compiles the
    DDP wrapper where there is one, so compiling is the training loop's business, not this function's.)
    """
    return model.to(memory_format=torch.channels_last)

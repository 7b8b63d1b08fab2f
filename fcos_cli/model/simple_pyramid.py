"""Simple feature pyramid (ViTDet, Li et al. 2022): maps at several strides from one single-stride map."""

from __future__ import annotations

import math
from collections.abc import Sequence

from timm.layers import LayerNorm2d
from torch import Tensor, nn

from ..errors import UserError

__all__ = ["SimplePyramid"]


def _upsample(channels: int, steps: int) -> tuple[nn.Module, int]:
    """`steps` 2x2 stride-2 deconvs, each halving the channels; LayerNorm + GELU between (ViTDet's stride 4)."""
    layers: list[nn.Module] = []
    for step in range(steps):
        if step:
            layers += [LayerNorm2d(channels), nn.GELU()]
        layers.append(nn.ConvTranspose2d(channels, channels // 2, kernel_size=2, stride=2))
        channels //= 2
    return nn.Sequential(*layers), channels


class SimplePyramid(nn.Module):
    """Builds finer maps with deconvs, keeps the input's stride as is, and max-pools for coarser ones.

    ViTDet (Sec. 3) shows a plain ViT needs no hierarchical backbone: from its last stride-16 map, one
    deconv gives stride 8, two give stride 4, and a max-pool gives stride 32. The FPN that follows adds the
    1x1 / 3x3 convs that ViTDet puts on each scale (and its top-down path, which ViTDet finds harmless).

    Args:
        in_channels: channels of the single input map.
        in_stride: its stride (16 for a patch-16 ViT).
        strides: strides to produce, each `in_stride` times a power of two (e.g. 8, 16, 32).

    Forward: (B, C, H / in_stride, W / in_stride) -> list of (B, C_i, H / s_i, W / s_i), `channels` C_i
    (C / 2**k for the k-th finer stride, C otherwise).
    """

    def __init__(self, in_channels: int, in_stride: int, strides: Sequence[int]) -> None:
        super().__init__()
        bad = [s for s in strides if not math.log2(max(s, in_stride) / min(s, in_stride)).is_integer()]
        if bad:
            raise UserError(f"a simple feature pyramid from a stride-{in_stride} map cannot make strides {bad} "
                            f"(only power-of-two steps); choose a model with stride 16 features (patch 16)")
        # The ViT's residual stream is not normalised when taken before its final norm: LayerNorm first.
        self.norm = LayerNorm2d(in_channels)
        self.scales = nn.ModuleList()
        self.channels: list[int] = []
        for stride in strides:
            if stride < in_stride:
                module, channels = _upsample(in_channels, int(math.log2(in_stride // stride)))
            elif stride == in_stride:
                module, channels = nn.Identity(), in_channels
            else:
                factor = stride // in_stride
                module, channels = nn.MaxPool2d(kernel_size=factor, stride=factor), in_channels
            self.scales.append(module)
            self.channels.append(channels)
        self.strides = list(strides)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.norm(x)
        return [scale(x) for scale in self.scales]

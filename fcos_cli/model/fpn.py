"""Feature pyramid: lateral 1x1 + top-down + 3x3 outputs on C3-C5, then P6/P7 by stride-2 convs."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FPN"]


class FPN(nn.Module):
    """FPN of the FCOS paper (Sec. 3.2), shaped like torchvision's FPN + LastLevelP6P7.

    Args:
        in_channels: channels of the backbone maps, finest first (e.g. C3, C4, C5).
        out_channels: channels of every output level.
        num_extra: levels above the last backbone map (2 gives P6, P7), each a 3x3 stride-2 conv,
            with a ReLU before every one but the first.
        extra_from: "p5" (FCOS, torchvision) or "c5" (RetinaNet) as the input of the first extra level.

    Forward: list of (B, C_i, H_i, W_i) -> list of (B, out_channels, H_l, W_l), finest first.
    """

    def __init__(self, in_channels: list[int], out_channels: int = 256, num_extra: int = 2,
                 extra_from: str = "p5") -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        self.extra_from_c5 = extra_from == "c5"
        extra_in = [in_channels[-1] if self.extra_from_c5 else out_channels] + [out_channels] * (num_extra - 1)
        self.extra = nn.ModuleList(nn.Conv2d(c, out_channels, 3, stride=2, padding=1) for c in extra_in[:num_extra])
        for conv in [*self.lateral, *self.output, *self.extra]:
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        inner = self.lateral[-1](features[-1])
        outputs = [self.output[-1](inner)]
        for i in range(len(features) - 2, -1, -1):
            lateral = self.lateral[i](features[i])
            inner = lateral + F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            outputs.insert(0, self.output[i](inner))
        x = features[-1] if self.extra_from_c5 else outputs[-1]
        for j, conv in enumerate(self.extra):
            x = conv(x if j == 0 else F.relu(x))
            outputs.append(x)
        return outputs

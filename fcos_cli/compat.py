"""torchvision FCOS compatibility: its parameter names mapped onto ours (torchvision preset)."""

from __future__ import annotations

import re

from torch import Tensor

__all__ = ["TORCHVISION_KEY_RULES", "from_torchvision_state_dict"]

# (pattern, replacement) applied in order; the first match wins. timm's ResNet keeps torchvision's
# parameter names (conv1, bn1, layer1..4), so the backbone body maps one to one.
TORCHVISION_KEY_RULES: list[tuple[str, str]] = [
    (r"^backbone\.body\.", "backbone.body."),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.0\.", r"fpn.lateral.\1."),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.0\.", r"fpn.output.\1."),
    (r"^backbone\.fpn\.extra_blocks\.p6\.", "fpn.extra.0."),
    (r"^backbone\.fpn\.extra_blocks\.p7\.", "fpn.extra.1."),
    (r"^head\.classification_head\.conv\.", "head.cls_tower."),
    (r"^head\.classification_head\.cls_logits\.", "head.cls_logits."),
    (r"^head\.regression_head\.conv\.", "head.box_tower."),
    (r"^head\.regression_head\.bbox_reg\.", "head.box_regression."),
    (r"^head\.regression_head\.bbox_ctrness\.", "head.centerness."),
]


def from_torchvision_state_dict(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Rename a torchvision `FCOS` state dict to ours; returns (renamed, keys no rule matched)."""
    renamed, unused = {}, []
    for key, value in state.items():
        for pattern, repl in TORCHVISION_KEY_RULES:
            if re.match(pattern, key):
                renamed[re.sub(pattern, repl, key)] = value
                break
        else:
            unused.append(key)
    return renamed, unused

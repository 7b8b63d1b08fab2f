"""Foreign FCOS parameter names mapped onto ours: torchvision, mmdetection, the original FCOS (maskrcnn-benchmark)."""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import Tensor

__all__ = ["TORCHVISION_KEY_RULES", "MMDET_KEY_RULES", "FCOS_ORIGINAL_KEY_RULES", "KEY_RULES", "KeyRules",
           "rename_state_dict", "from_torchvision_state_dict", "COCO_NAMES", "COCO_CATEGORY_IDS",
           "TORCHVISION_COCO_SLOTS"]

# (pattern, replacement) applied in order; the first match wins; a replacement may be a function of the match.
KeyRules = list[tuple[str, "str | Callable[[re.Match[str]], str]"]]

# timm's ResNet keeps torchvision's parameter names (conv1, bn1, layer1..4), so the backbone body maps one to one.
TORCHVISION_KEY_RULES: KeyRules = [
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


def _tower(ours: str, offset: int) -> Callable[[re.Match[str]], str]:
    """mmdet's ConvModule i (conv, gn) -> index 3i (conv) or 3i+1 (GroupNorm) of our conv-GN-ReLU Sequential."""
    return lambda m: f"head.{ours}.{3 * int(m[1]) + offset}."


# mmdetection 2.x/3.x: ResNet (mmdet/models/backbones/resnet.py), FPN with start_level=1 and two
# extra convs (necks/fpn.py: lateral_convs 0-2 for C3-C5, fpn_convs 0-2 outputs, 3-4 P6/P7),
# FCOSHead (dense_heads/fcos_head.py, anchor_free_head.py; mmdet 2.0 named the predictors fcos_*).
MMDET_KEY_RULES: KeyRules = [
    (r"^backbone\.(conv1|bn1)\.", r"backbone.body.\1."),
    (r"^backbone\.(layer\d+)\.", r"backbone.body.\1."),
    (r"^neck\.lateral_convs\.(\d+)\.conv\.", r"fpn.lateral.\1."),
    (r"^neck\.fpn_convs\.([0-2])\.conv\.", r"fpn.output.\1."),
    (r"^neck\.fpn_convs\.([3-9])\.conv\.", lambda m: f"fpn.extra.{int(m[1]) - 3}."),
    (r"^bbox_head\.cls_convs\.(\d+)\.conv\.", _tower("cls_tower", 0)),
    (r"^bbox_head\.cls_convs\.(\d+)\.gn\.", _tower("cls_tower", 1)),
    (r"^bbox_head\.reg_convs\.(\d+)\.conv\.", _tower("box_tower", 0)),
    (r"^bbox_head\.reg_convs\.(\d+)\.gn\.", _tower("box_tower", 1)),
    (r"^bbox_head\.(?:conv|fcos)_cls\.", "head.cls_logits."),
    (r"^bbox_head\.(?:conv|fcos)_reg\.", "head.box_regression."),
    (r"^bbox_head\.(?:conv|fcos)_centerness\.", "head.centerness."),
    (r"^bbox_head\.scales\.(\d+)\.scale$", r"head.scales.\1.scale"),
]

# tianzhi0549/FCOS (maskrcnn-benchmark): backbone.body.stem + layer1-4 (resnet.py), FPN built on
# [0, C3, C4, C5] so its blocks are fpn_inner2-4 / fpn_layer2-4 (fpn.py), LastLevelP6P7 top_blocks,
# rpn.head towers as conv-GN-ReLU Sequentials like ours (rpn/fcos/fcos.py).
FCOS_ORIGINAL_KEY_RULES: KeyRules = [
    (r"^backbone\.body\.stem\.(conv1|bn1)\.", r"backbone.body.\1."),
    (r"^backbone\.body\.(layer\d+)\.", r"backbone.body.\1."),
    (r"^backbone\.fpn\.fpn_inner(\d)\.", lambda m: f"fpn.lateral.{int(m[1]) - 2}."),
    (r"^backbone\.fpn\.fpn_layer(\d)\.", lambda m: f"fpn.output.{int(m[1]) - 2}."),
    (r"^backbone\.fpn\.top_blocks\.p6\.", "fpn.extra.0."),
    (r"^backbone\.fpn\.top_blocks\.p7\.", "fpn.extra.1."),
    (r"^rpn\.head\.cls_tower\.", "head.cls_tower."),
    (r"^rpn\.head\.bbox_tower\.", "head.box_tower."),
    (r"^rpn\.head\.cls_logits\.", "head.cls_logits."),
    (r"^rpn\.head\.bbox_pred\.", "head.box_regression."),
    (r"^rpn\.head\.centerness\.", "head.centerness."),
    (r"^rpn\.head\.scales\.(\d+)\.scale$", r"head.scales.\1.scale"),
]

KEY_RULES: dict[str, KeyRules] = {"torchvision": TORCHVISION_KEY_RULES, "mmdet": MMDET_KEY_RULES,
                                  "fcos-original": FCOS_ORIGINAL_KEY_RULES}


def rename_state_dict(state: dict[str, Tensor], rules: KeyRules) -> tuple[dict[str, tuple[str, Tensor]], list[str]]:
    """Rename keys by `rules`: ({our key: (source key, tensor)}, source keys no rule matched)."""
    renamed, unused = {}, []
    for key, value in state.items():
        for pattern, repl in rules:
            if re.match(pattern, key):
                renamed[re.sub(pattern, repl, key, count=1)] = (key, value)
                break
        else:
            unused.append(key)
    return renamed, unused


def from_torchvision_state_dict(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Rename a torchvision `FCOS` state dict to ours; returns (renamed, keys no rule matched)."""
    renamed, unused = rename_state_dict(state, TORCHVISION_KEY_RULES)
    return {k: v for k, (_, v) in renamed.items()}, unused


# The 80 COCO categories (instances_*.json names) and their ids; label k of an imported COCO model is id k.
COCO_NAMES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
]
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
# torchvision's COCO detectors have 91 outputs indexed by category id (0 "__background__", 11 "N/A").
TORCHVISION_COCO_SLOTS = 91

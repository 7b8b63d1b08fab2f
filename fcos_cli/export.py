"""ONNX export with the postprocess inside: 0-1 image in, boxes/scores/labels out (onnxruntime-ready)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import _topk_min
from torchvision.ops import batched_nms

from .atomic import atomic_write
from .config import FCOSConfig, to_dict
from .errors import UserError
from .losses import ltrb_to_boxes
from .model import FCOS, flatten_levels

__all__ = ["ExportedDetector", "export_onnx", "compare_onnx"]


class ExportedDetector(nn.Module):
    """One image (1, 3, H, W) in 0-1 -> boxes (N, 4) xyxy in input pixels, scores (N,), labels (N,).

    The same rules as `postprocess.postprocess`, written with traceable ops only: points from the
    traced feature sizes, top-k through torchvision's ONNX-aware `_topk_min`, NMS as ONNX NonMaxSuppression.
    N varies per image (at most max_detections); points use the nominal stride spacing.
    """

    def __init__(self, model: FCOS, cfg: FCOSConfig) -> None:
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        outputs = self.model(images)
        post, targets = self.cfg.post, self.cfg.targets
        cls_logits, box_regression, centerness = flatten_levels(outputs)
        cls_prob = cls_logits[0].sigmoid()  # (P, K)
        scores = cls_prob * centerness[0].sigmoid()[:, None]
        if post.score_rule == "sqrt":
            scores = scores.sqrt()
        gate = cls_prob if post.threshold_on == "cls" else scores
        scores = torch.where(gate > post.score_thresh, scores, torch.full_like(scores, -1.0))
        num_classes = scores.shape[1]
        all_scores, all_boxes, all_labels = [], [], []
        start = 0
        for level, stride in enumerate(self.model.strides):
            h, w = outputs.cls_logits[level].shape[-2:]
            ys = (torch.arange(h, dtype=torch.float32) + targets.point_offset) * stride
            xs = (torch.arange(w, dtype=torch.float32) + targets.point_offset) * stride
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            xy = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)  # (h*w, 2)
            count = h * w
            level_scores = scores[start:start + count].reshape(-1)
            top, idx = level_scores.topk(_topk_min(level_scores, post.topk_per_level, 0))
            point = torch.div(idx, num_classes, rounding_mode="floor")
            ltrb = box_regression[0, start:start + count][point]
            if self.cfg.model.head.norm_reg_targets:
                ltrb = ltrb * stride
            all_scores.append(top)
            all_boxes.append(ltrb_to_boxes(xy[point], ltrb))
            all_labels.append(idx % num_classes)
            start = start + count
        scores_c, boxes, labels = torch.cat(all_scores), torch.cat(all_boxes), torch.cat(all_labels)
        size = torch._shape_as_tensor(images)[2:].flip(0).to(boxes.dtype)  # (W, H), dynamic in the ONNX graph
        boxes = torch.minimum(boxes.clamp(min=0), size.repeat(2))
        valid = scores_c >= 0
        boxes, scores_c, labels = boxes[valid], scores_c[valid], labels[valid]
        keep = batched_nms(boxes, scores_c, labels, post.nms_iou)[: post.max_detections]
        return boxes[keep], scores_c[keep], labels[keep]


def export_onnx(model: FCOS, cfg: FCOSConfig, class_names: list[str], path: Path, sample: Tensor,
                opset: int = 17, extra: dict[str, str] | None = None) -> Path:
    """Write `path` (atomically): dynamic height/width, config and class names as ONNX metadata."""
    import onnx

    if cfg.targets.point_spacing != "stride":
        raise UserError("ONNX export supports point_spacing 'stride' (torchvision's spacing depends on the padded "
                        "size at run time); export a paper or improved model")
    wrapper = ExportedDetector(model.eval(), cfg).eval()
    with atomic_write(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes are traced on purpose
        # The legacy exporter on purpose: the dynamo one fails on batched_nms's data-dependent shapes.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(wrapper, (sample,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["boxes", "scores", "labels"],
                          dynamic_axes={"images": {2: "height", 3: "width"}, "boxes": {0: "n"},
                                        "scores": {0: "n"}, "labels": {0: "n"}})
        proto = onnx.load(str(tmp))
        metadata = {"fcos_cli.config": json.dumps(to_dict(cfg)), "fcos_cli.class_names": json.dumps(class_names),
                    **(extra or {})}
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
    return path


def compare_onnx(path: Path, model: FCOS, cfg: FCOSConfig, image: Tensor) -> dict[str, float]:
    """Run the ONNX file with onnxruntime and the PyTorch model on `image` (1, 3, H, W); max differences."""
    import onnxruntime

    from .pipeline import detections_for

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    boxes, scores, labels = session.run(None, {"images": image.numpy()})
    with torch.no_grad():
        ref = detections_for(model(image), model.strides, [tuple(image.shape[-2:])], cfg)[0]
    if len(boxes) != len(ref["boxes"]) or not (labels == ref["labels"].numpy()).all():
        return {"detections": float(len(boxes)), "reference": float(len(ref["boxes"])), "box": float("inf"),
                "score": float("inf")}
    return {"detections": float(len(boxes)), "reference": float(len(ref["boxes"])),
            "box": float(abs(torch.from_numpy(boxes) - ref["boxes"]).max()) if len(boxes) else 0.0,
            "score": float(abs(torch.from_numpy(scores) - ref["scores"]).max()) if len(boxes) else 0.0}

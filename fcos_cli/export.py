"""ONNX export with the postprocess inside: 0-1 image in, boxes/scores/labels out (onnxruntime-ready)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import _topk_min
from torchvision.ops import batched_nms

from .atomic import atomic_write
from .boxes import ltrb_to_boxes
from .config import FCOSConfig
from .errors import UserError
from .head_outputs import flatten_levels
from .metadata import WeightsInfo
from .model import FCOS

__all__ = ["ExportedDetector", "export_onnx", "ExportCheck", "check_onnx", "check_images"]

# Flattened head outputs, kept in the file as named values (not graph outputs) so that the check can read them.
RAW_OUTPUTS = ("raw_cls_logits", "raw_box_regression", "raw_centerness")
RAW_TOLERANCE = 1e-3  # largest |ONNX - PyTorch| / (1 + |PyTorch|) of the raw head outputs
BOX_TOLERANCE_PX = 0.5
SCORE_TOLERANCE = 1e-3
CHECK_IMAGES = 4  # images the export check runs on


class ExportedDetector(nn.Module):
    """One image (1, 3, H, W) in 0-1 -> boxes (N, 4) xyxy in input pixels, scores (N,), labels (N,).

    The same rules as `postprocess.postprocess`, written with traceable ops only: points from the
    traced feature sizes, top-k through torchvision's ONNX-aware `_topk_min`, NMS as ONNX NonMaxSuppression.
    N varies per image (at most max_detections); points use the nominal stride spacing.
    """

    def __init__(self, model: FCOS, cfg: FCOSConfig, raw_outputs: bool = False) -> None:
        super().__init__()
        self.model, self.cfg, self.raw_outputs = model, cfg, raw_outputs

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """boxes, scores, labels; then, with `raw_outputs`, cls_logits (1, P, K), box_regression (1, P, 4) and
        centerness (1, P)."""
        outputs = self.model(images)
        post, targets = self.cfg.post, self.cfg.targets
        cls_logits, box_regression, centerness = raw = flatten_levels(outputs)
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
        return (boxes[keep], scores_c[keep], labels[keep], *(raw if self.raw_outputs else ()))


def export_onnx(model: FCOS, cfg: FCOSConfig, class_names: list[str], path: Path, sample: Tensor,
                opset: int = 17, category_ids: list[int] | None = None) -> Path:
    """Write `path` (atomically): dynamic height/width, a `WeightsInfo` (config, class names, ...) as ONNX metadata.

    The graph outputs boxes, scores and labels; the raw head outputs stay in it as values named `RAW_OUTPUTS`
    (what `check_onnx` compares).
    """
    import onnx

    if cfg.targets.point_spacing != "stride":
        raise UserError("ONNX export supports point_spacing 'stride' (torchvision's spacing depends on the padded "
                        "size at run time); export a paper or improved model")
    wrapper = ExportedDetector(model.eval(), cfg, raw_outputs=True).eval()
    with atomic_write(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes are traced on purpose
        # The legacy exporter on purpose: the dynamo one fails on batched_nms's data-dependent shapes.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(wrapper, (sample,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["boxes", "scores", "labels", *RAW_OUTPUTS],
                          dynamic_axes={"images": {2: "height", 3: "width"}, "boxes": {0: "n"},
                                        "scores": {0: "n"}, "labels": {0: "n"},
                                        **{name: {1: "points"} for name in RAW_OUTPUTS}})
        proto = onnx.load(str(tmp))
        for i in reversed(range(len(proto.graph.output))):  # the raw values stay in the graph, as intermediates
            if proto.graph.output[i].name in RAW_OUTPUTS:
                del proto.graph.output[i]
        WeightsInfo(cfg, class_names, category_ids).to_onnx(proto)
        onnx.save(proto, str(tmp))
    return path


@dataclass
class ExportCheck:
    """onnxruntime against PyTorch on the check images: largest differences and what was compared."""

    num_images: int
    num_detections: int  # PyTorch's detections with score >= conf, each matched to one of the ONNX file's
    raw: float  # raw head outputs, relative: |ONNX - PyTorch| / (1 + |PyTorch|)
    box: float  # px, between matched detections (either way)
    score: float


def check_images(cfg: FCOSConfig, folder: str | None = None, num: int = CHECK_IMAGES) -> tuple[list[np.ndarray], str]:
    """Real images to check an export on, HxWx3 uint8, and where they come from: the first of `folder`, else of
    the validation data the weights record, else generated demo scenes (shapes, the model may find nothing)."""
    from .data import open_recorded
    from .data.dataset import read_image
    from .engine.predict import collect_images

    if folder is not None:
        try:
            files = collect_images(folder)[0]
        except UserError as e:
            raise UserError(f"--check-images {e}") from None
        return [read_image(p) for p in files[:num]], folder
    try:
        index = open_recorded(cfg.data, "val", cfg.train.seed)
        images = []
        for record in index.records[: num * 2]:  # a few spares for unreadable files
            try:
                images.append(read_image(record.path))
            except UserError:
                continue
        if images:
            return images[:num], f"{index.source or cfg.data.train} (validation data recorded in the weights)"
    except UserError:  # imported weights record no data; recorded paths may have moved
        pass
    from .data.synthetic import demo_scene

    return [np.asarray(demo_scene(seed, cfg.data.img_size)) for seed in range(num)], "generated demo scenes"


def check_onnx(path: Path, model: FCOS, cfg: FCOSConfig, images: list[np.ndarray], conf: float,
               source: str = "the check images") -> ExportCheck:
    """Run the ONNX file with onnxruntime and the PyTorch model on `images` (HxWx3 uint8, resized as `predict`
    does); compare the raw head outputs and the detections with score >= `conf`, matched within each class.

    Raises UserError when a difference exceeds its tolerance, or when no detection was compared (a check on
    nothing would pass any graph).
    """
    import onnx
    import onnxruntime

    from .data.transforms import build_transform
    from .pipeline import detections_for

    proto = onnx.load(str(path))
    for name in RAW_OUTPUTS:  # expose the head's values that export_onnx left inside the graph
        proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    transform = build_transform(cfg.data.img_size, train=False, max_size=cfg.data.max_size,
                                rounding=cfg.data.size_rounding)
    check = ExportCheck(len(images), 0, 0.0, 0.0, 0.0)
    for pixels in images:
        resized = transform(image=pixels, bboxes=np.zeros((0, 4), np.float32), labels=np.zeros(0))["image"]
        image = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)[None].float() / 255  # (1, 3, H, W)
        boxes, scores, labels, *raw = (torch.from_numpy(v) for v in session.run(
            ["boxes", "scores", "labels", *RAW_OUTPUTS], {"images": image.numpy()}))
        with torch.no_grad():
            outputs = model(image)
            ref = detections_for(outputs, model.strides, [tuple(image.shape[-2:])], cfg)[0]
        for ours, theirs in zip(raw, flatten_levels(outputs)):
            check.raw = max(check.raw, float(((ours - theirs).abs() / (1 + theirs.abs())).max()))
        check.num_detections += int((ref["scores"] >= conf).sum())
        for a, b in (((boxes, scores, labels), (ref["boxes"], ref["scores"], ref["labels"])),
                     ((ref["boxes"], ref["scores"], ref["labels"]), (boxes, scores, labels))):
            box, score = _matched_differences(*a, *b, conf)
            check.box, check.score = max(check.box, box), max(check.score, score)
    if check.raw > RAW_TOLERANCE or check.box > BOX_TOLERANCE_PX or check.score > SCORE_TOLERANCE:
        raise UserError(f"{path}: onnxruntime disagrees with PyTorch on {_images(check.num_images)} from {source}: raw "
                        f"head outputs by {check.raw:.2e} (tolerance {RAW_TOLERANCE:g}), boxes by {check.box:.2e} px "
                        f"({BOX_TOLERANCE_PX:g}), scores by {check.score:.2e} ({SCORE_TOLERANCE:g})")
    if check.num_detections == 0:
        raise UserError(f"{path}: no detections with score >= {conf} on {_images(check.num_images)} from {source}, "
                        f"so the check compared none; give --check-images with objects the model finds (or a "
                        f"lower --conf)")
    return check


def _images(count: int) -> str:
    return f"{count} image{'' if count == 1 else 's'}"


def _matched_differences(boxes: Tensor, scores: Tensor, labels: Tensor, other_boxes: Tensor, other_scores: Tensor,
                         other_labels: Tensor, conf: float) -> tuple[float, float]:
    """Largest box and score differences from each detection (N, 4) with score >= conf to the closest detection
    (M, 4) of the same class in the other set: no order, and no threshold edge (the other set is not cut at
    `conf`), so that near-ties and scores a hair around `conf` do not count as differences."""
    keep = scores >= conf
    if not keep.any():
        return 0.0, 0.0
    distance = (boxes[keep][:, None] - other_boxes[None]).abs().amax(-1)  # (N, M)
    distance[labels[keep][:, None] != other_labels[None]] = float("inf")
    if distance.shape[1] == 0:
        return float("inf"), float("inf")
    box, nearest = distance.min(1)
    return float(box.max()), float((scores[keep] - other_scores[nearest]).abs().max())

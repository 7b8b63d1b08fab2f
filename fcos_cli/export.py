"""ONNX export with the postprocess inside: 0-1 image in, boxes/scores/labels out (onnxruntime-ready)."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import nms

from .atomic import atomic_write
from .config import FCOSConfig
from .errors import UserError
from .head_outputs import flatten_levels
from .metadata import WeightsInfo
from .model import FCOS
from .postprocess import top_candidates
from .targets import level_points, level_spacings

__all__ = ["ExportedDetector", "nms_inputs", "quiet_session_options", "export_onnx", "ExportCheck", "check_onnx",
           "check_images"]

# Flattened head outputs, kept in the file as named values (not graph outputs) so that the check can read them.
RAW_OUTPUTS = ("raw_cls_logits", "raw_box_regression", "raw_centerness")
RAW_TOLERANCE = 1e-3  # largest |ONNX - PyTorch| / (1 + |PyTorch|) of the raw head outputs
BOX_TOLERANCE_PX = 0.5
SCORE_TOLERANCE = 1e-3
CHECK_IMAGES = 4  # images the export check runs on


class ExportedDetector(nn.Module):
    """One image (1, 3, H, W) in 0-1 and NMS settings -> boxes (N, 4) xyxy in input pixels, scores (N,), labels (N,).

    `postprocess.top_candidates` (scores, gate, per-level top-k, decode, clip) on points made from the traced feature
    sizes, then class-wise NMS as ONNX NonMaxSuppression. The score gate, the IoU and the number of detections are
    graph inputs (defaults stored in the file), so that `fcos predict -w model.onnx` can change them.
    """

    def __init__(self, model: FCOS, cfg: FCOSConfig, raw_outputs: bool = False) -> None:
        super().__init__()
        self.model, self.cfg, self.raw_outputs = model, cfg, raw_outputs

    def forward(self, images: Tensor, score_threshold: Tensor, iou_threshold: Tensor,
                max_detections: Tensor) -> tuple[Tensor, ...]:
        """boxes, scores, labels; then, with `raw_outputs`, cls_logits (1, P, K), box_regression (1, P, 4) and
        centerness (1, P)."""
        outputs = self.model(images)
        post, targets, strides = self.cfg.post, self.cfg.targets, self.model.strides
        raw = flatten_levels(outputs)
        sizes = [m.shape[-2:] for m in outputs.cls_logits]  # traced: the graph takes any input size
        xy = [level_points(h, w, sx, sy, targets.point_offset)
              for (h, w), (sx, sy) in zip(sizes, level_spacings(sizes, strides, targets.point_spacing), strict=True)]
        size = torch._shape_as_tensor(images)[2:].flip(0).to(torch.float32)  # (W, H), dynamic in the ONNX graph
        scores, boxes, labels = (t[0] for t in top_candidates(
            *raw, xy, strides, size.repeat(2), norm_reg_targets=self.cfg.model.head.norm_reg_targets,
            score_thresh=score_threshold, threshold_on=post.threshold_on, score_rule=post.score_rule,
            topk_per_level=post.topk_per_level))
        valid = scores >= 0
        boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
        # Class-wise NMS by shifting each class's boxes apart (torchvision's trick) by more than the image size.
        shifted = boxes + (labels.to(boxes.dtype) * (size.max() + 1))[:, None]
        keep = _NMS.apply(shifted, scores, iou_threshold)
        keep = keep[torch.arange(keep.shape[0]) < max_detections]
        return (boxes[keep], scores[keep], labels[keep], *(raw if self.raw_outputs else ()))


class _NMS(torch.autograd.Function):
    """torchvision's `nms` with the IoU threshold as a tensor, exported as NonMaxSuppression fed by a graph value
    (torchvision's own ONNX rule bakes it in as a constant)."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, iou_threshold: Tensor) -> Tensor:
        return nms(boxes, scores, float(iou_threshold))

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold):
        from torch.onnx import symbolic_opset11 as opset11

        boxes = opset11.unsqueeze(g, boxes, 0)  # (1, N, 4)
        scores = opset11.unsqueeze(g, opset11.unsqueeze(g, scores, 0), 0)  # (1, 1, N)
        max_per_class = g.op("Constant", value_t=torch.tensor([sys.maxsize], dtype=torch.long))
        selected = g.op("NonMaxSuppression", boxes, scores, max_per_class, iou_threshold)  # (S, 3)
        box_index = g.op("Constant", value_t=torch.tensor([2], dtype=torch.long))
        return opset11.squeeze(g, opset11.select(g, selected, 1, box_index), 1)


def nms_inputs(cfg: FCOSConfig) -> dict[str, np.ndarray]:
    """The graph's NMS inputs from `cfg.post`: score gate, IoU, detections per image (what `export_onnx` stores as
    their defaults, and what `predict` feeds)."""
    post = cfg.post
    return {"score_threshold": np.array(post.score_thresh, np.float32),
            "iou_threshold": np.array(post.nms_iou, np.float32),
            "max_detections": np.array(post.max_detections, np.int64)}


def quiet_session_options():
    """onnxruntime session options without its warnings (it warns about every overridable initializer, which is
    how the NMS inputs get their defaults)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    return options


def export_onnx(model: FCOS, cfg: FCOSConfig, class_names: list[str], path: Path, sample: Tensor,
                opset: int = 17, category_ids: list[int] | None = None) -> Path:
    """Write `path` (atomically): dynamic height/width, a `WeightsInfo` (config, class names, ...) as ONNX metadata.

    The graph takes `images` and the `nms_inputs` (optional: defaults from `cfg.post`, stored as initializers) and
    outputs boxes, scores and labels; the raw head outputs stay in it as values named `RAW_OUTPUTS` (what
    `check_onnx` compares).
    """
    import onnx

    wrapper = ExportedDetector(model.eval(), cfg, raw_outputs=True).eval()
    defaults = nms_inputs(cfg)
    # Traced with the gate at -1 (every candidate kept): a trace must not see an empty candidate list.
    example = (sample, torch.tensor(-1.0), torch.from_numpy(defaults["iou_threshold"]),
               torch.from_numpy(defaults["max_detections"]))
    with atomic_write(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes are traced on purpose
        # The legacy exporter on purpose: the dynamo one fails on NMS's data-dependent shapes.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(wrapper, example, str(tmp), dynamo=False, opset_version=opset,
                          input_names=["images", *defaults], output_names=["boxes", "scores", "labels", *RAW_OUTPUTS],
                          dynamic_axes={"images": {2: "height", 3: "width"}, "boxes": {0: "n"},
                                        "scores": {0: "n"}, "labels": {0: "n"},
                                        **{name: {1: "points"} for name in RAW_OUTPUTS}})
        proto = onnx.load(str(tmp))
        for i in reversed(range(len(proto.graph.output))):  # the raw values stay in the graph, as intermediates
            if proto.graph.output[i].name in RAW_OUTPUTS:
                del proto.graph.output[i]
        for name, value in defaults.items():  # an initializer named as an input is that input's default
            proto.graph.initializer.append(onnx.numpy_helper.from_array(value, name))
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
    from .data.sources import collect_inputs

    if folder is not None:
        try:
            files = collect_inputs(folder)[0]
        except UserError as e:
            raise UserError(f"--check-images {e}") from e
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
    session = onnxruntime.InferenceSession(proto.SerializeToString(), quiet_session_options(),
                                           providers=["CPUExecutionProvider"])
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
        for ours, theirs in zip(raw, flatten_levels(outputs), strict=True):
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

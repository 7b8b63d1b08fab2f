"""Inference on in-memory images: any size, boxes returned in each image's own pixels."""

from __future__ import annotations

import functools
import glob
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from ..atomic import atomic_write
from ..config import FCOSConfig
from ..data.dataset import read_image
from ..data.yolo import IMAGE_SUFFIXES
from ..errors import UserError
from ..data.dataset import collate
from ..data.transforms import build_transform
from ..model import FCOS
from ..pipeline import detections_for
from ..postprocess import Detections
from .common import autocast
from .predict_outputs import PredictOutputs, relative_names, source_root, write_outputs

__all__ = ["ImageLike", "detect", "inference_amp", "predict", "onnx_predict", "collect_images", "PredictRun",
           "PredictOutputs", "predict_files"]

ImageLike = Image.Image | np.ndarray | Tensor  # PIL, HxWx3 uint8, or (3, H, W) float 0-1


def _as_uint8(image: ImageLike) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    if isinstance(image, Tensor):
        return (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return np.asarray(image, dtype=np.uint8)


def inference_amp(device: torch.device, half: bool = False, fp32: bool = False) -> bool:
    """Whether `fcos predict` / `eval` run the network under autocast: on CUDA with `--half` (fp16); on a CPU
    with native bf16 unless `--fp32` (bf16 for backbone, FPN and head; decoding and NMS stay float32)."""
    from ..model.optimize import cpu_supports_bf16

    if fp32:
        return False
    return half if device.type == "cuda" else half or cpu_supports_bf16()


def detect(model: FCOS, cfg: FCOSConfig, images: Tensor, sizes: list[tuple[int, int]],
           amp: bool = False) -> list[Detections]:
    """Detections of a batch (B, 3, H, W) of 0-1 images on the model's device; `sizes` (H, W) before padding.

    Runs under `torch.inference_mode` (no autograd bookkeeping); the returned tensors are normal ones.
    """
    with torch.inference_mode():
        with autocast(images.device, amp):
            outputs = model(images)
        detections = detections_for(outputs, model.strides, sizes, cfg)  # float32, outside autocast
    return [Detections(**{k: v.clone() for k, v in det.items()}) for det in detections]


def predict(model: FCOS, cfg: FCOSConfig, images: list[ImageLike], batch_size: int = 8,
            amp: bool = False) -> list[Detections]:
    """Detections per image (boxes xyxy in that image's pixels, labels 0..K-1), resized as in training.

    `model` may be the output of `model.optimize.optimize_for_inference` (folded BatchNorm, channels_last).
    """
    model.eval()
    device = next(model.parameters()).device
    transform = build_transform(cfg.data.img_size, train=False, max_size=cfg.data.max_size,
                                rounding=cfg.data.size_rounding)
    results: list[Detections] = []
    for start in range(0, len(images), batch_size):
        items = []
        for image in images[start:start + batch_size]:
            pixels = _as_uint8(image)
            resized = transform(image=pixels, bboxes=np.zeros((0, 4), np.float32), labels=np.zeros(0))["image"]
            scale = torch.tensor([resized.shape[1] / pixels.shape[1], resized.shape[0] / pixels.shape[0]] * 2)
            items.append((torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float() / 255, scale))
        batch = collate([(pixels, {}, None) for pixels, _ in items], model.backbone.mean, cfg.model.size_divisor)
        for det, (_, scale) in zip(detect(model, cfg, batch.images.to(device), batch.sizes, amp), items):
            results.append(Detections(boxes=det["boxes"].cpu() / scale, scores=det["scores"].cpu(),
                                      labels=det["labels"].cpu()))
    return results


def collect_images(source: str) -> tuple[list[Path], list[Path]]:
    """Image files of SOURCE (a file, a folder searched recursively, or a glob) and the other files skipped."""
    path = Path(source)
    if path.is_dir():
        candidates = sorted(p for p in path.rglob("*") if p.is_file())
    elif path.is_file():
        candidates = [path]
    else:
        candidates = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
        if not candidates:
            raise UserError(f"{source}: no such file, folder or glob match")
    images = [p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise UserError(f"no images in {source} (expected {', '.join(sorted(IMAGE_SUFFIXES))})")
    return images, [p for p in candidates if p.suffix.lower() not in IMAGE_SUFFIXES]


@dataclass
class PredictRun:
    num_images: int = 0
    per_class: Counter = field(default_factory=Counter)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why)
    seconds: float = 0.0
    results: list[dict] = field(default_factory=list)  # COCO results with file names


def onnx_predict(path: Path, images: list[ImageLike]) -> list[Detections]:
    """The same as `predict`, through an ONNX file from `fcos export` and onnxruntime (one image per run)."""
    import onnx
    import onnxruntime

    from ..metadata import WeightsInfo

    cfg = WeightsInfo.from_onnx(onnx.load(str(path), load_external_data=False), str(path)).config
    session = _onnx_session(str(path), onnxruntime)
    transform = build_transform(cfg.data.img_size, train=False, max_size=cfg.data.max_size,
                                rounding=cfg.data.size_rounding)
    results = []
    for image in images:
        pixels = _as_uint8(image)
        resized = transform(image=pixels, bboxes=np.zeros((0, 4), np.float32), labels=np.zeros(0))["image"]
        scale = np.array([resized.shape[1] / pixels.shape[1], resized.shape[0] / pixels.shape[0]] * 2, np.float32)
        tensor = (resized.astype(np.float32) / 255).transpose(2, 0, 1)[None]
        boxes, scores, labels = session.run(None, {"images": np.ascontiguousarray(tensor)})
        results.append(Detections(boxes=torch.from_numpy(boxes / scale), scores=torch.from_numpy(scores),
                                  labels=torch.from_numpy(labels)))
    return results


@functools.lru_cache(maxsize=2)
def _onnx_session(path: str, onnxruntime):
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


def predict_files(detect: Callable[[list[np.ndarray]], list[Detections]], class_names: list[str], files: list[Path],
                  out_dir: Path, category_ids: list[int], conf: float = 0.25, batch_size: int = 8,
                  outputs: PredictOutputs | None = None, classes: tuple[int, ...] | None = None,
                  root: Path | None = None, progress=None) -> PredictRun:
    """Predict image files with `detect` (e.g. `partial(predict, model, cfg)` or `partial(onnx_predict, path)`);
    keep detections with score >= `conf` (and a label in `classes`, when given); write `predictions.json` (COCO
    results whose file names are relative to `root`, default the files' common folder) and `outputs`."""
    outputs = outputs or PredictOutputs()
    names = relative_names(files, root or source_root("", files))
    run = PredictRun()
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    crops_taken: set[str] = set()
    for first in range(0, len(files), batch_size):
        loaded = []
        for path, name in zip(files[first:first + batch_size], names[first:first + batch_size]):
            try:
                loaded.append((name, read_image(path)))
            except UserError as e:  # one bad file must not stop a folder: skip it and say so
                run.skipped.append((path, str(e)))
        for (name, pixels), det in zip(loaded, detect([p for _, p in loaded]) if loaded else []):
            keep = det["scores"] >= conf
            if classes is not None:
                keep &= torch.isin(det["labels"], torch.tensor(classes, dtype=det["labels"].dtype))
            boxes, scores, labels = det["boxes"][keep], det["scores"][keep], det["labels"][keep]
            run.num_images += 1
            run.per_class.update(class_names[k] for k in labels.tolist())
            for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
                run.results.append({"file_name": name.as_posix(), "image_id": run.num_images,
                                    "category_id": category_ids[label],
                                    "bbox": [round(box[0], 2), round(box[1], 2), round(box[2] - box[0], 2),
                                             round(box[3] - box[1], 2)], "score": round(score, 5)})
            write_outputs(out_dir, name, pixels, boxes, scores, labels, class_names, outputs, crops_taken)
        if progress is not None:
            progress(len(files[first:first + batch_size]))
    with atomic_write(out_dir / "predictions.json") as tmp:
        tmp.write_text(json.dumps(run.results))
    run.seconds = time.perf_counter() - start
    return run

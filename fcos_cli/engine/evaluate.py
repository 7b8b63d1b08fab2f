"""COCO evaluation: predict a split, map boxes back to original pixels, score with pycocotools."""

from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.transforms.functional import to_pil_image

from ..atomic import atomic_write
from ..config import FCOSConfig
from ..data.dataset import ImageMeta, read_image
from ..data.records import DatasetIndex
from ..model import FCOS
from ..postprocess import Detections
from .common import loader
from .diagnostics import Diagnostics, ImageBoxes, diagnose, plot_confidence_curves, plot_confusion_matrix, side_by_side
from .distributed import Ranks
from .predict import detect

__all__ = ["EvalResult", "evaluate", "predict_results", "to_coco_results", "coco_metrics", "ground_truth",
           "eval_image_ids", "image_boxes", "per_class_rows", "METRIC_NAMES"]

METRIC_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


@dataclass
class EvalResult:
    metrics: dict[str, float]  # METRIC_NAMES, 0-1
    per_class_ap: dict[str, float]  # AP@[.5:.95] per class name (nan: class absent from the split)
    results: list[dict] = field(default_factory=list)  # COCO results format
    precision: np.ndarray | None = None  # (101, K) precision at IoU 0.5 over recall 0..1
    num_unread: int = 0  # images of the file that could not be read, scored as images without detections
    diagnostics: Diagnostics | None = None  # with an output folder: curves, best-F1 confidence, confusion


def to_coco_results(detections: list[Detections], metas: list[ImageMeta], category_ids: list[int]) -> list[dict]:
    """COCO results: boxes mapped back to original pixels as xywh, labels to the dataset's category ids."""
    results = []
    for det, meta in zip(detections, metas, strict=True):
        boxes = det["boxes"].detach().float().cpu() / torch.tensor(meta.scale * 2)  # (N, 4) original pixels
        boxes[:, 2:] -= boxes[:, :2]
        for box, score, label in zip(boxes.tolist(), det["scores"].tolist(), det["labels"].tolist(), strict=True):
            results.append({"image_id": meta.image_id, "category_id": category_ids[label],
                            "bbox": [round(v, 3) for v in box], "score": round(score, 5)})
    return results


def predict_results(model: FCOS, cfg: FCOSConfig, index: DatasetIndex, device: torch.device,
                    batch_size: int = 8, workers: int = 0, amp: bool = False, progress=None) -> tuple[list[dict], dict]:
    """COCO results of a split and each image's original (H, W).

    `model` may be the output of `model.optimize.optimize_for_inference` (folded BatchNorm, channels_last).
    """
    model.eval()
    ids = index.category_ids
    results, sizes = [], {}
    for batch in loader(index, cfg, model.backbone.mean, train=False, batch_size=batch_size, workers=workers):
        detections = detect(model, cfg, batch.images.to(device, non_blocking=True), batch.sizes, amp)
        results += to_coco_results(detections, batch.metas, ids)
        sizes.update((meta.image_id, meta.original_size) for meta in batch.metas)
        if progress is not None:
            progress(len(batch.metas))
    return results, sizes


def _built_ground_truth(index: DatasetIndex, sizes: dict[int, tuple[int, int]]) -> COCO:
    """YOLO, VOC and demo data: the records' boxes (VOC's difficult ones as crowds; area = box area)."""
    ids = index.category_ids
    images, annotations = [], []
    for record in index.records:
        height, width = sizes.get(record.image_id, (record.height, record.width))
        images.append({"id": record.image_id, "width": width, "height": height})
        for crowd, boxes, labels in ((0, record.boxes, record.labels), (1, record.crowd_boxes, record.crowd_labels)):
            for box, label in zip(boxes.tolist(), labels.tolist(), strict=True):
                w, h = box[2] - box[0], box[3] - box[1]
                annotations.append({"id": len(annotations) + 1, "image_id": record.image_id,
                                    "category_id": ids[label], "bbox": [box[0], box[1], w, h], "area": w * h,
                                    "iscrowd": crowd})
    return _indexed({"images": images, "annotations": annotations,
                     "categories": [{"id": i, "name": n} for i, n in zip(ids, index.class_names, strict=True)]})


def _file_ground_truth(path: str) -> COCO:
    """The COCO file as `COCO(path)` loads it, so that our figures are the official ones.

    Only what pycocotools would crash on is filled in: a missing `iscrowd` (0), `area` (the box area) or
    annotation `id`; annotations without a finite box (dropped when loading) are left out.
    """
    data = json.loads(Path(path).read_text())
    used = {a["id"] for a in data["annotations"] if isinstance(a.get("id"), int)}
    next_id = max(used, default=0) + 1
    annotations = []
    for ann in data["annotations"]:
        box = ann["bbox"]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
            continue
        ann = {"iscrowd": 0, "area": box[2] * box[3], **ann}
        if not isinstance(ann.get("id"), int):
            ann["id"], next_id = next_id, next_id + 1
        annotations.append(ann)
    return _indexed({**data, "annotations": annotations})


def _indexed(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints
        coco.createIndex()
    return coco


def ground_truth(index: DatasetIndex, sizes: dict[int, tuple[int, int]] | None = None) -> COCO:
    """The ground truth a split is scored against: its COCO file, else boxes rebuilt from its records."""
    return _file_ground_truth(index.coco_file) if index.coco_file else _built_ground_truth(index, sizes or {})


def eval_image_ids(index: DatasetIndex) -> list[int]:
    """Images scored: the split's records and the images of its file that could not be read (no detections)."""
    return sorted({r.image_id for r in index.records} | set(index.unreadable_ids))


def coco_metrics(index: DatasetIndex, results: list[dict], sizes: dict[int, tuple[int, int]] | None = None,
                 gt: COCO | None = None) -> EvalResult:
    """pycocotools bbox metrics of `results` against the split's ground truth; no detections gives AP 0."""
    gt = gt or ground_truth(index, sizes)
    num_unread = len(index.unreadable_ids)
    if not results:  # COCO.loadRes([]) raises
        return EvalResult(dict.fromkeys(METRIC_NAMES, 0.0), dict.fromkeys(index.class_names, 0.0), [],
                          num_unread=num_unread)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes([dict(r) for r in results]), "bbox")  # loadRes edits its input
        evaluator.params.imgIds = eval_image_ids(index)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # (T IoUs, R recalls, K classes, A areas, M max-dets)
    per_class = {}
    for k, name in enumerate(index.class_names):
        p = precision[:, :, k, 0, -1]
        per_class[name] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
    metrics = {name: max(float(v), 0.0) for name, v in zip(METRIC_NAMES, evaluator.stats, strict=True)}
    return EvalResult(metrics, per_class, results, precision[0, :, :, 0, -1], num_unread)


def image_boxes(gt: COCO, results: list[dict], index: DatasetIndex) -> dict[int, ImageBoxes]:
    """Each scored image's ground truth (crowds apart) and detections as tensors, xyxy original pixels."""
    label_of = {cid: k for k, cid in enumerate(index.category_ids)}

    def xyxy(boxes: list[list[float]]) -> torch.Tensor:
        t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        return torch.cat([t[:, :2], t[:, :2] + t[:, 2:]], dim=1)

    detections: dict[int, list[dict]] = {}
    for r in results:
        detections.setdefault(r["image_id"], []).append(r)
    out = {}
    for image_id in eval_image_ids(index):
        anns = [a for a in gt.imgToAnns.get(image_id, []) if a["category_id"] in label_of]
        boxes = [a for a in anns if not a.get("iscrowd", 0)]
        dets = detections.get(image_id, [])
        out[image_id] = ImageBoxes(
            xyxy([a["bbox"] for a in boxes]), torch.tensor([label_of[a["category_id"]] for a in boxes], dtype=torch.int64),
            xyxy([a["bbox"] for a in anns if a.get("iscrowd", 0)]), xyxy([d["bbox"] for d in dets]),
            torch.tensor([d["score"] for d in dets], dtype=torch.float64),  # as written: --conf of one keeps it
            torch.tensor([label_of[d["category_id"]] for d in dets], dtype=torch.int64))
    return out


def evaluate(model: FCOS, cfg: FCOSConfig, index: DatasetIndex, device: torch.device, batch_size: int = 8,
             workers: int = 0, amp: bool = False, out_dir: Path | None = None, progress=None,
             conf: float | None = None, num_samples: int = 4, ranks: Ranks = Ranks()) -> EvalResult | None:
    """Predict `index` (score threshold from cfg.post) and compute COCO metrics.

    With `out_dir`, also the diagnostics (`diagnostics.diagnose`) and its files: results.json, metrics.json,
    pr_curve.png, confidence_curves.png, confusion_matrix.png and `num_samples` drawings under samples/.
    `conf` drops detections scored below it before anything is computed (as `fcos predict --conf`) and is
    the confusion matrix's threshold (default: the best-F1 confidence).
    Under torchrun every rank predicts its share of the images and rank 0 alone scores them and writes
    (the others return None).
    """
    share = replace(index, records=index.records[ranks.rank::ranks.world_size]) if ranks.enabled else index
    gathered = ranks.gather(predict_results(model, cfg, share, device, batch_size, workers, amp, progress))
    if gathered is None:
        return None
    order = {record.image_id: i for i, record in enumerate(index.records)}
    # In the index's order (sorted is stable: each image's detections keep theirs), as one process writes them.
    results = sorted((r for part, _ in gathered for r in part), key=lambda r: order[r["image_id"]])
    sizes = {image_id: size for _, part in gathered for image_id, size in part.items()}
    if conf is not None:
        results = [r for r in results if r["score"] >= conf]
    gt = ground_truth(index, sizes)
    result = coco_metrics(index, results, sizes, gt)
    if out_dir is None:
        return result
    out_dir.mkdir(parents=True, exist_ok=True)
    boxes = image_boxes(gt, results, index)
    result.diagnostics = diagnose(list(boxes.values()), len(index.class_names), conf)
    _write_json(out_dir / "results.json", results)
    _write_json(out_dir / "metrics.json", _metrics_json(result, index.class_names))
    if result.precision is not None:
        plot_precision_recall(result.precision, index.class_names, out_dir / "pr_curve.png")
    plot_confidence_curves(result.diagnostics, index.class_names, out_dir / "confidence_curves.png")
    plot_confusion_matrix(result.diagnostics, index.class_names, out_dir / "confusion_matrix.png")
    for record in index.records[:num_samples]:
        drawn = side_by_side(read_image(record.path), boxes[record.image_id], index.class_names,
                             result.diagnostics.confusion_conf)
        (out_dir / "samples").mkdir(exist_ok=True)
        with atomic_write(out_dir / "samples" / f"{record.image_id}_{record.path.stem}.png") as tmp:
            to_pil_image(drawn).save(tmp, format="PNG")
    return result


def per_class_rows(result: EvalResult, class_names: list[str]) -> list[dict]:
    """The per-class table: images, instances, AP, AP50, and precision/recall at the best-F1 confidence."""
    diag = result.diagnostics
    rows = []
    for k, name in enumerate(class_names):
        p = result.precision[:, k] if result.precision is not None else np.full(1, -1.0)
        rows.append({"class": name, "images": int(diag.num_images[k]), "instances": int(diag.num_instances[k]),
                     "AP": result.per_class_ap[name], "AP50": float(p[p > -1].mean()) if (p > -1).any() else 0.0,
                     "precision": float(diag.class_precision[k]), "recall": float(diag.class_recall[k])})
    return rows


def _metrics_json(result: EvalResult, class_names: list[str]) -> dict:
    diag = result.diagnostics
    return {"metrics": result.metrics, "per_class_ap": result.per_class_ap, "unreadable_images": result.num_unread,
            "per_class": per_class_rows(result, class_names),
            "best_f1": {"confidence": diag.best_conf, "f1": diag.best_f1, "iou": 0.5},
            "confusion_matrix": {"iou": 0.5, "confidence": diag.confusion_conf, "rows": "true class",
                                 "columns": "predicted class", "classes": [*class_names, "background"],
                                 "matrix": diag.confusion.tolist()}}


def _write_json(path: Path, data) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data))


def plot_precision_recall(precision: np.ndarray, class_names: list[str], path: Path) -> None:
    """Precision over recall at IoU 0.5, one curve per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    recall = np.linspace(0, 1, precision.shape[0])
    for k, name in enumerate(class_names):
        p = precision[:, k]
        if (p > -1).any():
            ax.plot(recall, np.clip(p, 0, None), label=f"{name} (AP50 {p[p > -1].mean():.2f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall at IoU 0.5")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)

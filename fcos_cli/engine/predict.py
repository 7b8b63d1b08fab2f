"""Inference: in-memory images (PyTorch or an ONNX file), boxes in each image's own pixels; image and video files."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from ..atomic import atomic_write
from ..config import FCOSConfig
from ..data.dataset import collate, read_image
from ..data.sources import is_video
from ..data.transforms import build_transform
from ..data.video import VideoReader, video_output_name, write_video
from ..errors import UserError
from ..export import nms_inputs, quiet_session_options
from ..metadata import WeightsInfo
from ..model import FCOS
from ..pipeline import detections_for
from ..postprocess import Detections
from .common import autocast
from .predict_outputs import PredictOutputs, draw_detections, relative_names, source_root, write_outputs

__all__ = ["ImageLike", "detect", "inference_amp", "predict", "read_onnx", "onnx_providers", "OnnxDetector",
           "PredictRun", "PredictOutputs", "predict_files", "predict_video", "Progress"]

ImageLike = Image.Image | np.ndarray | Tensor  # PIL, HxWx3 uint8, or (3, H, W) float 0-1


def _as_uint8(image: ImageLike) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    if isinstance(image, Tensor):
        return (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return np.asarray(image, dtype=np.uint8)


def _resizer(cfg: FCOSConfig) -> Callable[[ImageLike], tuple[np.ndarray, np.ndarray]]:
    """The validation resize of `cfg`: an image -> (resized HxWx3 uint8, writable; (4,) float32 xyxy scale)."""
    transform = build_transform(cfg.data.img_size, train=False, max_size=cfg.data.max_size,
                                rounding=cfg.data.size_rounding)

    def resize(image: ImageLike) -> tuple[np.ndarray, np.ndarray]:
        pixels = _as_uint8(image)
        resized = transform(image=pixels, bboxes=np.zeros((0, 4), np.float32), labels=np.zeros(0))["image"]
        scale = np.array([resized.shape[1] / pixels.shape[1], resized.shape[0] / pixels.shape[0]] * 2, np.float32)
        return np.array(resized, copy=True), scale  # a copy: PIL's pixels are read-only, torch warns on them

    return resize


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
    resize = _resizer(cfg)
    results: list[Detections] = []
    for start in range(0, len(images), batch_size):
        items = []
        for image in images[start:start + batch_size]:
            resized, scale = resize(image)
            items.append((torch.from_numpy(resized).permute(2, 0, 1).float() / 255, torch.from_numpy(scale)))
        batch = collate([(pixels, {}, None) for pixels, _ in items], model.backbone.mean, cfg.model.size_divisor)
        for det, (_, scale) in zip(detect(model, cfg, batch.images.to(device), batch.sizes, amp), items, strict=True):
            results.append(Detections(boxes=det["boxes"].cpu() / scale, scores=det["scores"].cpu(),
                                      labels=det["labels"].cpu()))
    return results


def read_onnx(path: Path) -> WeightsInfo:
    """The `WeightsInfo` (config, class names, category ids) of an ONNX file written by `fcos export`."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types for a file that is not ONNX
        raise UserError(f"--weights {path} is not a readable ONNX file ({type(e).__name__}); write one with "
                        f"`fcos export`") from e
    return WeightsInfo.from_onnx(proto, str(path))


def onnx_providers(device: str) -> list:
    """onnxruntime's execution providers for `--device`: auto takes CUDA when both onnxruntime and torch see it."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if device == "cpu" or (device == "auto" and not ("CUDAExecutionProvider" in available
                                                     and torch.cuda.is_available())):
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise UserError(f"--device {device}: this onnxruntime has no CUDA provider (it has {', '.join(available)}); "
                        f"install onnxruntime-gpu, or give --device cpu")
    index = int(device.partition(":")[2] or 0)
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


class OnnxDetector:
    """An ONNX file from `fcos export` on onnxruntime, used like `predict`: images in, detections in their pixels.

    `cfg` (the file's, change it before predicting) gives the resize and the NMS settings fed to the graph
    (`cfg.post.score_thresh`, `nms_iou`, `max_detections`). One image per run; `device` as `onnx_providers`.
    """

    def __init__(self, path: Path, device: str = "cpu") -> None:
        import onnxruntime

        self.path = path
        self.info = read_onnx(path)
        self.cfg, self.class_names = self.info.config, self.info.class_names
        self.session = onnxruntime.InferenceSession(str(path), quiet_session_options(),
                                                    providers=onnx_providers(device))
        if device.startswith("cuda") and "CUDAExecutionProvider" not in self.session.get_providers():
            raise UserError(f"--device {device}: onnxruntime could not start its CUDA provider (see its log above)")
        names = {i.name for i in [*self.session.get_inputs(), *self.session.get_overridable_initializers()]}
        self._baked = None if set(nms_inputs(self.cfg)) <= names else nms_inputs(self.cfg)  # files before NMS inputs

    def __call__(self, images: list[ImageLike]) -> list[Detections]:
        feeds = nms_inputs(self.cfg)
        if self._baked is not None:
            if any(feeds[k] != v for k, v in self._baked.items()):
                raise UserError(f"{self.path} has its NMS settings baked in (an older export): export it again to "
                                f"change --conf below its gate, --iou or --max-det")
            feeds = {}
        resize = _resizer(self.cfg)
        results = []
        for image in images:
            resized, scale = resize(image)
            tensor = (resized.astype(np.float32) / 255).transpose(2, 0, 1)[None]
            boxes, scores, labels = self.session.run(["boxes", "scores", "labels"],
                                                     {"images": np.ascontiguousarray(tensor), **feeds})
            results.append(Detections(boxes=torch.from_numpy(boxes / scale), scores=torch.from_numpy(scores),
                                      labels=torch.from_numpy(labels)))
        return results


@dataclass
class PredictRun:
    num_images: int = 0
    num_videos: int = 0
    num_frames: int = 0  # video frames predicted
    per_class: Counter = field(default_factory=Counter)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why)
    seconds: float = 0.0
    results: list[dict] = field(default_factory=list)  # COCO results of the images, with file names


# progress(what, unit, done, total): "images" or a video's name, "images" or "frames", counts so far and in all
Progress = Callable[[str, str, int, int], None]
Detect = Callable[[list[np.ndarray]], list[Detections]]
_END = object()


def _read_ahead(items: Iterable) -> Iterator:
    """`items`, the next one decoded in a thread while the caller runs the model on this one (PIL, OpenCV and
    torch release the GIL)."""
    items = iter(items)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(next, items, _END)
        while (item := future.result()) is not _END:
            future = pool.submit(next, items, _END)
            yield item


class _Writer:
    """One thread that draws, encodes and writes (in submission order) while the model runs the next batch; at
    most `ahead` jobs wait (each holds an image), and a job's error surfaces in the caller's next `submit`/`close`."""

    def __init__(self, ahead: int) -> None:
        self.pool, self.pending, self.ahead = ThreadPoolExecutor(1), deque[Future](), ahead

    def submit(self, fn: Callable, *args) -> None:
        self.pending.append(self.pool.submit(fn, *args))
        while self.pending and (len(self.pending) > self.ahead or self.pending[0].done()):
            self.pending.popleft().result()

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, exc_type, *_) -> None:
        try:
            while self.pending and exc_type is None:  # on an error, only the running job is waited for
                self.pending.popleft().result()
        finally:
            self.pool.shutdown(cancel_futures=True)


def _read_batch(images: list[tuple[Path, Path]]) -> tuple[list[tuple[Path, np.ndarray]], list[tuple[Path, str]]]:
    """(name, pixels) of the readable images, and (path, why) of the others: one bad file must not stop a folder."""
    loaded, skipped = [], []
    for path, name in images:
        try:
            loaded.append((name, read_image(path)))
        except UserError as e:
            skipped.append((path, str(e)))
    return loaded, skipped


def predict_files(detect: Detect, class_names: list[str], files: list[Path], out_dir: Path, category_ids: list[int],
                  conf: float = 0.25, batch_size: int = 8, outputs: PredictOutputs | None = None,
                  classes: tuple[int, ...] | None = None, root: Path | None = None, progress: Progress | None = None,
                  vid_stride: int = 1) -> PredictRun:
    """Predict image and video files with `detect` (e.g. `partial(predict, model, cfg)` or an `OnnxDetector`).

    Keeps detections with score >= `conf` (and a label in `classes`, when given). Images: `predictions.json` (COCO
    results whose file names are relative to `root`, default the files' common folder) and `outputs`. Videos (every
    `vid_stride`-th frame): `NAME.jsonl` (one line per frame) and an annotated video (see `predict_video`).
    A file that cannot be read is skipped and listed in `skipped`.
    """
    outputs = outputs or PredictOutputs()
    names = relative_names(files, root or source_root("", files))
    images = [(path, name) for path, name in zip(files, names, strict=True) if not is_video(path)]
    run = PredictRun()
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    crops_taken: set[str] = set()
    batches = [images[first:first + batch_size] for first in range(0, len(images), batch_size)]
    with _Writer(2 * batch_size) as writer:
        for loaded, skipped in _read_ahead(map(_read_batch, batches)):
            run.skipped += skipped
            for (name, pixels), det in zip(loaded, detect([p for _, p in loaded]) if loaded else [], strict=True):
                boxes, scores, labels = _kept(det, conf, classes)
                run.num_images += 1
                run.per_class.update(class_names[k] for k in labels.tolist())
                for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist(), strict=True):
                    run.results.append({"file_name": name.as_posix(), "image_id": run.num_images,
                                        "category_id": category_ids[label], "bbox": _xywh(box),
                                        "score": round(score, 5)})
                writer.submit(write_outputs, out_dir, name, pixels, boxes, scores, labels, class_names, outputs,
                              crops_taken)
            if progress is not None:
                progress("images", "images", run.num_images + len(run.skipped), len(images))
    with atomic_write(out_dir / "predictions.json") as tmp:
        tmp.write_text(json.dumps(run.results))
    for path, name in zip(files, names, strict=True):
        if is_video(path):
            try:
                run.num_frames += predict_video(detect, class_names, path, name, out_dir, category_ids, conf,
                                                batch_size, outputs, classes, progress, vid_stride, run.per_class)
                run.num_videos += 1
            except UserError as e:
                run.skipped.append((path, str(e)))
    run.seconds = time.perf_counter() - start
    return run


def predict_video(detect: Detect, class_names: list[str], path: Path, name: Path, out_dir: Path,
                  category_ids: list[int], conf: float = 0.25, batch_size: int = 8,
                  outputs: PredictOutputs | None = None, classes: tuple[int, ...] | None = None,
                  progress: Progress | None = None, vid_stride: int = 1, per_class: Counter | None = None) -> int:
    """Predict every `vid_stride`-th frame of video `path` (at `name` under `out_dir`); returns the frames predicted.

    Writes `NAME.jsonl`, one line per predicted frame: `{"frame", "time" (s), "detections": [{"category_id",
    "class", "bbox" (x, y, w, h px), "score"}]}`; with `outputs.save_images` the annotated frames as a video at
    `video_output_name(NAME)` (fps / vid_stride: the same duration); `save_txt` / `save_crop` per frame under
    labels/NAME/ and crops/CLASS/NAME/ (frame number as the file name). Nothing is left behind on failure.
    """
    outputs = outputs or PredictOutputs()
    frame_outputs = dataclasses.replace(outputs, save_images=False)  # the video writer draws the frames
    crops_taken: set[str] = set()
    done = 0
    with contextlib.ExitStack() as stack:
        video = stack.enter_context(VideoReader(path))
        info = video.info
        total = -(-info.num_frames // vid_stride)  # ceil
        lines_path = stack.enter_context(atomic_write(out_dir / name.with_name(name.name + ".jsonl")))
        lines_path.parent.mkdir(parents=True, exist_ok=True)
        lines = stack.enter_context(open(lines_path, "w"))
        frames = stack.enter_context(contextlib.closing(_read_ahead(video.batches(batch_size, vid_stride))))
        write_frame = None
        with _Writer(2 * batch_size) as writer:  # closed (frames written) before the video file is
            for batch in frames:
                if write_frame is None and outputs.save_images:  # sized by a decoded frame (rotation metadata)
                    height, width = batch[0][1].shape[:2]
                    write_frame = stack.enter_context(write_video(out_dir / video_output_name(name),
                                                                  info.fps / vid_stride, width, height))
                for (index, frame), det in zip(batch, detect([frame for _, frame in batch]), strict=True):
                    boxes, scores, labels = _kept(det, conf, classes)
                    if per_class is not None:
                        per_class.update(class_names[k] for k in labels.tolist())
                    found = [{"category_id": category_ids[k], "class": class_names[k], "bbox": _xywh(box),
                              "score": round(score, 5)}
                             for box, score, k in zip(boxes.tolist(), scores.tolist(), labels.tolist(), strict=True)]
                    lines.write(json.dumps({"frame": index, "time": round(index / info.fps, 4),
                                            "detections": found}) + "\n")
                    writer.submit(_write_frame, write_frame, out_dir, name / f"{index:06d}.jpg", frame, boxes,
                                  scores, labels, class_names, outputs, frame_outputs, crops_taken)
                done += len(batch)
                if progress is not None:
                    progress(name.as_posix(), "frames", done, max(total, done))
    return done


def _write_frame(write_frame: Callable | None, out_dir: Path, name: Path, frame: np.ndarray, boxes: Tensor,
                 scores: Tensor, labels: Tensor, class_names: list[str], outputs: PredictOutputs,
                 frame_outputs: PredictOutputs, crops_taken: set[str]) -> None:
    if write_frame is not None:
        write_frame(draw_detections(frame, boxes, scores, labels, class_names, outputs))
    write_outputs(out_dir, name, frame, boxes, scores, labels, class_names, frame_outputs, crops_taken)


def _kept(det: Detections, conf: float, classes: tuple[int, ...] | None) -> tuple[Tensor, Tensor, Tensor]:
    keep = det["scores"] >= conf
    if classes is not None:
        keep &= torch.isin(det["labels"], torch.tensor(classes, dtype=det["labels"].dtype))
    return det["boxes"][keep], det["scores"][keep], det["labels"][keep]


def _xywh(box: list[float]) -> list[float]:
    return [round(box[0], 2), round(box[1], 2), round(box[2] - box[0], 2), round(box[3] - box[1], 2)]

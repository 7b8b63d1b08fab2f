"""Video files through OpenCV's FFmpeg backend: RGB frames in batches, and annotated copies written out.

OpenCV (opencv-python-headless) is already installed as albumentations' dependency, reads every common container
and writes MPEG-4 Part 2 / Motion JPEG without any other library; PyAV or torchcodec would add a dependency for
no gain here (decoding is a few ms a frame, the detector tens to hundreds).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..errors import UserError

__all__ = ["VIDEO_SUFFIXES", "VideoInfo", "VideoReader", "video_output_name", "write_video"]

# ultralytics' list, less .gif (Pillow reads its first frame as an image).
VIDEO_SUFFIXES = {".asf", ".avi", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ts", ".webm", ".wmv"}
# Containers OpenCV writes silently, with the codec each gets; other inputs are written as `NAME.mp4`.
WRITE_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}
ASSUMED_FPS = 30.0  # when a file states no frame rate

# FFmpeg's own messages ("moov atom not found") would leak around our one-line warning; read on first use.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    num_frames: int  # as the container states it (an estimate for some formats; 0 when unknown)
    width: int
    height: int


class VideoReader:
    """An open video (a context manager): `info`, and `batches()` of its frames.

    Raises UserError when OpenCV cannot open the file, and from `batches` when no frame decodes.
    """

    def __init__(self, path: Path) -> None:
        import cv2

        self.path, self._capture = path, cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            raise UserError(f"cannot read video {path}: not a video OpenCV's FFmpeg can open")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.info = VideoInfo(fps if fps > 0 and math.isfinite(fps) else ASSUMED_FPS,
                              max(int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0),
                              int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                              int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self._capture.release()

    def batches(self, batch_size: int, stride: int = 1) -> Iterator[list[tuple[int, np.ndarray]]]:
        """Lists of up to `batch_size` (frame index, HxWx3 uint8 RGB), every `stride`-th frame from frame 0."""
        import cv2

        batch, index = [], 0
        while self._capture.grab():  # grab only (no colour conversion) for the frames that `stride` skips
            if index % stride == 0:
                ok, frame = self._capture.retrieve()
                if not ok:
                    break
                batch.append((index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
                if len(batch) == batch_size:
                    yield batch
                    batch = []
            index += 1
        if batch:
            yield batch
        if index == 0:
            raise UserError(f"cannot read video {self.path}: no frame decodes")


def video_output_name(name: Path) -> Path:
    """Where the annotated copy of video `name` goes: the same name where OpenCV writes that container, else
    `name` + `.mp4` (`clip.webm` -> `clip.webm.mp4`, never another input's name)."""
    return name if name.suffix.lower() in WRITE_CODECS else name.with_name(name.name + ".mp4")


@contextlib.contextmanager
def write_video(path: Path, fps: float, width: int, height: int) -> Iterator[Callable[[np.ndarray], None]]:
    """Yields `write(frame)` for HxWx3 uint8 RGB frames; the file appears (atomically) when the block ends."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:  # the temporary name keeps the suffix: OpenCV picks the container from it
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*WRITE_CODECS[path.suffix.lower()]), fps,
                                 (width, height))
        if not writer.isOpened():
            raise UserError(f"cannot write video {path} with OpenCV (codec {WRITE_CODECS[path.suffix.lower()]})")
        try:
            yield lambda frame: writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()

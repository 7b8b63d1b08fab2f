"""The files a SOURCE argument names (a file, a folder searched recursively, or a glob): images, and videos."""

from __future__ import annotations

import glob
from pathlib import Path

from ..errors import UserError
from .video import VIDEO_SUFFIXES
from .yolo import IMAGE_SUFFIXES

__all__ = ["collect_inputs", "is_video"]


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def collect_inputs(source: str, videos: bool = False) -> tuple[list[Path], list[Path]]:
    """Image files (and video files, with `videos`) of SOURCE, sorted, and the other files, skipped."""
    path = Path(source)
    if path.is_dir():
        candidates = sorted(p for p in path.rglob("*") if p.is_file())
    elif path.is_file():
        candidates = [path]
    else:
        candidates = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
        if not candidates:
            raise UserError(f"{source}: no such file, folder or glob match")
    suffixes = IMAGE_SUFFIXES | (VIDEO_SUFFIXES if videos else set())
    inputs = [p for p in candidates if p.suffix.lower() in suffixes]
    if not inputs:
        raise UserError(f"no images{' or videos' if videos else ''} in {source} (expected "
                        f"{', '.join(sorted(suffixes))})")
    return inputs, [p for p in candidates if p.suffix.lower() not in suffixes]

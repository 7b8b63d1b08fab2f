"""Video files in and out through OpenCV: frame count, rate and colours survive a round trip; --vid-stride picks
frames by index; a file that is not a video is one UserError; a failed write leaves nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fcos_cli.data.video import VideoReader, video_output_name, write_video
from fcos_cli.errors import UserError

RED, BLUE = (220, 20, 20), (20, 20, 220)


def _write(path: Path, num_frames: int = 10, fps: float = 12.0) -> None:
    with write_video(path, fps, 64, 48) as write:
        for i in range(num_frames):
            frame = np.zeros((48, 64, 3), np.uint8)
            frame[:, :32] = RED  # left half red, right half blue: a BGR/RGB swap shows
            frame[:, 32:] = BLUE
            frame[i * 4:i * 4 + 8, :8] = 255  # a white square moving down
            write(frame)


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mkv"])
def test_round_trip_keeps_count_rate_size_and_colours(suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"clip{suffix}"
    _write(path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    with VideoReader(path) as video:
        assert (video.info.fps, video.info.width, video.info.height) == (12.0, 64, 48)
        frames = [f for batch in video.batches(4) for f in batch]
    assert [i for i, _ in frames] == list(range(10))
    first = frames[0][1].astype(int)
    assert first.shape == (48, 64, 3)
    assert np.abs(first[24, 16] - RED).max() < 40 and np.abs(first[24, 48] - BLUE).max() < 40


def test_stride_and_batches(tmp_path: Path) -> None:
    _write(tmp_path / "clip.mp4", num_frames=11)
    with VideoReader(tmp_path / "clip.mp4") as video:
        batches = [[i for i, _ in batch] for batch in video.batches(batch_size=2, stride=3)]
    assert batches == [[0, 3], [6, 9]]


def test_not_a_video_is_one_user_error(tmp_path: Path) -> None:
    (tmp_path / "junk.mp4").write_bytes(b"\x00garbage" * 100)
    (tmp_path / "empty.mkv").write_bytes(b"")
    for name in ("junk.mp4", "empty.mkv", "missing.avi"):
        with pytest.raises(UserError, match=f"cannot read video .*{name}"):
            VideoReader(tmp_path / name)


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), write_video(tmp_path / "out.mp4", 10, 64, 48) as write:
        write(np.zeros((48, 64, 3), np.uint8))
        raise RuntimeError("stopped")
    assert list(tmp_path.iterdir()) == []


def test_output_name_keeps_writable_containers() -> None:
    assert video_output_name(Path("a/clip.MP4")) == Path("a/clip.MP4")
    assert video_output_name(Path("a/clip.webm")) == Path("a/clip.webm.mp4")

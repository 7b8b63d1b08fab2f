"""Files: atomic writes (a reader never sees a half-written file, a failed write leaves no trace) and hashes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write", "sha256"]


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix); it replaces `path` only if the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        _test_delay(path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _test_delay(path: Path) -> None:
    """Test-only hook: `FCOS_CLI_TEST_RENAME_DELAY=NAME:SECONDS` holds NAME's finished temporary file
    that long before the rename, so that a test can kill the process in the middle of a write."""
    hook = os.environ.get("FCOS_CLI_TEST_RENAME_DELAY")
    if hook:
        name, _, seconds = hook.rpartition(":")
        if path.name == name:
            time.sleep(float(seconds))


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

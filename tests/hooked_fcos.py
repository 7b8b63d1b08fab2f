"""`fcos` with test-only hooks, for tests that need a real process (kill it, torchrun it): `python
tests/hooked_fcos.py ARGS` (also as torchrun's script) runs `fcos ARGS` with these patched in first.

- `FCOS_CLI_TEST_RENAME_DELAY=NAME:SECONDS` holds a finished temporary file that is to become NAME that long
  before its rename, so that a test can kill the process in the middle of a write.
- `FCOS_CLI_TEST_RANK_LOG=FOLDER`: each rank writes `FOLDER/rank{N}.safetensors` at exit, its final weights
  with the ids of the images it trained on per epoch (metadata `images_seen`).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # as `python -m fcos_cli` from the repository

from fcos_cli.engine import train as train_module  # noqa: E402


def _delay_rename(name: str, seconds: float) -> None:
    replace = os.replace

    def delayed(src, dst, *args, **kwargs):
        if Path(dst).name == name:
            time.sleep(seconds)
        return replace(src, dst, *args, **kwargs)

    os.replace = delayed


def _log_ranks(folder: Path) -> None:
    images_seen: dict[int, list[int]] = {}
    seen = {"epoch": 0, "model": None}
    one_epoch, step = train_module.train_one_epoch, train_module._step

    def train_one_epoch(run, epoch, *args, **kwargs):
        seen["epoch"], seen["model"] = epoch, run.model
        return one_epoch(run, epoch, *args, **kwargs)

    def logged_step(net, model, batch, *args, **kwargs):
        images_seen.setdefault(seen["epoch"], []).extend(m.image_id for m in batch.metas)
        return step(net, model, batch, *args, **kwargs)

    def write() -> None:  # at exit: the process group is closed by then, RANK is torchrun's
        from safetensors.torch import save_file

        if seen["model"] is not None:
            folder.mkdir(parents=True, exist_ok=True)
            weights = {k: v.detach().contiguous().clone() for k, v in seen["model"].state_dict().items()}
            save_file(weights, str(folder / f"rank{os.environ.get('RANK', '0')}.safetensors"),
                      metadata={"images_seen": json.dumps(images_seen)})

    train_module.train_one_epoch, train_module._step = train_one_epoch, logged_step
    atexit.register(write)


if hook := os.environ.get("FCOS_CLI_TEST_RENAME_DELAY"):
    name, _, seconds = hook.rpartition(":")
    _delay_rename(name, float(seconds))
if folder := os.environ.get("FCOS_CLI_TEST_RANK_LOG"):
    _log_ranks(Path(folder))

from fcos_cli.cli import app  # noqa: E402

app(prog_name="fcos")

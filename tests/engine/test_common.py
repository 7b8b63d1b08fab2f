"""What the loops share: data-loading workers leave the cores to the model."""

from __future__ import annotations

import cv2
import torch

from fcos_cli.config import FCOSConfig
from fcos_cli.data import open_split
from fcos_cli.data.synthetic import write_demo_data
from fcos_cli.engine.common import init_worker, loader


class _OpenCVThreads(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        return cv2.getNumThreads()


def test_loader_workers_run_opencv_on_one_thread(tmp_path) -> None:
    assert cv2.getNumThreads() > 1  # the default this guards against: one OpenCV thread per core, in each worker
    root = write_demo_data(tmp_path / "demo", num_train=2, num_val=1, max_side=64)
    assert loader(open_split(root / "train.json"), FCOSConfig(), (0.5, 0.5, 0.5), train=True,
                  workers=1).worker_init_fn is init_worker
    threads = torch.utils.data.DataLoader(_OpenCVThreads(), num_workers=1, worker_init_fn=init_worker)
    assert [int(t) for t in threads] == [1, 1]

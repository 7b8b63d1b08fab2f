"""What the loops share: data loaders whose workers start every epoch, whatever the main process ran before."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_epochs_of_workers_after_the_main_process_used_opencv_threads(tmp_path) -> None:
    """OpenCV's thread pool does not survive a fork: a worker that reconfigures it (`cv2.setNumThreads`) after the
    main process has used it hangs for ever (an epoch-2 hang of `fcos train` that this guards against)."""
    script = textwrap.dedent(f"""
        import cv2, numpy as np
        from fcos_cli.config import FCOSConfig
        from fcos_cli.data import open_split
        from fcos_cli.data.synthetic import write_demo_data
        from fcos_cli.engine.common import loader

        cv2.resize(np.zeros((1500, 1500, 3), np.uint8), (700, 700))  # the main process's OpenCV pool starts
        root = write_demo_data({str(tmp_path / "demo")!r}, num_train=4, num_val=1, max_side=96)
        data = loader(open_split(root / "train.json"), FCOSConfig(), (0.5, 0.5, 0.5), train=True, workers=2,
                      batch_size=2)
        for epoch in range(2):
            data.sampler.set_epoch(epoch)
            print(epoch, sum(len(b.images) for b in data), flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0", "4", "1", "4"]


def test_aspect_grouping_fills_each_batch_with_one_orientation_and_resumes_exactly() -> None:
    from fcos_cli.engine.common import EpochSampler

    groups = [i % 3 == 0 for i in range(23)]  # 8 landscape, 15 portrait
    sampler = EpochSampler(23, seed=0, groups=groups, batch_size=4)
    sampler.set_epoch(2)
    order = list(sampler)
    assert sorted(order) == list(range(23))
    full = [order[k:k + 4] for k in range(0, 20, 4) if len({groups[i] for i in order[k:k + 4]}) == 1]
    assert len(full) == 5  # 2 landscape + 3 portrait batches of 4; the 3 leftovers come last
    sampler.set_epoch(2, skip=8)
    assert list(sampler) == order[8:] and len(sampler) == 15
    plain = EpochSampler(23, seed=0)
    plain.set_epoch(2)
    assert sorted(list(plain)) == list(range(23)) and list(plain) != order
    assert order[20:] == [i for i in plain if i in order[20:]]  # the leftovers in the epoch's order


def test_the_training_loader_groups_by_the_records_sizes_unless_turned_off(tmp_path) -> None:
    import numpy as np

    from fcos_cli.config import FCOSConfig
    from fcos_cli.data.records import DatasetIndex, ImageRecord
    from fcos_cli.engine.common import loader

    sizes = [(64, 40), (40, 64)] * 6 + [(None, None)]
    records = [ImageRecord(tmp_path / f"{i}.jpg", np.zeros((0, 4), np.float32), np.zeros(0, np.int64), i, w, h)
               for i, (w, h) in enumerate(sizes)]
    index = DatasetIndex(records, ["a"])
    cfg = FCOSConfig()
    sampler = loader(index, cfg, (0.5,) * 3, train=True, batch_size=3, workers=0).sampler
    assert sampler.groups == [True, False] * 6 + [None] and sampler.batch_size == 3
    sampler.set_epoch(0)
    order = list(sampler)
    assert all(len({sizes[i] for i in order[k:k + 3]}) == 1 for k in range(0, 12, 3))
    cfg.data.aspect_grouping = False
    assert loader(index, cfg, (0.5,) * 3, train=True, batch_size=3, workers=0).sampler.groups is None

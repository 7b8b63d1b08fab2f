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

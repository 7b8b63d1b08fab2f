"""Regenerate the figures in docs/ from a clean checkout: `python docs/make_figures.py`."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

DOCS = Path(__file__).resolve().parent


def inspect_strip() -> Path:
    """Demo image train_0004 under the default preset: its positives on P3, P5 and P7 side by side."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "fcos_cli", "inspect-targets", "--num-images", "5",
                        "--project", tmp, "--name", "demo"], check=True, capture_output=True)
        panels = [Image.open(Path(tmp) / "demo" / f"train_0004_P{level}.png").convert("RGB") for level in (3, 5, 7)]
        strip = Image.new("RGB", (sum(p.width for p in panels), max(p.height for p in panels)), "white")
        x = 0
        for panel in panels:
            strip.paste(panel, (x, 0))
            x += panel.width
        strip = strip.resize((strip.width // 2, strip.height // 2), Image.LANCZOS)
        path = DOCS / "inspect_targets_demo.png"
        strip.quantize(colors=128).save(path, optimize=True)
    return path


if __name__ == "__main__":
    print(inspect_strip())

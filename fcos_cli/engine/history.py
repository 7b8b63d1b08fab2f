"""A run's history: metrics.csv (one row per epoch) and curves.png (losses and validation AP)."""

from __future__ import annotations

import csv
from pathlib import Path

from ..atomic import atomic_write

__all__ = ["LOSS_NAMES", "read_history", "write_history", "plot_history"]

LOSS_NAMES = ("loss", "cls", "box", "centerness")


def read_history(path: Path, epochs: int) -> list[dict]:
    """The rows of the first `epochs` epochs of a metrics.csv (none when it is missing), numbers as numbers."""
    if not path.is_file():
        return []
    with open(path) as f:
        return [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(f)][:epochs]


def _number(text: str) -> float | int | str:
    if not text:
        return text
    return float(text) if any(c in text for c in ".eEn") else int(text)


def plot_history(rows: list[dict], path: Path) -> None:
    """Loss terms and validation AP per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name in LOSS_NAMES:
        left.plot(epochs, [r[name] for r in rows], label=name)
    left.set(xlabel="epoch", ylabel="training loss", yscale="log", title="Losses")
    left.legend()
    evaluated = [r for r in rows if r.get("AP") not in (None, "")]
    for name in ("AP", "AP50"):
        if evaluated:
            right.plot([r["epoch"] for r in evaluated], [r[name] for r in evaluated], marker="o", label=name)
    right.set(xlabel="epoch", ylabel="COCO metric", ylim=(0, 1), title="Validation")
    if evaluated:
        right.legend()
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def write_history(rows: list[dict], path: Path) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        fields = list(dict.fromkeys(k for row in rows for k in row))  # evaluated epochs add metric columns
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)

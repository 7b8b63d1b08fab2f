"""fcos_cli: FCOS object detection on any timm backbone.

    import fcos_cli
    model, cfg, class_names = fcos_cli.load("runs/train/exp/best.safetensors")
    detections = fcos_cli.predict(model, cfg, [pil_image])  # boxes in the image's pixels
"""

from __future__ import annotations

from .version import __version__

__all__ = ["__version__", "load", "predict"]


def __getattr__(name: str):
    # Lazy: `fcos --help` must not pay for importing torch.
    if name == "load":
        from .checkpoint import load

        return load
    if name == "predict":
        from .engine.predict import predict

        return predict
    raise AttributeError(name)

"""FCOS model parts: timm backbone (and its catalog), FPN, shared head, and the detector that chains them."""

from .backbone import Backbone
from .detector import FCOS, build_model
from .fpn import FPN
from .head import FCOSHead, Scale

__all__ = ["Backbone", "FCOS", "FPN", "FCOSHead", "Scale", "build_model"]

"""FCOS model parts: timm backbone, FPN, shared head, and the detector that chains them."""

from .backbone import Backbone
from .detector import FCOS, build_model
from .fpn import FPN
from .head import FCOSHead, HeadOutputs, Scale, flatten_levels, unflatten_levels

__all__ = ["Backbone", "FCOS", "FPN", "FCOSHead", "HeadOutputs", "Scale", "build_model", "flatten_levels", "unflatten_levels"]

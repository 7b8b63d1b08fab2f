"""The package version: printed by `fcos --version` and written into every weights file."""

from __future__ import annotations

__version__ = "0.1.0"

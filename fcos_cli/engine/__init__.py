"""Loops over data: training, evaluation, prediction. Config and paths in, results out; no CLI."""

from .common import autocast, loader, next_run_dir, resolve_device

__all__ = ["autocast", "loader", "next_run_dir", "resolve_device"]

"""The one error type users see: a mistake in their input, printed as one line by the CLI."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A problem with the user's input (a file, a name, a value), not a bug in fcos_cli."""

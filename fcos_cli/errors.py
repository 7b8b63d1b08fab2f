"""The one error type users see: a mistake in their input, printed as one line by the CLI."""

from __future__ import annotations

__all__ = ["UserError", "one_line"]


class UserError(Exception):
    """A problem with the user's input (a file, a name, a value), not a bug in fcos_cli.

    Raise it `from` the exception that revealed the problem: the CLI prints this message alone, in one line,
    and `fcos --debug` the traceback with that cause.
    """


def one_line(message: str) -> str:
    """`message` on one line. A UserError raised in a DataLoader worker comes back with torch's
    "Caught UserError in DataLoader worker process 0. Original Traceback ..." around it: keep its own text."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught ") and "Traceback" in lines[1]:
        last = lines[-1]
        return last.split("UserError: ", 1)[1] if "UserError: " in last else last
    return " ".join(lines)

"""`python -m fcos_cli` runs the `fcos` command line."""

from .cli import app

app(prog_name="fcos")

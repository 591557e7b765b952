"""`python -m tuner ...` is the `tuner` command (for machines where the script is not installed)."""

from tuner.cli import app

app()

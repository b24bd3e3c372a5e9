"""`python -m dfpir_cli`: the dfpir command line, for environments without the console script on PATH."""

from .cli import app

app()

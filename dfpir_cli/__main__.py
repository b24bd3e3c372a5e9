"""`python -m dfpir_cli`: the dfpir command line, for environments without the console script on PATH."""

from .cli import app

if __name__ == "__main__":  # not when a spawned worker re-imports this module as __mp_main__
    app()

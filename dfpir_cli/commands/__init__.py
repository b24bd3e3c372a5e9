"""Thin Typer commands, one module each: parse options, call the library, render with rich."""

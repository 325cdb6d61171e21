"""The thin command-line layer over the library (Typer). Each command lives in its own module."""

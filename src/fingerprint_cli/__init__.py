"""fpx — forensic attribution of AI image-to-image processing and generator fingerprints."""

__version__ = "0.1.0"

"""Origin retrieval (ID2-style): find a suspect's original in a reference library.

Python API (every function returns :class:`fingerprint_cli.records.Record` lists, like the CLI)::

    from fingerprint_cli import origin
    idx, recs = origin.build_index(["refs/"], "lib.fpxindex")          # fpx origin index refs/ -o lib.fpxindex
    idx = origin.load_index("lib.fpxindex")                            # verified against its sha256 seal
    records = origin.query(["suspect.png"], idx, k=5)                  # fpx origin query suspect.png --index ...
    sha, recs = origin.train("pairs.csv", "W.safetensors")             # fpx origin train pairs.csv -o W.safetensors

Modules: :mod:`~fingerprint_cli.origin.embedders` (registry: ``dct-layout`` weight-free default, ``sd2-vae``),
:mod:`~fingerprint_cli.origin.vae` (the SD VAE encoder in torch), :mod:`~fingerprint_cli.origin.head` (linear head,
CosFace training), :mod:`~fingerprint_cli.origin.index` (faiss search, sealed file, projection, calibration and decision rules),
:mod:`~fingerprint_cli.origin.verify` (pixel verification of the top candidate),
:mod:`~fingerprint_cli.origin.library` (build / query / train). See docs/origin.md.
"""

from fingerprint_cli.origin.embedders import DEFAULT_EMBEDDER, EMBEDDERS, get_embedder
from fingerprint_cli.origin.index import OriginIndex, calibrate, load_index
from fingerprint_cli.origin.library import build_index, find_references, query, train

__all__ = ["DEFAULT_EMBEDDER", "EMBEDDERS", "OriginIndex", "build_index", "calibrate", "find_references",
           "get_embedder", "load_index", "query", "train"]

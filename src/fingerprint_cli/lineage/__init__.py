"""Model lineage from generator fingerprints: cross-detection matrix, relatedness, families.

Deep Image Fingerprint §4.3–4.4 (Sinitsa & Fried, WACV 2024): the fingerprint of generator A,
applied to held-out images of generator B against real photographs, detects them well — and
symmetrically — when B inherits A's fingerprint (a fine-tune, a shared autoencoder/decoder), and
poorly when the two are unrelated.

What this module computes, for fingerprints F_1..F_n (all made with the same denoiser and crop):

* ``accuracy[i, j]`` — balanced cross-detection accuracy of F_i on generator j's held-out images
  against held-out real images: ½·(TPR on j's images + TNR on real images), each image called
  "generated" by F_i's own rule (``detect.is_generated``, nearest of μ_gen / μ_real). Chance is 0.5.
  ``auc[i, j]`` is the threshold-free companion (ρ oriented so that F_i's generated side is high).
  Test images are each artifact's recorded held-out split (``meta["test"]``), plus or replaced by
  ``--images NAME=DIR``; any image whose sha256 is in F_i's *training* split is dropped from the cells
  of row i, so a fingerprint is never scored on images it was fitted on.
* ``grid_auc[i, j]`` — the same cross-detection restricted to the grid component (:func:`grid_component`:
  the average over period×period tiles of the interior, i.e. the part locked to the generator's output
  grid); AUC of ρ_grid on j's images against real. Drives the families by default (``metric="grid"``).
* ``fp_correlation[i, j]`` — fingerprint-to-fingerprint correlation: the largest |ρ| between the two
  standardised patterns over cyclic shifts of up to ``max_shift`` pixels each way (a fine-tuned model can
  shift its periodic artefact by a pixel; the sign of a DIF pattern is arbitrary).
* ``relatedness[i, j]`` — symmetric, in [0, 1]: the mean of the two directions of the matrix chosen by
  ``metric`` (grid_auc, accuracy or auc), rescaled so chance is 0 and perfect detection is 1:
  clip((½(M_ij + M_ji) − 0.5) / 0.5, 0, 1).
* families — average-linkage (UPGMA) hierarchical clustering on distance 1 − relatedness, cut at
  ``threshold`` (default 0.5 = a mean cross-detection accuracy of 75%, halfway between chance and
  perfect; see :data:`DEFAULT_THRESHOLD`). Average linkage, not single linkage, so that one strong pair
  cannot chain two unrelated groups together; every member of a family must on average detect the others.
* unresolved — a fingerprint whose self-detection is not above chance (one-sided z < :data:`MIN_SELF_Z`
  against 0.5, from the diagonal cell's image counts) is left out of the families and listed apart: it
  cannot detect its own generator, so it is no evidence of relation or of its absence.

Layout: :mod:`.stats` — pure numerics on numpy arrays (balanced accuracy, AUC, pattern and grid
correlations, self-detection z, relatedness, clustering); :mod:`.analysis` — which images test which
fingerprint, :func:`analyse` (the matrices, with the fingerprint code injected so tests can use stand-ins)
and :func:`run` (the wiring to ``fingerprint_cli.dif`` with one residual cache shared across the matrix, so
each image's residual is computed once); :mod:`.report` — records, the terminal table, the picture.
"""

from fingerprint_cli.lineage.stats import (  # noqa: F401
    CONTROLS, DEFAULT_MAX_SHIFT, DEFAULT_METRIC, DEFAULT_PERIOD, DEFAULT_THRESHOLD, GRID_MARGIN, METRIC_LABELS, METRICS,
    LINK_ALPHA, MIN_SELF_Z, Clustering, auc, balanced_accuracy, chance_z, cluster, families, grid_component, grid_rho,
    link_evidence, pattern_correlation, relatedness, self_detection_z, tile_mean)
from fingerprint_cli.lineage.analysis import (  # noqa: F401
    LineageResult, TestSet, analyse, check_compatible, load_fingerprints, parse_images_option, run, split_of)
from fingerprint_cli.lineage.report import FEATURE_DIRECTIONS, matrix_text, plot, to_records  # noqa: F401

__all__ = [
    "CONTROLS", "DEFAULT_MAX_SHIFT", "DEFAULT_METRIC", "DEFAULT_PERIOD", "DEFAULT_THRESHOLD", "GRID_MARGIN", "METRIC_LABELS",
    "METRICS", "LINK_ALPHA", "MIN_SELF_Z", "Clustering", "auc", "balanced_accuracy", "chance_z", "cluster", "families", "grid_component", "grid_rho",
    "link_evidence", "pattern_correlation", "relatedness", "self_detection_z", "tile_mean",
    "LineageResult", "TestSet", "analyse", "check_compatible", "load_fingerprints", "parse_images_option", "run",
    "split_of", "FEATURE_DIRECTIONS", "matrix_text", "plot", "to_records",
]

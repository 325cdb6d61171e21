"""Second-stage verification of a retrieved origin: does the suspect sit, as a crop, inside the candidate?

The global layout that ranks the library (:mod:`fingerprint_cli.origin.embedders`) loses most of its
similarity under a tight crop, so a cropped edit's score falls among those of unrelated images. This stage
looks at pixels instead, for the top candidate only: the suspect's luma, resized to ``BASE`` px on its long
side and centred, is slid over the candidate's luma resized so that the suspect covers a fraction ``f`` of it
(``f`` in :data:`FRACTIONS`: the suspect as the whole frame down to half of it), itself and mirrored; the score
is the best normalised cross-correlation (``skimage.feature.match_template``) over every fraction and offset of
the two images' band-pass luma (minus a Gaussian blur of σ = :data:`SIGMA` px at that scale: the smooth layout
that any two photographs share is removed before correlating) — 1 for an exact crop, near 0 for unrelated
images. ``BASE``, ``FRACTIONS`` and ``SIGMA`` were chosen on the benchmark's development crop families
(docs/benchmarks.md, issue 12 round 3).

Its threshold is calibrated like the others (:func:`fingerprint_cli.origin.index.calibrate`): on the index's
own calibration queries — built-in transforms of references, never a benchmark's families — against their best
candidate outside their own origin group (a query whose origin is absent), at its share of the stated
false-match rate.
"""

from __future__ import annotations

import numpy as np

from fingerprint_cli import images

BASE = 40  # px, the suspect's long side in the correlation
FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)  # the suspect covers this fraction of the candidate's height and width
SIGMA = 1.5  # px: the band-pass's Gaussian


def _band(g: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return np.ascontiguousarray(g - gaussian_filter(g, SIGMA, mode="reflect"))


def template(suspect: np.ndarray) -> np.ndarray:
    """The suspect resized to ``BASE`` px on its long side (float RGB), the template :func:`score` slides."""
    h, w = suspect.shape[:2]
    s = BASE / max(h, w)
    return images.resize(np.asarray(suspect, np.float32), max(8, round(h * s)), max(8, round(w * s)))


def score(suspect: np.ndarray, reference: np.ndarray) -> float:
    """Best normalised cross-correlation of the suspect (itself or mirrored) placed inside the reference at
    any offset, covering a fraction in :data:`FRACTIONS` of it; in [-1, 1]."""
    from skimage.feature import match_template

    t0 = _band(images.luma(template(suspect)))
    best = -1.0
    if float(t0.std()) < 1e-6:  # a flat template correlates with nothing
        return best
    for t in (t0, np.ascontiguousarray(t0[:, ::-1])):
        for f in FRACTIONS:
            size = (max(t.shape[0], round(t.shape[0] / f)), max(t.shape[1], round(t.shape[1] / f)))
            r = _band(images.luma(images.resize(np.asarray(reference, np.float32), *size)))
            best = max(best, float(np.max(match_template(r, t))))
    return best

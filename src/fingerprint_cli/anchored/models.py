"""The class model a thresholds artifact stores, evaluated from their JSON parameters (pure numpy).

:class:`LDA` — shared-covariance Gaussian classifier in standardised feature space (fitted by scikit-learn's
``LinearDiscriminantAnalysis``; its parameters are stored and evaluated here, so v1 artifacts give the same
numbers). The conformal part (:class:`~fingerprint_cli.anchored.calibrate.Conformal`) stays in :mod:`.calibrate`
for now (see docs/architecture.md).

Fitting a whole artifact and measuring it is :mod:`.calibrate`'s job; deciding with one is :mod:`.attribute`'s;
the plots draw the plane with :class:`LDA`. This module imports nothing of fpx, so all of them can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


def rounded(a, sig: int = 10):
    """JSON-friendly nested lists with a stable number of significant digits."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 0:
        return float(f"{float(arr):.{sig}g}")
    return [rounded(x, sig) for x in arr]


# ---------------------------------------------------------------- the class model
@dataclass
class LDA:
    """Shared-covariance Gaussian classifier in standardised feature space."""

    classes: list[str]
    mean: np.ndarray  # (d,) standardisation
    std: np.ndarray  # (d,)
    means: np.ndarray  # (K, d) class means, standardised space
    cov: np.ndarray  # (d, d) shared covariance, standardised space
    priors: np.ndarray  # (K,)
    shrinkage: float

    @classmethod
    def fit(cls, X: np.ndarray, y: Sequence[str], shrinkage: float | str = "auto",
            classes: Sequence[str] | None = None) -> LDA:
        """Fit with scikit-learn's ``LinearDiscriminantAnalysis`` (lsqr solver, equal priors) on standardised
        features; ``shrinkage`` is ``"auto"`` (Ledoit-Wolf) or a value in [0, 1]."""
        import warnings

        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        present = [c for c in (classes or sorted(set(y.tolist()))) if np.any(y == c)]
        if len(present) < 2:
            raise ValueError("need at least two systems with calls to fit a class model")
        keep = np.isin(y, present)
        X, y = X[keep], y[keep]
        mu = X.mean(0)
        sd = X.std(0)
        sd = np.where(sd > 1e-12, sd, 1.0)
        Z = (X - mu) / sd
        priors = np.full(len(present), 1.0 / len(present))
        lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage, priors=priors, store_covariance=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lda.fit(Z, y)
        order = [list(lda.classes_).index(c) for c in present]
        means = np.asarray(lda.means_, dtype=np.float64)[order]
        d = Z.shape[1]
        cov = np.asarray(lda.covariance_, dtype=np.float64) + 1e-9 * np.eye(d)
        return cls(list(present), mu, sd, means, cov, priors,
                   shrinkage if isinstance(shrinkage, str) else float(shrinkage))

    def standardise(self, X: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(np.asarray(X, dtype=np.float64)) - self.mean) / self.std

    def mahalanobis2(self, X: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row to each class mean, (n, K)."""
        Z = self.standardise(X)
        P = np.linalg.inv(self.cov)
        diff = Z[:, None, :] - self.means[None, :, :]
        return np.einsum("nkd,de,nke->nk", diff, P, diff)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        m2 = self.mahalanobis2(X)
        logp = -0.5 * m2 + np.log(self.priors)[None, :]
        logp -= logp.max(1, keepdims=True)
        p = np.exp(logp)
        return p / p.sum(1, keepdims=True)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "lda-shared-covariance", "classes": self.classes,
                "means": rounded(self.means), "covariance": rounded(self.cov), "priors": rounded(self.priors),
                "shrinkage": self.shrinkage, "space": "standardised features",
                "fitted_by": "sklearn.discriminant_analysis.LinearDiscriminantAnalysis(solver='lsqr')"}

    @classmethod
    def from_json(cls, model: dict[str, Any], standardisation: dict[str, Any]) -> LDA:
        """The stored parameters (v1 and v2 artifacts alike); nothing is refitted."""
        shr = model.get("shrinkage", 0.0)
        return cls(list(model["classes"]), np.asarray(standardisation["mean"], float),
                   np.asarray(standardisation["std"], float), np.asarray(model["means"], float),
                   np.asarray(model["covariance"], float), np.asarray(model["priors"], float),
                   shr if isinstance(shr, str) else float(shr))

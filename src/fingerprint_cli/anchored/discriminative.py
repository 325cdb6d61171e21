"""Discriminative Mondrian conformal p-values, cross-fitted by photo (issue 11 round 8).

The density score of :class:`~fingerprint_cli.anchored.calibrate.Conformal` (``robust-top3``: how far a call is
from one system's own calls, feature by feature) ignores the feature correlations and the other systems, so every
overlapping class cloud enters the prediction set. This module adds a *class-contrastive* score beside it:

* **nonconformity** of a call x for system c: ``a_c(x) = -log P̂(c | x)``, P̂ a classifier over the calibration
  calls in the artifact's standardised feature space (``kind``, :data:`KINDS`): ``lda`` — scikit-learn
  ``LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")`` (one shared Ledoit-Wolf covariance), ``qda`` —
  ``QuadraticDiscriminantAnalysis(reg_param=0.1)`` (one covariance per system), ``logistic`` — multinomial
  ``LogisticRegression(C=1.0)``; the discriminant analyses use equal class priors. The parameters are stored as JSON
  lists and the posteriors evaluated here in numpy (checked against scikit-learn's ``predict_log_proba`` in the
  tests);
* **calibration scores are cross-fitted by photo**: the photos are dealt into ``folds`` (10) groups by a seeded
  permutation; every calibration call is scored by the model fitted on the other folds' photos, so no model ever saw
  the photo it scores (the spirit of the leave-one-image-out design, at a tenth of its fits). A suspect is scored by
  the model fitted on every call. This is **cross-conformal** prediction (Vovk 2015): the query score and the
  calibration scores come from different, nearly identical fits, so the guarantee ``P(p_c < alpha) <= alpha`` is
  approximate (its proven bound is 2 alpha); ``fpx calibrate`` measures the coverage it actually gives;
* **p-value** ``p_c = (1 + #{cross-fitted scores of system c's calls >= a_c(x)}) / (1 + n_c)`` (ties as in
  :func:`~fingerprint_cli.anchored.ood.p_from_scores`);
* **combination** with the density p-value (:func:`combine`): ``p_c = min(1, 2 min(p_density_c, p_disc_c))`` —
  Bonferroni, so a call of system c is left out of the set at level alpha with probability at most
  ``P(p_density_c < alpha/2) + P(p_disc_c < alpha/2) <= alpha`` whenever both p-values are valid. The set is the
  intersection of the two tests' sets at alpha/2: the density test keeps a call out of systems it is far from, the
  discriminative test out of systems that another system explains much better.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from fingerprint_cli.anchored.models import rounded as _r
from fingerprint_cli.anchored.ood import p_from_scores

KINDS = ("none", "lda", "qda", "logistic")  # ``fpx calibrate --discriminative`` (none: no discriminative part)
FOLDS = 10
QDA_REG = 0.1
LOGISTIC_C = 1.0
_EPS = 1e-9  # added to covariance diagonals before inverting


# ---------------------------------------------------------------- the classifiers' log-posteriors (numpy)
def _log_softmax(s: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of (n, K) scores."""
    m = s.max(1, keepdims=True)
    return s - m - np.log(np.exp(s - m).sum(1, keepdims=True))


def _gaussian_logits(Z: np.ndarray, means: np.ndarray, precisions: np.ndarray, logdets: np.ndarray) -> np.ndarray:
    """(n, K) ``-0.5 (log|Sigma_k| + (z - mu_k)' Sigma_k^-1 (z - mu_k))`` (equal priors drop out)."""
    diff = Z[:, None, :] - means[None]
    m2 = np.einsum("nkd,kde,nke->nk", diff, precisions, diff)
    return -0.5 * (m2 + logdets[None, :])


def log_posteriors(kind: str, params: dict[str, np.ndarray], Z: np.ndarray) -> np.ndarray:
    """(n, K) log P̂(c | z) of standardised rows ``Z`` under the stored ``params`` of a ``kind`` model."""
    Z = np.atleast_2d(np.asarray(Z, dtype=np.float64))
    if kind == "logistic":
        return _log_softmax(Z @ params["coef"].T + params["intercept"][None, :])
    if kind == "lda":
        K = len(params["means"])
        prec = np.linalg.inv(params["covariance"] + _EPS * np.eye(Z.shape[1]))
        return _log_softmax(_gaussian_logits(Z, params["means"], np.broadcast_to(prec, (K,) + prec.shape),
                                             np.zeros(K)))
    if kind == "qda":
        covs = params["covariances"] + _EPS * np.eye(Z.shape[1])[None]
        _, logdets = np.linalg.slogdet(covs)
        return _log_softmax(_gaussian_logits(Z, params["means"], np.linalg.inv(covs), logdets))
    raise ValueError(f"unknown discriminative model {kind!r}; use one of {', '.join(KINDS[1:])}")


def fit_params(kind: str, Z: np.ndarray, y: np.ndarray, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """The parameters of a ``kind`` classifier fitted by scikit-learn on standardised ``Z`` (rows in ``classes``
    order: every class needs at least two calls)."""
    import warnings

    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(y)
    for c in classes:
        if int((y == c).sum()) < 2:
            raise ValueError(f"system {c} needs at least two calls outside the held-out photos")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _sklearn_model(kind, len(classes)).fit(Z, y)
    order = [list(model.classes_).index(c) for c in classes]
    if kind == "logistic":
        return {"coef": np.asarray(model.coef_, float)[order], "intercept": np.asarray(model.intercept_, float)[order]}
    if kind == "lda":
        return {"means": np.asarray(model.means_, float)[order], "covariance": np.asarray(model.covariance_, float)}
    return {"means": np.asarray(model.means_, float)[order],
            "covariances": np.stack([np.asarray(model.covariance_[i], float) for i in order])}


def _sklearn_model(kind: str, n_classes: int):
    """The unfitted scikit-learn estimator of ``kind`` (equal priors for the discriminant analyses)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis, QuadraticDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression

    priors = np.full(n_classes, 1.0 / n_classes)
    if kind == "lda":
        return LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto", priors=priors, store_covariance=True)
    if kind == "qda":
        return QuadraticDiscriminantAnalysis(reg_param=QDA_REG, priors=priors, store_covariance=True)
    if kind == "logistic":
        return LogisticRegression(C=LOGISTIC_C, max_iter=2000)
    raise ValueError(f"unknown discriminative model {kind!r}; use one of {', '.join(KINDS[1:])}")


# ---------------------------------------------------------------- cross-fitting by photo
def photo_folds(groups: Sequence[str], folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """(n,) fold index of every row: the sorted distinct photos are permuted with ``seed`` and dealt into
    ``min(folds, n_photos)`` folds in turn, so all calls of one photo share a fold."""
    g = np.asarray(groups)
    photos = sorted(set(g.tolist()))
    k = min(int(folds), len(photos))
    if k < 2:
        raise ValueError("cross-fitting needs at least two photos")
    perm = np.random.default_rng(seed).permutation(len(photos))
    fold_of = {photos[j]: i % k for i, j in enumerate(perm)}
    return np.array([fold_of[v] for v in g.tolist()], dtype=int)


def cross_fitted_scores(kind: str, Z: np.ndarray, y: Sequence[str], groups: Sequence[str], classes: Sequence[str],
                        folds: int = FOLDS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``A`` (n, K): every row's score ``-log P̂(c | z)`` against every class under the model fitted without its
    fold's photos; ``own`` (n,): the score against the row's own class."""
    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(y)
    fold = photo_folds(groups, folds, seed)
    A = np.zeros((len(y), len(classes)))
    for f in range(fold.max() + 1):
        test = fold == f
        A[test] = -log_posteriors(kind, fit_params(kind, Z[~test], y[~test], classes), Z[test])
    col = {c: i for i, c in enumerate(classes)}
    return A, A[np.arange(len(y)), [col[c] for c in y]]


def calibration_p_values(A: np.ndarray, own: np.ndarray, y: Sequence[str], groups: Sequence[str],
                         classes: Sequence[str]) -> np.ndarray:
    """(n, K) p-values of the calibration calls: row i against class k ranked among the own-class cross-fitted
    scores of class k's calls from the *other* photos (no photo is in its own calibration set)."""
    y = np.asarray(y)
    g = np.asarray(groups)
    P = np.zeros_like(A)
    photos = sorted(set(g.tolist()))
    for k, c in enumerate(classes):
        mine = y == c
        for photo in photos:
            rows = g == photo
            P[rows, k] = p_from_scores(A[rows, k], np.sort(own[mine & ~rows]))
    return P


def combine(p_density: np.ndarray, p_disc: np.ndarray) -> np.ndarray:
    """Bonferroni: ``min(1, 2 min(p_density, p_disc))`` (valid at alpha whenever both are)."""
    return np.minimum(1.0, 2.0 * np.minimum(np.asarray(p_density, float), np.asarray(p_disc, float)))


# ---------------------------------------------------------------- the artifact part
@dataclass
class Discriminative:
    """The stored classifier (``params``, fitted on every calibration call) and the sorted cross-fitted
    calibration scores of each class (``cal_scores``); see the module docstring."""

    kind: str
    classes: list[str]
    params: dict[str, np.ndarray]
    cal_scores: list[np.ndarray]
    folds: int = FOLDS
    seed: int = 0

    @classmethod
    def fit(cls, kind: str, Z: np.ndarray, y: Sequence[str], groups: Sequence[str], classes: Sequence[str],
            folds: int = FOLDS, seed: int = 0) -> tuple[Discriminative, np.ndarray]:
        """The part fitted on ``Z`` with its cross-fitted calibration scores; also the (n, K) cross-fitted
        calibration p-values (:func:`calibration_p_values`) for the report."""
        A, own = cross_fitted_scores(kind, Z, y, groups, classes, folds, seed)
        y = np.asarray(y)
        params = {k: np.asarray(_r(v, 9)) for k, v in fit_params(kind, Z, y, classes).items()}
        cal = [np.sort(np.asarray(_r(own[y == c], 7), float)) for c in classes]
        return cls(kind, list(classes), params, cal, int(folds), int(seed)), calibration_p_values(A, own, y, groups,
                                                                                                   classes)

    def scores(self, Z: np.ndarray) -> np.ndarray:
        """(n, K) ``-log P̂(c | z)`` of standardised rows under the stored model."""
        return -log_posteriors(self.kind, self.params, Z)

    def p_values(self, Z: np.ndarray) -> np.ndarray:
        """(n, K) discriminative p-values of standardised rows."""
        a = self.scores(Z)
        return np.stack([p_from_scores(a[:, k], self.cal_scores[k]) for k in range(len(self.classes))], 1)

    def check(self, k: int, d: int) -> bool:
        """The stored parameters fit ``k`` classes of dimension ``d`` and every class has calibration scores."""
        shapes = {"logistic": {"coef": (k, d), "intercept": (k,)}, "lda": {"means": (k, d), "covariance": (d, d)},
                  "qda": {"means": (k, d), "covariances": (k, d, d)}}.get(self.kind)
        return (shapes is not None and set(shapes) == set(self.params)
                and all(self.params[n].shape == s for n, s in shapes.items())
                and len(self.cal_scores) == k and all(len(v) >= 1 for v in self.cal_scores))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "classes": self.classes, "folds": self.folds, "seed": self.seed,
                "params": {n: v.tolist() for n, v in self.params.items()},
                "calibration_scores": {c: v.tolist() for c, v in zip(self.classes, self.cal_scores)},
                "model": repr(_sklearn_model(self.kind, len(self.classes))).replace("\n", " "),
                "score": "-log posterior of the system under the classifier (standardised features, equal priors "
                         "for discriminant analyses)",
                "calibration": f"cross-fitted by photo: {self.folds} folds of photos (seeded permutation, seed "
                               f"{self.seed}), each call scored by the model fitted without its fold (cross-conformal)",
                "p_value": "(1 + #{cross-fitted calibration scores of the system >= score}) / (1 + n_system)",
                "combination": "p_system = min(1, 2 min(p_density, p_discriminative)) (Bonferroni)"}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Discriminative:
        kind = doc["kind"]
        if kind not in KINDS[1:]:
            raise ValueError(f"unknown discriminative model {kind!r}")
        classes = list(doc["classes"])
        params = {n: np.asarray(v, dtype=np.float64) for n, v in doc["params"].items()}
        cal = [np.sort(np.asarray(doc["calibration_scores"][c], dtype=np.float64)) for c in classes]
        return cls(kind, classes, params, cal, int(doc.get("folds", FOLDS)), int(doc.get("seed", 0)))

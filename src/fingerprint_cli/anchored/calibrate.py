"""Fitting thresholds artifacts from a labelled corpus, and measuring them honestly.

Model: features are standardised (training mean / std), then a linear discriminant (Gaussian class
densities with one shared covariance, shrinkage towards a scaled identity, equal class priors) gives
per-system posteriors. A band's posterior is the sum of its systems' posteriors. The discriminant is fitted
by scikit-learn's ``LinearDiscriminantAnalysis`` (``solver="lsqr"``, shrinkage ``"auto"`` = Ledoit-Wolf, or a
fixed value); its parameters (class means, covariance, priors) are stored as JSON and evaluated by
:class:`LDA`, so v1 artifacts (fitted by fpx's own earlier code) load and give the same numbers.

Open-set part (v2 artifacts, issue 11): :class:`Conformal` — Mondrian (class-conditional) conformal
p-values. Nonconformity of a call x for system k: the squared Mahalanobis distance of its standardised
features to system k's mean under system k's own Ledoit-Wolf-shrunk covariance
(``sklearn.covariance.LedoitWolf``). Calibration scores are leave-one-image-out: each call is scored by a
model fitted without every call of its image. ``p_k(x) = (1 + #{calibration calls of k with score ≥
a_k(x)}) / (1 + n_k)``; the prediction set is ``{k : p_k ≥ α}``; an empty set means ``unknown``.
v3 artifacts (issue 11 round 2) use the ``robust-top3`` nonconformity instead: the mean of the three largest
per-feature robust z-scores against system k's own calls (median, 1.4826 MAD), which one out-of-range
feature is enough to raise (see :class:`Conformal`).

Measurement:

* **leave-one-image-out** (LOO): for every ``image_id``, all of its calls (every system, every rep) are
  held out together; the model is refitted on the other images (standardisation included) and predicts
  the held-out calls. Accuracy is forced-choice (arg-max), so it is comparable with chance.
* **cluster bootstrap 95% CI**: images (not calls) are resampled with replacement B times
  (default 2000); the CI is the 2.5/97.5 percentiles of the pooled accuracy.
* **η²**: the share of the (standardised) feature variance explained by a grouping — pooled over
  features, ``Σ_f SS_between,f / Σ_f SS_total,f`` — for system and for image domain.
* **blind baseline**: the same LOO protocol on features of the suspect alone (:mod:`.blind`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fingerprint_cli import __version__, batch, guard, images
from fingerprint_cli.errors import InputError
from fingerprint_cli.records import Record
from fingerprint_cli.anchored.score import PairResult
from fingerprint_cli.anchored import discriminative, features, naming, ood
from fingerprint_cli.anchored.models import LDA, rounded as _r
from fingerprint_cli.anchored.thresholds import Thresholds


# ---------------------------------------------------------------- conformal p-values (open set)
SCORES = ("mahalanobis", "robust-top3", "robust-top3+knn")  # +knn: with the whole-vector gate (issue 11 r3)
TIE_TOL = 1e-6  # nonconformity scores closer than this (relative to 1 + |score|) are ties
DISC_SUFFIX = "+discriminative"  # conformal.kind of an artifact with a discriminative p-value (round 8)


@dataclass
class Conformal:
    """Mondrian conformal p-values from a per-class nonconformity score (see the module docstring).

    ``score`` names the nonconformity of a call for class k (in the standardised space of the artifact):

    * ``"mahalanobis"`` (v2 artifacts): squared Mahalanobis distance to the class mean under the class's own
      Ledoit-Wolf covariance; ``means`` (K, d) and ``precisions`` (K, d, d);
    * ``"robust-top3"`` (v3 artifacts, issue 11 round 2): per feature, the robust z-score
      ``|z_f - median_kf| / (1.4826 MAD_kf + floor)`` against the class's own calls; the score is the mean of
      the ``top`` (3) largest. One feature far outside the class's calibrated range (a gamma the tone-curve
      class never saw, a smoothing stronger than any calibrated filter) is enough to make the call
      nonconforming, which a 20-dimensional quadratic form dilutes. ``means`` holds the medians, ``scales`` (K, d)
      the robust scales, ``precisions`` is None.

    ``cal_scores[k]`` holds the sorted leave-one-image-out scores of the calibration calls of class k.
    """

    classes: list[str]
    means: np.ndarray
    precisions: np.ndarray | None
    cal_scores: list[np.ndarray]
    alpha: float = 0.05
    score: str = "mahalanobis"
    scales: np.ndarray | None = None
    top: int = 3
    floor: float = 0.05
    gate: ood.UnionGate | None = None  # "robust-top3+knn": p-values combined with the gate's (anchored.ood)
    disc: discriminative.Discriminative | None = None  # round 8: combined with a discriminative p-value
    guard: naming.Guard | None = None  # round 9: what a set may name (anchored.naming); sets are unchanged

    @staticmethod
    def fit_class_models(Z: np.ndarray, y: np.ndarray, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per-class mean and Ledoit-Wolf-shrunk precision matrix of standardised features."""
        from sklearn.covariance import LedoitWolf

        means, precs = [], []
        d = Z.shape[1]
        for c in classes:
            Zc = Z[y == c]
            if len(Zc) < 2:
                raise ValueError(f"system {c} needs at least two calls outside the held-out image")
            lw = LedoitWolf().fit(Zc)
            cov = lw.covariance_ + 1e-9 * np.eye(d)
            means.append(lw.location_)
            precs.append(np.linalg.inv(cov))
        return np.stack(means), np.stack(precs)

    @staticmethod
    def fit_robust(Z: np.ndarray, y: np.ndarray, classes: Sequence[str], floor: float = 0.05
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Per-class, per-feature median and robust scale ``1.4826 * MAD + floor`` of standardised features."""
        meds, scales = [], []
        for c in classes:
            Zc = Z[y == c]
            if len(Zc) < 2:
                raise ValueError(f"system {c} needs at least two calls outside the held-out image")
            med = np.median(Zc, 0)
            meds.append(med)
            scales.append(1.4826 * np.median(np.abs(Zc - med), 0) + floor)
        return np.stack(meds), np.stack(scales)

    @staticmethod
    def mahalanobis2(Z: np.ndarray, means: np.ndarray, precisions: np.ndarray) -> np.ndarray:
        """(n, K) squared Mahalanobis distances of standardised rows to each class under its own precision."""
        diff = np.atleast_2d(Z)[:, None, :] - means[None, :, :]
        return np.einsum("nkd,kde,nke->nk", diff, precisions, diff)

    @staticmethod
    def robust_top(Z: np.ndarray, medians: np.ndarray, scales: np.ndarray, top: int = 3) -> np.ndarray:
        """(n, K) mean of the ``top`` largest per-feature robust |z| of each row against each class."""
        a = np.abs(np.atleast_2d(Z)[:, None, :] - medians[None]) / scales[None]
        t = min(int(top), a.shape[2])
        return np.sort(a, axis=2)[..., -t:].mean(2)

    def scores(self, Z: np.ndarray) -> np.ndarray:
        if self.score.startswith("robust-top3"):
            return self.robust_top(Z, self.means, self.scales, self.top)
        return self.mahalanobis2(Z, self.means, self.precisions)

    @classmethod
    def fit(cls, Z: np.ndarray, y: np.ndarray, classes: Sequence[str], cal_scores: list[np.ndarray],
            alpha: float, score: str = "mahalanobis", gate: ood.UnionGate | None = None,
            disc: discriminative.Discriminative | None = None) -> Conformal:
        """The class models on all of ``Z`` (for new points) with the given LOO calibration scores."""
        if score.startswith("robust-top3"):
            med, sc = cls.fit_robust(Z, y, classes)
            return cls(list(classes), med, None, cal_scores, alpha, score, sc, gate=gate, disc=disc)
        if disc is not None:
            raise ValueError("a discriminative part needs the robust-top3 density score")
        means, precs = cls.fit_class_models(Z, y, classes)
        return cls(list(classes), means, precs, cal_scores, alpha, score)

    @staticmethod
    def p_from_scores(a: np.ndarray, cal: np.ndarray) -> np.ndarray:
        """``(1 + #{cal >= a}) / (1 + len(cal))`` for each entry of ``a`` (``cal`` sorted ascending).

        Scores within ``TIE_TOL * (1 + |a|)`` of each other are ties: the artifact stores parameters and scores
        to 9 / 7 significant digits, so a call whose features are exactly a system's constant values (an
        identical copy: every change feature at its neutral value) scores ~1e-7 instead of the calibration
        calls' 0 and would otherwise rank above all of them."""
        a = np.asarray(a, dtype=np.float64)
        ge = len(cal) - np.searchsorted(cal, a - TIE_TOL * (1.0 + np.abs(a)), side="left")
        return (1.0 + ge) / (1.0 + len(cal))

    def p_values(self, Z: np.ndarray) -> np.ndarray:
        """(n, K) p-values of standardised rows for every class."""
        return self.p_values_and_ood(Z)[0]

    def p_values_and_ood(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(the (n, K) p-values of :meth:`p_values`, the gate's (n,) whole-corpus p_ood — None without a gate)."""
        P, _, _, p_ood = self.p_value_parts(Z)
        return P, p_ood

    def p_value_parts(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Each p-value computed once: (the (n, K) p-values of :meth:`p_values`, the density p-values they combine
        (:meth:`density_p_values`; the same array without a discriminative part), the discriminative ones or None,
        the gate's p_ood or None)."""
        dens, p_ood = self.density_p_values(Z)
        if self.disc is None:
            return dens, dens, None, p_ood
        p_disc = self.disc.p_values(Z)
        return discriminative.combine(dens, p_disc), dens, p_disc, p_ood

    def density_p_values(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(the (n, K) density p-values — with the gate, combined with it —, the gate's p_ood or None): the
        p-values of every artifact without a discriminative part."""
        a = self.scores(Z)
        P = np.stack([self.p_from_scores(a[:, k], self.cal_scores[k]) for k in range(len(self.classes))], 1)
        if self.gate is None:
            return P, None
        p_ood = self.gate.p_values(Z)
        return ood.combine(P, p_ood, self.gate.weight), p_ood

    def to_json(self) -> dict[str, Any]:
        doc = self._to_json()
        if self.guard is not None:
            doc["guard"] = self.guard.to_json()
        return doc

    def _to_json(self) -> dict[str, Any]:
        """:meth:`to_json` without the guard."""
        common = {"alpha": self.alpha, "classes": self.classes,
                  "calibration_scores": {c: _r(v, 7) for c, v in zip(self.classes, self.cal_scores)},
                  "space": "standardised features (the artifact's standardisation)",
                  "p_value": "(1 + #{LOO calibration scores of the system >= score}) / (1 + n_system)"}
        if self.score.startswith("robust-top3"):
            gate = {} if self.gate is None else {"gate": self.gate.to_json()}
            disc = {} if self.disc is None else {"discriminative": self.disc.to_json()}
            return {"kind": "mondrian-robust-top3-loo" + ("-knn-gate" if self.gate else "")
                    + (DISC_SUFFIX if self.disc else ""), **common, **gate, **disc,
                    "medians": _r(self.means, 9),
                    "scales": _r(self.scales, 9), "top": int(self.top), "floor": float(self.floor),
                    "score": f"mean of the {int(self.top)} largest per-feature robust z-scores |z - median| / "
                             f"(1.4826 MAD + {self.floor:g}) against the system's own calls"}
        return {"kind": "mondrian-mahalanobis-loo", **common, "means": _r(self.means, 9),
                "precisions": _r(self.precisions, 9),
                "score": "squared Mahalanobis distance to the system's mean under its own Ledoit-Wolf covariance"}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Conformal:
        c = cls._from_json(doc)
        if doc.get("guard") is not None:
            c.guard = naming.Guard.from_json(doc["guard"])
        return c

    @classmethod
    def _from_json(cls, doc: dict[str, Any]) -> Conformal:
        """:meth:`from_json` without the guard."""
        classes = list(doc["classes"])
        cal = [np.sort(np.asarray(doc["calibration_scores"][c], float)) for c in classes]
        alpha = float(doc.get("alpha", 0.05))
        kind = doc.get("kind", "mondrian-mahalanobis-loo")
        disc = None
        if kind.endswith(DISC_SUFFIX):  # round 8: + a discriminative p-value (anchored.discriminative)
            kind = kind[:-len(DISC_SUFFIX)]
            disc = discriminative.Discriminative.from_json(doc["discriminative"])
        if kind in ("mondrian-robust-top3-loo", "mondrian-robust-top3-loo-knn-gate"):
            gate = ood.UnionGate.from_json(doc["gate"]) if kind.endswith("-knn-gate") else None
            return cls(classes, np.asarray(doc["medians"], float), None, cal, alpha,
                       "robust-top3+knn" if gate else "robust-top3", np.asarray(doc["scales"], float),
                       int(doc.get("top", 3)), float(doc.get("floor", 0.05)), gate, disc)
        if kind != "mondrian-mahalanobis-loo":
            raise ValueError(f"unknown conformal kind {kind!r}")
        return cls(classes, np.asarray(doc["means"], float), np.asarray(doc["precisions"], float), cal, alpha)


def conformal_loo(Z: np.ndarray, y: Sequence[str], groups: Sequence[str], classes: Sequence[str],
                  score: str = "mahalanobis") -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-image-out nonconformity: ``A`` (n, K), each row scored against every class by per-class
    models fitted without its image; and ``own`` (n,), the score against the row's own class."""
    if score not in SCORES:
        raise ValueError(f"unknown nonconformity score {score!r}; use one of {', '.join(SCORES)}")
    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(y)
    g = np.asarray(groups)
    A = np.zeros((len(y), len(classes)))
    for image in sorted(set(g.tolist())):
        test = g == image
        if score.startswith("robust-top3"):
            med, sc = Conformal.fit_robust(Z[~test], y[~test], classes)
            A[test] = Conformal.robust_top(Z[test], med, sc)
        else:
            means, precs = Conformal.fit_class_models(Z[~test], y[~test], classes)
            A[test] = Conformal.mahalanobis2(Z[test], means, precs)
    col = {c: i for i, c in enumerate(classes)}
    own = A[np.arange(len(y)), [col[c] for c in y]]
    return A, own


def conformal_loo_p(A: np.ndarray, own: np.ndarray, y: Sequence[str], groups: Sequence[str],
                    classes: Sequence[str]) -> np.ndarray:
    """(n, K) LOO p-values of the calibration calls: row i against class k is ranked among the own-class
    LOO scores of class k's calls from the *other* images (so no image is ever in its own calibration set)."""
    y = np.asarray(y)
    g = np.asarray(groups)
    P = np.zeros_like(A)
    for k, c in enumerate(classes):
        mine = y == c
        for image in sorted(set(g.tolist())):
            rows = g == image
            cal = np.sort(own[mine & ~rows])
            P[rows, k] = Conformal.p_from_scores(A[rows, k], cal)
    return P


def conformal_report(P: np.ndarray, y: Sequence[str], classes: Sequence[str], bands: dict[str, str],
                     alpha: float) -> dict[str, Any]:
    """Coverage per system (true system in the set), set sizes, unknown rate, decided accuracy at ``alpha``."""
    y = np.asarray(y)
    col = {c: i for i, c in enumerate(classes)}
    inset = P >= alpha
    truth = inset[np.arange(len(y)), [col[c] for c in y]]
    size = inset.sum(1)
    single = size == 1
    pred = np.asarray(classes)[P.argmax(1)]
    band_sets = [{bands[classes[j]] for j in np.flatnonzero(r)} for r in inset]
    band_ok = np.array([len(b) == 1 and bands[t] in b for b, t in zip(band_sets, y)])
    band_one = np.array([len(b) == 1 for b in band_sets])
    per = {c: {"coverage": float(truth[y == c].mean()), "n": int((y == c).sum()),
               "mean_set_size": float(size[y == c].mean())} for c in classes}
    covs = [v["coverage"] for v in per.values()]
    return {"alpha": alpha, "target_coverage": 1 - alpha, "coverage": float(truth.mean()),
            "coverage_min_system": float(min(covs)), "coverage_max_system": float(max(covs)),
            "per_system": per, "mean_set_size": float(size.mean()), "unknown_rate": float((size == 0).mean()),
            "singleton_rate": float(single.mean()),
            "singleton_accuracy": float((pred[single] == y[single]).mean()) if single.any() else None,
            "band_decided_rate": float(band_one.mean()),
            "band_accuracy_when_decided": float(band_ok[band_one].mean()) if band_one.any() else None}


# ---------------------------------------------------------------- protocol
def leave_one_image_out(X: np.ndarray, y: Sequence[str], groups: Sequence[str], classes: Sequence[str],
                        fit: Callable[[np.ndarray, np.ndarray], Any] | None = None,
                        on_fold: Callable[[str, np.ndarray], None] | None = None) -> np.ndarray:
    """Posteriors (n, K over ``classes``) for every call, each predicted by a model fitted without its image.

    ``fit(X_train, y_train)`` returns an object with ``.classes`` and ``.predict_proba``; ``on_fold(image,
    train_indices)`` is called for each fold (tests use it to check nothing leaks).
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    g = np.asarray(groups)
    fit = fit or (lambda a, b: LDA.fit(a, b, classes=classes))
    out = np.zeros((len(y), len(classes)))
    col = {c: i for i, c in enumerate(classes)}
    for image in sorted(set(g.tolist())):
        test = np.flatnonzero(g == image)
        train = np.flatnonzero(g != image)
        if on_fold:
            on_fold(image, train)
        model = fit(X[train], y[train])
        p = model.predict_proba(X[test])
        for j, c in enumerate(model.classes):
            out[test, col[c]] = p[:, j]
    return out


def cluster_bootstrap_ci(correct: Sequence[float], groups: Sequence[str], B: int = 2000, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float, float]:
    """Pooled accuracy and its percentile CI from resampling whole groups (images) with replacement."""
    correct = np.asarray(correct, dtype=np.float64)
    g = np.asarray(groups)
    ids = sorted(set(g.tolist()))
    c = np.array([correct[g == i].sum() for i in ids])
    n = np.array([(g == i).sum() for i in ids], dtype=np.float64)
    acc = float(c.sum() / n.sum())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ids), size=(B, len(ids)))
    boot = c[idx].sum(1) / n[idx].sum(1)
    a = (1 - level) / 2
    return acc, float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))


def confusion(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
    """Rows = true label, columns = predicted label."""
    idx = {c: i for i, c in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(y_true, y_pred):
        m[idx[t], idx[p]] += 1
    return m.tolist()


def eta_squared(X: np.ndarray, labels: Sequence[str]) -> tuple[float, list[float]]:
    """Pooled and per-feature η² of a one-way grouping on standardised features."""
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(0)
    Z = (X - X.mean(0)) / np.where(sd > 1e-12, sd, 1.0)
    lab = np.asarray(labels)
    ss_tot = (Z ** 2).sum(0)
    ss_b = np.zeros(Z.shape[1])
    for c in set(lab.tolist()):
        m = lab == c
        ss_b += m.sum() * Z[m].mean(0) ** 2
    per = np.where(ss_tot > 0, ss_b / np.where(ss_tot > 0, ss_tot, 1), 0.0)
    pooled = float(ss_b.sum() / ss_tot.sum()) if ss_tot.sum() > 0 else 0.0
    return pooled, per.tolist()


def derive_bands(X: np.ndarray, y: Sequence[str], feature_names: Sequence[str],
                 directions: dict[str, str]) -> tuple[dict[str, str], str]:
    """Bands when the corpus has no ``band`` column: order systems by how far their calls move from the
    reference and split at the largest gap into ``tight`` (closer) and ``drift``.

    "How far" is the mean over features of the standardised value signed so that larger = more change
    (features whose direction is "lower" are negated: the registry's direction as data,
    :func:`fingerprint_cli.anchored.features.sign`; a name outside the registry falls back to its stored prose)."""
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(0)
    Z = (X - X.mean(0)) / np.where(sd > 1e-12, sd, 1.0)
    sign = np.array([features.sign(f, directions.get(f, "")) for f in feature_names])
    change = (Z * sign).mean(1)
    y = np.asarray(y)
    systems = sorted(set(y.tolist()), key=lambda s: change[y == s].mean())
    means = [change[y == s].mean() for s in systems]
    gaps = np.diff(means)
    cut = int(np.argmax(gaps)) + 1 if len(gaps) else 1
    bands = {s: ("tight" if i < cut else "drift") for i, s in enumerate(systems)}
    why = ("no band column: systems ordered by their mean signed standardised change "
           f"({', '.join(f'{s} {m:+.2f}' for s, m in zip(systems, means))}) and split at the largest gap")
    return bands, why


def choose_plane(feature_names: Sequence[str], X: np.ndarray, y: Sequence[str],
                 bands: dict[str, str] | None = None) -> list[str]:
    """The plane for plots and the band boundary: (patch_mean, ssim_clean) when both are there, else the
    pair of features on which a 2-feature band LDA separates the bands best (in-sample accuracy; ties to
    the higher summed system η²), skipping near-duplicate pairs (|r| > 0.95)."""
    names = list(feature_names)
    if "patch_mean" in names and "ssim_clean" in names:
        return ["patch_mean", "ssim_clean"]
    if len(names) == 1:
        return [names[0], names[0]]
    Xa = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    _, per = eta_squared(Xa, y)
    labels = np.asarray([bands[s] for s in y]) if bands else y
    best, best_key = [names[0], names[1]], (-1.0, -1.0)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            r = np.corrcoef(Xa[:, i], Xa[:, j])[0, 1]
            if not np.isfinite(r) or abs(r) > 0.95:
                continue
            try:
                m = LDA.fit(Xa[:, [i, j]], labels)
            except ValueError:
                continue
            acc = float(np.mean(np.asarray(m.classes)[m.predict_proba(Xa[:, [i, j]]).argmax(1)] == labels))
            key = (round(acc, 3), per[i] + per[j])
            if key > best_key:
                best, best_key = [names[i], names[j]], key
    return best


# ---------------------------------------------------------------- a whole calibration
@dataclass
class Corpus:
    X: np.ndarray  # (n, d) reference-anchored features
    features: list[str]
    directions: dict[str, str]
    systems: np.ndarray  # (n,)
    images: np.ndarray  # (n,) image_id
    domains: np.ndarray | None = None
    bands: dict[str, str] | None = None
    blind_X: np.ndarray | None = None  # (n, b) suspect-only features, or None
    catch_all: tuple[str, ...] = ()  # broad benign families answered at band level (corpus column catch_all)


def evaluate(X, systems, images, classes, bands: dict[str, str], B: int, seed: int,
             shrinkage: float) -> dict[str, Any]:
    """LOO system + band accuracy with cluster-bootstrap CIs, confusion matrices, band purity."""
    proba = leave_one_image_out(X, systems, images, classes,
                                fit=lambda a, b: LDA.fit(a, b, shrinkage=shrinkage, classes=classes))
    pred = np.asarray(classes)[proba.argmax(1)]
    correct = pred == np.asarray(systems)
    acc, lo, hi = cluster_bootstrap_ci(correct, images, B=B, seed=seed)
    band_names = sorted(set(bands.values()))
    bp = np.stack([proba[:, [i for i, c in enumerate(classes) if bands[c] == b]].sum(1) for b in band_names], 1)
    bpred = np.asarray(band_names)[bp.argmax(1)]
    btrue = np.asarray([bands[s] for s in systems])
    bacc, blo, bhi = cluster_bootstrap_ci(bpred == btrue, images, B=B, seed=seed + 1)
    purity = {}
    for b in band_names:
        m = bpred == b
        purity[b] = float((btrue[m] == b).mean()) if m.any() else None
    counts = {c: int((np.asarray(systems) == c).sum()) for c in classes}
    return {
        "loo": {"accuracy": acc, "ci95": [lo, hi], "chance": 1.0 / len(classes),
                "majority": max(counts.values()) / len(systems), "labels": list(classes),
                "confusion": confusion(systems, pred, classes), "bootstrap": {"B": B, "seed": seed,
                                                                              "resample": "images"}},
        "band_loo": {"accuracy": bacc, "ci95": [blo, bhi], "chance": 1.0 / len(band_names),
                     "labels": band_names, "confusion": confusion(btrue, bpred, band_names),
                     "purity": purity},
        "_proba": proba,
    }


def _classes_and_bands(corpus: Corpus, X: np.ndarray, systems: np.ndarray,
                       images_: np.ndarray) -> tuple[list[str], dict[str, str], str]:
    """(classes, bands, how the bands were set); a corpus the protocol cannot use is a ValueError."""
    if not np.all(np.isfinite(X)):
        raise ValueError("some features are missing or not finite")
    classes = sorted(set(systems.tolist()))
    if len(classes) < 2:
        raise ValueError("the corpus names fewer than two systems")
    if len(set(images_.tolist())) < 2:
        raise ValueError("leave-one-image-out needs at least two image_ids")
    if corpus.bands:
        return classes, {s: corpus.bands[s] for s in classes}, "from the corpus band column"
    bands, how = derive_bands(X, systems, corpus.features, corpus.directions)
    return classes, bands, how


def _far_bound(X: np.ndarray, systems: np.ndarray, images_: np.ndarray, classes: Sequence[str],
               shrinkage: float | str, far_quantile: float) -> tuple[np.ndarray, float]:
    """(LOO squared Mahalanobis distance of every call to its nearest class, the "far from every class" bound).

    The bound is the larger of the chi-square quantile and the same quantile of held-out (LOO) calibration calls,
    so known systems on unseen images are rarely called far."""
    from scipy import stats

    loo_m2 = np.zeros(len(systems))
    for image in sorted(set(images_.tolist())):
        test = images_ == image
        fold = LDA.fit(X[~test], systems[~test], shrinkage=shrinkage, classes=classes)
        loo_m2[test] = fold.mahalanobis2(X[test]).min(1)
    far = max(float(stats.chi2.ppf(far_quantile, X.shape[1])), float(np.quantile(loo_m2, far_quantile)))
    return loo_m2, far


def _posterior_rule_rates(loo: dict[str, Any], proba: np.ndarray, loo_m2: np.ndarray, far: float,
                          min_posterior: float, classes: Sequence[str], systems: np.ndarray) -> None:
    """Inconclusive rate and accuracy when decided under the v1 posterior/distance rule, into ``loo``."""
    top = proba.max(1)
    pred = np.asarray(classes)[proba.argmax(1)]
    decided = (top >= min_posterior) & (loo_m2 <= far)
    loo["inconclusive_rate"] = float(np.mean(~decided))
    loo["accuracy_when_decided"] = float((pred[decided] == systems[decided]).mean()) if decided.any() else None


def _conformal_part(model: LDA, X: np.ndarray, systems: np.ndarray, images_: np.ndarray, classes: Sequence[str],
                    bands: dict[str, str], alpha: float, nonconformity: str, gate_weight: float = ood.DEFAULT_WEIGHT,
                    disc_kind: str = "none") -> tuple[Conformal, dict[str, Any]]:
    """The fitted :class:`Conformal` and its LOO report (coverage per system, set sizes) at ``alpha``; with the
    kNN gate, ``gate_weight`` is its Bonferroni weight w; ``disc_kind`` (not ``none``) adds the discriminative
    p-value of :mod:`.discriminative`, cross-fitted by photo."""
    if not 0.0 < alpha <= 0.5:
        raise ValueError(f"alpha must be in (0, 0.5], not {alpha}")
    Z = model.standardise(X)
    A, own = conformal_loo(Z, systems, images_, classes, score=nonconformity)
    P = conformal_loo_p(A, own, systems, images_, classes)
    gate, P = _gate(nonconformity, Z, images_, P, gate_weight)
    disc, P, disc_report = _disc_part(disc_kind, Z, systems, images_, classes, bands, alpha, P)
    report = conformal_report(P, systems, classes, bands, alpha)
    report["method"] = ("leave-one-image-out: each call scored by per-class models fitted "
                        "without its image, ranked among the LOO scores of the other images' "
                        "calls (the standardisation is the corpus-wide one)")
    conformal = Conformal.fit(Z, systems, classes, [np.sort(own[systems == c]) for c in classes], alpha,
                              nonconformity, gate, disc)
    report["score"] = nonconformity
    if disc_report is not None:
        report["discriminative"] = disc_report
        report["method"] += ("; combined with the discriminative p-value (cross-fitted by photo, "
                             f"{disc.folds} folds: cross-conformal) as min(1, 2 min(p_density, p_disc))")
    return conformal, report


def _disc_part(kind: str, Z: np.ndarray, systems: np.ndarray, images_: np.ndarray, classes: Sequence[str],
               bands: dict[str, str], alpha: float, P: np.ndarray
               ) -> tuple[discriminative.Discriminative | None, np.ndarray, dict[str, Any] | None]:
    """(the discriminative part, the calibration p-values combined with it, its own report: the density and the
    discriminative p-values each at ``alpha``); ``kind`` none: (None, ``P``, None)."""
    if kind == "none":
        return None, P, None
    if kind not in discriminative.KINDS:
        raise ValueError(f"unknown discriminative model {kind!r}; use one of {', '.join(discriminative.KINDS)}")
    disc, P_disc = discriminative.Discriminative.fit(kind, Z, systems, images_, classes)
    alone = {name: {k: v for k, v in conformal_report(Pk, systems, classes, bands, alpha).items() if k != "per_system"}
             for name, Pk in (("density", P), ("discriminative", P_disc))}
    return disc, discriminative.combine(P, P_disc), {"kind": kind, "folds": disc.folds, "alone": alone}


def _eta_block(X: np.ndarray, corpus: Corpus, systems: np.ndarray, images_: np.ndarray) -> dict[str, Any]:
    """η² of the features for system, image domain (when known) and image."""
    eta_sys, per_sys = eta_squared(X, systems)
    eta: dict[str, Any] = {"system": eta_sys, "per_feature_system": dict(zip(corpus.features, per_sys))}
    if corpus.domains is not None:
        eta_dom, per_dom = eta_squared(X, corpus.domains)
        eta["domain"] = eta_dom
        eta["per_feature_domain"] = dict(zip(corpus.features, per_dom))
    else:
        eta["domain"] = None
    eta["image"] = eta_squared(X, images_)[0]
    return eta


def _plane_block(corpus: Corpus, X: np.ndarray, systems: np.ndarray, classes: Sequence[str],
                 bands: dict[str, str], shrinkage: float | str, seed: int,
                 points_per_system: int) -> tuple[list[str], LDA, dict[str, Any]]:
    """(the plane's two features, the 2-feature band model, a subsample of each system's points on it)."""
    plane = choose_plane(corpus.features, X, systems, bands)
    pidx = [corpus.features.index(f) for f in plane]
    band_labels = np.asarray([bands[s] for s in systems])
    plane_model = LDA.fit(X[:, pidx], band_labels, shrinkage=shrinkage)
    rng = np.random.default_rng(seed)
    points = {}
    for c in classes:
        rows = np.flatnonzero(systems == c)
        if len(rows) > points_per_system:
            rows = np.sort(rng.choice(rows, points_per_system, replace=False))
        points[c] = _r(X[np.ix_(rows, pidx)], 6)
    return plane, plane_model, points


def _blind_block(corpus: Corpus, systems: np.ndarray, images_: np.ndarray, classes: Sequence[str],
                 bands: dict[str, str], B: int, seed: int) -> dict[str, Any] | None:
    """The blind baseline (suspect-only features, same LOO protocol), or None without blind features."""
    if corpus.blind_X is None:
        return None
    bev = evaluate(np.asarray(corpus.blind_X), systems, images_, classes, bands, B, seed, shrinkage=0.3)
    bev.pop("_proba")
    return {"method": "PRISM-style radial Fourier amplitude + phase-coherence spectrum of the suspect "
                      "alone, LDA (shrinkage 0.3); never sees the reference",
            "loo": bev["loo"], "band_loo": bev["band_loo"]}


def _posterior_rule(min_posterior: float, band_min_posterior: float, far: float, far_quantile: float,
                    d: int) -> dict[str, Any]:
    return {"min_top_posterior": min_posterior, "band_min_posterior": band_min_posterior,
            "max_mahalanobis2": far, "far_quantile": far_quantile,
            "rule": "inconclusive when the top system posterior < min_top_posterior, or the "
                    "point's squared Mahalanobis distance to every class mean exceeds max(the "
                    f"chi-square({d}) {far_quantile} quantile, the {far_quantile} quantile of the "
                    "same distance for held-out (LOO) calibration calls); the band is inconclusive when its "
                    "posterior < band_min_posterior or the point is far from every class"}


def calibrate(corpus: Corpus, *, artifact_id: str, version: str = "1", description: str = "",
              corpus_info: dict[str, Any] | None = None, encoder: dict[str, Any] | None = None,
              B: int = 2000, seed: int = 0, shrinkage: float | str = "auto", min_posterior: float = 0.5,
              band_min_posterior: float = 0.6, far_quantile: float = 0.999,
              points_per_system: int = 200, alpha: float | None = 0.05,
              nonconformity: str = "robust-top3", gate_weight: float = ood.DEFAULT_WEIGHT,
              disc: str = "none") -> dict[str, Any]:
    """Fit the artifact on the whole corpus and measure it with LOO; returns the (unsealed) artifact.

    With ``alpha`` (default 0.05) the artifact carries the conformal part (:class:`Conformal`, its LOO
    coverage per system in ``calibration.conformal``) and decisions use prediction sets; ``alpha=None``
    makes a v1-style artifact (posterior and distance rule only). ``disc`` (:data:`discriminative.KINDS`, default
    none) adds a discriminative p-value, cross-fitted by photo (:mod:`.discriminative`)."""
    X = np.asarray(corpus.X, dtype=np.float64)
    systems = np.asarray(corpus.systems)
    images_ = np.asarray(corpus.images)
    classes, bands, band_how = _classes_and_bands(corpus, X, systems, images_)
    model = LDA.fit(X, systems, shrinkage=shrinkage, classes=classes)
    ev = evaluate(X, systems, images_, classes, bands, B, seed, shrinkage)
    proba = ev.pop("_proba")
    loo_m2, far = _far_bound(X, systems, images_, classes, shrinkage, far_quantile)
    _posterior_rule_rates(ev["loo"], proba, loo_m2, far, min_posterior, classes, systems)
    conformal = conformal_report_ = None
    if alpha is not None:
        conformal, conformal_report_ = _conformal_part(model, X, systems, images_, classes, bands, alpha,
                                                       nonconformity, gate_weight, disc)
        # under the set rule the call is decided when the prediction set is one system
        ev["loo"]["inconclusive_rate"] = 1.0 - conformal_report_["singleton_rate"]
        ev["loo"]["accuracy_when_decided"] = conformal_report_["singleton_accuracy"]
    plane, plane_model, points = _plane_block(corpus, X, systems, classes, bands, shrinkage, seed,
                                              points_per_system)
    cal = {
        "corpus": {**(corpus_info or {}), "n_images": len(set(images_.tolist())), "n_calls": int(len(systems)),
                   "systems": {c: int((systems == c).sum()) for c in classes}},
        "loo": ev["loo"], "band_loo": ev["band_loo"], "eta_squared": _eta_block(X, corpus, systems, images_),
        "blind_baseline": _blind_block(corpus, systems, images_, classes, bands, B, seed),
        **({"conformal": conformal_report_} if conformal_report_ else {}),
        "plane": {"features": plane, "points": points},
    }
    return {
        "schema": "fpx-thresholds/1",
        "id": artifact_id,
        "version": version,
        "description": description,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "fpx_version": __version__,
        "encoder": encoder,
        "features": list(corpus.features),
        "directions": {f: corpus.directions.get(f, "") for f in corpus.features},
        "standardisation": {"mean": _r(model.mean), "std": _r(model.std)},
        "systems": classes,
        "class_model": model.to_json(),
        "band_rule": {"bands": bands, "how": band_how,
                      "decision": "band posterior = sum of its systems' posteriors; arg-max band",
                      **_catch_all_rule(corpus.catch_all, classes),
                      "plane": {"features": plane, "model": plane_model.to_json(),
                                "standardisation": {"mean": _r(plane_model.mean), "std": _r(plane_model.std)},
                                "note": "2-feature band LDA used to draw the boundary on the plane"}},
        **({"conformal": conformal.to_json()} if conformal else {}),
        "inconclusive": _set_rule(alpha) if conformal else _posterior_rule(min_posterior, band_min_posterior, far,
                                                                            far_quantile, X.shape[1]),
        "calibration": cal,
    }


def _catch_all_rule(catch_all: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    """The band rule's catch-all part (none without catch-all systems, so older recipes' artifacts are unchanged):
    a prediction set that is one catch-all system is answered with its band, not as that system."""
    if not catch_all:
        return {}
    unknown = [c for c in catch_all if c not in classes]
    if unknown:
        raise ValueError(f"catch-all system(s) {', '.join(unknown)} not in the corpus' systems")
    return {"catch_all": list(catch_all),
            "catch_all_rule": "a catch-all system is a broad family of benign edits calibrated so that such edits "
                              "fit a benign system, not a specific one: a prediction set that is one catch-all "
                              "system answers its band, system inconclusive"}


def _gate(nonconformity: str, Z: np.ndarray, images_: np.ndarray, P: np.ndarray,
          weight: float = ood.DEFAULT_WEIGHT) -> tuple[ood.UnionGate | None, np.ndarray]:
    """With ``robust-top3+knn``: the whole-vector gate (:mod:`.ood`, Bonferroni weight ``weight``) of the
    calibration calls and their LOO p-values combined with it; otherwise (None, P)."""
    if nonconformity != "robust-top3+knn":
        return None, P
    gate, own = ood.UnionGate.fit(Z, images_, weight=weight)
    return gate, ood.combine(P, ood.loo_p_values(own, images_), gate.weight)


def _set_rule(alpha: float) -> dict[str, Any]:
    return {"alpha": alpha, "rule": "prediction set = systems whose conformal p-value >= alpha; empty set: "
                                    "unknown (no calibrated system fits); one system: that system; several "
                                    "systems of one band: that band, system inconclusive; several bands: "
                                    "inconclusive. Posteriors only rank the systems (top_k)."}


def corpus_sha256(rows: Sequence[dict[str, str]], hashes: dict[str, str]) -> str:
    """A digest of the corpus: its rows (system, image_id, band, domain, rep) and every image's sha256."""
    h = hashlib.sha256()
    for r in sorted(rows, key=lambda r: (r.get("image_id", ""), r.get("system", ""), r.get("rep", ""),
                                         r.get("suspect", ""))):
        parts = [hashes.get(r["reference"], "?"), hashes.get(r["suspect"], "?")] + \
                [r.get(k, "") for k in ("system", "image_id", "band", "domain", "rep")]
        h.update(("\t".join(parts) + "\n").encode())
    return h.hexdigest()


# ---------------------------------------------------------------- a corpus on disk (fpx calibrate)
CORPUS_COLUMNS = ["reference", "suspect", "system", "image_id"]


def read_corpus(path) -> tuple[list[dict[str, str]], dict[str, str] | None]:
    """(rows, bands or None) of a corpus CSV ``reference,suspect,system,image_id[,domain,rep,band]``.

    Refused (InputError naming the file and line): no rows, an empty system or image_id, a band column that is
    empty on some rows, a system placed in two bands."""
    rows = batch.read_csv_rows(path, CORPUS_COLUMNS)
    if not rows:
        raise InputError("corpus has no rows", str(path))
    for i, r in enumerate(rows, 2):
        if not r["system"] or not r["image_id"]:
            raise InputError(f"line {i}: system and image_id must not be empty", str(path))
    _check_catch_all(rows, path)
    if not any(r.get("band") for r in rows):
        return rows, None
    bands: dict[str, str] = {}
    for i, r in enumerate(rows, 2):
        b = r.get("band", "")
        if not b:
            raise InputError(f"line {i}: band is empty while other rows name one", str(path))
        if bands.setdefault(r["system"], b) != b:
            raise InputError(f"line {i}: system {r['system']} is in band {bands[r['system']]} "
                             f"elsewhere, not {b}", str(path))
    return rows, bands


def _check_catch_all(rows, path) -> None:
    """The optional ``catch_all`` column: empty, 0 or 1, the same on every row of a system (InputError naming
    the file and line otherwise)."""
    seen: dict[str, str] = {}
    for i, r in enumerate(rows, 2):
        v = _catch_all_flag(r)
        if v not in ("0", "1"):
            raise InputError(f"line {i}: catch_all is 0, 1 or empty, not {v!r}", str(path))
        if seen.setdefault(r["system"], v) != v:
            raise InputError(f"line {i}: system {r['system']} is marked catch_all={seen[r['system']]} "
                             f"elsewhere, not {v}", str(path))


def reused_results(path, pairs, names: Sequence[str]) -> dict:
    """{pair index: PairResult} for pairs of ``path`` (an earlier ``--scores`` jsonl) whose reference and
    suspect paths and sha256 match the files now and that carry every feature in ``names``."""
    old = _old_scores(path)
    sha: dict[str, str] = {}

    def digest(p):
        if p not in sha:
            sha[p] = images.sha256_file(p)
        return sha[p]

    out = {}
    for i, pair in enumerate(pairs):
        d = old.get((pair.reference, pair.suspect))
        if d is None or any(d["features"].get(f) is None for f in names):
            continue
        try:
            same = (d["inputs"]["reference"]["sha256"] == digest(pair.reference)
                    and d["inputs"]["suspect"]["sha256"] == digest(pair.suspect))
        except OSError:
            continue
        if same:
            out[i] = PairResult(Record.from_dict(d))
    return out


def _old_scores(path) -> dict:
    """The ok records of a ``--scores`` jsonl by (reference path, suspect path)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such scores file", str(path))
    old = {}
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                d = json.loads(line)
                if d.get("status") == "ok":
                    old[(d["inputs"]["reference"]["path"], d["inputs"]["suspect"]["path"])] = d
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"is not a --scores jsonl file ({exc.__class__.__name__})", str(path)) from exc
    return old


def usable_pairs(rows, results, names: Sequence[str]):
    """(kept [(row, record)], failed records, {path: sha256}): a pair whose scoring failed or whose features are
    missing or not finite is a failed pair, not a reason to refuse the corpus."""
    keep, failed = [], []
    hashes: dict[str, str] = {}
    for r, res in zip(rows, results):
        rec = res.record
        if not rec.ok:
            failed.append(rec)
            continue
        bad = guard.nonfinite({f: rec.features.get(f) for f in names}) + \
            [f for f in names if rec.features.get(f) is None]
        if bad:
            failed.append(Record.failure("score", rec.inputs, InputError(
                f"feature(s) {', '.join(bad)} missing or not finite", rec.inputs["suspect"]["path"]),
                rec.provenance))
            continue
        hashes[r["reference"]] = rec.inputs["reference"]["sha256"]
        hashes[r["suspect"]] = rec.inputs["suspect"]["sha256"]
        keep.append((r, rec))
    return keep, failed, hashes


def corpus_from_pairs(keep, names: Sequence[str], bands: dict[str, str] | None,
                      blind_X: np.ndarray | None) -> Corpus:
    """The :class:`Corpus` of the kept (row, record) pairs: features, directions, systems, images, domains (when
    every row names one)."""
    X = np.array([[rec.features[f] for f in names] for _, rec in keep], dtype=np.float64)
    domains = None
    if keep and all(r.get("domain") for r, _ in keep):
        domains = np.array([r["domain"] for r, _ in keep])
    directions = {}
    for _, rec in keep:
        directions.update(rec.directions)
    return Corpus(X=X, features=list(names), directions=directions,
                  systems=np.array([r["system"] for r, _ in keep]),
                  images=np.array([r["image_id"] for r, _ in keep]), domains=domains,
                  bands=bands, blind_X=blind_X,
                  catch_all=_catch_all_of(r for r, _ in keep))


def _catch_all_of(rows) -> tuple[str, ...]:
    """The systems the corpus rows mark ``catch_all = 1`` (sorted)."""
    return tuple(sorted({r["system"] for r in rows if _catch_all_flag(r) == "1"}))


def _catch_all_flag(row: dict[str, str]) -> str:
    """A corpus row's ``catch_all`` cell as written ("0" when the column or the cell is empty)."""
    return (row.get("catch_all") or "0").strip()


def corpus_info(path, keep, hashes: dict[str, str], failed: int, description: str, has_band: bool,
                has_domain: bool) -> dict[str, Any]:
    """The artifact's ``calibration.corpus`` block (path, digest, counts, which columns it had, repetitions)."""
    rows = [r for r, _ in keep]
    reps = max((int(r["rep"]) for r in rows if r.get("rep", "").isdigit()), default=0) + 1 \
        if any(r.get("rep") for r in rows) else 1
    return {"path": str(path), "sha256": corpus_sha256(rows, hashes),
            "description": description or f"corpus {Path(path).name}", "failed_pairs": failed,
            "has_band_column": has_band, "has_domain_column": has_domain, "reps": reps}


def small_classes(doc: Thresholds, alpha: float) -> dict[str, int]:
    """{system: n calibration calls} of the systems too small to ever leave a prediction set at ``alpha``
    (their smallest p-value 1/(n+1) is >= alpha)."""
    if not doc.conformal:
        return {}
    return {c: len(v) for c, v in doc.conformal["calibration_scores"].items() if 1.0 / (len(v) + 1) >= alpha}

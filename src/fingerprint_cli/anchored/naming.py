"""The decision guard of a conformal artifact (issue 11 round 9): what a prediction set may *name*.

The prediction set, the p-values and the coverage are untouched; the guard only turns a named answer into an
abstention when the evidence for the name is weak. Stored in the artifact as ``conformal.guard``:

* ``tau_system``: a system is named only when the set is that one system and its **density** p-value (the
  robust top-3 score with the kNN gate, before any combination with a discriminative p-value) is
  ``>= tau_system``; otherwise at most its band is named;
* ``tau_band`` and ``band_rule``: a band is named only when the set lies in one band and the density p-values of
  the set's systems are ``>= tau_band`` — every member (``all``) or the best-fitting one (``best``);
* ``tau_gate``: and the kNN gate's whole-corpus ``p_ood`` (gated artifacts) is ``>= tau_gate``.

A call the guard stops is answered ``inconclusive`` (or the band alone), with ``why_inconclusive`` saying which
level stopped it. Abstaining more never breaks the validity of the set: a known system is still in it with
probability about ``1 - alpha``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

BAND_RULES = ("all", "best")
NEVER = 1.01  # a tau_system above every p-value: a system is never named, only its band


@dataclass(frozen=True)
class Guard:
    """Levels below which a set's call is not named (see the module docstring)."""

    tau_band: float = 0.0
    tau_system: float = 0.0
    tau_gate: float = 0.0
    band_rule: str = "all"

    def __post_init__(self):
        if self.band_rule not in BAND_RULES:
            raise ValueError(f"unknown guard band_rule {self.band_rule!r}; use one of {', '.join(BAND_RULES)}")
        for name in ("tau_band", "tau_system", "tau_gate"):
            v = float(getattr(self, name))
            if not 0.0 <= v <= NEVER:
                raise ValueError(f"guard {name} must be in [0, {NEVER:g}], not {v}")

    def to_json(self) -> dict[str, Any]:
        return {"tau_band": float(self.tau_band), "tau_system": float(self.tau_system),
                "tau_gate": float(self.tau_gate), "band_rule": self.band_rule,
                "p_value": "density (robust top-3 + kNN gate), before any discriminative combination",
                "rule": "a system is named only when the set is that system and its density p >= tau_system; a "
                        "band only when the set lies in one band, its systems' density p (band_rule: all members "
                        "or the best) >= tau_band and the gate's p_ood >= tau_gate; else inconclusive"}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Guard:
        return cls(float(doc["tau_band"]), float(doc["tau_system"]), float(doc.get("tau_gate", 0.0)),
                   str(doc.get("band_rule", "all")))

    def band_support(self, members: Sequence[str], p_density: Mapping[str, float]) -> float:
        """The density p-value the band rests on: the smallest member's (``all``) or the largest's (``best``)."""
        ps = [float(p_density[c]) for c in members]
        return min(ps) if self.band_rule == "all" else max(ps)

    def apply(self, call: tuple[str, str, str, list[str]], members: Sequence[str], p_density: Mapping[str, float],
              p_ood: float | None) -> tuple[str, str, str, list[str]]:
        """The guarded (system, band, label, why) of a set's ``call`` (:meth:`Decider._set_call`'s tuple):
        unknown and inconclusive calls pass unchanged; a named system below ``tau_system`` keeps only its band;
        a named band below ``tau_band`` (or a gate p_ood below ``tau_gate``) becomes inconclusive."""
        system, band, label, why = call
        if band in ("unknown", "inconclusive"):
            return call
        why = list(why)
        if system != "inconclusive" and float(p_density[system]) < self.tau_system:
            why.append(f"decision guard: this artifact names no system from p-values (tau_system "
                       f"{self.tau_system:g} > 1), only its band ({system} fits alone)" if self.tau_system > 1 else
                       f"decision guard: {system}'s density p {float(p_density[system]):.3f} < tau_system "
                       f"{self.tau_system:g}, so only its band is named")
            system, label = "inconclusive", band
        support = self.band_support(members, p_density)
        if support < self.tau_band:
            why.append(f"decision guard: the {band} band rests on density p {support:.3f} ({self.band_rule} of "
                       f"{', '.join(members)}) < tau_band {self.tau_band:g}")
            return "inconclusive", "inconclusive", "inconclusive", why
        if p_ood is not None and p_ood < self.tau_gate:
            why.append(f"decision guard: the kNN gate's p_ood {p_ood:.3f} < tau_gate {self.tau_gate:g}")
            return "inconclusive", "inconclusive", "inconclusive", why
        return system, band, label, why


def parse(spec: str) -> Guard:
    """A :class:`Guard` from ``--guard``'s ``tau_band=0.1,tau_system=0.3[,tau_gate=0][,band_rule=all]``."""
    fields: dict[str, Any] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("tau_band", "tau_system", "tau_gate", "band_rule"):
            raise ValueError(f"--guard takes tau_band=, tau_system=, tau_gate= and band_rule= (not {part!r})")
        try:
            fields[key] = value.strip() if key == "band_rule" else float(value)
        except ValueError:
            raise ValueError(f"--guard {key} is a number, not {value.strip()!r}") from None
    try:
        return Guard(**fields)
    except ValueError as exc:
        raise ValueError(f"--guard: {exc}") from None


def with_guard(doc: Mapping[str, Any], guard: Guard | None, source: str | None = None) -> dict[str, Any]:
    """A copy of the unsealed artifact dict ``doc`` whose conformal part carries ``guard`` (None: no guard) and
    whose calibration report says so (``source``: the artifact it was taken from, when rewritten); sets unchanged."""
    out = {k: v for k, v in doc.items() if k != "sha256"}
    if not out.get("conformal"):
        raise ValueError("a decision guard needs an artifact with conformal p-values")
    conf = {k: v for k, v in out["conformal"].items() if k != "guard"}
    cal = dict(out.get("calibration") or {})
    note = dict(cal.get("conformal") or {})
    note.pop("guard", None)
    if guard is not None:
        conf["guard"] = guard.to_json()
        note["guard"] = {**guard.to_json(), **({"rewritten_from": source} if source else {})}
    out["conformal"], cal["conformal"] = conf, note
    out["calibration"] = cal
    return out

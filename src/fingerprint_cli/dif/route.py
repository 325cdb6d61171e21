"""Routing between the members of one generator's fingerprint: the member trained for the suspect's condition.

A generator may have several fingerprints that differ only in their training profile — e.g. ``plain`` (the
images as they are; strongest on pristine suspects) and ``robust-jpeg`` (the images plus JPEG q70–95 views;
stronger on recompressed ones, docs/benchmarks.md issue 15 rounds 4–5). fpx reads each suspect's condition from
its file header (:mod:`.condition`: lossless or the JPEG quality estimate, and its size) and scores it with the
member whose stated coverage contains that condition; each member's own calibration then decides as for a single
fingerprint.

**Members of one fingerprint** are the fingerprints with the same generator label (``Fingerprint.name``, the
label a decision names). They must agree on method, denoiser (id and weights sha256) and crop: fingerprints of
one label made otherwise are refused (:class:`~fingerprint_cli.errors.UsageError`), never routed between. A
member must record its training conditions (fpx ≥ 0.2). Fingerprints of different labels are not members of one
another: :func:`.detect.decide` combines them as before (``unknown`` unless one clearly wins).

**Coverage** (:class:`Coverage`) is read from the member's training conditions (``meta["conditions"]``:
:func:`.condition.training_conditions`, which includes its profile's ``covers``): whether lossless images are
covered, the JPEG quality range (± :data:`.condition.QUALITY_SLACK`), the scale range (± :data:`.condition.
SCALE_SLACK`). ``plain`` LDM covers lossless at scale 1; ``robust-jpeg`` LDM lossless and q70–95 at scale 1.

**The rule** (:func:`route`), fixed from the coverages alone: each member gets the key (JPEG-quality distance of
the suspect's encoding to the coverage, scale distance, breadth, profile, sha256) and the smallest key wins. A
covering member has distances (0, 0), so among covering members the **narrowest** (fewest covered encodings: the
one trained most specifically for it) wins; when none covers, the **nearest** (encoding first, then scale), and
the suspect's record carries the usual out-of-conditions warning of that member; ties go to the first profile
name, then sha256 (independent of the order the fingerprints were given in). A suspect whose encoding is unknown
(no readable header) goes to the broadest member.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from fingerprint_cli import fingerprints
from fingerprint_cli.dif.condition import QUALITY_SLACK, SCALE_SLACK
from fingerprint_cli.dif.meta import FingerprintMeta
from fingerprint_cli.errors import UsageError

__all__ = ["Coverage", "profile_of", "member_id", "groups", "route", "UNCOVERED"]

#: the encoding distance of a member that covers no image of the suspect's kind (larger than any quality gap)
UNCOVERED = 1000


def profile_of(meta: FingerprintMeta) -> str:
    """The training profile a fingerprint records (``meta["augment"]["profile"]``; ``plain`` when absent)."""
    aug = meta.augment if isinstance(meta.augment, dict) else {}
    return str(aug.get("profile") or "plain")


def member_id(fp) -> str:
    """How a record names a member: its library id when it is a shipped entry, else ``label[profile]``."""
    lib = fp.library or {}
    return str(lib.get("id") or f"{fp.name}[{profile_of(fp.info)}]")


@dataclass(frozen=True)
class Coverage:
    """The suspect conditions a fingerprint was trained for (read from its training conditions)."""
    lossless: bool
    jpeg_quality: tuple[int, int] | None
    scale: tuple[float, float] | None
    reference_short_side: int | None

    @classmethod
    def of(cls, meta: FingerprintMeta) -> "Coverage | None":
        """The coverage stated by ``meta["conditions"]``; None when the fingerprint records none."""
        tc = meta.conditions
        if not tc:
            return None
        q, s = tc.get("jpeg_quality"), tc.get("scale")
        return cls(lossless=bool(tc.get("lossless", True)),
                   jpeg_quality=(int(q[0]), int(q[1])) if q else None,
                   scale=(float(s[0]), float(s[1])) if s else None,
                   reference_short_side=tc.get("reference_short_side"))

    @property
    def breadth(self) -> int:
        """How many suspect encodings it covers: lossless counts one, each JPEG quality one."""
        q = self.jpeg_quality
        return int(self.lossless) + (q[1] - q[0] + 1 if q else 0)

    def encoding_distance(self, cond: dict[str, Any]) -> int:
        """0 when the suspect's encoding is covered; for a JPEG suspect the quality steps to the covered range
        (beyond the slack), :data:`UNCOVERED` when no JPEG (or, for a lossless suspect, no lossless) is."""
        if cond.get("lossless"):
            return 0 if self.lossless else UNCOVERED
        q = cond.get("jpeg_quality")
        if q is None:
            return 0
        if self.jpeg_quality is None:
            return UNCOVERED
        lo, hi = self.jpeg_quality[0] - QUALITY_SLACK, self.jpeg_quality[1] + QUALITY_SLACK
        return max(lo - int(q), int(q) - hi, 0)

    def scale_distance(self, cond: dict[str, Any]) -> float:
        """|log| of how far the suspect's size (relative to the training images) lies outside the covered
        scale range (beyond the slack); 0 inside it or when either is unknown."""
        side, ref = cond.get("short_side"), self.reference_short_side
        if not (side and ref):
            return 0.0
        lo, hi = self.scale or (1.0, 1.0)
        s = side / ref
        lo, hi = lo * (1 - SCALE_SLACK), hi * (1 + SCALE_SLACK)
        return round(max(math.log(lo / s), math.log(s / hi), 0.0), 6)

    def describe(self) -> str:
        """E.g. ``lossless + JPEG q70–95, scale 1`` (:func:`fingerprint_cli.fingerprints.describe_coverage`)."""
        return fingerprints.describe_coverage(self.to_json())

    def to_json(self) -> dict[str, Any]:
        return {"lossless": self.lossless, "jpeg_quality": list(self.jpeg_quality) if self.jpeg_quality else None,
                "scale": list(self.scale) if self.scale else None}


def _refuse_mixed(label: str, members: Sequence[Any]) -> None:
    """UsageError when members of one label differ in method, denoiser or crop, or state no coverage."""
    first = members[0]
    for fp in members[1:]:
        why = first.compatible_with(fp)
        if why is None and fp.method != first.method:
            why = f"different methods ({first.method} and {fp.method})"
        if why:
            raise UsageError(f"fingerprints of {label!r} cannot be routed between: {why}; give one of them, "
                             f"or fit them with the same denoiser and crop")
    for fp in members:
        if Coverage.of(fp.info) is None:
            raise UsageError(f"fingerprints of {label!r} cannot be routed between: {fp.path or member_id(fp)} "
                             f"records no training conditions (written by fpx ≤ 0.1); give one of them")


def groups(fps: Sequence[Any]) -> list[list[Any]]:
    """The fingerprints grouped by generator label (first appearance order; members in the given order).
    A group of several members is checked (:func:`_refuse_mixed`): UsageError when they cannot be routed."""
    by_label: dict[str, list[Any]] = {}
    for fp in fps:
        by_label.setdefault(fp.name, []).append(fp)
    for label, members in by_label.items():
        if len(members) > 1:
            _refuse_mixed(label, members)
    return list(by_label.values())


def _key(fp, cov: Coverage, cond: dict[str, Any], unknown: bool) -> tuple:
    """The routing key of one member for one suspect (smallest wins; see the module)."""
    breadth = -cov.breadth if unknown else cov.breadth
    return (cov.encoding_distance(cond), cov.scale_distance(cond), breadth, profile_of(fp.info),
            fp.sha256 or fp.path or "")


def _reason(chosen, cov: Coverage, covering: list, cond: dict[str, Any], unknown: bool, tied: bool) -> str:
    """Why ``chosen`` was picked, in words."""
    if unknown:
        return "suspect encoding unknown: the broadest member"
    what = "lossless" if cond.get("lossless") else f"JPEG q≈{cond.get('jpeg_quality')}"
    tie = " (tie on coverage: first by profile name, then sha256)" if tied else ""
    if chosen in covering:
        if len(covering) == 1:
            return f"{what} is covered by this member only ({cov.describe()})"
        return f"{what} is covered by {len(covering)} members: the narrowest ({cov.describe()}){tie}"
    return (f"{what} at this size is covered by no member: the nearest ({cov.describe()}); detection here is "
            f"outside its trained conditions{tie}")


def route(members: Sequence[Any], cond: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The member of one generator's fingerprint that scores a suspect in condition ``cond`` (the
    :func:`.condition.describe` of its header; ``{}`` when unknown), and the record's ``route`` entry:
    {"member", "profile", "reason", "covered", "suspect_condition", "members"}. One member: itself.
    UsageError when the members cannot be routed between (:func:`groups`)."""
    members = list(members)
    if len(members) > 1:
        _refuse_mixed(members[0].name, members)
    unknown = not cond or (not cond.get("lossless") and cond.get("jpeg_quality") is None)
    covs = [Coverage.of(fp.info) for fp in members]
    if len(members) == 1:
        return members[0], _entry(members[0], covs[0], cond, "the only member", True, members, covs)
    keys = [_key(fp, cov, cond, unknown) for fp, cov in zip(members, covs)]
    best = min(range(len(members)), key=lambda i: keys[i])
    covering = [fp for fp, k in zip(members, keys) if k[0] == 0 and k[1] == 0]
    tied = sum(1 for k in keys if k[:3] == keys[best][:3]) > 1
    reason = _reason(members[best], covs[best], covering, cond, unknown, tied)
    return members[best], _entry(members[best], covs[best], cond, reason, members[best] in covering, members, covs)


def _entry(fp, cov: Coverage | None, cond: dict[str, Any], reason: str, covered: bool, members, covs) -> dict:
    """The ``route`` entry of a record."""
    return {"member": member_id(fp), "profile": profile_of(fp.info), "sha256": fp.sha256, "reason": reason,
            "covered": bool(covered),
            "suspect_condition": {k: cond.get(k) for k in ("format", "lossless", "jpeg_quality", "short_side")},
            "members": [{"member": member_id(m), "profile": profile_of(m.info),
                         "covers": c.to_json() if c else None} for m, c in zip(members, covs)]}

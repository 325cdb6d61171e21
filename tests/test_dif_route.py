"""Routing between members of one generator's fingerprint (issue 15 round 5): the member whose coverage contains
the suspect's condition scores it, the record says which and why; ties, no-cover, refused mixtures; the CLI and
`fpx models list`. Small synthetic fingerprints (the average method, the weight-free Gaussian denoiser)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import natural_image, write_two_generator_corpus
from typer.testing import CliRunner

from fingerprint_cli import fingerprints, images
from fingerprint_cli.cli.app import app
from fingerprint_cli.dif import detect, extract, route
from fingerprint_cli.dif.fingerprint import Fingerprint
from fingerprint_cli.errors import UsageError

S = 48
DEN = {"id": "gaussian", "sha256": "g" * 64}


def synthetic(profile: str, quality=None, *, name="gen", crop=S, den=DEN, method="dif", sha="a", conditions=True):
    """A fingerprint object with stated training conditions (no fit): lossless at scale 1, plus ``quality``."""
    meta = {"crop": crop, "denoiser": dict(den), "augment": {"profile": profile}, "mu_gen": 1.0, "mu_real": 0.0,
            "sigma_real": 1.0, "sigma_gen": 1.0}
    if conditions:
        meta["conditions"] = {"lossless": True, "jpeg_quality": quality, "scale": [1.0, 1.0],
                              "reference_short_side": crop}
    return Fingerprint(name, method, torch.zeros(3, crop, crop), meta, sha256=sha * 64)


PLAIN, RJ = synthetic("plain", sha="a"), synthetic("robust-jpeg", [70, 95], sha="b")


def cond(q=None, side=S):
    return {"format": "PNG" if q is None else "JPEG", "lossless": q is None, "jpeg_quality": q, "short_side": side}


@pytest.mark.parametrize("members", [[PLAIN, RJ], [RJ, PLAIN]])
def test_png_goes_to_plain_and_jpeg_q75_to_robust_jpeg_whatever_the_order(members):
    fp, entry = route.route(members, cond())
    assert fp is PLAIN and entry["covered"] and entry["profile"] == "plain"
    assert "narrowest" in entry["reason"] and entry["member"] == "gen[plain]"
    fp, entry = route.route(members, cond(75))
    assert fp is RJ and entry["covered"] and "only" in entry["reason"]
    assert entry["suspect_condition"] == {"format": "JPEG", "lossless": False, "jpeg_quality": 75, "short_side": S}
    assert [m["profile"] for m in entry["members"]] == [m.info.augment["profile"] for m in members]


def test_quality_slack_and_no_cover_goes_to_the_nearest():
    assert route.route([PLAIN, RJ], cond(97))[1]["covered"]          # 95 + 2 slack
    fp, entry = route.route([PLAIN, RJ], cond(50))                   # no member has q50: the nearest (q70)
    assert fp is RJ and not entry["covered"] and "nearest" in entry["reason"]
    fp, entry = route.route([PLAIN, RJ], cond(None, side=S // 2))    # a 0.5x PNG: both off in scale, plain narrower
    assert fp is PLAIN and not entry["covered"]
    q60 = synthetic("jpeg60", [60, 60], sha="c")                    # nearer to q50 than q70-95
    assert route.route([PLAIN, RJ, q60], cond(50))[0] is q60
    assert route.route([PLAIN, RJ, q60], cond(66))[0] is RJ          # 4 steps from 70, 6 from 60


def test_unknown_encoding_goes_to_the_broadest():
    fp, entry = route.route([PLAIN, RJ], {})
    assert fp is RJ and "unknown" in entry["reason"]


def test_tie_rule_is_profile_then_sha256_not_the_order_given():
    a, b = synthetic("robust-jpeg", [70, 95], sha="1"), synthetic("robust-jpeg", [70, 95], sha="2")
    for members in ([a, b], [b, a]):
        fp, entry = route.route(members, cond(80))
        assert fp is a and "tie" in entry["reason"]
    x, y = synthetic("alpha", [70, 95], sha="9"), synthetic("beta", [70, 95], sha="0")
    assert route.route([y, x], cond(80))[0] is x                     # profile name before sha256


@pytest.mark.parametrize("other, why", [
    (synthetic("robust-jpeg", [70, 95], den={"id": "dncnn", "sha256": "d" * 64}), "different denoisers"),
    (synthetic("robust-jpeg", [70, 95], crop=32), "different crops"),
    (synthetic("robust-jpeg", [70, 95], method="spectral"), "different methods"),
    (synthetic("robust-jpeg", [70, 95], conditions=False), "no training conditions"),
])
def test_mixed_members_are_refused(other, why):
    with pytest.raises(UsageError, match=why):
        route.route([PLAIN, other], cond(75))
    with pytest.raises(UsageError, match="cannot be routed"):
        route.groups([PLAIN, synthetic("x", name="gen2"), other])


def test_groups_keep_different_generators_apart():
    g2 = synthetic("plain", name="gen2")
    groups = route.groups([PLAIN, g2, RJ])
    assert [[m.info.augment["profile"] for m in g] for g in groups] == [["plain", "robust-jpeg"], ["plain"]]
    assert detect.labels([PLAIN, g2, RJ]) == ["gen", "gen2"]


def test_coverage_text_for_models_list():
    assert fingerprints.describe_coverage({"lossless": True, "jpeg_quality": [70, 95], "scale": [1, 1]}) == \
        "lossless + JPEG q70–95, scale 1"
    assert fingerprints.describe_coverage(None) == "not stated"
    entries = [{"id": "g-v2", "name": "g", "profile": "plain", "conditions": {"lossless": True}},
               {"id": "g-rj-v1", "name": "g", "profile": "robust-jpeg",
                "conditions": {"lossless": True, "jpeg_quality": [70, 95]}},
               {"id": "h-v2", "name": "h"}]
    assert fingerprints.members_text(entries, entries[0]) == \
        "profile plain, covers lossless, scale 1; routed with g-rj-v1 (member of g)"
    assert "routed with" not in fingerprints.members_text(entries, entries[2])


# ------------------------------------------------------------------ end to end: fitted members through `fpx detect`
@pytest.fixture(scope="module")
def members(tmp_path_factory):
    root = tmp_path_factory.mktemp("route")
    dirs = write_two_generator_corpus(root, S, extra=("cal",))
    for i in range(24):
        images.save_png(natural_image(S, S, seed=300 + i), dirs["cal"] / f"c{i:02d}.png")
    gen = [str(p) for p in images.list_images(dirs["gen"])]
    real = [str(p) for p in images.list_images(dirs["real"])]
    cal = [str(p) for p in images.list_images(dirs["cal"])]
    out = {}
    for profile in ("plain", "robust-jpeg"):
        fp = extract.fit(gen, real, name="gen", method="average", crop=S, denoiser="gaussian", test_fraction=0.25,
                         profile=profile)
        fp = detect.calibrate(fp, cal, 0.1, recompressions=("jpeg75",))
        f = root / f"gen-{profile}.fpx.safetensors"
        fp.save(f)
        out[profile] = str(f)
    px = images.load_image(gen[0]).pixels
    for q in (75, 50):
        (root / f"q{q}.jpg").write_bytes(images.encode(px, "JPEG", quality=q))
    out.update(png=gen[0], q75=str(root / "q75.jpg"), q50=str(root / "q50.jpg"), root=str(root))
    return out


def jsonl(text):
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


def test_detect_routes_each_suspect_and_the_member_decides(members):
    res = CliRunner().invoke(app, ["detect", "-F", members["robust-jpeg"], "-F", members["plain"], members["png"],
                                   members["q75"], members["q50"], "--format", "jsonl", "--no-cache"])
    assert res.exit_code == 0, res.output
    png, q75, q50 = jsonl(res.stdout)
    assert [r["details"]["route"]["profile"] for r in (png, q75, q50)] == ["plain", "robust-jpeg", "robust-jpeg"]
    assert png["details"]["route"]["covered"] and q75["details"]["route"]["covered"]
    assert not q50["details"]["route"]["covered"] and q50["details"]["condition"]["warnings"]
    assert not q75["details"]["condition"]["warnings"]
    for rec, prof in ((png, "plain"), (q75, "robust-jpeg")):
        assert rec["decision"]["label"] in ("gen", "not-detected") and "rho" in rec["features"]  # one label, one member
        alone = detect.detect_one([Fingerprint.load(members[prof])], rec["inputs"]["image"]["path"])
        assert rec["features"]["p_value"] == pytest.approx(alone.features["p_value"])
        assert rec["decision"]["label"] == alone.decision["label"]
        assert rec["details"]["condition"]["calibration_sets"] == alone.details["condition"]["calibration_sets"]


def test_single_fingerprint_records_carry_no_route(members):
    rec = detect.detect_one([Fingerprint.load(members["plain"])], members["png"])
    assert "route" not in rec.details


def test_detect_refuses_members_with_different_crops(members, tmp_path):
    fp = Fingerprint.load(members["plain"])
    small = Fingerprint(fp.name, fp.method, fp.pattern[:, :32, :32].clone(), fp.info.copy())
    small.info.crop = 32
    small.info.conformal = None
    f = tmp_path / "small.fpx.safetensors"
    small.save(f)
    res = CliRunner().invoke(app, ["detect", "-F", members["plain"], "-F", str(f), members["png"], "--no-cache"])
    assert res.exit_code == 2 and "cannot be routed" in res.output and "different crops" in res.output


def test_routed_members_beside_another_generator_keep_the_unknown_rule(members):
    fps = [Fingerprint.load(members["plain"]), Fingerprint.load(members["robust-jpeg"])]
    other = fps[0].copy(name="twin")  # the same pattern under another label: ties with gen on every image
    recs = list(detect.detect_many(fps + [other], [members["png"], members["q75"]]))
    for rec in recs:
        assert set(rec.details["route"]) == {"gen", "twin"}
        if rec.decision["generated"]:
            assert rec.decision["label"] == "unknown" or len(rec.decision["called_by"]) == 1
    assert recs[0].details["route"]["gen"]["profile"] == "plain"
    assert recs[1].details["route"]["gen"]["profile"] == "robust-jpeg"
    assert np.isfinite(recs[1].features["score.gen"])


def test_detect_announces_the_members_on_stderr(members):
    res = CliRunner().invoke(app, ["detect", "-F", members["plain"], "-F", members["robust-jpeg"], members["q75"],
                                   "--format", "jsonl", "--no-cache"])
    assert res.exit_code == 0, res.output
    assert "gen: 2 members" in res.stderr and "gen[robust-jpeg] (lossless + JPEG q70–95, scale 1)" in res.stderr

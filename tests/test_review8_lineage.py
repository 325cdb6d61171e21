"""Review 8: a lineage link that a shared format difference explains is not reported as supported.

``fpx lineage`` on the three shipped fingerprints put DALL-E 3 and LDM (unrelated) in one family, the link
"supported" at p = 4.5e-8: both were fitted and are tested against BSDS500 JPEG photos while their own images
are lossless, so two fingerprints that learned "not JPEG" detect each other's images perfectly. The link now
becomes an unresolved one naming the confound; a link between generators tested against real photos of their
own format is untouched. Pure logic on the planted-pattern testbed of test_lineage.py.
"""

from __future__ import annotations

import copy
import numpy as np

from test_lineage import run_analyse, testbed  # noqa: F401 - the module-scoped fixture
from test_review8_triage import format_matched_fingerprint
from fingerprint_cli import images
from fingerprint_cli.lineage import analysis


def _family(testbed):  # noqa: F811
    res = run_analyse([fp for fp in testbed["fps"] if fp.name in ("parent", "child", "other")])
    assert [lk["supported"] for lk in res.links] == [True]  # parent ~ child, supported on the planted traces
    return res


def test_a_link_explained_by_the_format_becomes_unresolved(testbed):  # noqa: F811
    res = _family(testbed)
    gen = {"parent": "lossless", "child": "lossless", "other": "lossless"}
    jpeg_real = {i: {j: "jpeg" for j in gen} for i in gen}
    analysis.mark_format_confounds(res, gen, jpeg_real)
    [lk] = res.links
    assert lk["supported"] is False and lk["confound"] == "both generators' test images are lossless and the " \
        "real photos jpeg"
    assert "unresolved link" in lk["text"] and any("parent ~ child" in w for w in res.warnings)
    from fingerprint_cli.lineage.report import to_records

    summary = to_records(res, {})[-1]
    assert summary.decision["unresolved_links"] == [[lk["a"], lk["b"]]]


def test_format_matched_or_mixed_links_are_untouched(testbed):  # noqa: F811
    res = _family(testbed)
    gen = {"parent": "lossless", "child": "lossless", "other": "lossless"}
    for cells in ({i: {j: "lossless" for j in gen} for i in gen},  # real photos of the generators' format
                  {"parent": {"child": "lossless"}, "child": {"parent": "jpeg"}}):  # one cell format-matched
        r = copy.deepcopy(res)
        analysis.mark_format_confounds(r, gen, cells)
        assert r.links[0]["supported"] is True and "confound" not in r.links[0] and not r.warnings
    r = copy.deepcopy(res)  # one generator's images JPEG, the other's lossless: the format does not link them
    analysis.mark_format_confounds(r, {"parent": "lossless", "child": "jpeg"}, {i: {j: "jpeg" for j in gen}
                                                                                  for i in gen})
    assert r.links[0]["supported"] is True


def test_lineage_format_matches_a_lossless_image_as_detect_does(tmp_path):
    """A ``format-matched`` fingerprint's ρ on a lossless image in lineage is the one ``fpx detect`` computes (the
    image re-encoded at the fingerprint's quality first), not the unmatched PNG's."""
    from fingerprint_cli.dif import detect  # imports torch
    from fingerprint_cli.dif.fingerprint import Fingerprint

    fp_file, d = format_matched_fingerprint(tmp_path)
    fp = Fingerprint.load(fp_file)
    pngs = [str(p) for p in images.list_images(d["cal"])][:4]
    got = analysis._Correlator(None, None, 8).correlate(fp, pngs)
    np.testing.assert_allclose(got, detect.correlations(fp, pngs), rtol=1e-5, atol=1e-7)

"""The fpx Python API on the shipped example images (pixel features only: no model weights needed).

    PYTHONPATH=src python examples/api_example.py [WORKDIR]

Scores the two example suspects against the reference, attributes them with the shipped pixel-feature
thresholds artifact, protects the reference with the keyed sub-JND perturbation and measures how much of it
survives in a copy. Every call returns fpx Records — the same records ``fpx score`` / ``fpx attribute`` /
``fpx perturb`` print. Each step checks what it printed, so the script fails loudly if the API changes.
WORKDIR (default: a temporary folder) receives the protected image and its sidecar.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from fingerprint_cli import api, images

HERE = Path(__file__).resolve().parent
REF = HERE / "ref.png"
SUSPECTS = [HERE / "suspect_blur.png", HERE / "suspect_jpeg.jpg"]


def main(workdir: Path) -> None:
    # 1. reference-anchored features of (reference, suspect) pairs
    scores = api.score(REF, SUSPECTS, encoder="none", quiet=True)
    for rec in scores:
        assert rec.ok, rec.error
        print(f"score     {Path(rec.inputs['suspect']['path']).name:<18} ssim_clean {rec.features['ssim_clean']:.4f} "
              f"({rec.directions['ssim_clean']})  psnr_clean {rec.features['psnr_clean']:.2f} dB")

    # 2. band / system decisions from a thresholds artifact (the shipped pixel-feature one, v2: conformal)
    calls = api.attribute(REF, SUSPECTS, thresholds_name="local-offline-pixel-v2", quiet=True)
    per_pair = [r for r in calls if "suspect" in r.inputs]
    per_image = [r for r in calls if "suspect" not in r.inputs]
    for rec in per_pair:
        d = rec.decision
        print(f"attribute {Path(rec.inputs['suspect']['path']).name:<18} label {d['label']}  band {d['band']}  "
              f"prediction set {d.get('prediction_set')}")
    assert len(per_pair) == 2 and len(per_image) == 1  # two suspects of one reference: one per-image call
    print(f"attribute per image: label {per_image[0].decision['label']} from {per_image[0].decision['calls']} calls")

    # 3. protect the reference, then measure how much of the perturbation survives in the protected image
    #    itself (1.0 by construction) and in a JPEG quality-85 copy of it (benign processing)
    protected = workdir / "ref_protected.png"
    [prot] = api.perturb([REF], out=protected, key="example-key", quiet=True)
    assert prot.ok and prot.features["max_delta_over_jnd"] <= 0.3 + 1e-6
    print(f"perturb   PSNR {prot.features['psnr']:.2f} dB, max |delta|/JND {prot.features['max_delta_over_jnd']:.3f}"
          f" -> {prot.details['output']}")
    jpeg = workdir / "ref_protected_q85.jpg"
    jpeg.write_bytes(images.encode(images.load_image(protected).pixels, "JPEG", quality=85))
    same, recompressed = api.score(REF, [protected, jpeg], encoder="none", perturbed=protected, quiet=True)
    for rec in (same, recompressed):
        print(f"survival  {Path(rec.inputs['suspect']['path']).name:<22} {rec.features['survival']:.3f} "
              f"(z {rec.features['perturbation_z']:.1f}, detected: {rec.features['perturbation_detected']})")
    assert same.features["survival"] > 0.99 and same.features["perturbation_detected"]


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))

"""Re-calibrate the shipped fingerprint library under recompression conditions, without refitting.

For every entry of the library index (``--dir``, default the package's ``fingerprints/``):

1. **calibrate** (``detect.calibrate``, the function behind ``fpx dif-calibrate``) the shipped pattern on the
   same held-out real photos as before (the images its calibration lists: the part of DATA/real_bsds500/train
   that did not train it plus the fit's real test split; their manifest hash is checked against the old one)
   as distributed and under each ``--conditions`` recompression;
2. **measure** on data used for neither, as ``fpx detect`` decides (the suspect's condition picks its
   calibration sets): the detection rate on the fingerprint's held-out generated images and the
   false-positive rate on DATA/real_bsds500/val as distributed;
3. **install**: the sealed file (same storage dtype, same pattern) and its index entry (new sha256 pin,
   calibration block with the conditions, held-out measurements); id, version and training set are unchanged.

``--lossless-real DIR`` (repeatable) also calibrates each entry on those lossless real photos as their own set
(``detect.calibrate_lossless``; issue 15: the JPEG-only calibration did not hold on lossless photos); with
``--keep-calibration`` the shipped calibration is kept as it is and only the lossless set is added.

    nice -n 10 python scripts/recalibrate_library.py --data /work/shared/data --cache bench/out/rescache
    nice -n 10 python scripts/recalibrate_library.py --cache bench/out/r5/rescache --keep-calibration \
        --lossless-real bench/out/loss/cal/photos --lossless-real bench/out/loss/cal/kodak_tiles \
        --lossless-description "..."
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fingerprint_cli import fingerprints, images  # noqa: E402
from fingerprint_cli.dif import condition, detect, heldout  # noqa: E402
from fingerprint_cli.dif.fingerprint import Fingerprint  # noqa: E402
from fingerprint_cli.dif.residuals import ResidualCache  # noqa: E402


def held_out(fp: Fingerprint, val: list[str], all_val: list[str], cache: ResidualCache, old: dict) -> dict:
    """TPR on the held-out generated images and FPR on the val photos, as `fpx detect` decides."""
    gen = [d["path"] for d in fp.info.split("test", "generated")]
    real_set = (f"real_bsds500/val ({'first ' if len(val) < len(all_val) else ''}{len(val)} JPEG photographs, never "
                f"used for fitting or calibration)")
    return dict(old, real_set=real_set, **heldout.measure(fp, gen, val, cache=cache, rule="detect"))


def recalibrate(fp: Fingerprint, args, conds: list[str], cache: ResidualCache, log) -> Fingerprint | None:
    """The entry re-calibrated as asked (None, after a message, when its calibration images differ)."""
    old = fp.conformal
    new = fp
    if not args.keep_calibration:
        cal_paths = [str(args.data / Path(d["path"]).relative_to(Path(d["path"]).parents[2])) for d in old.images]
        new = detect.calibrate(fp, cal_paths, old.fpr, cache=cache, recompressions=conds,
                               description=f"{old.description}; also as {', '.join(c for c in conds if c != 'none')} "
                                           f"copies of them",
                               on_condition_skip=lambda cid, why: log(f"condition {cid} left out: {why}"))
        if new.conformal.manifest_sha256 != old.manifest_sha256:
            log("calibration images differ from the shipped calibration's: refusing to install")
            return None
    if args.lossless_real:
        paths = [str(p) for d in args.lossless_real for p in images.list_images(d)]
        new = detect.calibrate_lossless(new, paths, cache=cache, description=args.lossless_description,
                                        on_skip=lambda p, why: log(f"{p}: skipped ({why})"))
    return new


def index_calibration(cal) -> dict:
    """The index entry's ``calibration`` block of a conformal calibration."""
    out = {"fpr": cal.fpr, "n": cal.n, "description": cal.description, "manifest_sha256": cal.manifest_sha256,
           "conditions": cal.conditions,
           "recompressions": {cid: {"n": r["n"]} for cid, r in (cal.recompressions or {}).items()}}
    if cal.lossless:
        out["lossless"] = {k: cal.lossless[k] for k in ("n", "description", "manifest_sha256", "conditions")}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--dir", type=Path, default=fingerprints.LIBRARY_DIR)
    ap.add_argument("--conditions", default=",".join(condition.DEFAULT_RECOMPRESSIONS))
    ap.add_argument("--cache", type=Path, default=None, help="residual cache folder (default FPX_HOME's)")
    ap.add_argument("--val-n", type=int, default=None, help="measure on the first N val photos (default all)")
    ap.add_argument("--lossless-real", type=Path, action="append", default=[],
                    help="folder of lossless real photos calibrated as their own set (repeatable)")
    ap.add_argument("--lossless-description", default=None, help="what the lossless calibration photos are")
    ap.add_argument("--keep-calibration", action="store_true",
                    help="keep the shipped calibration; only add the --lossless-real set")
    args = ap.parse_args(argv)
    all_val = [str(p) for p in images.list_images(args.data / "real_bsds500" / "val")]
    val = all_val[:args.val_n]
    conds = [c for c in args.conditions.split(",") if c.strip()]
    cache = ResidualCache(disk=args.cache if args.cache else True)
    entries = fingerprints.index(args.dir)
    for e in entries:
        f = args.dir / e["file"]
        fp = Fingerprint.load(f)
        log = lambda m, e=e: print(f"[{e['id']}] {m}", file=sys.stderr, flush=True)  # noqa: E731
        new = recalibrate(fp, args, conds, cache, log)
        if new is None:
            return 1
        digest = new.save(f, dtype=e.get("storage", "float32"))
        e["sha256"] = digest
        e["calibration"] = index_calibration(new.conformal)
        e["held_out"] = held_out(Fingerprint.load(f), val, all_val, cache, e.get("held_out") or {})
        log(f"installed ({digest[:12]}…): held-out TPR {e['held_out']['tpr']:.3f}, FPR {e['held_out']['fpr']:.3f}")
        fingerprints.write_index(entries, args.dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

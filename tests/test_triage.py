"""`fpx triage` (issue 13): custody log, provenance metadata, fingerprint evidence, verdict ranking, bad input,
the inbox never written. Tiny synthetic images; the weight-free Gaussian denoiser; no shared data."""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import natural_image
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from fingerprint_cli import images
from fingerprint_cli.cli.app import app
from fingerprint_cli.errors import InputError, UsageError
from fingerprint_cli.triage import core, custody, evidence, provenance, verdict

S = 48
AI_DST = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def run(args):
    return CliRunner().invoke(app, [str(a) for a in args])


def xmp_packet(dst: str, system: str | None = None) -> bytes:
    extra = f"<Iptc4xmpExt:AISystemUsed>{system}</Iptc4xmpExt:AISystemUsed>" if system else ""
    return ('<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
            'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
            f'Iptc4xmpExt:DigitalSourceType="{dst}">{extra}</rdf:Description></rdf:RDF></x:xmpmeta>'
            '<?xpacket end="w"?>').encode()


def u8(seed, h=S, w=S):
    return images.to_uint8(natural_image(h, w, seed=seed))


def save(arr, path, fmt, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    Path(path).write_bytes(buf.getvalue())
    return path


def huge_png(path, w=60000, h=60000):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                           + chunk(b"IEND", b""))


# ---------------------------------------------------------------- C2PA test signer (offline, throwaway certs)
def _signer():
    c2pa = pytest.importorskip("c2pa")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fpx test lab")])

    now = datetime.datetime.now(datetime.timezone.utc)
    ku = dict(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
              encipher_only=False, decipher_only=False)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("fpx test CA")).issuer_name(name("fpx test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **ku), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(name("fpx test signer")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **ku),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    kpem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    return c2pa, c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg=b"es256", sign_cert=pem, private_key=kpem,
                                                           ta_url=None)), ca.public_bytes(serialization.Encoding.PEM)


def c2pa_jpeg(seed: int, dst: str, with_ca: bool = False):
    """A JPEG with a C2PA manifest signed offline by a throwaway CA (and that CA's PEM with ``with_ca``)."""
    c2pa, signer, ca_pem = _signer()
    manifest = {"claim_generator_info": [{"name": "fpx-test-generator", "version": "1.0"}], "title": "t.jpg",
                "assertions": [{"label": "c2pa.actions",
                                "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": dst}]}}]}
    src = io.BytesIO(images.encode(u8(seed, 64, 64), "JPEG", quality=90))
    out = io.BytesIO()
    c2pa.Builder(manifest).sign(signer, "image/jpeg", src, out)
    return (out.getvalue(), ca_pem) if with_ca else out.getvalue()


# ---------------------------------------------------------------- a small fingerprint library
def planted(h=S, w=S):
    yy, xx = np.mgrid[0:h, 0:w]
    p = np.sin(2 * np.pi * xx / 4) * np.cos(2 * np.pi * yy / 8)
    return (p[..., None] * np.array([1.0, -0.5, 0.7]) * 0.04).astype(np.float32)


@pytest.fixture(scope="module")
def fplib(tmp_path_factory):
    """An `average` fingerprint of a planted pattern (gaussian denoiser), uncalibrated and calibrated copies, and
    generated/real test images it was not fitted on."""
    from fingerprint_cli.dif import detect, extract
    from fingerprint_cli.dif.fingerprint import Fingerprint

    root = tmp_path_factory.mktemp("fplib")
    for d in ("gen", "real", "lib", "cal", "test"):
        (root / d).mkdir()
    for i in range(12):
        images.save_png(np.clip(natural_image(S, S, seed=i) + planted(), 0, 1), root / "gen" / f"g{i:02d}.png")
        images.save_png(natural_image(S, S, seed=100 + i), root / "real" / f"r{i:02d}.png")
    fp = extract.fit([str(p) for p in images.list_images(root / "gen")],
                     [str(p) for p in images.list_images(root / "real")], name="planted", method="average",
                     crop=S, denoiser="gaussian", test_fraction=0.25)
    fp.save(root / "lib" / "planted.fpx.safetensors")
    # calibration on 19 held-out real images, stated FPR 0.05
    cal_paths = []
    for i in range(19):
        images.save_png(natural_image(S, S, seed=300 + i), root / "cal" / f"c{i:02d}.png")
        cal_paths.append(str(root / "cal" / f"c{i:02d}.png"))
    cal_scores = detect.scores(fp, detect.correlations(fp, cal_paths))
    calibrated = Fingerprint("planted-cal", fp.method, fp.pattern,
                             dict(fp.meta, calibration={"fpr": 0.05, "scores": [float(s) for s in cal_scores]}))
    calibrated.save(root / "cal.fpx.safetensors")
    images.save_png(np.clip(natural_image(S, S, seed=500) + planted(), 0, 1), root / "test" / "gen.png")
    images.save_png(natural_image(S, S, seed=600), root / "test" / "real.png")
    return {"root": root, "lib": root / "lib", "plain": root / "lib" / "planted.fpx.safetensors",
            "cal": root / "cal.fpx.safetensors", "cal_scores": np.asarray(cal_scores), "test": root / "test"}


def one(path, fingerprints=()):
    lib = evidence.collect(fingerprints)
    out = core.analyse(core.Item(str(path), custody.utc_now(), None, core.Settings(tuple(lib.paths))))
    from fingerprint_cli.records import Record

    return Record.from_dict(out["record"]), out["thumbnail"]


# ================================================================ custody
@pytest.mark.parametrize("fmt,kw,name", [("PNG", {}, "PNG"), ("JPEG", {"quality": 80}, "JPEG"), ("GIF", {}, "GIF"),
                                         ("TIFF", {}, "TIFF"), ("BMP", {}, "BMP"), ("WEBP", {}, "WEBP")])
def test_format_is_detected_by_content_not_extension(tmp_path, fmt, kw, name):
    p = save(u8(1), tmp_path / "misnamed.txt", fmt, **kw)  # wrong extension on purpose
    assert custody.sniff(p.read_bytes()[:64]) == name
    rec, _ = one(p)
    assert rec.ok, rec.error
    c = rec.details["custody"]
    assert c["format"] == name and (c["width"], c["height"]) == (S, S)
    assert c["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest() and c["size"] == p.stat().st_size


def test_sniff_other_kinds():
    assert custody.sniff(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic") == "HEIC"
    assert custody.sniff(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00") == "AVIF"
    assert custody.sniff("plain text, ünïcode\n".encode()) == "TEXT"
    assert custody.sniff(b"%PDF-1.7\n") == "PDF"
    assert custody.sniff(bytes(range(256))[:64]) is None
    assert custody.sniff(b"") is None


def _make_log(tmp_path, n=5):
    log = custody.CustodyLog(tmp_path / "custody.jsonl")
    for i in range(n):
        log.append(custody.Custody(f"inbox/{i}.png", hashlib.sha256(bytes([i])).hexdigest(), 100 + i, "PNG", 8, 8))
    return log


def test_custody_log_chain_verifies_and_continues(tmp_path):
    log = _make_log(tmp_path)
    res = custody.verify_log(log.path)
    assert res.ok and res.entries == 5 and res.head == log.head
    lines = log.path.read_text().splitlines()
    # every entry carries the sha256 of the previous entry's line
    assert json.loads(lines[0])["prev"] == custody.GENESIS
    for a, b in zip(lines, lines[1:]):
        assert json.loads(b)["prev"] == hashlib.sha256(a.encode()).hexdigest()
    again = custody.CustodyLog(log.path)  # reopening continues the chain
    again.append(custody.Custody("inbox/x.png", "ab" * 32, 1, "PNG"))
    assert custody.verify_log(log.path).ok and custody.verify_log(log.path).entries == 6


@pytest.mark.parametrize("tamper", ["edit", "edit-last-canonical", "remove", "reorder", "truncate-tail", "garbage"])
def test_verify_log_finds_tampering(tmp_path, tamper):
    log = _make_log(tmp_path)
    head = log.head
    lines = log.path.read_text().splitlines()
    if tamper == "edit":
        e = json.loads(lines[2])
        e["sha256"] = "0" * 64
        lines[2] = json.dumps(e, sort_keys=True, separators=(",", ":"))
    elif tamper == "edit-last-canonical":  # no later entry to break: the head check or the form catches it
        lines[-1] = lines[-1].replace('"size":104', '"size": 999')
    elif tamper == "remove":
        del lines[1]
    elif tamper == "reorder":
        lines[1], lines[3] = lines[3], lines[1]
    elif tamper == "truncate-tail":
        lines = lines[:-1]
    elif tamper == "garbage":
        lines.insert(2, "not json")
    log.path.write_text("\n".join(lines) + "\n")
    res = custody.verify_log(log.path, expect_head=head)
    assert not res.ok and res.problems
    r = run(["triage", "verify-log", log.path, "--head", head])
    assert r.exit_code == 1
    assert "FAILED" in r.stdout
    if tamper in ("edit", "remove", "reorder"):  # found without the head, from the chain alone
        assert not custody.verify_log(log.path).ok


def test_verify_log_cli_ok_and_refuses_to_extend_a_broken_log(tmp_path):
    log = _make_log(tmp_path)
    r = run(["triage", "verify-log", log.path, "--head", log.head, "-f", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["ok"] is True
    text = log.path.read_text().replace('"size":102', '"size":7')
    log.path.write_text(text)
    with pytest.raises(InputError, match="fails verification"):
        custody.CustodyLog(log.path)
    assert run(["triage", "verify-log", tmp_path / "nope.jsonl"]).exit_code == 2


# ================================================================ provenance metadata
def test_xmp_digital_source_type_in_jpeg_and_png(tmp_path):
    j = save(u8(2), tmp_path / "ai.jpg", "JPEG", quality=90, xmp=xmp_packet(AI_DST, "FooGen 2"))
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp_packet(AI_DST).decode())
    p = save(u8(3), tmp_path / "ai.png", "PNG", pnginfo=info)
    for path in (j, p):
        rec, _ = one(path)
        x = rec.details["metadata"]["xmp"]
        assert x["state"] == "present" and x["digital_source_type"] == AI_DST and x["meaning"] == "generated"
        assert rec.decision["label"] == "generated" and rec.decision["tier"] == 3
        assert rec.decision["basis"] == ["xmp"]
    assert one(j)[0].decision["generator"] == "FooGen 2"


def test_absent_metadata_is_explicit_not_an_error(tmp_path):
    p = save(u8(4), tmp_path / "plain.png", "PNG")
    rec, thumb = one(p)
    m = rec.details["metadata"]
    assert rec.ok and thumb.startswith("data:image/jpeg;base64,")
    assert m["c2pa"]["state"] == "absent" and m["xmp"]["state"] == "absent" and m["exif"]["state"] == "absent"
    assert m["png_text"]["state"] == "absent" and m["jpeg"]["state"] == "absent"
    assert rec.decision["label"] == "unknown" and "no evidence" in rec.decision["why"]


def test_png_chunks_of_generation_tools(tmp_path):
    a = PngImagePlugin.PngInfo()
    a.add_text("parameters", "a cat in a hat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, "
                             "Seed: 1, Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly")
    b = PngImagePlugin.PngInfo()
    b.add_text("prompt", json.dumps({"4": {"class_type": "CheckpointLoaderSimple",
                                           "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}}}))
    b.add_text("workflow", json.dumps({"nodes": []}))
    c = PngImagePlugin.PngInfo()
    c.add_text("Title", "holiday")
    ra, _ = one(save(u8(5), tmp_path / "a.png", "PNG", pnginfo=a))
    rb, _ = one(save(u8(6), tmp_path / "b.png", "PNG", pnginfo=b))
    rc, _ = one(save(u8(7), tmp_path / "c.png", "PNG", pnginfo=c))
    ta, tb, tc = (r.details["metadata"]["png_text"] for r in (ra, rb, rc))
    assert ta["generation_tool"] == "sd-webui" and ta["model"] == "v1-5-pruned-emaonly"
    assert tb["generation_tool"] == "comfyui" and tb["model"] == "sd_xl_base_1.0.safetensors"
    assert tc["state"] == "present" and tc["generation_tool"] is None and tc["keys"] == ["Title"]
    assert ra.decision["label"] == "generated" and rb.decision["label"] == "generated"
    assert rc.decision["label"] == "unknown"


def test_exif_camera_is_weak_and_never_decides(tmp_path):
    ex = Image.Exif()
    ex[0x010F] = "Canon"
    ex[0x0110] = "EOS 5D"
    ex[0x0131] = "Darktable 4.2"
    ex.get_ifd(0x8769)[0x9003] = "2024:05:01 10:00:00"
    rec, _ = one(save(u8(8), tmp_path / "cam.jpg", "JPEG", quality=92, exif=ex.tobytes()))
    e = rec.details["metadata"]["exif"]
    assert (e["make"], e["model"], e["software"], e["datetime_original"]) == ("Canon", "EOS 5D", "Darktable 4.2",
                                                                             "2024:05:01 10:00:00")
    assert not e["software_is_ai"]
    assert any(r["source"] == "exif" and r["says"] == "captured" and r["tier"] == 5 for r in rec.reasons)
    assert rec.decision["label"] == "unknown"
    ex2 = Image.Exif()
    ex2[0x0131] = "Adobe Firefly"
    rec2, _ = one(save(u8(8), tmp_path / "ff.jpg", "JPEG", quality=92, exif=ex2.tobytes()))
    assert rec2.details["metadata"]["exif"]["software_is_ai"] and rec2.decision["label"] == "generated"


@pytest.mark.parametrize("q", [20, 50, 75, 85, 90, 95, 100])
def test_jpeg_quality_estimate_recovers_libjpeg_quality(tmp_path, q):
    # independent reference: libjpeg (through Pillow) writing the file at quality q
    rec, _ = one(save(u8(9, 64, 64), tmp_path / f"q{q}.jpg", "JPEG", quality=q))
    j = rec.details["metadata"]["jpeg"]
    assert j["state"] == "present" and j["quality"] == q and j["exact"] and j["mismatch"] == 0.0
    assert rec.features["jpeg_quality"] == q


def test_ijg_scaling_matches_libjpeg_tables():
    from fingerprint_cli.dif import condition

    for q in (10, 50, 80, 97):
        buf = io.BytesIO()
        Image.fromarray(u8(1, 16, 16)).save(buf, "JPEG", quality=q)
        tables = Image.open(io.BytesIO(buf.getvalue())).quantization
        assert list(condition.ijg_table(condition.IJG_LUMINANCE, q).astype(int)) == list(tables[0])
        assert list(condition.ijg_table(condition.IJG_CHROMINANCE, q).astype(int)) == list(tables[1])


def test_custom_tables_are_flagged_as_not_ijg(tmp_path):
    flat = [[7] * 64, [9] * 64]
    rec, _ = one(save(u8(9, 64, 64), tmp_path / "custom.jpg", "JPEG", qtables=flat))
    j = rec.details["metadata"]["jpeg"]
    assert not j["exact"] and j["mismatch"] > 1.0


def test_double_compression_hint_separates_recompressed_files(tmp_path):
    single, double = [], []
    for seed in range(3):
        px = u8(40 + seed, 192, 192)
        a = images.encode(px, "JPEG", quality=90)
        once = np.asarray(Image.open(io.BytesIO(images.encode(px, "JPEG", quality=60))).convert("RGB"))
        b = images.encode(once, "JPEG", quality=90)
        for data, out in ((a, single), (b, double)):
            p = images.probe(data, "x.jpg")
            out.append(provenance.read_jpeg(p.quantization, p.format, images.jpeg_luma(data, "x.jpg"))
                       ["double_compression"]["score"])
    assert max(single) < provenance.DQ_THRESHOLD < min(double), (single, double)


# ================================================================ C2PA
def test_c2pa_valid_manifest_outranks_pixels_and_invalid_is_evidence(tmp_path):
    signed = c2pa_jpeg(11, AI_DST)
    p = tmp_path / "signed.jpg"
    p.write_bytes(signed)
    rec, _ = one(p)
    c = rec.details["metadata"]["c2pa"]
    assert c["state"] == "valid"  # signature + hashes check; the throwaway signer is on no trust list
    assert c["signer"] == "fpx test signer" and "fpx-test-generator" in c["claim_generator"]
    assert c["digital_source_type"] == AI_DST and c["actions"][0]["action"] == "c2pa.created"
    assert rec.decision["label"] == "generated" and rec.decision["tier"] == 2 and rec.decision["basis"] == ["c2pa"]
    # edit the pixels after signing: the manifest no longer matches — evidence, not a crash
    bad = bytearray(signed)
    bad[-200] ^= 0xFF
    q = tmp_path / "tampered.jpg"
    q.write_bytes(bytes(bad))
    rec2, _ = one(q)
    c2 = rec2.details["metadata"]["c2pa"]
    assert rec2.ok and c2["state"] == "invalid" and "assertion.dataHash.mismatch" in c2["failures"]
    assert rec2.decision["integrity"] and "changed after signing" in rec2.decision["integrity"]
    assert rec2.decision["tier"] == 3  # the claim inside a failing manifest is only an unverified declaration
    # a damaged manifest (JUMBF bytes garbled) is also `invalid`, never an exception
    i = signed.find(b"jumb")
    garbled = bytearray(signed)
    garbled[i + 40:i + 240] = bytes(200)
    r = tmp_path / "garbled.jpg"
    r.write_bytes(bytes(garbled))
    rec3, _ = one(r)
    assert rec3.details["metadata"]["c2pa"]["state"] in ("invalid", "absent")


def test_c2pa_signer_trusted_with_the_labs_trust_anchors_is_tier_1(tmp_path):
    data, ca_pem = c2pa_jpeg(12, AI_DST, with_ca=True)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "signed.jpg").write_bytes(data)
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    plain = core.run([inbox])[0]
    assert plain.details["metadata"]["c2pa"]["state"] == "valid" and plain.decision["tier"] == 2
    trusted = core.run([inbox], c2pa_trust=str(tmp_path / "ca.pem"))[0]
    assert trusted.details["metadata"]["c2pa"]["state"] == "trusted"
    assert trusted.decision["label"] == "generated" and trusted.decision["tier"] == 1
    (tmp_path / "bad.pem").write_text("not a certificate")
    r = run(["triage", inbox, "--c2pa-trust", tmp_path / "bad.pem"])
    assert r.exit_code == 2 and "PEM" in r.stderr


def test_c2pa_store_summary_reads_a_trusted_capture():
    store = {"active_manifest": "m", "validation_state": "Trusted",
             "manifests": {"m": {"claim_generator": "CameraCo fw 1.2", "signature_info": {"issuer": "CameraCo"},
                                 "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [
                                     {"action": "c2pa.created", "digitalSourceType":
                                      "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"}]}}]}}}
    s = provenance.summarise_manifest_store(store)
    assert s["state"] == "trusted" and s["meaning"] == "captured" and s["signer"] == "CameraCo"


# ================================================================ verdict ranking
def _meta(c2pa=None, xmp=None):
    return {"c2pa": c2pa or {"state": "absent"}, "xmp": xmp or {"state": "absent"}, "exif": {"state": "absent"},
            "png_text": {"state": "absent"}, "jpeg": {"state": "absent"}}


def _gen(calibrated, generated, name="g"):
    return {"fingerprints": [{"name": name, "score": 5.0, "generated": generated, "calibrated": calibrated,
                              "p_value": 0.01 if calibrated else None, "fpr": 0.05 if calibrated else None,
                              "n_real": 99 if calibrated else None}]}


def test_signed_capture_outranks_a_calibrated_detection_and_the_disagreement_is_shown():
    trusted = {"state": "trusted", "meaning": "captured", "signer": "CameraCo", "claim_generator": "fw",
               "digital_source_type": "digitalCapture"}
    d = verdict.decide(verdict.collect(_meta(c2pa=trusted), _gen(True, True)))
    assert d["label"] == "captured" and d["tier"] == 1
    assert [x["source"] for x in d["disagreements"]] == ["fingerprint:g"]


def test_same_rank_disagreement_is_disputed_not_averaged():
    xmp = {"state": "present", "meaning": "ai-edited", "digital_source_type": "compositeWithTrainedAlgorithmicMedia"}
    meta = _meta(xmp=xmp)
    meta["png_text"] = {"state": "present", "generation_tool": "sd-webui", "keys": ["parameters"], "model": None}
    d = verdict.decide(verdict.collect(meta, None))
    assert d["label"] == "disputed" and d["tier"] == 3 and len(d["disagreements"]) == 2


def test_an_unsigned_capture_claim_never_outranks_a_calibrated_detection():
    xmp = {"state": "present", "meaning": "captured", "digital_source_type": "digitalCapture"}
    d = verdict.decide(verdict.collect(_meta(xmp=xmp), _gen(True, True)))
    assert d["label"] == "generated" and d["tier"] == 4
    assert [x["source"] for x in d["disagreements"]] == ["xmp"]
    assert verdict.decide(verdict.collect(_meta(xmp=xmp), None))["label"] == "unknown"


def test_pixel_statistic_is_never_stronger_than_its_calibration():
    d = verdict.decide(verdict.collect(_meta(), _gen(False, True)))
    assert d["label"] == "unknown" and "uncalibrated" in d["why"]
    d = verdict.decide(verdict.collect(_meta(), _gen(True, True)))
    assert d["label"] == "generated" and d["tier"] == 4 and d["error_rate"] == pytest.approx(0.05)
    assert d["generator"] == "g"
    two = _gen(True, True, "a")
    two["fingerprints"] += _gen(True, False, "b")["fingerprints"]
    d = verdict.decide(verdict.collect(_meta(), two))
    assert d["error_rate"] == pytest.approx(0.10)  # Bonferroni over the two calibrated fingerprints


# ================================================================ generator fingerprints
def test_fingerprint_evidence_uncalibrated_and_calibrated(fplib):
    gen, real = fplib["test"] / "gen.png", fplib["test"] / "real.png"
    rec, _ = one(gen, [fplib["plain"]])
    f = rec.details["generator"]["fingerprints"][0]
    assert f["name"] == "planted" and not f["calibrated"] and f["p_value"] is None and f["generated"]
    assert rec.decision["label"] == "unknown"  # an uncalibrated detection does not decide
    assert any(r["tier"] == 5 and "not calibrated" in r["strength"] for r in rec.reasons)
    # calibrated: conformal p-value against the held-out real scores, checked by brute force
    rec, _ = one(gen, [fplib["cal"]])
    f = rec.details["generator"]["fingerprints"][0]
    cal = fplib["cal_scores"]
    brute = (1 + sum(1 for s in cal if s >= f["score"])) / (len(cal) + 1)
    assert f["calibrated"] and f["p_value"] == pytest.approx(brute) and f["fpr"] == 0.05
    assert f["generated"] == (brute <= 0.05)
    assert f["generated"] and rec.decision["label"] == "generated" and rec.decision["tier"] == 4
    assert rec.features["p.planted-cal"] == pytest.approx(brute)
    rec, _ = one(real, [fplib["cal"]])
    f = rec.details["generator"]["fingerprints"][0]
    assert not f["generated"] and rec.decision["label"] == "unknown"


def test_detection_outside_the_calibrated_conditions_does_not_decide(fplib, tmp_path):
    from fingerprint_cli.dif.fingerprint import Fingerprint

    fp = Fingerprint.load(fplib["cal"])
    cond = Fingerprint(fp.name, fp.method, fp.pattern, dict(fp.meta, calibration=dict(
        fp.meta["calibration"], conditions={"formats": ["PNG"], "jpeg_quality": None})))
    cond.save(tmp_path / "cond.fpx.safetensors")
    gen_png = fplib["test"] / "gen.png"
    rec, _ = one(gen_png, [tmp_path / "cond.fpx.safetensors"])
    assert rec.decision["label"] == "generated" and rec.decision["tier"] == 4  # PNG: inside its conditions
    gen_jpg = save(images.to_uint8(images.load_image(gen_png).pixels), tmp_path / "gen.jpg", "JPEG", quality=98)
    rec, _ = one(gen_jpg, [tmp_path / "cond.fpx.safetensors"])
    f = rec.details["generator"]["fingerprints"][0]
    assert f["outside_calibration"] == "calibrated on PNG images, this is JPEG"
    assert rec.decision["label"] == "unknown"
    assert all(r["tier"] == 5 for r in rec.reasons if r["source"].startswith("fingerprint:"))
    c = evidence.Calibration(True, 0.05, 9, np.zeros(9), conditions={"jpeg_quality": [70, 95]})
    assert c.outside({"format": "JPEG", "jpeg_quality": 50}) and not c.outside({"format": "JPEG", "jpeg_quality": 80})


def test_fingerprint_folder_skips_non_fingerprints_and_shipped_is_guarded(fplib, tmp_path, monkeypatch):
    (fplib["lib"] / "notes.safetensors").write_bytes(b"junk")
    try:
        lib = evidence.collect([fplib["lib"]])
        assert lib.paths == [str(fplib["plain"])] and len(lib.skipped) == 1
    finally:
        (fplib["lib"] / "notes.safetensors").unlink()
    with pytest.raises(InputError):
        evidence.collect([tmp_path / "missing.fpx.safetensors"])
    monkeypatch.setattr(evidence, "shipped_dir", lambda: tmp_path / "none")
    with pytest.raises(UsageError, match="no shipped fingerprint library"):
        evidence.collect(library="shipped")
    monkeypatch.setattr(evidence, "shipped_dir", lambda: fplib["lib"])
    assert evidence.collect(library="shipped").paths == [str(fplib["plain"])]


def test_calibration_read_defensively():
    class FP:
        meta = {"calibration": {"fpr": "0.01"}}
    assert not evidence.calibration_of(FP()).calibrated  # an FPR without scores is not a calibration
    FP.meta = {"fpr": 0.01, "calibration_scores": [0.1, float("nan")]}
    assert not evidence.calibration_of(FP()).calibrated
    FP.meta = {"calibration": {"fpr": 0.2, "real_scores": [0, 1, 2, 3]}}
    c = evidence.calibration_of(FP())
    assert c.calibrated and c.p_value(2.5) == pytest.approx(2 / 5) and c.p_value(9) == pytest.approx(1 / 5)
    assert c.statistic == "score"
    FP.meta = {"calibration": {"fpr": 0.2, "scores": [0, 1], "statistic": "something else"}}
    assert not evidence.calibration_of(FP()).calibrated  # never compare against scores of unknown meaning


# ================================================================ bad input, batch, the inbox never written
def bad_inbox(root: Path) -> Path:
    inbox = root / "inbox"
    inbox.mkdir()
    save(u8(20), inbox / "good.png", "PNG")
    save(u8(21), inbox / "good.jpg", "JPEG", quality=85)
    (inbox / "notes.txt").write_text("not an image\n")
    full = images.encode(u8(22), "JPEG", quality=85)
    (inbox / "truncated.jpg").write_bytes(full[: len(full) // 2])
    huge_png(inbox / "huge.png")
    frames = [Image.fromarray(u8(23 + i)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    (inbox / "anim.gif").write_bytes(buf.getvalue())
    (inbox / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + os.urandom(200))
    (inbox / "empty.png").write_bytes(b"")
    os.symlink(inbox / "good.png", inbox / "link.png")
    (inbox / "sub").mkdir()
    save(u8(24), inbox / "sub" / "nested.webp", "WEBP")
    (inbox / "copy.png").write_bytes((inbox / "good.png").read_bytes())  # same bytes, another name
    return inbox


def tree_hashes(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p)] = "link:" + os.readlink(p)
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() + f":{p.stat().st_mtime_ns}"
        else:
            out[str(p)] = "dir"
    return out


EXPECTED_ERRORS = {"notes.txt": "text file", "truncated.jpg": "truncated", "huge.png": "pixels",
                   "anim.gif": "animated GIF with 3 frames", "photo.heic": "no decoder", "empty.png": "empty file",
                   "link.png": "symbolic link"}


def test_cli_batch_bad_input_custody_and_inbox_untouched(tmp_path, fplib):
    inbox = bad_inbox(tmp_path)
    before = tree_hashes(inbox)
    out = tmp_path / "out"
    r = run(["triage", inbox, "-F", fplib["cal"], "-o", out / "t.jsonl", "--report", out / "t.html", "-q"])
    assert r.exit_code == 3, r.output
    assert tree_hashes(inbox) == before  # the inbox is only read
    recs = [json.loads(x) for x in (out / "t.jsonl").read_text().splitlines()]
    by = {Path(x["inputs"]["image"]["path"]).name: x for x in recs}
    assert set(by) == {"good.png", "good.jpg", "notes.txt", "truncated.jpg", "huge.png", "anim.gif", "photo.heic",
                       "empty.png", "link.png", "nested.webp", "copy.png"}
    for name, needle in EXPECTED_ERRORS.items():
        rec = by[name]
        msg = rec["error"]["message"]
        assert rec["status"] == "error" and needle in msg.split(": ", 1)[1], (name, rec["error"])
        assert "\n" not in rec["error"]["message"] and name in rec["error"]["message"]
    for name in ("good.png", "good.jpg", "nested.webp", "copy.png"):
        assert by[name]["status"] == "ok"
    # same bytes under two names: analysed once, the second (in sorted order) names the first
    assert by["good.png"]["details"]["duplicate_of"].endswith("copy.png")
    assert "duplicate_of" not in by["copy.png"]["details"]
    assert by["good.png"]["decision"] == by["copy.png"]["decision"]
    assert by["notes.txt"]["details"]["custody"]["sha256"] == hashlib.sha256(b"not an image\n").hexdigest()
    assert by["empty.png"]["details"]["custody"]["size"] == 0
    # the custody log holds one verified entry per record, each record naming its entry
    log = out / "t.custody.jsonl"
    res = custody.verify_log(log)
    assert res.ok and res.entries == len(recs)
    entries = log.read_text().splitlines()
    hashes = {hashlib.sha256(e.encode()).hexdigest() for e in entries}
    assert all(x["details"]["custody"]["entry_sha256"] in hashes for x in recs)
    assert f"head {res.head}" in r.stderr
    # a rerun is idempotent: nothing new is analysed or logged
    r2 = run(["triage", inbox, "-F", fplib["cal"], "-o", out / "t.jsonl", "--report", out / "t.html", "-q"])
    assert custody.verify_log(log).entries == res.entries + len(EXPECTED_ERRORS)  # only the failures are retried
    assert r2.exit_code == 3
    assert tree_hashes(inbox) == before


def test_outputs_inside_the_inbox_are_refused(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    save(u8(1), inbox / "a.png", "PNG")
    before = tree_hashes(inbox)
    for args in (["-o", inbox / "t.jsonl"], ["--report", inbox / "t.html"], ["--custody-log", inbox / "c.jsonl"],
                 ["-o", inbox / "a.png"]):
        r = run(["triage", inbox, *args])
        assert r.exit_code == 2 and "inbox" in r.stderr, r.output
    assert tree_hashes(inbox) == before


def test_watch_needs_an_output_and_head_belongs_to_verify_log(tmp_path):
    a = save(u8(1), tmp_path / "a.png", "PNG")
    r = run(["triage", a, "--watch"])
    assert r.exit_code == 2 and "--watch needs --output" in r.stderr
    r = run(["triage", a, "--head", "ab"])
    assert r.exit_code == 2 and "verify-log" in r.stderr


def test_single_bad_file_exit_2_and_a_missing_index_is_refused_up_front(tmp_path):
    p = tmp_path / "x.png"
    p.write_text("hello")
    r = run(["triage", p, "-q"])
    assert r.exit_code == 2 and "text file" in r.stderr
    good = save(u8(1), tmp_path / "g.png", "PNG")
    r = run(["triage", good, "--index", tmp_path / "lib.fpxindex", "-q", "-o", tmp_path / "t.jsonl"])
    assert r.exit_code == 2 and "lib.fpxindex" in r.stderr and "no such index" in r.stderr
    assert not (tmp_path / "t.jsonl").exists()


def test_origin_and_attribution_through_the_real_origin_index(tmp_path):
    from fingerprint_cli import origin

    refs = tmp_path / "refs"
    refs.mkdir()
    images.save_png(natural_image(96, 96, seed=30), refs / "ref.png")
    for i in range(12):  # distractors (and calibration references for the not-in-library threshold)
        images.save_png(natural_image(96, 96, seed=400 + i), refs / f"d{i}.png")
    origin.build_index([str(refs)], str(tmp_path / "lib.fpxindex"))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    sus = np.asarray(Image.fromarray(images.to_uint8(natural_image(96, 96, seed=30))).resize((90, 90)).resize((96, 96)))
    save(sus, inbox / "sus.png", "PNG")
    images.save_png(natural_image(96, 96, seed=31), inbox / "other.png")
    recs = core.run([inbox], index=str(tmp_path / "lib.fpxindex"))
    by = {Path(r.inputs["image"]["path"]).name: r for r in recs}
    o = by["sus.png"].details["origin"]
    assert o["state"] == "found" and Path(o["reference"]).name == "ref.png" and o["similarity"] > 0.9
    assert 0 < o["false_match_rate"] < 1  # the rate the real query record states, carried into the evidence
    att = by["sus.png"].details["attribution"]
    assert att["state"] == "done" and att["calibrated"] is True and att["alpha"] == 0.05
    assert any(e["source"] == "origin" and e["says"] == "derived-from" and e["error_rate"] == o["false_match_rate"]
               for e in by["sus.png"].reasons)
    assert by["sus.png"].decision["error_note"]  # every verdict says what error rate it holds, or why none
    assert by["other.png"].details["origin"]["state"] == "not-in-library"
    assert by["other.png"].details["attribution"] is None


def test_parallel_workers_give_the_serial_records(tmp_path, fplib):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(4):
        images.save_png(np.clip(natural_image(S, S, seed=700 + i) + (planted() if i % 2 else 0), 0, 1),
                        inbox / f"i{i}.png")
    serial = core.run([inbox], fingerprints=[str(fplib["cal"])])
    par = core.run([inbox], fingerprints=[str(fplib["cal"])], jobs=2)

    def key(rs):
        return [(r.inputs["image"]["path"], r.inputs["image"]["sha256"], r.decision["label"],
                 round(r.details["generator"]["fingerprints"][0]["score"], 6)) for r in rs]
    assert key(serial) == key(par)
    assert [r.decision["label"] for r in serial] == ["unknown", "generated", "unknown", "generated"]


def test_png_text_chunks_match_pillow_also_after_the_image_data(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "Steps: 20, Sampler: Euler")
    info.add_text("Comment", "zipped " * 50, zip=True)
    info.add_itxt("Description", "ünïcode text", lang="de", tkey="Beschreibung", zip=True)
    ex = Image.Exif()
    ex[0x010F] = "Canon"
    buf = io.BytesIO()
    Image.fromarray(u8(1)).save(buf, "PNG", pnginfo=info, exif=ex.tobytes())
    data = buf.getvalue()

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    late = data[:-12] + chunk(b"tEXt", b"prompt\x00{\"3\": {}}") + data[-12:]  # after IDAT, before IEND
    p = images.probe(late, "late.png")
    reference = Image.open(io.BytesIO(late))
    reference.load()
    assert p.text == {k: str(v) for k, v in reference.text.items()}  # Pillow (full decode) as the reference
    assert p.text["prompt"] == '{"3": {}}' and p.exif["Make"] == "Canon"


def test_block_dct_matches_scipy():
    from scipy.fft import dctn

    b = np.random.default_rng(0).normal(size=(5, 8, 8))
    assert np.allclose(provenance._DCT8 @ b @ provenance._DCT8.T, dctn(b, type=2, axes=(1, 2), norm="ortho"))


def test_a_duplicate_of_a_failed_file_fails_with_the_reason(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.txt").write_text("same text\n")
    (inbox / "b.txt").write_text("same text\n")
    recs = core.run([inbox])
    assert [r.status for r in recs] == ["error", "error"]
    assert "same bytes as" in recs[1].error["message"] and "text file" in recs[1].error["message"]
    assert recs[1].details["duplicate_of"].endswith("a.txt")


@pytest.mark.slow
def test_dask_local_scheduler_gives_the_serial_records(tmp_path):
    pytest.importorskip("dask.distributed")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(3):
        save(u8(60 + i), inbox / f"d{i}.png", "PNG")
    (inbox / "notes.txt").write_text("x")
    serial = core.run([inbox])
    dist = core.run([inbox], scheduler="local", jobs=2)
    assert [(r.inputs["image"]["path"], r.status, r.inputs["image"]["sha256"]) for r in serial] == \
        [(r.inputs["image"]["path"], r.status, r.inputs["image"]["sha256"]) for r in dist]


def test_calibration_stored_as_raw_rho_gives_the_same_p_value(fplib, tmp_path):
    from fingerprint_cli.dif import detect
    from fingerprint_cli.dif.fingerprint import Fingerprint

    fp = Fingerprint.load(fplib["cal"])
    cal_paths = [str(p) for p in images.list_images(fplib["root"] / "cal")]
    rhos = detect.correlations(fp, cal_paths)
    raw = Fingerprint(fp.name, fp.method, fp.pattern, dict(fp.meta, calibration={
        "fpr": 0.05, "scores": [float(r) for r in rhos], "statistic": "rho"}))
    raw.save(tmp_path / "raw.fpx.safetensors")
    for img in ("gen.png", "real.png"):
        a = one(fplib["test"] / img, [fplib["cal"]])[0].details["generator"]["fingerprints"][0]
        b = one(fplib["test"] / img, [tmp_path / "raw.fpx.safetensors"])[0].details["generator"]["fingerprints"][0]
        assert a["p_value"] == pytest.approx(b["p_value"]) and a["generated"] == b["generated"]


def test_an_image_too_small_for_a_fingerprint_window_keeps_its_provenance_evidence(tmp_path, fplib):
    """A 12-px image is readable but smaller than any fingerprint window: no pixel evidence (said in
    details.generator.not_run), the record stays ok and its generation-tool chunk still decides."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler, Seed: 1")
    Image.fromarray(u8(3, 12, 12)).save(tmp_path / "tiny.png", "PNG", pnginfo=info)
    rec, _ = one(tmp_path / "tiny.png", [str(fplib["cal"])])
    assert rec.ok, rec.error
    gen = rec.details["generator"]
    assert gen["fingerprints"] == [] and gen["claimed_by"] == [] and "too small" in gen["not_run"]
    assert rec.decision["label"] == "generated" and rec.decision["tier"] == 3
    assert rec.decision["error_rate"] is None and rec.decision["error_note"] == verdict.NO_RATE[3]

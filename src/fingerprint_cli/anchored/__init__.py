"""Reference-anchored attribution: the suspect measured against its clean reference.

Encoders (DINOv2 tokens), pixel metrics and features, the perturbation and its survival,
thresholds artifacts, attribution and calibration, the blind baseline and the case report.
"""

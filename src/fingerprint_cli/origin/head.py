"""The linear head W of ID2 and its training recipe.

ID2 (Wang et al., ICML 2025) applies one linear map ``W`` (no bias) to the embedding of both the suspect and
the references and retrieves by cosine; it is trained as a classification of generated images into their
origins with the CosFace loss (Wang et al., CVPR 2018, "CosFace: Large Margin Cosine Loss"):
``logits = s · (cos(Wx, c_j) − m · [j = y])`` with class centres ``c_j``, ``s = 64``, ``m = 0.35``; Adam with
learning rate 3.5e-4, a linear warm-up then cosine decay. A linear map generalises to unseen editing models
where an MLP overfits (the paper's finding), so fpx fits nothing else.

Here the training samples of one origin are its own embedding and those of its generated images (W is
applied on both sides, so both must land near the class centre). Batches hold ``per_origin`` samples of each
of several origins. ``W`` starts at the identity when it is square (training starts from the raw embedding),
otherwise from a random orthogonal projection.

The head file is safetensors: tensor ``weight`` (out_dim, in_dim) and metadata ``fpx_kind = origin-head``,
``embedder`` (the identity JSON of the embedder it was trained for), the recipe and the training history.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fingerprint_cli import artifacts
from fingerprint_cli.errors import ArtifactError, InputError, UsageError
from fingerprint_cli.images import sha256_file, shape_property
from fingerprint_cli.origin.embedders import l2n

RECIPE = {"loss": "CosFace", "s": 64.0, "m": 0.35, "optimizer": "Adam", "lr": 3.5e-4, "schedule": "warmup+cosine"}


@dataclass
class Head:
    """A loaded linear head: ``weight`` (out_dim, in_dim) float32."""

    weight: np.ndarray
    sha256: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    in_dim = shape_property("weight", 1, "Dimension of the embeddings W takes.")
    out_dim = shape_property("weight", 0, "Dimension of the embeddings W gives.")

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Rows of ``x`` (n, in_dim) mapped by W and L2-normalised."""
        x = np.asarray(x, np.float32)
        if x.shape[-1] != self.in_dim:
            raise UsageError(f"the head expects {self.in_dim}-dimensional embeddings, got {x.shape[-1]}")
        return l2n(x @ self.weight.T)

    def identity(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "in_dim": self.in_dim, "out_dim": self.out_dim,
                "embedder": self.meta.get("embedder", {}).get("name")}


def fit(x: np.ndarray, labels: Sequence[int], *, out_dim: int | None = None, epochs: int = 30,
        batch_origins: int = 32, per_origin: int = 4, s: float = 64.0, m: float = 0.35, lr: float = 3.5e-4,
        warmup: float = 0.1, seed: int = 0, progress=None) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit W (out_dim × in_dim) on embeddings ``x`` (n, in_dim) labelled by origin; CosFace, Adam, warm-up+cosine.

    Returns the weight and a history (loss per epoch, steps). Deterministic for a given ``seed``.
    """
    import torch

    x = np.asarray(x, np.float32)
    y = np.asarray(labels, np.int64)
    if x.ndim != 2 or len(x) != len(y):
        raise UsageError("fit: x must be (n, d) with one label per row")
    classes, y = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise UsageError("training the head needs at least two origins")
    d = x.shape[1]
    out_dim = int(out_dim or d)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    if out_dim == d:
        w0 = torch.eye(d)
    else:
        w0 = torch.empty(out_dim, d)
        torch.nn.init.orthogonal_(w0, generator=g)
    W = torch.nn.Parameter(w0.clone())
    xt = torch.from_numpy(x)
    with torch.no_grad():  # class centres start at the mean mapped embedding of each origin
        z = torch.nn.functional.normalize(xt @ w0.T, dim=1)
        c0 = torch.zeros(len(classes), out_dim).index_add_(0, torch.from_numpy(y), z)
    C = torch.nn.Parameter(torch.nn.functional.normalize(c0, dim=1))
    opt = torch.optim.Adam([W, C], lr=lr)
    by_class = [np.flatnonzero(y == c) for c in range(len(classes))]
    steps_per_epoch = max(1, math.ceil(len(classes) / batch_origins))
    total = epochs * steps_per_epoch
    n_warm = max(1, round(warmup * total))

    def lr_at(step: int) -> float:
        if step < n_warm:
            return lr * (step + 1) / n_warm
        t = (step - n_warm) / max(1, total - n_warm)
        return lr * 0.5 * (1 + math.cos(math.pi * t))

    hist, step = [], 0
    yt = torch.from_numpy(y)
    for ep in range(epochs):
        order = rng.permutation(len(classes))
        losses = []
        for b in range(steps_per_epoch):
            cls = order[b * batch_origins:(b + 1) * batch_origins]
            idx = np.concatenate([rng.choice(by_class[c], size=min(per_origin, len(by_class[c])), replace=False)
                                  for c in cls])
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            xb, yb = xt[idx], yt[idx]
            zb = torch.nn.functional.normalize(xb @ W.T, dim=1)
            cos = zb @ torch.nn.functional.normalize(C, dim=1).T
            logits = s * (cos - m * torch.nn.functional.one_hot(yb, len(classes)))
            loss = torch.nn.functional.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
        hist.append(float(np.mean(losses)))
        if progress:
            progress(ep + 1, hist[-1])
    info = {"recipe": {**RECIPE, "s": s, "m": m, "lr": lr, "warmup_fraction": warmup, "epochs": epochs,
                       "batch_origins": batch_origins, "per_origin": per_origin, "seed": seed,
                       "init": "identity" if out_dim == d else "orthogonal"},
            "loss_per_epoch": hist, "steps": total, "origins": len(classes), "samples": len(x)}
    return W.detach().numpy().astype(np.float32), info


def save(path, weight: np.ndarray, embedder_identity: dict[str, Any], info: dict[str, Any],
         inputs: Sequence[str] = ()) -> str:
    """Write the head as safetensors (atomically, never over an input); returns its sha256."""
    import torch

    meta = {"fpx_kind": "origin-head", "embedder": json.dumps(embedder_identity, sort_keys=True),
            "info": json.dumps(info)}
    return artifacts.write_tensors(path, {"weight": torch.from_numpy(np.ascontiguousarray(weight))}, meta,
                                   inputs=tuple(inputs))


def load(path) -> Head:
    """Read a head file written by :func:`save` (through artifacts.read_tensors; never a pickle)."""
    tensors, meta = artifacts.read_tensors(path)
    if meta.get("fpx_kind") != "origin-head" or "weight" not in tensors or tensors["weight"].ndim != 2:
        raise InputError("is not an fpx origin head (made by `fpx origin train`)", str(path))
    try:
        emb = json.loads(meta.get("embedder", "{}"))
        info = json.loads(meta.get("info", "{}"))
    except json.JSONDecodeError as exc:
        raise ArtifactError("origin head metadata is not valid JSON", str(path)) from exc
    return Head(tensors["weight"].float().numpy(), sha256_file(path), {"embedder": emb, "info": info,
                                                                       "path": str(path)})

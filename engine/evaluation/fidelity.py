"""Translation fidelity (beyond the paper): does a translation keep the content and vary the exclusive attribute?

For labelled image datasets (MNIST-CDCB: the digit), a small CNN per domain is trained on real train images at
32 px. Each sees its input standardised per channel, so it judges the digit, not the colours (a translation with
the wrong colour still counts as the right digit; colour is `colour_fidelity`'s business).
`translation_accuracy_x2y` is the fraction of X->Y translations (three N(0, I) exclusive samples per test image)
that the Y classifier labels with the input's true label; `translation_diversity_x2y` is the mean per-pixel
standard deviation across those three samples (images in [-1, 1]): ~0 means the exclusive code is ignored.
`classifier_accuracy_{x,y}` (on real test images) is the ceiling the translation accuracy is read against.

Classifiers are trained once per dataset (keyed by its `dataset.json`) and kept in the user cache,
`$IIAE_CACHE` or `~/.cache/iiae`, under `fidelity/<dataset name>-<hash>/classifier_{x,y}.safetensors`.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from iiae.errors import UserError
from iiae.progress import progress_bar

SIZE = 32  # classifiers see every image at 32 px: digits stay legible and training takes seconds on CPU
SAMPLES = 3
MAX_TRAIN = 20_000
TRAINING = "shifted-cosine-v2"  # how train_classifier trains: a cached classifier trained otherwise is redone
STEPS = 2000  # ≥ 98 % on real MNIST-CDCB test images of both domains (1,500 steps: 98.5 %), ~1.5 min on 2 cores


class Classifier(nn.Module):
    """Three stride-2 conv-BN-ReLU stages (32 -> 4 px) and a linear layer; inputs in [-1, 1] of any size
    (resized to 32 px)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        prev = channels
        for width in (16, 32, 64):
            layers += [nn.Conv2d(prev, width, 4, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            prev = width
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, num_classes))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        v = to_size(v)
        return self.net(F.instance_norm(v, eps=1e-3))  # per image and channel: blind to the colours


def to_size(v: torch.Tensor) -> torch.Tensor:
    """Resize to SIZE with the loader's filter (antialiased bilinear), so translations look like training images."""
    if v.shape[-2:] == (SIZE, SIZE):
        return v
    return F.interpolate(v, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=v.shape[-1] > SIZE)


def shifted(v: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Each image moved by up to `max_shift` px in x and y (edges replicated): cheap augmentation."""
    dx, dy = (torch.randint(-max_shift, max_shift + 1, (2,), generator=gen)).tolist()
    pad = F.pad(v, (max_shift,) * 4, mode="replicate")
    h, w = v.shape[-2:]
    return pad[..., max_shift + dy:max_shift + dy + h, max_shift + dx:max_shift + dx + w]


def fit(net: nn.Module, batch, *, steps: int, seed: int, desc: str, progress: bool) -> nn.Module:
    """Cross-entropy training of `net` by Adam (lr 3e-3) with a cosine decay over `steps`, on the mini-batches
    `batch(gen)` draws as (inputs, targets) from a generator seeded with `seed`; returned in eval mode. Gradients
    are enabled here even when the caller runs under no_grad (the metrics do)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    net.train()
    with torch.enable_grad():
        for _ in progress_bar(range(steps), desc=desc, disable=not progress, leave=False):
            inputs, targets = batch(gen)
            loss = F.cross_entropy(net(inputs), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
    return net.eval()


def train_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int, *, steps: int = STEPS,
                     batch_size: int = 128, seed: int = 0, progress: bool = True) -> Classifier:
    """`fit` on random shifted mini-batches (seeded, so the same data gives the same classifier)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = Classifier(images.shape[1], num_classes).to(images.device)

    def batch(gen: torch.Generator):
        idx = torch.randint(len(images), (min(batch_size, len(images)),), generator=gen).to(images.device)
        return shifted(images[idx], gen), labels[idx]

    return fit(clf, batch, steps=steps, seed=seed, desc="fidelity classifier", progress=progress)


@torch.no_grad()
def classify(clf: Classifier, v: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    return torch.cat([clf(chunk).argmax(1) for chunk in v.split(batch_size)])


def _load_train(info, device, limit: int = MAX_TRAIN) -> dict[str, torch.Tensor]:
    from iiae.data import iter_eval_batches

    keep: dict[str, list[torch.Tensor]] = {"x": [], "y": [], "cls": []}
    for batch in iter_eval_batches(info, "train", 256, image_size=SIZE, limit=limit):  # the loader resizes
        for k in keep:
            keep[k].append(batch[k])
    data = {k: torch.cat(v).to(device) for k, v in keep.items()}
    labelled = data["cls"] >= 0
    if not labelled.any():
        raise UserError(f"dataset {info.name} has no class labels: translation fidelity needs them")
    return {k: v[labelled] for k, v in data.items()}


def _cached(path: Path, expect: dict[str, str], channels: int, device) -> Optional[Classifier]:
    """The classifier saved at `path` when it was trained the same way on the same dataset, else None."""
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if any(meta.get(k) != v for k, v in expect.items()):
        return None
    clf = Classifier(channels, int(meta["num_classes"]))
    clf.load_state_dict(load_file(str(path)))
    return clf.to(device).eval()


def default_cache_dir(info) -> Path:
    """This dataset's classifier folder in the user cache: `$IIAE_CACHE` (else `$XDG_CACHE_HOME/iiae`, else
    ~/.cache/iiae) / fidelity / <name>-<hash of its dataset.json>, so every run on the same data shares them."""
    base = os.environ.get("IIAE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "iiae"
    digest = hashlib.sha256(json.dumps(info.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:12]
    return Path(base).expanduser() / "fidelity" / f"{info.name}-{digest}"


def classifiers(info, cache_dir: Optional[Path], *, channels: int = 3, steps: int = STEPS, device=None,
                progress: bool = True) -> dict[str, Classifier]:
    """One classifier per domain, loaded from `cache_dir` when it matches `info`, else trained (and saved there)."""
    device = torch.device(device or "cpu")
    expect = {"dataset": str(info.name), "size": str(SIZE), "steps": str(steps), "training": TRAINING}
    out: dict[str, Classifier] = {}
    train = None
    for domain in ("x", "y"):
        path = Path(cache_dir) / f"classifier_{domain}.safetensors" if cache_dir is not None else None
        clf = _cached(path, expect, channels, device) if path is not None else None
        if clf is None:
            if train is None:
                train = _load_train(info, device)
            num_classes = int(train["cls"].max()) + 1
            clf = train_classifier(train[domain], train["cls"], num_classes, steps=steps, progress=progress)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # concurrent evaluations: last wins
                save_file(clf.state_dict(), str(partial), metadata={**expect, "num_classes": str(num_classes)})
                os.replace(partial, path)
        out[domain] = clf
    return out


@torch.no_grad()
def fidelity_metrics(model, info, split: str, *, cache_dir: Optional[str | Path] = None, steps: int = STEPS,
                     batch_size: int = 256, limit: Optional[int] = None, device=None, seed: int = 0,
                     progress: bool = True) -> dict:
    """translation_accuracy_x2y/_y2x, translation_diversity_x2y/_y2x and classifier_accuracy_x/_y on `split`."""
    from iiae.data import iter_eval_batches
    from iiae.models import eval_mode

    if info.kind != "image":
        raise UserError(f"dataset {info.name} holds features: translation fidelity applies to image datasets")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    clfs = classifiers(info, Path(cache_dir) if cache_dir is not None else None,
                       channels=model.cfg.channels, steps=steps, device=device, progress=progress)
    gen = torch.Generator().manual_seed(seed)
    sums = dict.fromkeys(["acc_x2y", "acc_y2x", "div_x2y", "div_y2x", "real_x", "real_y"], 0.0)
    count = 0
    batches = iter_eval_batches(info, split, batch_size, image_size=model.cfg.image_size, limit=limit)
    with eval_mode(model):
        for batch in progress_bar(batches, desc="fidelity", disable=not progress, leave=False):
            cls = batch["cls"].to(device)
            keep = cls >= 0
            if not keep.any():
                continue
            v = {d: batch[d].to(device)[keep] for d in ("x", "y")}
            cls = cls[keep]
            for src, dst in (("x", "y"), ("y", "x")):
                samples = model.translate(v[src], dst, n=SAMPLES, generator=gen)  # [3, B, C, H, W]
                pred = classify(clfs[dst], samples.flatten(0, 1)).view(SAMPLES, -1)
                sums[f"acc_{src}2{dst}"] += (pred == cls).float().mean(0).sum().item()
                sums[f"div_{src}2{dst}"] += samples.std(0, correction=0).flatten(1).mean(1).sum().item()
                sums[f"real_{src}"] += (classify(clfs[src], v[src]) == cls).float().sum().item()
            count += len(cls)
    if count == 0:
        raise UserError(f"{info.name}/{split} has no labelled samples: translation fidelity needs class labels")
    names = {"acc": "translation_accuracy", "div": "translation_diversity", "real": "classifier_accuracy"}
    return {f"{names[k.split('_')[0]]}_{k.split('_')[1]}": s / count for k, s in sums.items()}

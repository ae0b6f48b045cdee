"""Translations scored against the true labels, for datasets whose one domain is a label map in a fixed palette
(Facades: y, the CMP classes).

- **to labels** (photo → labels): each translated pixel takes the class of the nearest palette colour and is
  compared with the true label map (read the same way): per-pixel accuracy and mean IoU (over the classes
  present in the truth or the prediction, from the confusion matrix of the whole split). For the guided
  translation (z^y of the true label map) and for SAMPLES prior ones (z^y ~ N(0, I)), averaged.
- **from labels** (labels → photo): a small fully convolutional segmenter is trained on the spot on the
  training photos (the pix2pix "FCN-score" idea), then reads the translated photos; its score on the real test
  photos is the ceiling. Guided and prior translations as above.
- **diversity**: the mean per-pixel standard deviation across the prior samples of one input (images in
  [-1, 1]); about 0 when the exclusive code is ignored.
Keys: `labels_{guided,prior}_{accuracy,miou}_{x2y,y2x}`, `labels_diversity_{x2y,y2x}`, `segmenter_{accuracy,miou}`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from iiae.progress import progress_bar

SAMPLES = 3
SEGMENTER_STEPS = 1500  # ~1 min on 2 cores at 64 px; the ceiling it reaches is reported beside every score
# the 12 CMP Facade classes as pix2pix draws them: the centres of the flat label pixels of the 400 training maps
FACADES = ((0, 48, 255), (0, 0, 222), (0, 128, 255), (255, 80, 0), (174, 0, 0), (192, 255, 63), (0, 207, 255),
           (32, 255, 224), (255, 159, 0), (255, 240, 0), (112, 255, 142), (255, 0, 0))
PALETTES = {"facades": ("y", FACADES)}  # dataset name -> (the label domain, its palette)


def has_label_maps(info) -> bool:
    return info.name in PALETTES and info.kind == "image" and info.layout == "paired"


def to_classes(images: torch.Tensor, palette) -> torch.Tensor:
    """[B, 3, H, W] images in [-1, 1] -> [B, H, W] index of the nearest palette colour (RGB 0-255)."""
    colours = torch.tensor(palette, dtype=torch.float32, device=images.device) / 127.5 - 1  # [K, 3]
    dist = (images.float()[:, None] - colours[None, :, :, None, None]).pow(2).sum(2)  # [B, K, H, W]
    return dist.argmin(1)


def confusion(pred: torch.Tensor, true: torch.Tensor, k: int) -> torch.Tensor:
    """[k, k] counts: rows the true class, columns the predicted one."""
    return torch.bincount(true.flatten() * k + pred.flatten(), minlength=k * k).view(k, k).double()


def accuracy_miou(conf: torch.Tensor) -> tuple[float, float]:
    """Per-pixel accuracy and mean IoU over the classes present in truth or prediction."""
    hits = conf.diag()
    union = conf.sum(0) + conf.sum(1) - hits
    present = union > 0
    return (hits.sum() / conf.sum()).item(), (hits[present] / union[present]).mean().item()


class Segmenter(nn.Module):
    """Photo -> per-pixel class logits at the input size: two stride-2 conv stages, two transposed ones with the
    matching stage's features added back (a small U-Net)."""

    def __init__(self, channels: int, num_classes: int, width: int = 32):
        super().__init__()
        def block(a, b, conv):
            return nn.Sequential(conv(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.ReLU())
        self.down1, self.down2 = block(channels, width, nn.Conv2d), block(width, 2 * width, nn.Conv2d)
        self.up2, self.up1 = block(2 * width, width, nn.ConvTranspose2d), block(width, width, nn.ConvTranspose2d)
        self.head = nn.Conv2d(width, num_classes, 3, padding=1)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        h1 = self.down1(v)
        return self.head(self.up1(self.up2(self.down2(h1)) + h1))


def train_segmenter(photos: torch.Tensor, labels: torch.Tensor, num_classes: int, *, steps: int = SEGMENTER_STEPS,
                    batch_size: int = 32, seed: int = 0, progress: bool = True) -> Segmenter:
    """`fidelity.fit` on random mirrored mini-batches (seeded)."""
    from iiae.evaluation.fidelity import fit

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        seg = Segmenter(photos.shape[1], num_classes).to(photos.device)

    def batch(gen: torch.Generator):
        idx = torch.randint(len(photos), (min(batch_size, len(photos)),), generator=gen).to(photos.device)
        v, t = photos[idx], labels[idx]
        return (v.flip(-1), t.flip(-1)) if torch.rand((), generator=gen) < 0.5 else (v, t)  # a mirrored facade

    return fit(seg, batch, steps=steps, seed=seed, desc="label segmenter", progress=progress)


def _split_tensors(info, split: str, size: int, limit: Optional[int] = None) -> dict[str, torch.Tensor]:
    from iiae.data import iter_eval_batches

    keep: dict[str, list[torch.Tensor]] = {"x": [], "y": []}
    for batch in iter_eval_batches(info, split, 256, image_size=size, limit=limit):
        for d in keep:
            keep[d].append(batch[d])
    return {d: torch.cat(v) for d, v in keep.items()}


@torch.no_grad()
def label_metrics(model, info, split: str, *, steps: int = SEGMENTER_STEPS, batch_size: int = 256,
                  limit: Optional[int] = None, device=None, seed: int = 0, progress: bool = True) -> dict:
    """Every key of the module docstring on `split`."""
    from iiae.models import eval_mode
    from iiae.models.iiae import OTHER

    label_side, palette = PALETTES[info.name]
    photo_side, k = OTHER[label_side], len(palette)
    ways = {f"{photo_side}2{label_side}": (photo_side, label_side), f"{label_side}2{photo_side}": (label_side, photo_side)}
    device = torch.device(device) if device is not None else next(model.parameters()).device
    size = model.cfg.image_size
    train = _split_tensors(info, "train", size)
    segmenter = train_segmenter(train[photo_side].to(device), to_classes(train[label_side], palette).to(device), k,
                                steps=steps, seed=seed, progress=progress)
    test = _split_tensors(info, split, size, limit)
    gen = torch.Generator().manual_seed(seed)
    confs = {name: torch.zeros(k, k, dtype=torch.float64) for name in
             [f"{kind}_{way}" for kind in ("guided", "prior") for way in ways] + ["segmenter"]}
    diversity = dict.fromkeys(ways, 0.0)

    def read(images: torch.Tensor, dst: str) -> torch.Tensor:  # translated images -> classes
        return to_classes(images, palette) if dst == label_side else segmenter(images).argmax(1)

    with eval_mode(model):
        for start in progress_bar(range(0, len(test["x"]), batch_size), desc="label maps", disable=not progress,
                                  leave=False):
            v = {d: t[start:start + batch_size].to(device) for d, t in test.items()}
            true = to_classes(v[label_side], palette)
            confs["segmenter"] += confusion(segmenter(v[photo_side]).argmax(1), true, k).cpu()
            for way, (src, dst) in ways.items():
                guided = model.translate(v[src], dst, exclusive=model.encode_exclusive(v[dst], dst))
                confs[f"guided_{way}"] += confusion(read(guided, dst), true, k).cpu()
                prior = model.translate(v[src], dst, n=SAMPLES, generator=gen)  # [n, B, C, H, W]
                for sample in prior:
                    confs[f"prior_{way}"] += confusion(read(sample, dst), true, k).cpu()
                diversity[way] += prior.std(0, correction=0).flatten(1).mean(1).sum().item()
    out = {}
    for name, conf in confs.items():
        acc, miou = accuracy_miou(conf)
        kind, _, way = name.partition("_")
        prefix = "segmenter" if name == "segmenter" else f"labels_{kind}"
        out[f"{prefix}_accuracy{'_' + way if way else ''}"] = acc
        out[f"{prefix}_miou{'_' + way if way else ''}"] = miou
    out.update({f"labels_diversity_{way}": total / len(test["x"]) for way, total in diversity.items()})
    return out

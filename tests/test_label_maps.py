"""Facades label-map scores: palette reading, accuracy and mean IoU, the segmenter, and the metrics end to end on
a prepared pix2pix-style folder whose photos are a known function of their label maps."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from datagen import prepare
from iiae.data import load_dataset_info
from iiae.evaluation.label_maps import (FACADES, accuracy_miou, confusion, has_label_maps, label_metrics, to_classes,
                                        train_segmenter)

PHOTO = np.array([[40 + 17 * k, 200 - 13 * k, (90 * k) % 256] for k in range(len(FACADES))])  # a colour per class


def _label_maps(rng, n: int, size: int) -> np.ndarray:
    """[n, size, size] classes in 8x8-px blocks."""
    blocks = rng.integers(0, len(FACADES), size=(n, size // 8, size // 8))
    return blocks.repeat(8, axis=1).repeat(8, axis=2)


def _write(folder: Path, counts: dict, size: int = 32) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in counts.items():
        (folder / split).mkdir(parents=True)
        for i, classes in enumerate(_label_maps(rng, n, size), start=1):
            photo = np.clip(PHOTO[classes] + rng.normal(0, 6, (size, size, 3)), 0, 255)
            pair = np.concatenate([photo, np.array(FACADES)[classes]], axis=1).astype(np.uint8)
            Image.fromarray(pair).save(folder / split / f"{i}.png")


def test_palette_reading_and_scores():
    classes = torch.tensor(_label_maps(np.random.default_rng(1), 4, 16))
    images = torch.tensor(np.array(FACADES), dtype=torch.float32)[classes].permute(0, 3, 1, 2) / 127.5 - 1
    assert torch.equal(to_classes(images, FACADES), classes)
    assert torch.equal(to_classes((images + 0.05 * torch.randn(images.shape)).clamp(-1, 1), FACADES), classes)
    conf = confusion(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 2]), 4)
    assert conf.tolist()[:3] == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]]
    acc, miou = accuracy_miou(conf)  # IoU: class 0 1/2, class 1 1/2, class 2 1; class 3 absent
    assert acc == 0.75 and miou == pytest.approx(2 / 3)


def test_segmenter_learns_photo_to_labels():
    rng = np.random.default_rng(2)
    classes = torch.tensor(_label_maps(rng, 64, 32))
    photos = torch.tensor(PHOTO[classes.numpy()], dtype=torch.float32).permute(0, 3, 1, 2) / 127.5 - 1
    seg = train_segmenter(photos[:48], classes[:48], len(FACADES), steps=150, progress=False)
    with torch.no_grad():
        assert (seg(photos[48:]).argmax(1) == classes[48:]).float().mean() > 0.9


class _Oracle(torch.nn.Module):
    """A translator double that knows the rendering: photo -> its label colours, labels -> the class colours
    (`wrong`: every translation is class 0's colour), plus `spread` x the exclusive sample."""

    def __init__(self, wrong: bool = False, spread: float = 0.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.wrong, self.spread, self.cfg = wrong, spread, SimpleNamespace(image_size=32, channels=3)
        self.photo = torch.tensor(PHOTO, dtype=torch.float32) / 127.5 - 1
        self.labels = torch.tensor(FACADES, dtype=torch.float32) / 127.5 - 1

    def encode_exclusive(self, v, domain):
        return torch.zeros(v.shape[0], 3)

    def _render(self, v, to_domain):
        source, target = (self.photo, self.labels) if to_domain == "y" else (self.labels, self.photo)
        k = to_classes(v, ((source + 1) * 127.5).round().tolist())
        return target[torch.zeros_like(k) if self.wrong else k].permute(0, 3, 1, 2)

    def translate(self, v, to_domain, exclusive=None, n=1, generator=None):
        out = self._render(v, to_domain)
        if exclusive is not None:
            return out
        z = torch.randn(n, v.shape[0], 3, 1, 1, generator=generator)
        return (out[None] + self.spread * z).clamp(-1, 1)


@pytest.mark.integration  # seconds: a converter run and two segmenter trainings
def test_label_metrics_on_a_prepared_facades_folder(tmp_path):
    _write(tmp_path / "raw", {"train": 48, "test": 12})
    assert prepare("pix2pix", "--name", "facades", "--src", tmp_path / "raw", "--size", 32, "--out", tmp_path / "d") == 0
    info = load_dataset_info(tmp_path / "d")
    assert has_label_maps(info) and not has_label_maps(SimpleNamespace(name="maps", kind="image", layout="paired"))
    right = label_metrics(_Oracle(spread=0.2), info, "test", steps=150, progress=False)
    assert right["labels_guided_accuracy_x2y"] > 0.99 and right["labels_guided_miou_x2y"] > 0.98
    assert right["segmenter_accuracy"] > 0.9
    assert right["labels_guided_accuracy_y2x"] == pytest.approx(right["segmenter_accuracy"], abs=0.05)
    assert right["labels_diversity_x2y"] > 0.05
    wrong = label_metrics(_Oracle(wrong=True), info, "test", steps=150, progress=False)
    assert wrong["labels_guided_accuracy_x2y"] < 0.2 and wrong["labels_guided_miou_x2y"] < 0.05
    assert wrong["labels_diversity_x2y"] == 0.0
    assert wrong["segmenter_accuracy"] == right["segmenter_accuracy"]  # seeded: the same ceiling

"""Translation fidelity: the classifier learns real labels, its cache is reused, the metrics measure what they say."""
from types import SimpleNamespace

import pytest
import torch

from iiae.errors import UserError
from iiae.evaluation.fidelity import SIZE, Classifier, classifiers, classify, fidelity_metrics, train_classifier


def _quadrants(n: int, seed: int, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Label k in 0..3: quadrant k is bright, on a random background colour (the 'exclusive' attribute)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=gen)
    images = (torch.rand(n, 3, 1, 1, generator=gen) * 1.2 - 1).expand(n, 3, size, size).clone()
    h = size // 2
    for i, k in enumerate(labels.tolist()):
        images[i, :, (k // 2) * h:(k // 2 + 1) * h, (k % 2) * h:(k % 2 + 1) * h] = 1.0
    return images, labels


def test_classifier_learns_labels_and_is_seeded():
    x, y = _quadrants(128, 0)
    clf = train_classifier(x, y, 4, steps=60, progress=False)
    test_x, test_y = _quadrants(64, 1, size=64)  # larger inputs are resized to 32 px
    assert (classify(clf, test_x) == test_y).float().mean() >= 0.9
    again = train_classifier(x, y, 4, steps=60, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(clf.state_dict().values(), again.state_dict().values()))
    with torch.no_grad():  # callers may hold no_grad; training still works
        train_classifier(x[:8], y[:8], 4, steps=1, progress=False)


class _Translator(torch.nn.Module):
    """A model double: translation = the input itself plus `spread` times the exclusive sample (a colour shift)."""

    def __init__(self, spread: float):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.spread = spread
        self.cfg = SimpleNamespace(image_size=SIZE, channels=3)

    def translate(self, v, to_domain, n=1, generator=None):
        z = torch.randn(n, v.shape[0], 3, 1, 1, generator=generator)
        return (v[None] + self.spread * z).clamp(-1, 1)


@pytest.mark.integration  # seconds: a subprocess or a long loop
def test_fidelity_metrics_with_a_content_keeping_translator(tmp_path, monkeypatch):
    x, y = _quadrants(96, 2)
    train = {"x": x, "y": x.clone(), "cls": y}
    test_x, test_y = _quadrants(40, 3)
    info = SimpleNamespace(name="quadrants", kind="image")
    loads = []

    def fake_train(info, device, limit=None):
        loads.append(1)
        return train

    def fake_batches(info, split, batch_size, *, image_size=None, limit=None):
        for i in range(0, 40, batch_size):
            yield {"x": test_x[i:i + batch_size], "y": test_x[i:i + batch_size], "cls": test_y[i:i + batch_size]}

    monkeypatch.setattr("iiae.evaluation.fidelity._load_train", fake_train)
    monkeypatch.setattr("iiae.data.iter_eval_batches", fake_batches)
    still = fidelity_metrics(_Translator(0.0), info, "test", cache_dir=tmp_path, steps=60, batch_size=16, progress=False)
    assert still["translation_accuracy_x2y"] == pytest.approx(still["classifier_accuracy_y"])
    assert still["translation_accuracy_x2y"] >= 0.9
    assert still["translation_diversity_x2y"] == 0.0 and still["translation_diversity_y2x"] == 0.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classifier_x.safetensors", "classifier_y.safetensors"]
    varied = fidelity_metrics(_Translator(0.3), info, "test", cache_dir=tmp_path, steps=60, batch_size=16, progress=False)
    assert varied["translation_diversity_x2y"] > 0.1
    assert loads == [1]  # the second call reused the saved classifiers
    # a cache from another dataset (or another step count) is not reused
    classifiers(SimpleNamespace(name="other"), tmp_path, steps=60, progress=False)
    assert loads == [1, 1]


def test_fidelity_needs_images():
    with pytest.raises(UserError, match="image datasets"):
        fidelity_metrics(Classifier(3, 2), SimpleNamespace(name="sketchy", kind="feature"), "test")

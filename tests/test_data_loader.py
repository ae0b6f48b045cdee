"""The loader: per-rank training batches (count, content, exact resume), in-order evaluation, class-matched
Sketchy batches, 2 ranks under torchrun, and every bad-data case."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from datagen import prepare, write_sketchy
from iiae.config import load_recipe
from iiae.data import (CorruptDataWarning, iter_eval_batches, load_dataset_info, make_train_loader,
                         train_batches_per_epoch)
from iiae.data.transforms import symmetry
from iiae.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


def recipe(root, *overrides, name="debug"):
    return load_recipe(ROOT / "recipes" / f"{name}.yaml", [f"data.root={root}", *overrides])


def train(r, info, *, epoch=0, rank=0, world_size=1, skip_batches=0):
    return list(make_train_loader(r, info, rank=rank, world_size=world_size, epoch=epoch,
                                  skip_batches=skip_batches))


def copy(src, tmp_path):
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def truncate(path: Path, fraction: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


def by_pixels(info, split="train"):
    """{x bytes: (y tensor, cls)} over the whole split, from the evaluation reader."""
    table = {}
    for b in iter_eval_batches(info, split, 64):
        for x, y, c in zip(b["x"], b["y"], b["cls"]):
            table[x.numpy().tobytes()] = (y, int(c))
    return table


# ------------------------------------------------------------------------------------------ training

def test_train_batches_are_real_pairs_in_minus_one_one(debug_data):
    r, info = recipe(debug_data), load_dataset_info(debug_data)
    assert train_batches_per_epoch(r, info, 1) == 8 and train_batches_per_epoch(r, info, 2) == 4
    loader = make_train_loader(r, info, rank=0, world_size=1, epoch=0)
    assert len(loader) == 8
    batches = list(loader)
    assert len(batches) == 8
    pairs = by_pixels(info)
    seen = set()
    for b in batches:
        assert set(b) == {"x", "y", "cls", "skipped", "resized"} and b["skipped"] == b["resized"] == 0
        assert b["x"].shape == b["y"].shape == (8, 3, 32, 32) and b["x"].dtype == torch.float32
        assert b["cls"].dtype == torch.long and b["x"].min() >= -1 and b["x"].max() <= 1
        for x, y, c in zip(b["x"], b["y"], b["cls"]):
            key = x.numpy().tobytes()
            assert torch.equal(pairs[key][0], y) and pairs[key][1] == int(c)  # x and y of the same pair
            seen.add(key)
    assert len(seen) >= 30  # shuffled draws over the whole split, not one shard
    assert torch.equal(train(r, info)[3]["x"], batches[3]["x"])  # a pure function of its arguments
    assert not torch.equal(train(r, info, epoch=1)[0]["x"], batches[0]["x"])
    assert not torch.equal(train(r, info, rank=1, world_size=2)[0]["x"], batches[0]["x"])


@pytest.mark.parametrize("augment, symmetries", [("flip", 2), ("dihedral", 8)])
def test_augment_gives_both_images_of_a_pair_the_same_symmetry(debug_data, augment, symmetries):
    r, info = recipe(debug_data, f"data.augment={augment}", "data.batches_per_epoch=6"), load_dataset_info(debug_data)
    stored = [(x, y) for b in iter_eval_batches(info, "train", 64) for x, y in zip(b["x"], b["y"])]
    turned = lambda image, k: torch.from_numpy(symmetry(image.permute(1, 2, 0).numpy(), k).copy()).permute(2, 0, 1)
    used = set()
    for b in train(r, info):
        for x, y in zip(b["x"], b["y"]):
            # which stored pair and which symmetry: x alone decides; y must then be the same symmetry of its y
            k, sy = next((k, sy) for sx, sy in stored for k in range(symmetries) if torch.equal(turned(sx, k), x))
            assert torch.equal(turned(sy, k), y)
            used.add(k)
    assert used == set(range(symmetries))  # 48 pairs draw every symmetry
    resumed = train(r, info, skip_batches=4)  # the same symmetries after a resume
    assert all(torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"]) for a, b in zip(train(r, info)[4:], resumed))


def test_jitter_crops_both_images_of_a_pair_at_one_offset(debug_data):
    extra = 4
    r, info = recipe(debug_data, f"data.jitter={extra}", "data.batches_per_epoch=4"), load_dataset_info(debug_data)
    stored = [(x, y) for b in iter_eval_batches(info, "train", 64) for x, y in zip(b["x"], b["y"])]
    scale = lambda image: torch.nn.functional.interpolate(image[None], size=(32 + extra,) * 2, mode="bilinear",
                                                          align_corners=False)[0]
    big = [(scale(x), scale(y)) for x, y in stored]
    offsets = set()
    for b in train(r, info):
        assert b["x"].shape == b["y"].shape == (8, 3, 32, 32)
        for x, y in zip(b["x"], b["y"]):
            # which stored pair and which offset: x alone decides; y must then be the same crop of its y
            (i, r0, c0), = [(i, r0, c0) for i, (bx, _) in enumerate(big) for r0 in range(extra + 1)
                            for c0 in range(extra + 1) if torch.equal(bx[:, r0:r0 + 32, c0:c0 + 32], x)]
            assert torch.equal(big[i][1][:, r0:r0 + 32, c0:c0 + 32], y)
            offsets.add((r0, c0))
    assert len(offsets) > 10  # 32 pairs draw many of the 25 offsets
    resumed = train(r, info, skip_batches=2)  # the same offsets after a resume
    assert all(torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"]) for a, b in zip(train(r, info)[2:], resumed))


def test_symmetry_is_the_dihedral_group():
    image = np.arange(2 * 3 * 1).reshape(2, 3, 1)
    shapes = [symmetry(image, k).shape for k in range(8)]
    assert shapes == [(2, 3, 1), (2, 3, 1), (3, 2, 1), (3, 2, 1)] * 2
    assert len({symmetry(image, k).tobytes() + bytes(symmetry(image, k).shape) for k in range(8)}) == 8
    np.testing.assert_array_equal(symmetry(image, 1), image[:, ::-1])


def test_train_resizes_to_the_recipe_size(debug_data):
    r = recipe(debug_data, "model.image_size=64", "data.batches_per_epoch=1")
    (b,) = train(r, load_dataset_info(debug_data))
    assert b["x"].shape == (8, 3, 64, 64) and b["y"].shape == (8, 3, 64, 64)


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_resume_reproduces_the_exact_stream(debug_data, workers):
    r = recipe(debug_data, f"data.num_workers={workers}", "data.batches_per_epoch=9", "data.shuffle_buffer=20")
    info = load_dataset_info(debug_data)
    full = train(r, info, epoch=2)
    assert len(full) == 9
    for skip in (1, 4):
        resumed = train(r, info, epoch=2, skip_batches=skip)
        assert len(resumed) == 9 - skip
        for a, b in zip(full[skip:], resumed):
            assert all(torch.equal(a[k], b[k]) for k in ("x", "y", "cls")) and a["skipped"] == b["skipped"]
    assert train(r, info, epoch=2, skip_batches=9) == []
    with pytest.raises(ValueError):
        make_train_loader(r, info, rank=0, world_size=1, epoch=2, skip_batches=10)


@pytest.mark.integration  # seconds: a subprocess or a long loop
def test_two_ranks_take_equal_batches_under_torchrun(debug_data, tmp_path):
    data = copy(debug_data, tmp_path)  # shards 24 + 24 + 16: uneven
    truncate(data / "train-000002.tar")  # and one truncated: rank 0 reads it, rank 1 does not
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent("""
        import sys
        import torch
        import torch.distributed as dist
        from iiae.config import load_recipe
        from iiae.data import load_dataset_info, make_train_loader

        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        recipe = load_recipe(sys.argv[1], sys.argv[2:])
        info = load_dataset_info(recipe.data.root)
        count = skipped = 0
        for batch in make_train_loader(recipe, info, rank=rank, world_size=world, epoch=0):
            flag = torch.ones(1)
            dist.all_reduce(flag)  # one collective per step, as DDP: a rank short of batches would hang here
            count, skipped = count + 1, batch["skipped"]
        # one file per rank: two ranks printing into one pipe can interleave their lines
        open(f"rank{rank}.txt", "w").write(f"rank {rank} batches {count} skipped {skipped}")
        dist.destroy_process_group()
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        ["timeout", "-k", "5", "150", sys.executable, "-m", "torch.distributed.run", "--standalone",
         "--nproc_per_node", "2", str(script), str(ROOT / "recipes" / "debug.yaml"), f"data.root={data}",
         "data.num_workers=1", "data.batches_per_epoch=12"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert [line.split()[:4] for line in lines] == [["rank", "0", "batches", "12"], ["rank", "1", "batches", "12"]]
    assert int(lines[0].split()[-1]) > 0 and int(lines[1].split()[-1]) == 0  # rank 0 counted what it lost
    assert "train-000002.tar" in run.stderr and "key" in run.stderr


# ------------------------------------------------------------------------------------------ evaluation

def test_cache_serves_the_disk_stream_from_memory(debug_data, tmp_path):
    """data.cache: the batches of every epoch equal the uncached ones; once each shard has been read cleanly
    the files are not opened again (here: they are gone). A damaged shard is never cached: it keeps warning."""
    from iiae.data import stream

    data = copy(debug_data, tmp_path)
    truncate(data / "train-000002.tar", 0.5)
    info = load_dataset_info(data)
    plain = recipe(data, "data.num_workers=0", "data.batches_per_epoch=12")
    cached = recipe(data, "data.num_workers=0", "data.batches_per_epoch=12", "data.cache=true")
    with pytest.warns(CorruptDataWarning):
        expected = [train(plain, info, epoch=e) for e in range(4)]
    for epoch in range(3):
        with pytest.warns(CorruptDataWarning, match="train-000002.tar"):
            got = train(cached, info, epoch=epoch)
        for a, b in zip(expected[epoch], got, strict=True):
            assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"]) and torch.equal(a["cls"], b["cls"])
            assert a["skipped"] == b["skipped"]
    assert {Path(p).name for p in stream._DECODED if Path(p).parent == data} == {"train-000000.tar", "train-000001.tar"}
    for name in ("train-000000.tar", "train-000001.tar"):
        (data / name).unlink()
    with pytest.warns(CorruptDataWarning, match="train-000002.tar"):
        got = train(cached, info, epoch=3)
    assert all(torch.equal(a["x"], b["x"]) for a, b in zip(expected[3], got, strict=True))


def test_cache_needs_the_main_process(debug_data):
    from iiae.errors import RecipeError

    with pytest.raises(RecipeError, match="cache: true needs num_workers: 0"):
        recipe(debug_data, "data.num_workers=1", "data.cache=true")


def test_eval_every_sample_once_in_key_order(debug_data):
    info = load_dataset_info(debug_data)
    batches = list(iter_eval_batches(info, "test", 10))
    assert [len(b["key"]) for b in batches] == [10] * 6 + [4]
    keys = [k for b in batches for k in b["key"]]
    assert keys == [f"{i:06d}" for i in range(64)]
    assert batches[0]["x"].shape == (10, 3, 32, 32) and batches[0]["cls"].dtype == torch.long
    limited = list(iter_eval_batches(info, "test", 10, limit=25))
    assert [k for b in limited for k in b["key"]] == keys[:25] and len(limited[-1]["key"]) == 5
    assert torch.equal(limited[1]["x"], batches[1]["x"])
    (one,) = iter_eval_batches(info, "valid", 64, image_size=64, domain="y", limit=3)
    assert set(one) == {"v", "cls", "key", "resized"} and one["v"].shape == (3, 3, 64, 64)


# ------------------------------------------------------------------------------------------ Sketchy

@pytest.fixture(scope="module")
def sketchy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sketchy")
    raw = write_sketchy(tmp / "raw", {"zebra": (5, 3), "ant": (4, 2), "cow": (2, 4)}, {"bee": (3, 2), "owl": (2, 3)})
    assert prepare("sketchy", "--src", tmp / "raw", "--out", tmp / "data", "--shard-size", 3) == 0
    return tmp / "data", raw


@pytest.mark.parametrize("override", ["data.augment=flip", "data.jitter=4"])
def test_augment_and_jitter_need_images(sketchy, override):
    root, _ = sketchy
    key = override.split("=")[0]
    with pytest.raises(DataError, match=f"^{key}: .* needs an image dataset; .* holds feature samples"):
        train(recipe(root, override, name="sketchy"), load_dataset_info(root))


def test_class_matched_batches(sketchy):
    root, raw = sketchy
    info = load_dataset_info(root)
    r = recipe(root, name="sketchy")
    assert train_batches_per_epoch(r, info, 1) == 11 // 3
    r = recipe(root, "data.batches_per_epoch=6", name="sketchy")
    batches = train(r, info, epoch=1)
    assert len(batches) == 6
    names = info.classes
    sketches = {f.tobytes(): p.split("/")[0] for f, p in zip(*raw[("train", "sketch")])}
    photos = {f.tobytes(): p.split("/")[0] for f, p in zip(*raw[("train", "image")])}
    drawn = set()
    for b in batches:
        assert b["x"].shape == b["y"].shape == (3, 512) and b["x"].dtype == torch.float32
        assert [names[c] for c in b["cls"]] == ["ant", "cow", "zebra"]  # every training class, fixed order
        for x, y, c in zip(b["x"], b["y"], b["cls"]):
            assert sketches[x.numpy().tobytes()] == names[c] and photos[y.numpy().tobytes()] == names[c]
            drawn.add(x.numpy().tobytes())
    assert len(drawn) > 5  # random draws, with replacement
    resumed = train(r, info, epoch=1, skip_batches=4)
    assert all(torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"]) for a, b in zip(batches[4:], resumed))
    assert not all(torch.equal(a["x"], b["x"]) for a, b in zip(batches, train(r, info, epoch=2)))


def test_eval_per_domain(sketchy):
    root, raw = sketchy
    info = load_dataset_info(root)
    with pytest.raises(ValueError, match="domain"):
        list(iter_eval_batches(info, "test", 4))
    batches = list(iter_eval_batches(info, "test", 4, domain="y"))
    feats, paths = raw[("test", "image")]
    assert torch.equal(torch.cat([b["v"] for b in batches]), torch.from_numpy(feats))
    assert [info.classes[c] for b in batches for c in b["cls"]] == [p.split("/")[0] for p in paths]


def test_per_domain_data_needs_class_matching(sketchy):
    root, _ = sketchy
    with pytest.raises(DataError, match="class_matched"):
        make_train_loader(recipe(root, "data.class_matched=false", name="sketchy"), load_dataset_info(root),
                          rank=0, world_size=1, epoch=0)


# ------------------------------------------------------------------------------------------ bad data

@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_train_shard_warns_counts_and_continues(debug_data, tmp_path, damage):
    data = copy(debug_data, tmp_path)
    shard = data / "train-000001.tar"
    if damage == "truncated":
        truncate(shard, 0.6)
    else:
        shard.write_bytes(np.random.default_rng(0).bytes(shard.stat().st_size))
    r = recipe(data, "data.batches_per_epoch=30")
    with pytest.warns(CorruptDataWarning) as caught:
        batches = train(r, load_dataset_info(data))
    assert len(batches) == 30 and all(b["x"].shape[0] == 8 for b in batches)
    message = str(caught[0].message)
    assert "train-000001.tar" in message and "key" in message
    lost = batches[-1]["skipped"]
    # a truncated shard is still read (each visit counts what it lacks); one that yields nothing is dropped
    assert lost > 0 and (damage == "truncated" or lost == 24)
    assert [b["skipped"] for b in batches] == sorted(b["skipped"] for b in batches)  # cumulative


def test_corrupt_train_shards_in_workers(debug_data, tmp_path):
    data = copy(debug_data, tmp_path)
    (data / "train-000000.tar").write_bytes(b"garbage" * 1000)
    truncate(data / "train-000002.tar", 0.3)
    r = recipe(data, "data.num_workers=2", "data.batches_per_epoch=20")
    for epoch in range(3):  # each epoch deals the shards anew: some worker gets only the garbage one
        batches = train(r, load_dataset_info(data), epoch=epoch)
        assert len(batches) == 20 and batches[-1]["skipped"] >= 24


@pytest.mark.timeout(60)
def test_unreadable_train_split_fails_instead_of_hanging(debug_data, tmp_path):
    data = copy(debug_data, tmp_path)
    for shard in data.glob("train-*.tar"):
        shard.write_bytes(b"\x00garbage" * 200)
    with pytest.warns(CorruptDataWarning), pytest.raises(DataError, match="none of the 3 training shards"):
        train(recipe(data), load_dataset_info(data))


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_eval_shard_raises(debug_data, tmp_path, damage):
    data = copy(debug_data, tmp_path)
    shard = data / "test-000001.tar"
    if damage == "truncated":
        truncate(shard, 0.5)
    else:
        shard.write_bytes(b"\xff" * 4096)
    info = load_dataset_info(data)
    with pytest.raises(DataError) as err:
        list(iter_eval_batches(info, "test", 8))
    assert "test-000001.tar" in str(err.value) and "iiae prepare mnist-cdcb" in str(err.value)
    assert len(list(iter_eval_batches(info, "test", 8, limit=24))) == 3  # the shards before it are fine


def test_missing_dataset_json_names_the_prepare_command(tmp_path):
    empty = tmp_path / "mnist_cdcb_32"
    empty.mkdir()
    for root, state in ((empty, "folder is empty"), (tmp_path / "nothing", "does not exist")):
        with pytest.raises(DataError) as err:
            load_dataset_info(root)
        text = str(err.value)
        assert "\n" not in text and "dataset.json" in text and state in text and "iiae prepare" in text
    assert f"iiae prepare mnist-cdcb --size 32 --out {empty}" in str(pytest.raises(
        DataError, load_dataset_info, empty).value)


def test_sha256_mismatch_and_missing_shard(debug_data, tmp_path):
    data = copy(debug_data, tmp_path)
    shard = data / "valid-000001.tar"
    raw = bytearray(shard.read_bytes())
    raw[2000] ^= 0xFF
    shard.write_bytes(bytes(raw))
    load_dataset_info(data)  # without verify only existence is checked
    load_dataset_info(data, verify=("test",))  # only the named splits are hashed
    with pytest.raises(DataError, match="valid-000001.tar"):
        load_dataset_info(data, verify=("valid",))
    with pytest.raises(DataError) as err:
        load_dataset_info(data, verify=True)
    text = str(err.value)
    assert "\n" not in text and "valid-000001.tar" in text and "sha256" in text
    assert "iiae prepare mnist-cdcb --size 32 --render area --limit 64" in text and "--overwrite" in text
    shard.unlink()
    with pytest.raises(DataError, match="valid-000001.tar.*missing"):
        load_dataset_info(data)


def test_split_without_shards(debug_data):
    info = load_dataset_info(debug_data)
    with pytest.raises(DataError, match="no shards for split 'holdout'.*train, valid"):
        list(iter_eval_batches(info, "holdout", 8))

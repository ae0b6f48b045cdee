"""`iiae prepare paired`: both layouts, split folders or a seeded draw, labels from folders, and every bad file."""
import json

import numpy as np
import pytest
from PIL import Image

from datagen import prepare, samples, write_paired
from iiae.data import load_dataset_info
from iiae.data.format import INFO_FILE


def _pixels(rows):
    return [(r["x"], r["y"]) for _, r in rows]


def _same_pairs(got, expected):
    """Every stored pair equals one written pair, both halves (PNG at the stored size: lossless)."""
    for x, y in got:
        assert any(np.array_equal(x, ex) and np.array_equal(y, ey) for ex, ey in expected)


def test_side_by_side_seeded_draw_keeps_pairs_and_records_the_draw(tmp_path, capsys):
    written = write_paired(tmp_path / "src", 20, size=16)
    out = tmp_path / "out"
    assert prepare("paired", "--src", tmp_path / "src", "--size", 16, "--valid", 3, "--test", 4,
                   "--seed", 5, "--out", out) == 0
    info = load_dataset_info(out, verify=True)
    assert {k: v.count for k, v in info.splits.items()} == {"train": 13, "valid": 3, "test": 4}
    assert (info.source, info.seed, info.image_size, info.provenance["split_from"]) == ("paired", 5, 16, "seeded draw")
    assert "--valid 3 --test 4 --seed 5" in info.command
    names = {s: [r["json"]["file"] for _, r in samples(info, s)] for s in info.splits}
    assert sorted(sum(names.values(), [])) == [f"{i:04d}.png" for i in range(20)]  # each pair once
    assert all(n == sorted(n) for n in names.values())
    _same_pairs(sum((_pixels(samples(info, s)) for s in info.splits), []), written)
    # the same seed draws the same split; another seed another one
    again = tmp_path / "again"
    assert prepare("paired", "--src", tmp_path / "src", "--size", 16, "--valid", 3, "--test", 4, "--seed", 5,
                   "--out", again) == 0
    assert [r["json"]["file"] for _, r in samples(load_dataset_info(again), "test")] == names["test"]
    other = tmp_path / "other"
    assert prepare("paired", "--src", tmp_path / "src", "--size", 16, "--valid", 3, "--test", 4, "--seed", 6,
                   "--out", other) == 0
    assert [r["json"]["file"] for _, r in samples(load_dataset_info(other), "test")] != names["test"]


def test_x_side_right_swaps_the_halves_and_any_size_is_resized(tmp_path):
    written = write_paired(tmp_path / "src", 6, size=24)
    out = tmp_path / "out"
    assert prepare("paired", "--src", tmp_path / "src", "--size", 12, "--x-side", "right", "--valid", 1,
                   "--test", 1, "--out", out) == 0
    info = load_dataset_info(out)
    assert "--x-side right" in info.command and info.image_size == 12
    key, row = samples(info, "train")[0]
    x, y = written[int(row["json"]["file"][:4])]
    # X is the right half (the silhouette) area-averaged 24 → 12 px
    np.testing.assert_allclose(row["x"], y.reshape(12, 2, 12, 2, 3).mean((1, 3)), atol=1)
    np.testing.assert_allclose(row["y"], x.reshape(12, 2, 12, 2, 3).mean((1, 3)), atol=1)
    assert info.provenance["converted"] == {"images resized to 12 px": 12}


@pytest.mark.parametrize("nesting", ["split/A", "A/split"])
def test_two_folders_with_split_folders_labels_and_unmatched_names(tmp_path, nesting, capsys):
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    expected = {}
    for split, n in (("train", 4), ("val", 2)):
        for label in ("cat", "dog"):
            for i in range(n):
                for side in ("A", "B"):
                    folder = src / split / side / label if nesting == "split/A" else src / side / split / label
                    folder.mkdir(parents=True, exist_ok=True)
                    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                    Image.fromarray(image).save(folder / f"{i}.png")
                    expected[(split, label, i, side)] = image
    alone = (src / "train" / "A" / "cat") if nesting == "split/A" else (src / "A" / "train" / "cat")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(alone / "9.png")  # no partner in B
    out = tmp_path / "out"
    assert prepare("paired", "--src", src, "--x-dir", "A", "--y-dir", "B", "--size", 8, "--cls-from-folder",
                   "--out", out) == 0
    err = capsys.readouterr()
    assert "skipped 9.png" not in err.err and "cat/9.png: files without a partner in " in err.err
    info = load_dataset_info(out)
    assert {k: v.count for k, v in info.splits.items()} == {"train": 8, "valid": 4}
    assert info.classes == ["cat", "dog"] and info.provenance["split_from"] == "folders"
    assert sum(info.provenance["skipped"].values()) == 1
    for split, ours in (("train", "train"), ("val", "valid")):
        for _, row in samples(info, ours):
            label, i = row["json"]["file"].split("/")[-2], int(row["json"]["file"].split("/")[-1][0])
            assert row["cls"] == ["cat", "dog"].index(label)
            np.testing.assert_array_equal(row["x"], expected[(split, label, i, "A")])
            np.testing.assert_array_equal(row["y"], expected[(split, label, i, "B")])


def test_bad_files_are_reported_counted_or_converted_never_a_traceback(tmp_path, capsys):
    src = tmp_path / "src"
    write_paired(src, 8, size=16)
    (src / "broken.png").write_bytes(b"not an image at all")
    good = (src / "0000.png").read_bytes()
    (src / "truncated.png").write_bytes(good[: len(good) // 2])
    pair = np.asarray(Image.open(src / "0001.png"))
    Image.fromarray(pair).convert("L").save(src / "grey.png")
    Image.fromarray(pair).convert("RGBA").save(src / "alpha.png")
    Image.fromarray(pair).convert("P").save(src / "palette.png")
    Image.fromarray(pair[..., 0].astype(np.uint16) * 257).save(src / "deep.png")
    Image.fromarray(pair).resize((64, 20)).save(src / "wide.png")  # another size, not square halves
    Image.fromarray(np.zeros((16, 1, 3), np.uint8)).save(src / "narrow.png")
    out = tmp_path / "out"
    assert prepare("paired", "--src", src, "--size", 16, "--valid", 1, "--test", 1, "--out", out) == 0
    err = capsys.readouterr().err
    assert "broken.png" in err and "truncated.png" in err and "narrow.png" in err and "Traceback" not in err
    info = load_dataset_info(out, verify=True)
    assert sum(s.count for s in info.splits.values()) == 8 + 5
    skipped = info.provenance["skipped"]
    assert skipped == {"unreadable images": 2, "images too narrow to split into two halves": 1}
    converted = info.provenance["converted"]
    assert {k: converted.get(k) for k in ("L images to RGB", "RGBA images to RGB", "P images to RGB")} == \
        {"L images to RGB": 1, "RGBA images to RGB": 1, "P images to RGB": 1}
    assert sum(v for k, v in converted.items() if k.startswith("I")) == 1
    rows = {r["json"]["file"]: r for s in info.splits for _, r in samples(info, s)}
    # 16-bit grey is scaled to 8 bits (not clipped to white), grey is repeated to RGB
    np.testing.assert_allclose(rows["deep.png"]["x"][..., 0], pair[:, :16, 0], atol=1)
    np.testing.assert_array_equal(rows["grey.png"]["x"][..., 0], rows["grey.png"]["x"][..., 2])
    assert rows["wide.png"]["x"].shape == (16, 16, 3)


def test_a_split_with_no_readable_pair_leaves_no_dataset(tmp_path, capsys):
    src = tmp_path / "src"
    write_paired(src, 3, size=8, splits={"train": 3})
    (src / "test").mkdir()
    (src / "test" / "0.png").write_bytes(b"garbage")
    out = tmp_path / "out"
    assert prepare("paired", "--src", src, "--size", 8, "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("iiae prepare: error: --src") and "no readable pair in the test split" in err[-1]
    assert not (out / INFO_FILE).exists()


@pytest.mark.parametrize("layout, args, message", [
    ("folders", ["--x-dir", "A"], "--x-dir and --y-dir: give both"),
    ("folders", ["--x-dir", "A", "--y-dir", "nope"], "--y-dir"),
    ("side", ["--valid", "5", "--test", "5"], "leaves no training pairs"),
    ("side", ["--size", "4"], "of 8 to 2048 px"),
])
def test_option_errors_are_one_line_exit_2(tmp_path, capsys, layout, args, message):
    write_paired(tmp_path / "src", 6, size=8, layout=layout)
    try:
        code = prepare("paired", "--src", tmp_path / "src", *args, "--out", tmp_path / "out")
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1] and "Traceback" not in "".join(err)


def test_split_folders_exclude_valid_and_test_options(tmp_path, capsys):
    write_paired(tmp_path / "src", 0, size=8, splits={"train": 2, "test": 1})
    assert prepare("paired", "--src", tmp_path / "src", "--valid", 1, "--out", tmp_path / "out") == 2
    assert "has split folders (test, train)" in capsys.readouterr().err


def test_dataset_json_is_written_last_and_lists_the_shards(tmp_path):
    write_paired(tmp_path / "src", 5, size=8)
    out = tmp_path / "out"
    assert prepare("paired", "--src", tmp_path / "src", "--size", 8, "--valid", 1, "--test", 1, "--out", out) == 0
    listed = {s.file for split in load_dataset_info(out).splits.values() for s in split.shards}
    assert listed == {p.name for p in out.glob("*.tar")}
    assert json.loads((out / INFO_FILE).read_text())["provenance"]["sources"]["files"] == 5

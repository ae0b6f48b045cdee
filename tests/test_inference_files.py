"""A trained model on plain image files: IIAE.preprocess / postprocess, `iiae translate --input`, `iiae embed`,
`iiae retrieve` (outputs checked against the model's own functions)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datagen import write_paired
from iiae.cli import main
from iiae.config import load_recipe
from iiae.data.prepare.images import resize_square
from iiae.inference.embed import embed_files, load_embeddings
from iiae.data.image_io import to_uint8
from iiae.models import IIAE
from iiae.grids import grid_size

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The debug recipe's 32-px model with r^y a copy of r^x: a file's shared code is the same whichever domain
    encodes it, so retrieving a folder against itself must find each file first, at distance 0."""
    torch.manual_seed(0)
    model = IIAE.from_recipe(load_recipe(RECIPES / "debug.yaml")).eval()
    model.parts.shared["y"].load_state_dict(model.parts.shared["x"].state_dict())
    model.parts.r_head["y"].load_state_dict(model.parts.r_head["x"].state_dict())
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model(model_dir):
    return IIAE.from_pretrained(str(model_dir)).eval()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """folder/A/*.png (6 shapes, 48 px: every one is resized) and folder/B/*.png (their silhouettes)."""
    folder = tmp_path_factory.mktemp("images")
    write_paired(folder, 6, size=48, layout="folders")
    return folder


def _cli(*argv):
    return main([str(a) for a in argv])


def test_preprocess_is_the_prepare_resize_and_postprocess_inverts_it(model, images):
    path = images / "A" / "0000.png"
    expected = resize_square(Image.open(path), 32)
    one = model.preprocess(path)
    assert one.shape == (1, 3, 32, 32) and one.min() >= -1 and one.max() <= 1
    both = model.preprocess([Image.open(path), str(images / "A" / "0001.png")])
    assert both.shape == (2, 3, 32, 32) and torch.equal(both[0], one[0])
    back = model.postprocess(one[0])
    assert back.size == (32, 32) and np.array_equal(np.asarray(back), expected)  # exact round trip
    assert [im.size for im in model.postprocess(both)] == [(32, 32)] * 2
    grey = model.preprocess(Image.open(path).convert("L"))
    assert torch.equal(grey[0, 0], grey[0, 2])  # converted to RGB


def test_wrong_shapes_are_refused_with_a_clear_error(model):
    with pytest.raises(ValueError, match=r"expected images \[B, 3, 32, 32\].*got shape \[2, 3, 64, 64\].*preprocess"):
        model.encode_shared(torch.zeros(2, 3, 64, 64), "x")
    with pytest.raises(ValueError, match=r"got shape \[2, 1, 32, 32\]"):
        model.translate(torch.zeros(2, 1, 32, 32), "y")
    with pytest.raises(ValueError, match=r"expected images"):
        model(torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"expected images \[B, 3, H, W\]"):
        model.postprocess(torch.zeros(2, 5, 8, 8))
    features = IIAE(model={"arch": "mlp", "feature_dim": 16, "z_shared": 4, "mlp_hidden": [8, 8]},
                    objective={"beta": 1.0})
    with pytest.raises(ValueError, match="reads 16-d feature vectors, not images"):
        features.preprocess(Image.new("RGB", (32, 32)))
    with pytest.raises(ValueError, match=r"expected feature vectors \[B, 16\]"):
        features.encode_shared(torch.zeros(3, 12), "x")


def test_translate_files_writes_the_models_translations(model, model_dir, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert _cli("translate", model_dir, "--input", images / "A", "--to", "y", "--n", 2, "--seed", 7,
                "--out", out) == 0
    err = capsys.readouterr().err
    assert "notice: of 6 input image(s), 6 resized from 48×48" in err
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"{i:04d}.png" for i in range(6)] + ["contact_sheet.png"]
    v = model.preprocess(sorted((images / "A").iterdir()))
    expected = model.translate(v, "y", n=2, generator=torch.Generator().manual_seed(7))  # [2, 6, 3, 32, 32]
    for i in range(6):
        got = np.asarray(Image.open(out / f"{i:04d}.png"))
        assert got.shape == (32, 64, 3)  # the two translations side by side
        for k in range(2):
            assert np.array_equal(got[:, 32 * k:32 * (k + 1)], to_uint8(expected[k, i]).permute(1, 2, 0).numpy())
    assert Image.open(out / "contact_sheet.png").size == grid_size(6, 3, 32)


def test_translate_files_with_the_exclusive_code_of_one_image(model, model_dir, images, tmp_path):
    out = tmp_path / "out"
    style = images / "B" / "0003.png"
    assert _cli("translate", model_dir, "--input", images / "A" / "0001.png", "--to", "y",
                "--exclusive-from", style, "--out", out) == 0
    x, y = model.preprocess(images / "A" / "0001.png"), model.preprocess(style)
    expected = model.translate(x, "y", exclusive=model.encode_exclusive(y, "y"))
    got = np.asarray(Image.open(out / "0001.png"))
    assert np.array_equal(got, to_uint8(expected[0]).permute(1, 2, 0).numpy())
    assert Image.open(out / "contact_sheet.png").size == grid_size(1, 3, 32)


def test_translate_a_folder_with_an_exclusive_map_of_one_image(images, tmp_path):
    """`model.exclusive_maps: [y]`: the guide is a map [1, C, h, w], broadcast over every input of a batch."""
    torch.manual_seed(0)
    recipe = load_recipe(RECIPES / "debug.yaml", ["model.decoder_conditioning=film",
                                                  "model.exclusive_channels=[8,16]", "model.exclusive_maps=[y]"])
    mapped = IIAE.from_recipe(recipe).eval()
    mapped.save_pretrained(tmp_path / "model")
    style, out = images / "B" / "0003.png", tmp_path / "out"
    assert _cli("translate", tmp_path / "model", "--input", images / "A", "--to", "y",
                "--exclusive-from", style, "--out", out) == 0
    v, z = mapped.preprocess(sorted((images / "A").iterdir())), mapped.encode_exclusive(mapped.preprocess(style), "y")
    assert z.dim() == 4
    expected = mapped.translate(v, "y", exclusive=z.expand(len(v), -1, -1, -1))
    for i in range(6):
        got = np.asarray(Image.open(out / f"{i:04d}.png"))
        assert np.array_equal(got, to_uint8(expected[i]).permute(1, 2, 0).numpy())


@pytest.mark.parametrize("argv, message", [
    (["--input", "A", "--out", "o"], "--to: required with --input"),
    (["--input", "A", "--to", "y"], "--out: required with --input"),
    (["--input", "A", "--to", "y", "--out", "o", "--n", "2", "--exclusive-from", "B/0000.png"], "pick one"),
    (["--input", "nope", "--to", "y", "--out", "o"], "--input nope: no such file or folder"),
    (["--to", "y"], "apply to --input"),
])
def test_translate_file_errors_are_one_line_exit_2(model_dir, images, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(images)
    assert _cli("translate", model_dir, *argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_embed_saves_codes_with_file_names(model, model_dir, images, tmp_path, suffix):
    out = tmp_path / f"codes{suffix}"
    assert _cli("embed", model_dir, "--input", images / "B", "--domain", "y", "--out", out) == 0
    e = load_embeddings(out)
    assert e.files == [f"{i:04d}.png" for i in range(6)]
    assert (e.domain, e.which, e.root) == ("y", "shared", str((images / "B").resolve()))
    expected = model.encode_shared(model.preprocess(sorted((images / "B").iterdir())), "y").flatten(1)
    torch.testing.assert_close(e.codes, expected, rtol=0, atol=0)
    assert e.codes.shape == (6, 4 * 4 * 4)  # z^s: 4 channels on a 4x4 map


def test_embed_rejects_other_files(model_dir, images, tmp_path, capsys):
    assert _cli("embed", model_dir, "--input", images / "A", "--domain", "x", "--out", tmp_path / "c.pt") == 2
    assert "expected a .safetensors or .npz file name" in capsys.readouterr().err
    (tmp_path / "other.npz").write_bytes(b"PK junk")
    assert _cli("retrieve", model_dir, "--query", images / "A", "--gallery", tmp_path / "other.npz",
                "--out", tmp_path / "r.json") == 2
    assert "not an `iiae embed` file" in capsys.readouterr().err


@pytest.mark.parametrize("gallery", ["folder", "embeddings"])
def test_retrieve_finds_each_file_first_and_draws_the_top_k(model, model_dir, images, tmp_path, gallery):
    source = images / "A"
    if gallery == "embeddings":
        source = tmp_path / "gallery.safetensors"
        assert _cli("embed", model_dir, "--input", images / "A", "--domain", "y", "--out", source) == 0
    out = tmp_path / "results.json"
    assert _cli("retrieve", model_dir, "--query", images / "A", "--gallery", source, "-k", 3, "--out", out) == 0
    record = json.loads(out.read_text())
    assert (record["metric"], record["k"], record["query_domain"], record["gallery_domain"]) == \
        ("euclidean", 3, "x", "y")
    for row in record["results"]:
        assert row["matches"][0]["file"] == row["query"] and row["matches"][0]["distance"] < 1e-3
        distances = [m["distance"] for m in row["matches"]]
        assert distances == sorted(distances) and len(distances) == 3
    # the second match is the nearest other file, by the model's codes
    codes = embed_files(model, sorted((images / "A").iterdir()), "x", progress=False)
    d = torch.cdist(codes, codes).pow(2).fill_diagonal_(float("inf"))
    assert [r["matches"][1]["file"] for r in record["results"]] == [f"{j:04d}.png" for j in d.argmin(1).tolist()]
    assert Image.open(out.with_suffix(".png")).size == grid_size(6, 4, 32)


def test_retrieve_refuses_a_gallery_of_the_wrong_domain(model_dir, images, tmp_path, capsys):
    codes = tmp_path / "x.npz"
    assert _cli("embed", model_dir, "--input", images / "A", "--domain", "x", "--out", codes) == 0
    assert _cli("retrieve", model_dir, "--query", images / "A", "--gallery", codes, "--out", tmp_path / "r.json") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "holds shared codes of domain x; expected shared codes of domain y" in err[-1]


@pytest.mark.integration  # seconds: a subprocess or a long loop
def test_a_new_pix2pix_style_folder_end_to_end_with_the_generic_recipe(tmp_path, capsys):
    """What the README's "Your own data" commands do, at toy scale: prepare paired → train recipes/paired.yaml →
    translate and retrieve on new image files. No code knows this dataset."""
    write_paired(tmp_path / "raw", 40, size=24)
    write_paired(tmp_path / "new", 3, size=24, layout="folders", seed=1)
    data, run = tmp_path / "data", tmp_path / "run"
    assert _cli("prepare", "paired", "--src", tmp_path / "raw", "--size", 16, "--valid", 8, "--test", 8,
                "--out", data) == 0
    assert _cli("train", RECIPES / "paired.yaml", f"data.root={data}", f"train.output_dir={run}",
                "model.image_size=16", "data.batch_size=8", "train.max_steps=4", "train.eval_every=2",
                "train.checkpoint_every=4", "train.sample_every=4", "train.select_after=0",
                "train.exclusive_max_hits=null") == 0
    assert (run / "best" / "model.safetensors").is_file()
    assert _cli("translate", run, "--input", tmp_path / "new" / "A", "--to", "y", "--n", 1,
                "--out", tmp_path / "t") == 0
    assert [Image.open(tmp_path / "t" / f"{i:04d}.png").size for i in range(3)] == [(16, 16)] * 3
    assert _cli("retrieve", run, "--query", tmp_path / "new" / "A", "--gallery", tmp_path / "new" / "B", "-k", 2,
                "--out", tmp_path / "r.json") == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert [len(r["matches"]) for r in record["results"]] == [2, 2, 2]
    assert (tmp_path / "r.png").is_file()

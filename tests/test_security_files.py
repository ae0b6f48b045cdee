"""Security round 3 on the commands that work on users' files (`iiae translate --input`, `embed`, `retrieve`): the
engine trusts its command line, never an embedding file nor anything inside a model folder.

1. no output may replace an input or go into a model folder (links and `..` included); translation names are unique;
2. translate --out is a folder, every file is renamed into place, SIGTERM leaves no half-written PNG;
3. an embedding file's recorded root is never opened: the picture reads only folders the command line names;
4. embedding files are checked whole (schema, finite codes, the weights hash of the model that made them);
5. counts, devices and path names too long on the command line are refused in one line, before any model work.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datagen import write_paired
from iiae.cli import main
from iiae.config import load_recipe
from iiae.data.image_io import to_uint8
from iiae.models import IIAE

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
REPO = Path(__file__).resolve().parents[1]


def _save_model(folder: Path, seed: int, huge: bool = False) -> Path:
    torch.manual_seed(seed)
    model = IIAE.from_recipe(load_recipe(RECIPES / "debug.yaml")).eval()
    if huge:  # finite weights whose activations overflow: NaN / inf codes
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(1e30)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return _save_model(tmp_path_factory.mktemp("model"), 0)


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory):
    """Another model of the same width: its codes fit any gallery of model_dir's, and mean nothing there."""
    return _save_model(tmp_path_factory.mktemp("other_model"), 1)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """folder/A/*.png and folder/B/*.png: 6 pairs at 48 px."""
    folder = tmp_path_factory.mktemp("images")
    write_paired(folder, 6, size=48, layout="folders")
    return folder


@pytest.fixture(scope="module")
def gallery_file(model_dir, images, tmp_path_factory):
    """A valid `iiae embed` file of B (domain y) by model_dir; tests copy and damage it."""
    out = tmp_path_factory.mktemp("gallery") / "B.safetensors"
    assert main(["embed", str(model_dir), "--input", str(images / "B"), "--domain", "y", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_dir(model_dir, tmp_path):
    """A run folder: best/ is the model, checkpoints/ what training keeps."""
    run = tmp_path / "run"
    shutil.copytree(model_dir, run / "best")
    (run / "checkpoints").mkdir()
    (run / ".iiae-run").write_text("{}\n")
    return run


def _cli(*argv):
    return main([str(a) for a in argv])


def _tree(*roots):
    """Every path under `roots` (the roots too) → its bytes, a link's target, or "dir": to show nothing changed."""
    seen = {}
    for root in roots:
        root = Path(root)
        for p in [root, *root.rglob("*")] if root.exists() or root.is_symlink() else []:
            seen[str(p)] = (f"-> {os.readlink(p)}" if p.is_symlink() else "dir" if p.is_dir() else p.read_bytes())
    return seen


def _one_line_error(capsys, *needles):
    """The stderr of a refused command: one line (no traceback, no progress), naming what it should."""
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


def _refused(capsys, watched, argv, *needles):
    """`argv` exits 2 with one line and leaves every path in `watched` as it was."""
    before = _tree(*watched)
    assert _cli(*argv) == 2
    line = _one_line_error(capsys, *needles)
    assert _tree(*watched) == before
    return line


# ---- 1. outputs never replace inputs, nor go into a model folder ---------------------------------------------
def _translate_case(case, model_dir, images, tmp_path, run):
    """(argv after `translate MODEL`, the paths that must not change) for each way --out can meet an input."""
    a = tmp_path / "A"
    shutil.copytree(images / "A", a)
    base = ["--input", a, "--to", "y"]
    if case == "same folder":
        return base + ["--out", a], [a]
    if case == "dot-dot":
        return base + ["--out", tmp_path / "elsewhere" / ".." / "A"], [a]
    if case == "link to input":
        (tmp_path / "link").symlink_to(a)
        return base + ["--out", tmp_path / "link"], [a]
    if case == "inside input":
        return base + ["--out", a / "translated"], [a]
    if case == "single file's own name":  # a/0000.png → out/0000.png where out is a's folder
        return ["--input", a / "0000.png", "--to", "y", "--out", a], [a]
    if case == "onto the exclusive-from image":
        styles = tmp_path / "styles"
        shutil.copytree(images / "B", styles)
        return ["--input", a / "0002.png", "--to", "y", "--exclusive-from", styles / "0002.png", "--out", styles], \
            [a, styles]
    if case == "link in --out to an input":
        out = tmp_path / "out"
        out.mkdir()
        (out / "0003.png").symlink_to(a / "0003.png")
        return base + ["--out", out], [a, out]
    if case == "model folder":
        return base + ["--out", model_dir], [a, model_dir]
    if case == "inside model folder":
        return base + ["--out", model_dir / "samples"], [a, model_dir]
    if case == "run's best":
        return base + ["--out", run / "best"], [a, run]
    if case == "link into model folder":
        (tmp_path / "m").symlink_to(model_dir)
        return base + ["--out", tmp_path / "m" / "t"], [a, model_dir]
    if case == "a subfolder of the inputs lands in the model folder":  # out/<model name>/x.png is inside the model
        nested = tmp_path / "in"
        shutil.copytree(images / "A", nested / model_dir.name)
        return ["--input", nested, "--to", "y", "--out", model_dir.parent], [nested, model_dir]
    raise AssertionError(case)


TRANSLATE_CASES = ["same folder", "dot-dot", "link to input", "inside input", "single file's own name",
                   "onto the exclusive-from image", "link in --out to an input", "model folder",
                   "inside model folder", "run's best", "link into model folder",
                   "a subfolder of the inputs lands in the model folder"]


@pytest.mark.parametrize("case", TRANSLATE_CASES)
def test_translate_never_writes_over_an_input_or_into_the_model(case, model_dir, images, tmp_path, run_dir, capsys):
    argv, watched = _translate_case(case, model_dir, images, tmp_path, run_dir)
    run = run_dir if case == "run's best" else model_dir
    _refused(capsys, watched, ["translate", run, *argv], "--out")


def _retrieve_case(case, model_dir, images, gallery_file, tmp_path, run):
    q, b = tmp_path / "A", tmp_path / "B"
    shutil.copytree(images / "A", q)
    shutil.copytree(images / "B", b)
    g = tmp_path / gallery_file.name
    shutil.copy(gallery_file, g)
    folder = ["--query", q, "--gallery", b]
    if case == "picture onto a query":
        return folder + ["--out", q / "0000.json"], [q, b]
    if case == "picture onto a query, no suffix":
        return folder + ["--out", q / "0001"], [q, b]
    if case == "picture onto a gallery image":
        return folder + ["--out", b / "0003.json"], [q, b]
    if case == "json onto the embedding file":
        return ["--query", q, "--gallery", g, "--out", g], [q, g]
    if case == "json through a link onto a query":
        (tmp_path / "r.json").symlink_to(q / "0004.png")
        return folder + ["--out", tmp_path / "r.json"], [q, b, tmp_path / "r.json"]
    if case == "picture onto a --gallery-images file":
        return ["--query", q, "--gallery", g, "--gallery-images", b, "--out", b / "0002.json"], [q, b, g]
    if case == "picture onto a query via ..":
        return folder + ["--out", tmp_path / "x" / ".." / "A" / "0005.json"], [q, b]
    if case == "model folder":
        return folder + ["--out", model_dir / "results.json"], [q, b, model_dir]
    if case == "run's best":
        return folder + ["--out", run / "best" / "r.json"], [q, b, run]
    raise AssertionError(case)


RETRIEVE_CASES = ["picture onto a query", "picture onto a query, no suffix", "picture onto a gallery image",
                  "json onto the embedding file", "json through a link onto a query",
                  "picture onto a --gallery-images file", "picture onto a query via ..", "model folder", "run's best"]


@pytest.mark.parametrize("case", RETRIEVE_CASES)
def test_retrieve_never_writes_over_an_input_or_into_the_model(case, model_dir, images, gallery_file, tmp_path,
                                                               run_dir, capsys):
    argv, watched = _retrieve_case(case, model_dir, images, gallery_file, tmp_path, run_dir)
    run = run_dir if case == "run's best" else model_dir
    _refused(capsys, watched, ["retrieve", run, *argv], "--out")


def test_retrieve_refuses_a_png_out_the_picture_would_replace(model_dir, images, tmp_path, capsys):
    _refused(capsys, [tmp_path], ["retrieve", model_dir, "--query", images / "A", "--gallery", images / "B",
                                  "--out", tmp_path / "r.png"], "--out", "expected a .json name")


@pytest.mark.parametrize("case", ["model.safetensors", "anything in the model folder", "dot-dot", "link",
                                  "run's best", "run's checkpoints", "an input (link)"])
def test_embed_never_writes_into_the_model(case, model_dir, images, tmp_path, run_dir, capsys):
    run, out, watched = model_dir, None, [model_dir, images]
    if case == "model.safetensors":
        out = model_dir / "model.safetensors"
    elif case == "anything in the model folder":
        out = model_dir / "codes.npz"
    elif case == "dot-dot":
        out = images.parent / "x" / ".." / model_dir.name / "model.safetensors"
    elif case == "link":
        out = tmp_path / "codes.safetensors"
        out.symlink_to(model_dir / "model.safetensors")
        watched.append(out)
    elif case == "run's best":
        run, out, watched = run_dir, run_dir / "best" / "codes.safetensors", [run_dir]
    elif case == "run's checkpoints":
        run, out, watched = run_dir, run_dir / "checkpoints" / "codes.npz", [run_dir]
    elif case == "an input (link)":  # --input is read whole: a link named like an output pointing at one
        out = tmp_path / "codes.npz"
        out.symlink_to(images / "B" / "0000.png")
        watched.append(out)
    _refused(capsys, watched, ["embed", run, "--input", images / "B", "--domain", "y", "--out", out], "--out")


def test_translate_output_names_are_unique(model_dir, tmp_path, capsys):
    """a.jpg and a.png both translate (a.jpg.png, a.png); an input named like the contact sheet keeps the sheet's
    name free; names differing only in case do not meet on a case-insensitive disk."""
    from iiae.inference.translate import output_names

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "a.png", "contact_sheet.png", "b.png", "B.PNG"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(src / name)
    out = tmp_path / "out"
    assert _cli("translate", model_dir, "--input", src, "--to", "y", "--n", 1, "--out", out) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["a.jpg.png", "a.png", "B.PNG.png", "b.png", "contact_sheet.png", "contact_sheet~2.png"])
    model = IIAE.from_pretrained(str(model_dir)).eval()
    order = ["B.PNG", "a.jpg", "a.png", "b.png", "contact_sheet.png"]  # image_files: sorted names
    written = ["B.PNG.png", "a.jpg.png", "a.png", "b.png", "contact_sheet~2.png"]
    expected = model.translate(model.preprocess([src / n for n in order]), "y", n=1,
                               generator=torch.Generator().manual_seed(0))[0]
    for i, name in enumerate(written):
        got = np.asarray(Image.open(out / name))
        assert np.array_equal(got, to_uint8(expected[i]).permute(1, 2, 0).numpy()), name
    assert Image.open(out / "contact_sheet.png").size != (32, 32)  # the sheet, not a translation
    # the rule itself, on names no disk of this test could hold together
    names, sheet = output_names(["a.jpg", "a.jpg.png", "A.png", "a.png", "x.jpg.png/y.png", "x.jpg",
                                 "contact_sheet.png/z.png"])
    assert names == ["a.jpg~2.png", "a.jpg.png", "A.png", "a~2.png", "x.jpg.png/y.png", "x.jpg~2.png",
                     "contact_sheet.png/z.png"]
    assert sheet == "contact_sheet~2.png"
    assert len({n.casefold() for n in names + [sheet]}) == len(names) + 1


# ---- 2. --out is a folder; files are renamed into place; SIGTERM ----------------------------------------------
def test_translate_out_naming_an_existing_file_is_refused(model_dir, images, tmp_path, capsys):
    out = tmp_path / "out.png"
    out.write_bytes(b"mine")
    _refused(capsys, [tmp_path], ["translate", model_dir, "--input", images / "A", "--to", "y", "--out", out],
             "--out", "existing file")


def test_translate_never_writes_through_a_link_inside_out(model_dir, images, tmp_path, capsys):
    """A link in --out where a translation goes (or a folder link on the way) is refused before anything is
    written: what it points at stays as it was."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.png").write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "0000.png").symlink_to(victim / "keep.png")
    _refused(capsys, [victim, out], ["translate", model_dir, "--input", images / "A", "--to", "y", "--out", out],
             "--out", "link")
    (out / "0000.png").unlink()
    src = tmp_path / "in"
    shutil.copytree(images / "A", src / "sub")
    (out / "sub").symlink_to(victim)
    _refused(capsys, [victim, out], ["translate", model_dir, "--input", src, "--to", "y", "--out", out],
             "--out", "link")


def test_translate_refuses_a_file_where_an_output_folder_goes(model_dir, images, tmp_path, capsys):
    src = tmp_path / "in"
    shutil.copytree(images / "A", src / "sub")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_bytes(b"a file")
    _refused(capsys, [out], ["translate", model_dir, "--input", src, "--to", "y", "--out", out], "--out", "sub")


def test_translate_writes_only_complete_files(model_dir, images, tmp_path, monkeypatch):
    """A failure while a PNG is being written leaves no file under its name (it went to a temporary name)."""
    calls = []
    real = Image.Image.save

    def failing(self, fp, *args, **kwargs):
        calls.append(Path(fp))
        if len(calls) == 3:
            Path(fp).write_bytes(b"\x89PNG half")
            raise OSError("disk gone")
        return real(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk gone"):
        _cli("translate", model_dir, "--input", images / "A", "--to", "y", "--out", out)
    assert all(p.parent == out and p.name.startswith(".") for p in calls)  # temporary names
    assert sorted(p.name for p in out.iterdir()) == ["0000.png", "0001.png"]
    for p in out.iterdir():
        Image.open(p).load()


def _inputs(folder: Path, n: int) -> Path:
    """n input files, hard links of one 32-px PNG: a translation that runs long enough to be signalled."""
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "0.png")
    for i in range(1, n):
        os.link(folder / "0.png", folder / f"{i}.png")
    return folder


def _assert_no_broken_png(out: Path):
    for p in out.rglob("*"):
        assert not p.name.startswith(".iiae-tmp-"), p  # temporary files are removed
        if p.suffix == ".png":
            assert p.stat().st_size > 0, p
            with Image.open(p) as image:
                image.load()  # a truncated PNG raises here


def _sigterm_once(proc: subprocess.Popen, ready, poll: float) -> str:
    """SIGTERM to `proc` as soon as `ready()` (within a minute); its stderr once it has ended."""
    try:
        deadline = time.monotonic() + 60
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(poll)
        proc.send_signal(signal.SIGTERM)
        return proc.communicate(timeout=60)[1]
    finally:
        proc.kill()


@pytest.mark.integration  # seconds: a subprocess or a long loop
def test_sigterm_during_translate_leaves_no_truncated_png(model_dir, tmp_path):
    """A real `python -m iiae translate`, signalled as soon as its first outputs appear."""
    src, out = _inputs(tmp_path / "in", 640), tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "iiae", "translate", str(model_dir), "--input", str(src),
                             "--to", "y", "--out", str(out)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stderr = _sigterm_once(proc, lambda: out.is_dir() and any(p.suffix == ".png" and not p.name.startswith(".")
                                                              for p in out.iterdir()), poll=0.005)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM: stopped" in stderr.strip().splitlines()[-1]
    assert 0 < len(list(out.glob("*.png"))) < 640
    _assert_no_broken_png(out)


SLOW_SAVE = """
import io, sys, time
from PIL import Image
real = Image.Image.save
def slow(self, fp, format=None, **kwargs):  # half a PNG on disk, then a pause: where SIGTERM lands
    buffer = io.BytesIO()
    real(self, buffer, format=format or "PNG", **kwargs)
    data = buffer.getvalue()
    with open(fp, "wb") as f:
        f.write(data[:len(data) // 2])
        f.flush()
        open(sys.argv[1], "w").close()
        time.sleep(3)
        f.write(data[len(data) // 2:])
Image.Image.save = slow
from iiae.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.integration  # seconds: a subprocess or a long loop
def test_sigterm_in_the_middle_of_a_png_leaves_nothing_half_written(model_dir, images, tmp_path):
    """The same, deterministic: the signal arrives while a PNG is half-written (its writer then takes 3 s more):
    that file is finished (or would be removed), never left half-written, and the command stops there."""
    marker, out = tmp_path / "writing", tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(marker), "translate", str(model_dir), "--input",
                             str(images / "A"), "--to", "y", "--out", str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr = _sigterm_once(proc, marker.exists, poll=0.01)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    _assert_no_broken_png(out)
    assert len(list(out.glob("*.png"))) <= 1  # stopped after the file it was writing


def test_sigterm_waits_for_the_file_being_written_and_only_for_it():
    from iiae.inference.image_files import Terminated, one_file, stop_on_sigterm

    done = []
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated, match="SIGTERM: stopped"):
        with stop_on_sigterm("x"):
            with one_file():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                done.append("the file")  # not interrupted: a file is written whole
            done.append("the next file")
    assert done == ["the file"]
    with pytest.raises(Terminated):
        with stop_on_sigterm("x"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # model work: interrupted at once
            pytest.fail("not interrupted")
    assert signal.getsignal(signal.SIGTERM) is previous  # restored


# ---- 3. a recorded root is information, never a path to open --------------------------------------------------
def test_retrieve_never_opens_the_root_an_embedding_file_records(model_dir, images, tmp_path, monkeypatch, capsys):
    """A gallery embedded from `secret/` (as a file from anyone may record any root): retrieving with queries from
    elsewhere reads nothing of secret/ and draws no picture, with a notice saying how to get one."""
    secret = tmp_path / "secret"
    shutil.copytree(images / "B", secret)
    g = tmp_path / "g.safetensors"
    assert _cli("embed", model_dir, "--input", secret, "--domain", "y", "--out", g) == 0
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: opened.append(Path(fp)) or real_open(fp, *a, **k))
    capsys.readouterr()
    assert _cli("retrieve", model_dir, "--query", images / "A", "--gallery", g, "-k", 2,
                "--out", tmp_path / "r.json") == 0
    assert not [p for p in opened if secret in p.resolve().parents]
    assert not (tmp_path / "r.png").exists()
    assert "notice: no picture" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["gallery_root"] == str(secret.resolve())  # reported only


def test_retrieve_draws_from_gallery_images_named_now(model_dir, images, gallery_file, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert _cli("retrieve", model_dir, "--query", images / "A", "--gallery", gallery_file, "--gallery-images",
                images / "B", "-k", 2, "--out", out) == 0
    assert Image.open(tmp_path / "r.png").size[0] > 32
    assert json.loads(out.read_text())["gallery_images"] == str((images / "B").resolve())


def test_gallery_images_cannot_be_escaped_through_a_link(model_dir, images, gallery_file, tmp_path, capsys):
    """--gallery-images DIR whose files are links out of DIR: nothing outside DIR is read, no picture."""
    secret, named = tmp_path / "secret", tmp_path / "named"
    shutil.copytree(images / "B", secret)
    named.mkdir()
    for p in secret.iterdir():
        (named / p.name).symlink_to(p)
    assert _cli("retrieve", model_dir, "--query", images / "A", "--gallery", gallery_file, "--gallery-images", named,
                "--out", tmp_path / "r.json") == 0
    assert not (tmp_path / "r.png").exists()
    assert "no picture" in capsys.readouterr().out


def test_a_recorded_root_in_the_query_folder_is_opened_only_without_links(model_dir, images, gallery_file, tmp_path,
                                                                          capsys):
    """Without --gallery-images, the recorded root serves the picture only where it lies in the --query folder (a
    folder named now); one reached there through a link to elsewhere does not."""
    secret, query = tmp_path / "secret", tmp_path / "query"
    shutil.copytree(images / "B", secret)
    shutil.copytree(images / "A", query / "A")
    shutil.copytree(images / "B", query / "B")
    (query / "link").symlink_to(secret)
    codes, files, meta = _parts(gallery_file)
    for root, drawn in ((query / "B", True), (query / "link", False), (query / "B" / ".." / ".." / "secret", False)):
        g = _write_safetensors(tmp_path / "g.safetensors", codes, files, {**meta, "root": str(root)})
        out = tmp_path / "r.json"
        out.with_suffix(".png").unlink(missing_ok=True)
        assert _cli("retrieve", model_dir, "--query", query, "--gallery", g, "-k", 2, "--out", out) == 0
        assert out.with_suffix(".png").exists() == drawn, root


@pytest.mark.parametrize("gallery, images_dir, message", [
    ("B", "B", "--gallery-images: applies to an `iiae embed` file"),  # a folder gallery draws from itself
    ("embed file", "nope", "--gallery-images nope: no such folder"),
])
def test_gallery_images_errors_are_one_line(gallery, images_dir, message, model_dir, images, gallery_file, tmp_path,
                                            monkeypatch, capsys, no_model_work):
    monkeypatch.chdir(images)
    gallery = gallery_file if gallery == "embed file" else gallery
    _refused(capsys, [images], ["retrieve", model_dir, "--query", "A", "--gallery", gallery, "--gallery-images",
                                images_dir, "--out", tmp_path / "r.json"], message)


# ---- 4. embedding files are checked whole --------------------------------------------------------------------
def _parts(gallery_file):
    from safetensors import safe_open

    with safe_open(str(gallery_file), framework="pt") as f:
        meta, codes = dict(f.metadata()), f.get_tensor("codes")
    return codes, json.loads(meta.pop("files")), meta


def _write_safetensors(path, codes, files, meta, tensors=None):
    from safetensors.torch import save_file

    files = files if isinstance(files, str) else json.dumps(files)
    save_file(tensors or {"codes": codes}, str(path), metadata={**meta, "files": files})
    return path


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _damaged(case, gallery_file, tmp_path):
    codes, files, meta = _parts(gallery_file)
    st, npz = tmp_path / "bad.safetensors", tmp_path / "bad.npz"
    good_npz = dict(codes=codes.numpy(), files=np.asarray(files), meta=np.asarray(json.dumps(meta)))
    nan = codes.clone()
    nan[2, 5] = float("nan")
    inf = codes.numpy().copy()
    inf[0, 0] = np.inf
    cases = {
        "NaN codes": lambda: _write_safetensors(st, nan, files, meta),
        "inf codes (npz)": lambda: _write_npz(npz, **{**good_npz, "codes": inf}),
        "1-D codes": lambda: _write_safetensors(st, codes[0].contiguous(), files[:1], meta),
        "3-D codes": lambda: _write_safetensors(st, codes.reshape(6, 4, 16).contiguous(), files, meta),
        "no rows": lambda: _write_safetensors(st, codes[:0].contiguous(), [], meta),
        "no columns (npz)": lambda: _write_npz(npz, **{**good_npz, "codes": np.zeros((6, 0), np.float32)}),
        "integer codes": lambda: _write_safetensors(st, codes.to(torch.int64), files, meta),
        "fewer names than rows": lambda: _write_safetensors(st, codes, files[:5], meta),
        "more names than rows (npz)": lambda: _write_npz(npz, **{**good_npz, "files": np.asarray(files + ["x.png"])}),
        "files a string": lambda: _write_safetensors(st, codes, "abcdef", meta),
        "files a JSON string": lambda: _write_safetensors(st, codes, json.dumps("abcdef"), meta),
        "files of numbers": lambda: _write_safetensors(st, codes, list(range(6)), meta),
        "absolute name": lambda: _write_safetensors(st, codes, files[:5] + ["/etc/passwd"], meta),
        "dot-dot name": lambda: _write_safetensors(st, codes, files[:5] + ["../../etc/x.png"], meta),
        "dot-dot name, backslashes (npz)": lambda: _write_npz(
            npz, **{**good_npz, "files": np.asarray(files[:5] + ["..\\..\\x.png"])}),
        "empty name": lambda: _write_safetensors(st, codes, files[:5] + [""], meta),
        "domain z": lambda: _write_safetensors(st, codes, files, {**meta, "domain": "z"}),
        "which both": lambda: _write_safetensors(st, codes, files, {**meta, "which": "both"}),
        "missing model hash": lambda: _write_safetensors(
            st, codes, files, {k: v for k, v in meta.items() if k != "model_sha256"}),
        "unknown key": lambda: _write_safetensors(st, codes, files, {**meta, "extra": "1"}),
        "extra tensor": lambda: _write_safetensors(st, codes, files, meta, {"codes": codes, "more": codes.clone()}),
        "meta value not a string (npz)": lambda: _write_npz(
            npz, **{**good_npz, "meta": np.asarray(json.dumps({**meta, "root": 3}))}),
        "meta not an object (npz)": lambda: _write_npz(npz, **{**good_npz, "meta": np.asarray("[1, 2]")}),
        "pickled files (npz)": lambda: _write_npz(npz, **{**good_npz, "files": np.asarray(files, dtype=object)}),
        "no meta (npz)": lambda: _write_npz(npz, codes=good_npz["codes"], files=good_npz["files"]),
        "empty file": lambda: (st.write_bytes(b""), st)[1],
        "not a hash": lambda: _write_safetensors(st, codes, files, {**meta, "model_sha256": "abc"}),
    }
    return cases[case]()


DAMAGED = ["NaN codes", "inf codes (npz)", "1-D codes", "3-D codes", "no rows", "no columns (npz)", "integer codes",
           "fewer names than rows", "more names than rows (npz)", "files a string", "files a JSON string",
           "files of numbers", "absolute name", "dot-dot name", "dot-dot name, backslashes (npz)", "empty name",
           "domain z", "which both", "missing model hash", "unknown key", "extra tensor",
           "meta value not a string (npz)", "meta not an object (npz)", "pickled files (npz)", "no meta (npz)",
           "empty file", "not a hash"]


@pytest.mark.parametrize("case", DAMAGED)
def test_a_malformed_embedding_file_is_refused_in_one_line(case, model_dir, images, gallery_file, tmp_path, capsys):
    bad = _damaged(case, gallery_file, tmp_path)
    capsys.readouterr()
    line = _refused(capsys, [tmp_path], ["retrieve", model_dir, "--query", images / "A", "--gallery", bad,
                                         "--out", tmp_path / "r.json"], str(bad))
    assert "embed" in line


def test_embed_refuses_non_finite_codes(images, tmp_path, capsys):
    """A model folder is never trusted: finite weights can still give NaN / inf codes (overflow), which no embedding
    file (nor JSON) may hold."""
    broken = _save_model(tmp_path / "broken", 0, huge=True)
    out = tmp_path / "codes.safetensors"
    assert _cli("embed", broken, "--input", images / "B", "--domain", "y", "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "codes hold NaN or inf" in err[-1] and "Traceback" not in "\n".join(err)
    assert not out.exists() and not list(tmp_path.glob(".iiae-tmp-*"))
    assert _cli("retrieve", broken, "--query", images / "A", "--gallery", images / "B",
                "--out", tmp_path / "r.json") == 2
    assert "codes hold NaN or inf" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "r.json").exists()


def test_save_embeddings_refuses_what_load_would(tmp_path):
    from iiae.inference.embed import Embeddings, save_embeddings
    from iiae.errors import UserError

    codes = torch.zeros(2, 3)
    codes[1, 1] = float("inf")
    for suffix in (".safetensors", ".npz"):
        with pytest.raises(UserError, match="NaN or inf"):
            save_embeddings(Embeddings(codes, ["a.png", "b.png"], "/r", "x", "shared", "m", "0" * 64),
                            tmp_path / f"c{suffix}")
        with pytest.raises(UserError, match="relative name"):
            save_embeddings(Embeddings(torch.zeros(1, 3), ["../a.png"], "/r", "x", "shared", "m", "0" * 64),
                            tmp_path / f"c{suffix}")
    assert not list(tmp_path.iterdir())


def test_retrieve_refuses_a_gallery_of_another_model_of_the_same_width(model_dir, other_model_dir, images, tmp_path,
                                                                    capsys):
    g = tmp_path / "g.npz"
    assert _cli("embed", other_model_dir, "--input", images / "B", "--domain", "y", "--out", g) == 0
    capsys.readouterr()
    line = _refused(capsys, [tmp_path], ["retrieve", model_dir, "--query", images / "A", "--gallery", g,
                                         "--out", tmp_path / "r.json"], "another model", str(other_model_dir))
    assert f"iiae embed {model_dir}" in line  # how to embed it again


def test_the_weights_hash_is_the_models_identity(model_dir, other_model_dir, gallery_file):
    from iiae.inference.embed import load_embeddings, weights_sha256

    a, b = IIAE.from_pretrained(str(model_dir)), IIAE.from_pretrained(str(model_dir))
    assert weights_sha256(a) == weights_sha256(b) == load_embeddings(gallery_file).model_sha256
    assert weights_sha256(IIAE.from_pretrained(str(other_model_dir))) != weights_sha256(a)
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-3  # one weight
    assert weights_sha256(b) != weights_sha256(a)


def test_text_from_an_embedding_file_cannot_break_the_one_line(model_dir, images, gallery_file, tmp_path, capsys):
    codes, files, meta = _parts(gallery_file)
    bad = _write_safetensors(tmp_path / "g.safetensors", codes, files,
                             {**meta, "model": "evil\nsecond line \x1b[31mred", "model_sha256": "f" * 64})
    line = _refused(capsys, [tmp_path], ["retrieve", model_dir, "--query", images / "A", "--gallery", bad,
                                         "--out", tmp_path / "r.json"], "another model")
    assert "\x1b" not in line


def test_retrieve_json_is_valid_json(model_dir, images, gallery_file, tmp_path):
    out = tmp_path / "r.json"
    assert _cli("retrieve", model_dir, "--query", images / "A", "--gallery", gallery_file, "--out", out) == 0
    json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))


# ---- 5. counts and devices -----------------------------------------------------------------------------------
@pytest.fixture
def no_model_work(monkeypatch):
    import iiae.models.loading

    monkeypatch.setattr(iiae.models.loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))


@pytest.mark.parametrize("argv, message", [
    (["--input", "A", "--to", "y", "--out", "o", "--n", "1e8"], "--n 1e8: expected a whole number from 1 to 64"),
    (["--input", "A", "--to", "y", "--out", "o", "--n", "100000000"], "--n 100000000: expected a whole number"),
    (["--input", "A", "--to", "y", "--out", "o", "--n", "65"], "--n 65"),
    (["--input", "A", "--to", "y", "--out", "o", "--n", "0"], "--n 0"),
    (["--input", "A", "--to", "y", "--out", "o", "--n", "-3"], "--n -3"),
    (["--input", "A", "--to", "y", "--out", "o", "--n", "2.5"], "--n 2.5"),
    (["--input", "A", "--to", "y", "--out", "o", "--n", "many"], "--n many"),
    (["--out", "grid.png", "--n", "1e8"], "--n 1e8"),  # grids: rows
    (["--out", "grid.png", "--n", "100000000"], "--n 100000000"),
    (["--input", "A", "--to", "y", "--out", "o", "--seed", "abc"], "--seed abc: expected a whole number"),
    (["--input", "A", "--to", "y", "--out", "o", "--seed", str(2 ** 64)], "--seed"),
])
def test_translate_counts_are_refused_before_any_model_work(argv, message, model_dir, images, monkeypatch, capsys,
                                                            no_model_work):
    monkeypatch.chdir(images)
    _refused(capsys, [images], ["translate", model_dir, *argv], message)


@pytest.mark.parametrize("k, message", [("1e8", "-k 1e8: expected a whole number"), ("0", "-k 0"),
                                        ("ten", "-k ten")])
def test_retrieve_k_is_refused_in_one_line(k, message, model_dir, images, tmp_path, capsys, no_model_work):
    _refused(capsys, [tmp_path], ["retrieve", model_dir, "--query", images / "A", "--gallery", images / "B",
                                  "-k", k, "--out", tmp_path / "r.json"], message)


def test_retrieve_huge_k_is_clamped_to_the_gallery(model_dir, images, gallery_file, tmp_path, monkeypatch):
    import iiae.evaluation.retrieval_metrics

    asked = []
    real = iiae.evaluation.retrieval_metrics.top_k
    monkeypatch.setattr(iiae.evaluation.retrieval_metrics, "top_k", lambda q, g, k, *a, **kw: asked.append(k) or real(q, g, k, *a, **kw))
    out = tmp_path / "r.json"
    assert _cli("retrieve", model_dir, "--query", images / "A", "--gallery", gallery_file, "-k", 10 ** 12,
                "--out", out) == 0
    assert asked == [6] and json.loads(out.read_text())["k"] == 6


def test_translate_at_the_cap_works_with_a_bounded_batch(model_dir, images, tmp_path, monkeypatch):
    """--n 64 (the cap): every file gets its 64 translations, fewer files per forward pass."""
    seen = []
    real = IIAE.translate
    monkeypatch.setattr(IIAE, "translate", lambda self, v, *a, **k: seen.append(len(v)) or real(self, v, *a, **k))
    out = tmp_path / "out"
    assert _cli("translate", model_dir, "--input", images / "A", "--to", "y", "--n", 64, "--out", out) == 0
    assert Image.open(out / "0000.png").size == (64 * 32, 32)
    from iiae.inference.translate import FILE_IMAGES

    assert max(seen) * 64 <= max(FILE_IMAGES, 64)


@pytest.mark.parametrize("command", ["translate", "embed", "retrieve"])
@pytest.mark.parametrize("device", ["bogus", "cuda:x", "meta", "xpu", "cuda:99"])
def test_bad_devices_are_one_line(command, device, model_dir, images, tmp_path, capsys):
    argv = {"translate": ["--input", images / "A", "--to", "y", "--out", tmp_path / "o"],
            "embed": ["--input", images / "A", "--domain", "x", "--out", tmp_path / "c.npz"],
            "retrieve": ["--query", images / "A", "--gallery", images / "B", "--out", tmp_path / "r.json"]}[command]
    _refused(capsys, [tmp_path], [command, model_dir, *argv, "--device", device], "--device")


LONG = "x" * 300  # longer than any file system's name limit (255)


@pytest.mark.parametrize("command, argv, option", [
    ("translate", ["--input", "A", "--to", "y", "--out", LONG], "--out"),
    ("translate", ["--input", "A", "--to", "y", "--out", f"o/{LONG}/o"], "--out"),
    ("translate", ["--input", LONG, "--to", "y", "--out", "o"], "--input"),
    ("embed", ["--input", "A", "--domain", "x", "--out", f"{LONG}.npz"], "--out"),
    ("retrieve", ["--query", "A", "--gallery", "B", "--out", f"{LONG}.json"], "--out"),
    ("retrieve", ["--query", "A", "--gallery", f"{LONG}.npz"], "--gallery"),
    ("retrieve", ["--query", LONG, "--gallery", "B"], "--query"),
])
def test_names_too_long_are_one_line(command, argv, option, model_dir, images, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    shutil.copytree(images, work)
    monkeypatch.chdir(work)
    _refused(capsys, [work], [command, model_dir, *argv], option)


def test_recorded_names_too_long_draw_no_picture(model_dir, images, gallery_file, tmp_path, capsys):
    codes, files, meta = _parts(gallery_file)
    g = _write_safetensors(tmp_path / "g.safetensors", codes, files[:5] + [LONG + ".png"], meta)
    out = tmp_path / "r.json"
    assert _cli("retrieve", model_dir, "--query", images / "A", "--gallery", g, "--gallery-images", images / "B",
                "-k", 6, "--out", out) == 0
    assert not out.with_suffix(".png").exists() and "no picture" in capsys.readouterr().out

"""`iiae app`: the page's model side (uploads, translate, swap, retrieve, the gallery cache), its CLI, the Space
export, `push --space` (Hub mocked at the client), and the page itself driven in a real headless Chromium.

The browser tests serve a debug model trained here for 120 steps; IIAE_APP_MODEL=RUN and IIAE_APP_DATA=DIR run
them on another model instead, and IIAE_APP_SCREENSHOT=PNG keeps the page's picture (docs/app.png is made so).
"""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iiae import cli
from iiae.errors import UserError

gradio = pytest.importorskip("gradio", reason="the app extra is not installed: pip install 'iiae[app]'")
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),  # Gradio's own use of pandas
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, debug_data):
    """(run, data): IIAE_APP_MODEL / IIAE_APP_DATA, else a debug model trained 120 steps on the debug shards."""
    if os.environ.get("IIAE_APP_MODEL"):
        return Path(os.environ["IIAE_APP_MODEL"]), Path(os.environ["IIAE_APP_DATA"])
    run = tmp_path_factory.mktemp("app") / "run"
    assert cli.main(["train", str(RECIPES / "debug.yaml"), f"data.root={debug_data}", f"train.output_dir={run}",
                     "train.max_steps=120", "train.eval_every=60", "train.sample_every=120",
                     "train.checkpoint_every=120"]) == 0
    return run, debug_data


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IIAE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "app"


@pytest.fixture(scope="module")
def session(trained, tmp_path_factory):
    from iiae.app import build_session

    run, data = trained
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IIAE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield build_session(str(run), data=str(data), limit=64)


def _png(path: Path, array: np.ndarray, mode=None) -> str:
    Image.fromarray(array, mode).save(path)
    return str(path)


def _pair_images(session, index: int, folder: Path) -> tuple[str, str]:
    """Test pair `index` of the gallery as two PNG files (exact: the shards hold uint8 images)."""
    paths = []
    for domain in ("x", "y"):
        paths.append(str(folder / f"{domain}{index}.png"))
        session.gallery.image(domain, index).save(paths[-1])
    return paths[0], paths[1]


# ---- the model side -----------------------------------------------------------------------------------------
def test_uploads_are_read_safely(tmp_path):
    from iiae.app.session import MAX_PIXELS, read_upload

    with pytest.raises(UserError, match="the query: no image given"):
        read_upload(None, "the query")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(UserError, match="not an image this page can read"):
        read_upload(str(tmp_path / "notes.png"), "image")
    # a decompression bomb: 8000 × 8000 one-bit pixels are 8 KB of PNG and 64 MP; refused from the header
    bomb = tmp_path / "bomb.png"
    Image.new("1", (8000, 8000)).save(bomb)
    assert bomb.stat().st_size < 100_000 and 8000 * 8000 > MAX_PIXELS
    with pytest.raises(UserError, match=r"8000×8000 px is more than the 40 MP") as err:
        read_upload(str(bomb), "image")
    assert "\n" not in str(err.value)
    # a truncated file: the header reads, the pixels do not
    whole = tmp_path / "whole.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(whole)
    (tmp_path / "cut.png").write_bytes(whole.read_bytes()[:400])
    with pytest.raises(UserError, match="a damaged image file"):
        read_upload(str(tmp_path / "cut.png"), "image")
    assert read_upload(str(whole), "image").size == (64, 64)


def test_translate_converts_uploads_and_follows_the_seed(session, tmp_path):
    rng = np.random.default_rng(1)
    grey = _png(tmp_path / "grey.png", rng.integers(0, 255, (50, 70), dtype=np.uint8))  # mode L, not square
    a, guided, note = session.translate(grey, "x", n=3, seed=0)
    assert len(a) == 3 and all(im.size == (session.size, session.size) and im.mode == "RGB" for im in a)
    assert guided is None
    assert "resized from 70×50" in note and "converted from L" in note
    b, _, _ = session.translate(grey, "x", n=3, seed=0)
    c, _, _ = session.translate(grey, "x", n=3, seed=1)
    assert [im.tobytes() for im in a] == [im.tobytes() for im in b]
    assert [im.tobytes() for im in a] != [im.tobytes() for im in c]
    # guided: the reference's exclusive code, i.e. the model's own guided translation of the same tensors
    x, y = _pair_images(session, 0, tmp_path)
    _, guided, _ = session.translate(x, "x", n=1, reference=y)
    from iiae.data.image_io import load_images, to_pil

    with torch.no_grad():
        vx, vy = load_images([x], session.size), load_images([y], session.size)
        expect = to_pil(session.model.translate(vx, "y", exclusive=session.model.encode_exclusive(vy, "y")))[0]
    assert guided.tobytes() == expect.tobytes()
    with pytest.raises(UserError, match="samples: 9; expected 1 to 8"):
        session.translate(grey, "x", n=9)


def test_swap_grid_and_retrieve(session, tmp_path):
    from iiae.grids import grid_size

    files = [_pair_images(session, i, tmp_path) for i in range(3)]
    grid, _ = session.swap({"x": [f[0] for f in files], "y": [f[1] for f in files[:2]]})
    (w1, h1), (w2, h2) = grid_size(4, 4, session.size), grid_size(3, 3, session.size)
    assert grid.size == (max(w1, w2), h1 + h2)  # the X block (3 images) over the Y block (2)
    with pytest.raises(UserError, match="at most 8"):
        session.swap({"x": [files[0][0]] * 9, "y": []})
    # retrieve: the page's ranking is the paper's, on the gallery's codes
    from iiae.data.image_io import load_images
    from iiae.evaluation.retrieval_metrics import top_k

    matches, rows, _ = session.retrieve(files[1][0], "x", k=5)
    with torch.no_grad():
        q = session.model.encode_shared(load_images([files[1][0]], session.size), "x").flatten(1)
    index, dist = top_k(q, session.gallery.codes["y"], 5)
    assert [r[1] for r in rows] == [session.gallery.names["y"][j] for j in index[0].tolist()]
    assert [r[2] for r in rows] == pytest.approx(dist[0].tolist(), abs=1e-4)
    assert len(matches) == 5 and matches[0][1].startswith("1. ")


def test_gallery_codes_are_cached(trained, cache, tmp_path):
    from iiae.app import build_session
    from iiae.app import gallery as gallery_module

    run, data = trained
    first = build_session(str(run), data=str(data), limit=16)
    cached = list(cache.glob("*.safetensors"))
    assert len(cached) == 1
    calls = []
    original = gallery_module._cached_codes

    def spy(key, compute):
        return original(key, lambda: calls.append(1) or compute())

    gallery_module._cached_codes = spy
    try:
        again = build_session(str(run), data=str(data), limit=16)
        assert calls == []  # read from the cache, not embedded again
        assert torch.equal(again.gallery.codes["x"], first.gallery.codes["x"])
        folder = tmp_path / "photos"
        folder.mkdir()
        for i in range(4):
            first.gallery.image("y", i).save(folder / f"{i}.png")
        one = build_session(str(run), gallery=str(folder), gallery_domain="y")
        assert calls == [1] and one.gallery.names["y"] == ["0.png", "1.png", "2.png", "3.png"]
        os.utime(folder / "2.png", ns=(1, 1))  # a changed folder is embedded again
        build_session(str(run), gallery=str(folder), gallery_domain="y")
        assert calls == [1, 1]
    finally:
        gallery_module._cached_codes = original


def test_retrieve_without_a_gallery_says_how_to_add_one(trained, tmp_path, capsys):
    from iiae.app import build_session

    run, _ = trained
    bare = build_session(str(run), default_data=False)
    x = _png(tmp_path / "q.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UserError, match="no gallery; start it with --gallery DIR --gallery-domain y"):
        bare.retrieve(x, "x")


# ---- CLI, Space, push -----------------------------------------------------------------------------------------
def test_cli_errors_are_one_line(trained, tmp_path, capsys, monkeypatch):
    run, _ = trained
    for argv, message in [
        (["--port", "http"], "--port http: expected a whole number from 1 to 65535"),
        (["--gallery-domain", "x"], "--gallery-domain: applies to --gallery DIR"),
        (["--gallery", str(tmp_path)], "--gallery-domain: required with --gallery"),
    ]:
        assert cli.main(["app", str(run), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert cli.main(["app", str(run)]) == 2
    assert "pip install 'iiae[app]'" in capsys.readouterr().err


def test_export_space_writes_a_space_folder(trained, tmp_path, capsys):
    run, _ = trained
    out = tmp_path / "space"
    assert cli.main(["app", str(run), "--export-space", str(out)]) == 0
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert {"app.py", "requirements.txt", "README.md", "model/config.json", "model/model.safetensors"} <= set(names)
    readme = (out / "README.md").read_text()
    front = readme.split("---")[1]
    import yaml

    meta = yaml.safe_load(front)
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__ and meta["app_file"] == "app.py"
    assert meta["license"] == "apache-2.0" and "models" not in meta  # a local model travels inside the Space
    from iiae.version import installed_version

    assert (out / "requirements.txt").read_text() == f"iiae[app]=={installed_version()}\n"
    assert "serve('model', default_data=False)" in (out / "app.py").read_text()
    assert (out / "model" / "model.safetensors").read_bytes() == (run / "best" / "model.safetensors").read_bytes()
    # nothing already there is replaced
    assert cli.main(["app", str(run), "--export-space", str(out)]) == 2
    assert "is not an empty folder" in capsys.readouterr().err


def test_push_space_publishes_the_page_for_the_pushed_model(trained, hub, capsys):
    run, _ = trained
    assert cli.main(["push", str(run), "--repo-id", "alice/iiae-debug", "--space", "alice/iiae-debug-demo"]) == 0
    (model_repo, model_kw), (space_repo, space_kw) = hub["repo"]
    assert model_repo == "alice/iiae-debug" and model_kw["repo_type"] == "model"
    assert space_repo == "alice/iiae-debug-demo" and space_kw["repo_type"] == "space"
    assert space_kw["space_sdk"] == "gradio"
    repo, files, kw = hub["commit"][1]
    assert repo == "alice/iiae-debug-demo" and kw["repo_type"] == "space"
    assert sorted(files) == ["README.md", "app.py", "requirements.txt"]  # the Space loads the pushed model
    assert b"serve('alice/iiae-debug', default_data=False)" in files["app.py"]
    import yaml

    assert yaml.safe_load(files["README.md"].decode().split("---")[1])["models"] == ["alice/iiae-debug"]
    assert "alice/iiae-debug-demo" in capsys.readouterr().out


# ---- the page, in a real browser --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(session):
    from iiae.app import launch

    page, url = launch(session, host="127.0.0.1", port=_free_port(), block=False)
    yield url
    page.close()


@pytest.fixture(scope="module")
def browser():
    if BROWSER is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=BROWSER, args=["--no-sandbox"])
        yield b
        b.close()


def _images_in(page, selector: str) -> list[Image.Image]:
    import io

    srcs = page.eval_on_selector_all(f"{selector} img", "els => els.map(e => e.src)")
    return [Image.open(io.BytesIO(page.request.get(src).body())) for src in srcs]


@pytest.mark.integration
def test_page_translates_in_a_browser(served, browser, session, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(served)
    page.wait_for_selector("#t-go")
    assert session.domains["x"].name in page.inner_text("body")  # the page says what each domain holds
    x, y = _pair_images(session, 0, tmp_path)
    page.locator("#t-input input[type=file]").set_input_files(x)
    outputs = []
    for seed in ("0", "1"):
        page.locator("#t-seed input").fill(seed)
        before = page.eval_on_selector_all("#t-samples img", "els => els.map(e => e.src).join()")
        page.locator("#t-go").click()
        page.wait_for_function("([sel, old]) => { const s = [...document.querySelectorAll(sel)].map(e => e.src);"
                               " return s.length === 3 && s.join() !== old; }", arg=["#t-samples img", before],
                               timeout=60_000)
        images = _images_in(page, "#t-samples")
        assert [im.size for im in images] == [(session.size, session.size)] * 3  # decodes, at the model's size
        outputs.append([np.asarray(im.convert("RGB")) for im in images])
    assert any(not np.array_equal(a, b) for a, b in zip(*outputs))  # another seed, other samples
    expected, _, _ = session.translate(x, "x", n=3, seed=1)
    assert np.array_equal(outputs[1][0], np.asarray(expected[0]))  # lossless: what the model drew
    # with a reference of the other domain: the guided translation too
    page.locator("#t-reference input[type=file]").set_input_files(y)
    page.locator("#t-go").click()
    page.wait_for_selector("#t-guided img", timeout=60_000)
    _, guided, _ = session.translate(x, "x", n=1, reference=y)
    assert np.array_equal(np.asarray(_images_in(page, "#t-guided")[0].convert("RGB")), np.asarray(guided))
    if os.environ.get("IIAE_APP_SCREENSHOT"):
        page.wait_for_timeout(1000)  # the guided image's box settles
        page.screenshot(path=os.environ["IIAE_APP_SCREENSHOT"], full_page=True)
    page.close()


@pytest.mark.integration
def test_page_retrieves_the_partner_in_a_browser(served, browser, session, tmp_path):
    from iiae.evaluation.retrieval_metrics import top_k

    k = 5
    # a query the model retrieves: one whose partner its own codes rank in the top k
    ranks = top_k(session.gallery.codes["x"], session.gallery.codes["y"], k)[0]
    hits = [i for i in range(len(ranks)) if i in ranks[i].tolist()]
    assert hits, "the model retrieves no partner in its top k"
    i = hits[0]
    x, _ = _pair_images(session, i, tmp_path)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(served)
    page.get_by_role("tab", name="Retrieve").click()
    page.locator("#r-query input[type=file]").set_input_files(x)
    page.locator("#r-go").click()
    page.wait_for_function("document.querySelectorAll('#r-matches img').length === 5", timeout=60_000)
    table = page.inner_text("#r-table")
    assert session.gallery.names["y"][i] in table
    assert len(_images_in(page, "#r-matches")) == k
    page.close()


@pytest.mark.integration
def test_the_server_serves_no_other_files(served, trained):
    import urllib.error
    import urllib.request

    run, _ = trained
    for secret in [run / "best" / "config.json", Path("/etc/passwd")]:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{served}gradio_api/file={secret.resolve()}", timeout=10)
        assert err.value.code in (403, 404)


# ---- the exported Space, in a clean venv ------------------------------------------------------------------------
@pytest.mark.slow
def test_exported_space_runs_in_a_clean_venv(trained, tmp_path):
    """pip installs the Space's requirements.txt (this package as a wheel built here, the rest from the index) into
    a new venv; `python app.py` serves the page, which translates through the Gradio client."""
    run, _ = trained
    space, venv, wheels = tmp_path / "space", tmp_path / "venv", tmp_path / "wheels"
    assert cli.main(["app", str(run), "--export-space", str(space)]) == 0
    root = Path(__file__).resolve().parents[1]
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(wheels), str(root)], check=True, timeout=300)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run(pip + [f"torch=={torch.__version__.split('+')[0]}"], check=True, timeout=900)
        subprocess.run(pip + ["--find-links", str(wheels), "-r", str(space / "requirements.txt")], check=True,
                       timeout=900)
    except subprocess.CalledProcessError as err:
        pytest.skip(f"the packages could not be installed here (no package index?): {err}")
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(venv / "bin" / "python"), "app.py"], cwd=space, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        from gradio_client import Client, handle_file

        import time

        deadline = time.time() + 180
        while True:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"app.py did not serve: {proc.stdout.read() if proc.poll() is not None else ''}")
                time.sleep(1)
        image = _png(tmp_path / "q.png", np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
        gallery, guided, note = client.predict(handle_file(image), "x", 2, 0, None, api_name="/translate")
        assert len(gallery) == 2 and guided is None and "resized from 40×40" in note
        assert Image.open(gallery[0]["image"]).size == (32, 32)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

"""A dataset's `dataset.json`, its shards and whatever a server sends are untrusted (the command line and the recipe
are not): shard names never reach a shell as code, every remote read ends (byte caps, waiting budgets, the listed
sample count), and declared sizes cannot make the engine allocate gigabytes. Each failure is one line.

Hostile servers run on 127.0.0.1 with bounded loops that stop with the test; the limits are monkeypatched small,
so each case takes seconds.
"""
import functools
import json
import shutil
import struct
import tarfile
import threading
import time
import warnings
import zlib

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from iiae.config import load_recipe
from iiae.data import iter_eval_batches, load_dataset_info, make_train_loader, read_shard
from iiae.data import location
from iiae.data.format import MAX_CLASSES, MAX_FEATURE_DIM, MAX_IMAGE_SIZE, ShardInfo
from iiae.data.read import CorruptDataWarning, CorruptShard, SkipLog, read_valid_samples
from iiae.data.samples import encode_sample
from iiae.data.write import write_dataset
from iiae.errors import DataError

from test_reliability_data import ROOT
from test_remote_data import Server, _Quiet, serve_copy

SHARD = "train-000000.tar"  # the debug dataset's first train shard: 24 samples


# ------------------------------------------------------------------------------------------ hostile server

class _Scripted(_Quiet):
    """The static file handler, but a path in the server's `routes` is answered by its script."""

    protocol_version = "HTTP/1.0"  # a reply without Content-Length ends when the connection does

    def do_GET(self):
        self._answer(head=False)

    def do_HEAD(self):
        self._answer(head=True)

    def _answer(self, head):
        script = self.server.routes.get(self.path)
        if script is None:
            return super().do_HEAD() if head else super().do_GET()
        try:
            script(self, head, self.server.stopping)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up: what the tests want
            pass


class Hostile(Server):
    """Server (tests/test_remote_data.py) with scripted paths: `routes["/debug/dataset.json"] = script`."""

    def __init__(self, folder):
        super().__init__(folder)
        # no request can have arrived yet: the URL is only now known
        self.httpd.RequestHandlerClass = functools.partial(_Scripted, directory=str(folder))
        self.httpd.routes = self.routes = {}
        self.httpd.stopping = self.stopping = threading.Event()

    def stop(self):
        self.stopping.set()  # every script's loop waits on it
        super().stop()


def _start(handler, length=None):
    handler.send_response(200)
    if length is not None:
        handler.send_header("Content-Length", str(length))
    handler.end_headers()


def trickle(data, every=0.25, step=2):
    """`data` announced whole, sent `step` bytes per `every` s: 8 bytes/s, above curl's stall limit (1 byte/s)."""
    def script(handler, head, stopping):
        _start(handler, len(data))
        for i in range(0, 0 if head else len(data), step):
            if stopping.wait(every):
                return
            handler.wfile.write(data[i:i + step])
            handler.wfile.flush()
    return script


def slow_headers(every=0.5, most=120):
    """A status line, then one header byte every `every` s (the headers never end)."""
    def script(handler, head, stopping):
        handler.wfile.write(b"HTTP/1.0 200 OK\r\nX-Pad: ")
        for _ in range(most):
            if stopping.wait(every):
                return
            handler.wfile.write(b"a")
            handler.wfile.flush()
    return script


def endless(chunks, most=256 << 20):
    """A 200 reply without a length whose body is `chunks` (an iterator of bytes), up to `most` bytes."""
    def script(handler, head, stopping):
        _start(handler)
        sent = 0
        for chunk in chunks():
            if head or stopping.is_set() or sent >= most:
                return
            handler.wfile.write(chunk)
            sent += len(chunk)
    return script


def fixed(status, headers, body=b""):
    def script(handler, head, stopping):
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        if not head:
            handler.wfile.write(body)
    return script


def _member(name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info.tobuf(format=tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512)


def endless_tar(path):
    """A valid tar stream: the samples of shard `path` (no end-of-archive), then more of them, forever."""
    def chunks():
        with tarfile.open(path) as tar:
            members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
        yield b"".join(_member(name, data) for name, data in members)  # within the shard's listed size
        last = [(name.split(".", 1)[1], data) for name, data in members
                if name.startswith(members[-1][0].split(".", 1)[0] + ".")]
        for i in range(int(members[-1][0].split(".", 1)[0]) + 1, 10 ** 6):
            yield b"".join(_member(f"{i:06d}.{suffix}", data) for suffix, data in last)
    return chunks


@pytest.fixture
def hostile(debug_data, tmp_path):
    """(local copy of the debug dataset, its URL, the server); the server and its scripts stop after the test."""
    served = serve_copy(debug_data, tmp_path, Hostile)
    yield served
    served[2].stop()


def edit_info(folder, change):
    data = json.loads((folder / "dataset.json").read_text())
    change(data)
    (folder / "dataset.json").write_text(json.dumps(data))


def one_line(err, starts):
    text = str(err.value)
    assert "\n" not in text and text.startswith(starts), text
    return text


@pytest.fixture
def small_limits(monkeypatch):
    """Budgets of about a second, so a hostile server is given up on quickly."""
    for name, value in (("SMALL_SECONDS", 1.5), ("SHARD_SECONDS", 1.5), ("SHARD_RATE", 1 << 40)):
        monkeypatch.setattr(location, name, value, raising=False)


def _recipe(root, *overrides):
    return load_recipe(ROOT / "recipes" / "debug.yaml", [f"data.root={root}", *overrides])


# ---------------------------------------------------------------------------------- 1. shard names, commands

@pytest.mark.parametrize("name", ["train-000000.tar", "test-photo-000012.tar", "valid-000003.tar",
                                  "validation-000000.tar", "train.clean-000001.tar", "Split_2-999999.tar"])
def test_the_names_iiae_prepare_writes_validate(name):
    assert ShardInfo(file=name, count=1, sha256="0" * 64).file == name


@pytest.mark.parametrize("name", ["-o-000000.tar", ".hidden-000000.tar", "train-000000.tar\n", "train-0.tar",
                                  "train-000000.tar.gz", "träin-000000.tar", "a b-000000.tar", "a%2f-000000.tar",
                                  "a?x=1-000000.tar", "a#x-000000.tar", "{}-000000.tar", "a'b-000000.tar",
                                  "x" * 300 + "-000000.tar"])
def test_any_other_shard_name_is_refused(name):
    with pytest.raises(ValidationError, match=r"expected a shard name <split>-<6 digits>\.tar"):
        ShardInfo(file=name, count=1, sha256="0" * 64)


INJECTIONS = ["x;touch PWNED;#-000000.tar", "x$(touch PWNED)-000000.tar", "x`touch PWNED`-000000.tar",
              "x|touch PWNED|cat-000000.tar", "x\ntouch PWNED\n-000000.tar", "x -o PWNED x-000000.tar"]


@pytest.mark.parametrize("root_kind", ["pipe-cat", "pipe-curl", "http"])
@pytest.mark.parametrize("name", INJECTIONS)
def test_an_injected_shard_name_never_runs(hostile, tmp_path, monkeypatch, name, root_kind):
    local, url, _ = hostile
    monkeypatch.chdir(tmp_path)  # where an injected `touch PWNED` or `curl -o PWNED` would write
    marker = tmp_path / "PWNED"
    edit_info(local, lambda d: d["splits"]["train"]["shards"][0].update(file=name))
    root = {"pipe-cat": f"pipe:cat {local}/{{}}", "pipe-curl": f"pipe:curl -s {url}/{{}}", "http": url}[root_kind]
    with pytest.raises(DataError) as err:
        load_dataset_info(root, verify="all")  # reads every shard it lists: the hostile one first
    assert not marker.exists(), "the injected command ran"
    text = one_line(err, location.join(root, "dataset.json"))
    assert "splits.train.shards.0.file: expected a shard name" in text
    # below the check too, a name is one shell word (or one curl argument), never code
    try:
        location.read_bytes(location.join(root, name))
    except OSError:  # no such file: what a quoted name gives
        pass
    assert not marker.exists()


def test_a_pipe_root_without_placeholder_quotes_the_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    for name in INJECTIONS:
        with pytest.raises(OSError):
            location.read_bytes(location.join(f"pipe:cat {tmp_path}/a", name))
    assert not (tmp_path / "PWNED").exists()


# --------------------------------------------------------------------------------------- 2. bounded reads

@pytest.mark.timeout(60)
def test_a_trickling_dataset_json_fails_within_its_budget(hostile, small_limits):
    local, url, server = hostile
    server.routes["/debug/dataset.json"] = trickle((local / "dataset.json").read_bytes())  # minutes at 8 bytes/s
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_dataset_info(url)
    assert "dataset.json: cannot read (no complete reply within 1.5 s)" in one_line(err, f"{url}/dataset.json")
    assert time.monotonic() - start < 8


@pytest.mark.timeout(60)
@pytest.mark.parametrize("what", ["dataset.json", "HEAD of a shard"])
def test_headers_one_byte_at_a_time_fail_within_the_budget(hostile, small_limits, what):
    local, url, server = hostile
    path = "/debug/dataset.json" if what == "dataset.json" else f"/debug/{SHARD}"
    server.routes[path] = slow_headers()
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_dataset_info(url, verify="size")  # a HEAD request per shard
    text = one_line(err, f"{url}/{path.split('/')[-1]}")
    assert "no complete reply within 1.5 s" in text and time.monotonic() - start < 8


@pytest.mark.timeout(60)
def test_size_of_a_trickled_head_reply_is_bounded(hostile, small_limits):
    _, url, server = hostile
    server.routes[f"/debug/{SHARD}"] = slow_headers(every=0.25)  # a HEAD reply is all headers
    start = time.monotonic()
    with pytest.raises(location.TooSlow):
        location.size_of(f"{url}/{SHARD}")
    assert time.monotonic() - start < 6


def test_a_bogus_content_length_is_one_line(hostile):
    _, url, server = hostile
    server.routes[f"/debug/{SHARD}"] = fixed(200, {"Content-Length": "12abc"})
    with pytest.raises(DataError) as err:
        load_dataset_info(url, verify="size")
    assert "cannot be reached (Content-Length '12abc' is not a byte count)" in one_line(err, f"{url}/{SHARD}")


@pytest.mark.timeout(60)
def test_a_trickling_shard_fails_within_its_budget(hostile, small_limits):
    local, url, server = hostile
    server.routes[f"/debug/{SHARD}"] = trickle((local / SHARD).read_bytes())
    info = load_dataset_info(url)
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        list(iter_eval_batches(info, "train", 8))
    assert "corrupt shard at key (first record): no complete reply within" in one_line(err, f"{url}/{SHARD}")
    log = SkipLog()
    with pytest.warns(CorruptDataWarning, match="no complete reply within"):
        got = list(read_valid_samples(f"{url}/{SHARD}", 24, ("x", "y"), log, size=(local / SHARD).stat().st_size))
    assert got == []
    assert log.count == 24 and time.monotonic() - start < 12


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sized", [False, True], ids=["size unlisted", "size listed"])
def test_an_endless_tar_stops_at_the_listed_count(hostile, sized):
    local, url, server = hostile
    shard = local / SHARD
    server.routes[f"/debug/{SHARD}"] = endless(endless_tar(shard))
    if not sized:  # datasets written before `size` existed: the count alone bounds the read
        edit_info(local, lambda d: d["splits"]["train"]["shards"][0].pop("size"))
    info = load_dataset_info(url)
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        list(iter_eval_batches(info, "train", 8))
    assert "holds more than the 24 samples dataset.json lists" in one_line(err, f"{url}/{SHARD}") or (
        sized and "bytes dataset.json lists" in str(err.value))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorruptDataWarning)  # the listed 24 are all there: nothing lost
        got = list(read_valid_samples(f"{url}/{SHARD}", 24, ("x", "y"), SkipLog(),
                                      size=shard.stat().st_size if sized else None))
    assert len(got) == 24 and got[-1]["__key__"] == "000023"
    assert time.monotonic() - start < 10


@pytest.mark.timeout(120)
def test_an_epoch_over_an_endless_shard_is_the_epoch_of_the_listed_samples(hostile):
    local, url, server = hostile
    server.routes[f"/debug/{SHARD}"] = endless(endless_tar(local / SHARD))

    def epoch(root):
        return list(make_train_loader(_recipe(root), load_dataset_info(root), rank=0, world_size=1, epoch=0))
    remote, here = epoch(url), epoch(local)  # the 24 listed samples, then the next shard: as read locally
    assert len(remote) == len(here) == 8 and all(
        torch.equal(a["x"], b["x"]) and torch.equal(a["cls"], b["cls"]) for a, b in zip(remote, here))


@pytest.mark.timeout(60)
def test_a_shard_larger_than_listed_is_cut_at_its_size(hostile):
    local, url, server = hostile
    member = tarfile.TarInfo("000000.x.png")
    member.size = 1 << 30  # one 1 GiB member, streamed: without the cap it would all be read into memory
    server.routes[f"/debug/{SHARD}"] = endless(
        lambda: iter([member.tobuf(format=tarfile.USTAR_FORMAT)] + [b"\0" * (1 << 16)] * (1 << 14)))
    info = load_dataset_info(url)
    size = info.splits["train"].shards[0].size
    with pytest.raises(CorruptShard, match=f"more than the {size:,} bytes dataset.json lists"):
        list(read_shard(f"{url}/{SHARD}", count=24, size=size))
    with pytest.raises(DataError) as err:
        list(iter_eval_batches(info, "train", 8))
    assert f"more than the {size:,} bytes dataset.json lists" in one_line(err, f"{url}/{SHARD}")
    with pytest.raises(DataError) as err:
        load_dataset_info(url, verify="all")  # the sha256 read: capped the same way
    assert f"cannot be read to check its sha256 (more than {size:,} bytes)" in one_line(err, f"{url}/{SHARD}")


@pytest.mark.timeout(60)
def test_an_endless_dataset_json_is_refused_at_its_cap(hostile):
    _, url, server = hostile
    server.routes["/debug/dataset.json"] = endless(lambda: iter([b"[" + b"0," * (1 << 15)] * (1 << 20)))
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_dataset_info(url)
    assert f"dataset.json: larger than {location.INFO_BYTES:,} bytes" in one_line(err, f"{url}/dataset.json")
    assert time.monotonic() - start < 10


def test_a_huge_local_or_piped_dataset_json_is_refused_at_its_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(location, "INFO_BYTES", 1 << 16)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "dataset.json").write_bytes(b" " * (1 << 17) + b"{}")
    with pytest.raises(DataError) as err:
        load_dataset_info(tmp_path / "d")
    assert "dataset.json: larger than 65,536 bytes" in one_line(err, str(tmp_path / "d" / "dataset.json"))
    with pytest.raises(DataError) as err:
        load_dataset_info("pipe:yes {}")  # endless output
    assert "dataset.json: larger than 65,536 bytes" in one_line(err, "pipe:yes")


@pytest.mark.timeout(60)
def test_a_hanging_pipe_command_is_stopped(debug_data, small_limits):
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_dataset_info(f"pipe:sleep 30; cat {debug_data}/{{}}")
    assert "cannot read (no complete reply within 1.5 s)" in one_line(err, "pipe:sleep 30")
    assert time.monotonic() - start < 8


def test_a_redirect_to_a_local_file_is_not_followed(hostile):
    _, url, server = hostile
    server.routes["/debug/dataset.json"] = fixed(302, {"Location": "file:///etc/passwd"})
    with pytest.raises(DataError, match="dataset.json: cannot read"):
        load_dataset_info(url)


# ------------------------------------------------------------------------------ 3. declared sizes, decoding

@pytest.mark.parametrize("key, value", [
    ("image_size", 20000), ("image_size", MAX_IMAGE_SIZE + 1), ("image_size", 4), ("image_size", 0),
    ("image_size", -32), ("image_size", "huge"), ("image_size", None),
    ("feature_dim", MAX_FEATURE_DIM + 1), ("num_classes", MAX_CLASSES + 1)])
def test_declared_sizes_are_bounded(debug_data, tmp_path, key, value):
    data = tmp_path / "d"
    shutil.copytree(debug_data, data)

    def change(d):
        if key == "feature_dim":  # a feature dataset of a billion-wide vector
            d.update(kind="feature", image_size=None, feature_dim=value)
        elif key == "num_classes":
            d["splits"]["train"]["num_classes"] = value
        else:
            d[key] = value
    edit_info(data, change)
    with pytest.raises(DataError) as err:
        load_dataset_info(data)
    text = one_line(err, str(data / "dataset.json"))
    assert f": {key}:" in text or f".{key}:" in text, text
    assert "iiae prepare mnist-cdcb" in text  # the fix


def test_a_feature_dataset_needs_its_width_and_an_image_one_its_size(debug_data, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(debug_data, data)
    edit_info(data, lambda d: d.update(kind="feature", image_size=None))
    with pytest.raises(DataError, match="dataset.json: feature_dim: required for kind feature"):
        load_dataset_info(data)


def test_a_remote_dataset_json_with_a_huge_image_size_is_one_line(hostile):
    local, url, _ = hostile
    edit_info(local, lambda d: d.update(image_size=20000))
    with pytest.raises(DataError) as err:
        load_dataset_info(url)
    assert "dataset.json: image_size: Input should be less than or equal to 2048" in one_line(err, url)


@pytest.mark.parametrize("key, value", [("command", "rm -rf ~"), ("command", "iiae prepare x\nrm -rf ~"),
                                        ("name", "maps\x1b[2J"), ("source", "a\nb")])
def test_dataset_json_text_is_one_line_and_no_foreign_command(debug_data, tmp_path, key, value):
    data = tmp_path / "d"
    shutil.copytree(debug_data, data)
    edit_info(data, lambda d: d.update({key: value}))
    with pytest.raises(DataError) as err:
        load_dataset_info(data)
    text = one_line(err, str(data / "dataset.json"))
    assert f"{key}:" in text and "\x1b" not in text and "rm -rf ~ --out" not in text


def png_claiming(width, height):
    """A PNG header declaring width×height RGB, with a few bytes of pixels: decoded whole, gigabytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))


def _dataset_with(tmp_path, bad):
    """A 16-pair 32-px dataset whose sample 000005 has its x replaced by `bad` bytes."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(16):
        sample = encode_sample(f"{i:06d}", x=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                               y=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), cls=i % 4)
        if i == 5:
            sample.update(bad)
        samples.append(sample)
    root = tmp_path / "bad_32"
    root.mkdir()
    write_dataset(root, {"train": (samples, 16), "test": (samples, 16)}, shard_size=8, name="synthetic",
                  kind="image", image_size=32, domains={"x": "a", "y": "b"}, source="test",
                  command="iiae prepare test", provenance={})
    return root


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the 9500 px one: refused anyway
@pytest.mark.parametrize("bad, reason", [
    ({"x.png": png_claiming(30000, 30000)}, "decompression bomb"),  # 2.7 GB of RGB: Pillow refuses outright
    ({"x.png": png_claiming(9500, 9500)}, "decompression bomb"),  # over Pillow's limit, below twice it (warns)
    ({"cls": b"1000000000000"}, "cls 1000000000000 is outside"),  # a classifier with 10^12 outputs
], ids=["30000px", "9500px", "label"])
def test_a_bombed_sample_is_refused_in_evaluation_and_skipped_in_training(tmp_path, bad, reason):
    root = _dataset_with(tmp_path, bad)
    info = load_dataset_info(root)
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        list(iter_eval_batches(info, "test", 4))
    assert "key 000005: unreadable sample" in one_line(err, str(root / "test-000000.tar"))
    assert reason in str(err.value)
    loader = make_train_loader(_recipe(root, "data.batch_size=4", "data.shuffle_buffer=0"), info, rank=0,
                               world_size=1, epoch=0)
    with pytest.warns(CorruptDataWarning, match=f"key 000005: undecodable .*{reason}"):
        batches = list(loader)
    assert len(batches) == 4 and batches[-1]["skipped"] >= 1
    assert time.monotonic() - start < 20

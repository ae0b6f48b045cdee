"""Datasets read from anywhere webdataset opens: HTTP from a loopback server started here, and pipe: commands.

Every remote read must equal the local one bitwise; a truncated remote shard is skipped and counted; a server
that goes away mid-epoch ends in a clear DataError, never a hang.
"""
import functools
import http.server
import shutil
import threading
import warnings

import pytest
import torch

from iiae.config import load_recipe
from iiae.data import iter_eval_batches, load_dataset_info, make_train_loader
from iiae.data.read import CorruptDataWarning
from iiae.errors import DataError

from test_reliability_data import ROOT  # noqa: F401  (the repository root)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request lines on stderr
        pass


class Server:
    """A static file server for `folder` on 127.0.0.1 (a free port), in a thread."""

    def __init__(self, folder):
        handler = functools.partial(_Quiet, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def serve_copy(debug_data, tmp_path, server_class=None):
    """(local copy of the debug dataset, its URL, the server) for a fixture to yield; stop the server after."""
    local = tmp_path / "www" / "debug"
    shutil.copytree(debug_data, local)
    server = (server_class or Server)(tmp_path / "www")
    return local, f"{server.url}/debug", server


@pytest.fixture
def served(debug_data, tmp_path):
    """(local copy of the debug dataset, its URL); the server stops after the test."""
    served = serve_copy(debug_data, tmp_path)
    yield served
    served[2].stop()


def _recipe(root, *overrides):
    return load_recipe(ROOT / "recipes" / "debug.yaml", [f"data.root={root}", *overrides])


def _epoch(root, **kw):
    info = load_dataset_info(root)
    return list(make_train_loader(_recipe(root), info, rank=0, world_size=1, epoch=0, **kw))


def _same(a, b):
    assert len(a) == len(b) and all(torch.equal(p["x"], q["x"]) and torch.equal(p["y"], q["y"])
                                    and torch.equal(p["cls"], q["cls"]) for p, q in zip(a, b))


def test_http_dataset_reads_exactly_as_the_local_folder(served):
    local, url, _ = served
    info = load_dataset_info(url, verify="all")  # sha256 of every shard, over HTTP
    assert info.root == url and info.path(info.splits["train"].shards[0]) == f"{url}/train-000000.tar"
    assert load_dataset_info(url, verify="size").splits == load_dataset_info(local).splits
    _same(_epoch(url), _epoch(local))
    _same(_epoch(url, skip_batches=3), _epoch(local)[3:])  # exact resume: the same later batches
    remote = list(iter_eval_batches(info, "test", 16))
    here = list(iter_eval_batches(load_dataset_info(local), "test", 16))
    assert [b["key"] for b in remote] == [b["key"] for b in here]
    _same(remote, here)


def test_pipe_command_with_a_file_placeholder(served):
    local, _, _ = served
    root = f"pipe:cat {local}/{{}}"
    info = load_dataset_info(root, verify="all")
    assert info.path(info.splits["test"].shards[0]) == f"pipe:cat {local}/test-000000.tar"
    _same(list(iter_eval_batches(info, "test", 32)), list(iter_eval_batches(load_dataset_info(local), "test", 32)))


def test_data_root_default_verification_is_size_for_urls():
    assert _recipe("http://host/d").data.verify_mode == "size"
    assert _recipe("data/debug").data.verify_mode == "all"
    assert _recipe("http://host/d", "data.verify=none").data.verify_mode == "none"


def test_missing_remote_dataset_is_one_line(served):
    _, url, _ = served
    with pytest.raises(DataError) as err:
        load_dataset_info(f"{url}/../nothing-here")
    assert "dataset.json: cannot read" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="dataset.json: cannot read"):
        load_dataset_info("pipe:false {}")


def test_truncated_remote_shard_is_refused_by_size_or_skipped_and_counted(served):
    local, url, _ = served
    shard = local / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(DataError, match=r"train-000001.tar: [\d,]+ bytes, .* lists [\d,]+ \(truncated"):
        load_dataset_info(url, verify="size")
    with pytest.warns(CorruptDataWarning, match="train-000001.tar"):
        batches = _epoch(url)
    assert len(batches) == 8 and batches[-1]["skipped"] > 0  # the epoch is complete, the loss counted


@pytest.mark.timeout(120)
def test_server_stopping_mid_epoch_is_a_clear_error_not_a_hang(served):
    _, url, server = served
    info = load_dataset_info(url)
    batches = iter(make_train_loader(_recipe(url, "data.shuffle_buffer=0"), info, rank=0, world_size=1, epoch=0))
    next(batches)
    server.stop()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptDataWarning)  # each unreachable shard warns, then the error
        with pytest.raises(DataError, match="none of the 3 training shards is readable"):
            for _ in range(1000):
                next(batches)

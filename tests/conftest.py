"""Test-wide set-up. Must run before anything imports a module that defines @triton.jit kernels."""
import os

import torch

# Without CUDA, Triton kernels run through the interpreter (CPU tensors, ~8 ms per program).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# No test touches the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# --- data fixtures (tests/datagen.py) ---
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mnist_raw(tmp_path_factory):
    """A folder of fake MNIST IDX files at the real counts (60,000 / 10,000)."""
    from datagen import write_mnist_idx

    folder = tmp_path_factory.mktemp("mnist_raw")
    write_mnist_idx(folder)
    return folder


@pytest.fixture(scope="session")
def debug_data(tmp_path_factory, mnist_raw):
    """MNIST-CDCB shards at 32 px, 64 pairs per split in uneven shards (24 + 24 + 16), made by the real
    converter: use with recipes/debug.yaml and `data.root=<this path>`. Read-only: copy it to modify it."""
    from datagen import prepare_debug_data

    return prepare_debug_data(tmp_path_factory.mktemp("debug_data") / "mnist_cdcb_32", mnist_raw, shard_size=24)


@pytest.fixture
def hub(monkeypatch):
    """Records create_repo / create_commit calls instead of talking to the Hub (mocked at the client boundary)."""
    from pathlib import Path
    from types import SimpleNamespace

    from huggingface_hub import HfApi

    calls = {"repo": [], "commit": []}

    def create_repo(self, repo_id, **kw):
        from huggingface_hub.hf_api import RepoUrl

        calls["repo"].append((repo_id, kw))
        return RepoUrl(f"https://huggingface.co/{repo_id}")  # what the client returns

    def create_commit(self, repo_id, operations, **kw):
        ops = list(operations)
        files = {}
        for op in ops:
            src = op.path_or_fileobj
            files[op.path_in_repo] = src if isinstance(src, bytes) else Path(src).read_bytes()
        calls["commit"].append((repo_id, files, kw))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/abc123")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    return calls

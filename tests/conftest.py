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

"""Helpers shared by the Triton ops: is Triton usable, launch geometry, input normalisation.

Importable without Triton: the import is guarded here once and the ops modules are only imported
by `kernels/__init__.py` when it succeeded.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Optional

import torch

try:
    import triton
    import triton.language as tl
except Exception as exc:  # missing or broken Triton must not break `import kernels`
    triton = tl = None
    TRITON_IMPORT_ERROR: Optional[BaseException] = exc
else:
    TRITON_IMPORT_ERROR = None

# Largest BLOCK per program. On GPU 1024 elements = 4 warps x 8 elements per thread; the interpreter
# (CPU tensors) costs ~8 ms per program instance almost whatever its size, so there fewer, bigger
# programs are faster (8 x 8192 runs as 8 programs).
MAX_BLOCK_GPU = 1024
MAX_BLOCK_INTERPRETER = 8192
MIN_BLOCK = 16
# Reduction kernels split long rows across programs until about this many programs per SM are busy.
PROGRAMS_PER_SM = 4


def is_interpreted(kernel) -> bool:
    """True when `kernel` was built by `@triton.jit` under TRITON_INTERPRET=1 (runs CPU tensors)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)


def block_size(n: int, device: torch.device) -> int:
    cap = MAX_BLOCK_GPU if device.type == "cuda" else MAX_BLOCK_INTERPRETER
    return max(MIN_BLOCK, min(cap, triton.next_power_of_2(max(n, 1))))


def num_warps(block: int) -> int:
    return 8 if block >= 2048 else 4


def flat_grid(n_elements: int, block: int) -> tuple[int]:
    return (triton.cdiv(n_elements, block),)


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def reduction_layout(n_rows: int, n_cols: int, block: int, device: torch.device) -> tuple[int, int]:
    """(n_splits, chunk): each row is cut into n_splits chunks of `chunk` columns (a multiple of block).

    Few long rows (e.g. 8 x 8192 or 8 x 1M) would otherwise leave most SMs idle; partial sums are
    added afterwards, in a fixed order (deterministic, no atomics). One split per row off-GPU."""
    n_blocks = triton.cdiv(n_cols, block)
    n_splits = 1
    if device.type == "cuda":
        target = PROGRAMS_PER_SM * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
        n_splits = max(1, min(n_blocks, target // max(n_rows, 1), 65535))
    chunk = triton.cdiv(n_blocks, n_splits) * block
    return triton.cdiv(n_cols, chunk), chunk


def rows(t: torch.Tensor) -> tuple[int, int]:
    """View any tensor with a leading batch dim as [B, N]."""
    n_rows = t.shape[0]
    return n_rows, (t.numel() // n_rows if n_rows else 0)


def contiguous(*tensors: Optional[torch.Tensor]) -> tuple[Optional[torch.Tensor], ...]:
    return tuple(None if t is None else t.contiguous() for t in tensors)


def empty_like(t: torch.Tensor) -> torch.Tensor:
    """An output like `t`, always contiguous (what every launcher writes and every fake returns)."""
    return torch.empty_like(t, memory_format=torch.contiguous_format)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 math for fp16/bf16/fp32 inputs, fp64 for fp64 (so gradcheck sees fp64 precision)."""
    return torch.promote_types(dtype, torch.float32)


def tl_compute_dtype(dtype: torch.dtype):
    return tl.float64 if compute_dtype(dtype) == torch.float64 else tl.float32


def device_guard(t: torch.Tensor):
    """Launch on the tensor's GPU, not on whichever is current."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def draw_seed() -> int:
    """A 31-bit Philox seed from torch's CPU generator: follows torch.manual_seed, never syncs a GPU."""
    return int(torch.randint(2**31 - 1, (1,)).item())

"""The three fused kernels vs the eager PyTorch reference and `torch.compile` of the reference (CUDA).

Per kernel, shape, dtype and mode (fwd, bwd, full = fwd + bwd) the median time over `triton.testing.do_bench`
repetitions (L2 flushed between them) and the achieved bandwidth: the bytes the fused kernel must move — every
input read once, every output written once, at the inputs' element size — divided by the time. The same byte
count is used for eager and compile, so their GB/s is the *effective* bandwidth of doing the same job. Noise:
the fused kernels draw ε in-kernel (Philox) and redraw it in backward; the reference draws it with torch's RNG
(eager: a `randn_like` kernel and an ε tensor; compile: whatever inductor makes of it). That is how each runs in
training.

Dtypes: fp32 at every shape; bf16 (what bf16 autocast hands the kernels in training) and fp16 at the paper and
the bandwidth-bound shapes. The result keeps one entry per shape label: fp32 under the plain label
("shared 8x8192"), the others under "<label>/bf16", "<label>/fp16", each entry naming its `dtype` and `shape`
(the CSV's columns). The targets are the fp32 ones.

Bytes per element (N = rows × cols; B = rows, negligible):
  reparameterize       fwd: mu, logvar → z                         3N   bwd: grad_z, logvar → grad_logvar   3N
                       (grad_mu is grad_z itself, no copy)
  gaussian_kl (prior)  fwd: mu, logvar → [B]                       2N   bwd: mu, logvar, [B] → 2 grads      4N
  shared_latent_terms  fwd: 6 inputs → z, 3×[B]                    7N   bwd: grad_z + 6 inputs → 6 grads   13N
times the element size (4 B fp32, 2 B bf16/fp16); the [B] KL sums are fp32 whatever the input dtype.
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Optional

import bench_util as bu

bu.require_iiae()

import torch  # noqa: E402

# name → (input tensors, fwd bytes per element, bwd bytes per element)
KERNELS = {
    "reparameterize": (2, 3, 3),
    "gaussian_kl": (2, 2, 4),
    "shared_latent_terms": (6, 7, 13),
}
SHAPES = {  # label → (rows, cols)
    "shared 8x8192": (8, 8192),  # MNIST-CDCB / Facades / Maps z^s: batch 8 × 8×8×128
    "exclusive 8x8": (8, 8),  # z^x, z^y: batch 8 × 8
    "sketchy 100x64": (100, 64),  # Sketchy: 100 classes per step × 64
    "large 4096x8192": (4096, 8192),  # bandwidth-bound
}
QUICK_SHAPES = {"shared 8x8192": (8, 8192), "large 256x8192": (256, 8192)}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Low-precision rows: dtype → the shape labels (by their first word) measured in it, bf16 before fp16 so that a
# tight time budget keeps the dtype training uses.
LOW_PRECISION = {"bf16": ("shared", "large"), "fp16": ("shared", "large")}
QUICK_LOW_PRECISION = {"bf16": ("shared",)}
MODES = ("fwd", "bwd", "full")
IMPLS = ("fused", "eager", "compile")

# Theoretical DRAM bandwidth in GB/s (vendor data sheets), matched as a substring of the device name, most
# specific first. Override with --peak-gbs; unknown devices use the clock × bus width the driver reports.
PEAK_GBS = [
    ("GH200", 4900.0), ("H200", 4800.0), ("H100 NVL", 3900.0), ("H100 PCIe", 2000.0), ("H100", 3350.0),
    ("H800", 3350.0), ("B200", 8000.0), ("B100", 8000.0), ("A100-SXM4-80GB", 2039.0), ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0), ("A800", 2039.0), ("L40S", 864.0), ("L40", 864.0), ("L4", 300.0), ("A10G", 600.0),
    ("A10", 600.0), ("RTX 4090", 1008.0), ("RTX 3090", 936.0), ("V100", 900.0), ("T4", 320.0),
]


def peak_bandwidth(device_name: str, override: Optional[float] = None) -> tuple[float, str]:
    if override:
        return float(override), "--peak-gbs"
    for key, gbs in PEAK_GBS:
        if key.lower() in device_name.lower():
            return gbs, f"table ({key})"
    props = torch.cuda.get_device_properties(0)
    clock_khz, bus_bits = getattr(props, "memory_clock_rate", 0), getattr(props, "memory_bus_width", 0)
    if clock_khz and bus_bits:  # double data rate: two transfers per clock
        return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9, "driver (memory clock × bus width)"
    return float("nan"), "unknown (pass --peak-gbs)"


def bench_ms(fn: Callable[[], object], device: str, grad_to_none=None, quick: bool = False) -> float:
    """Median milliseconds of fn(): triton.testing.do_bench on CUDA (CUDA events, L2 flushed each rep);
    a perf_counter loop elsewhere (only for checking the code path: CPU timings of GPU kernels mean nothing)."""
    if device == "cuda":
        import triton.testing

        warmup, rep = (5, 20) if quick else (25, 100)
        return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, grad_to_none=grad_to_none,
                                             return_mode="median"))
    times = []
    for _ in range(3 if quick else 10):
        if grad_to_none:
            for t in grad_to_none:
                t.grad = None
        tick = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tick)
    return 1e3 * statistics.median(times)


def copy_bandwidth(device: str, quick: bool) -> float:
    """GB/s of a plain device-to-device copy (read + write): what this device actually sustains."""
    n = (64 if quick else 512) * 2**20 // 4
    src = torch.empty(n, device=device)
    dst = torch.empty_like(src)
    ms = bench_ms(lambda: dst.copy_(src), device, quick=quick)
    return 2 * n * 4 / (ms * 1e-3) / 1e9


def launch_floor_ms(device: str, quick: bool) -> float:
    """Milliseconds of one launch of the smallest kernel (a 1-element add_): the time below which no op whose
    inputs fit in a few waves can go, whatever it computes; at the paper's 8 x 8192 every variant sits near it."""
    one = torch.zeros(1, device=device)
    return bench_ms(lambda: one.add_(1), device, quick=quick)


def _inputs(kernel: str, shape: tuple[int, int], device: str, dtype=torch.float32) -> list[torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    n_inputs = KERNELS[kernel][0]
    tensors = []
    for i in range(n_inputs):
        t = torch.randn(shape, generator=gen, dtype=dtype)
        if i % 2 == 1:
            t = t * 0.5  # log-variances: moderate
        tensors.append(t.to(device).requires_grad_(True))
    return tensors


def case_label(label: str, dtype: str) -> str:
    """The result key of a shape in a dtype: the plain label for fp32, "<label>/<dtype>" otherwise."""
    return label if dtype == "fp32" else f"{label}/{dtype}"


def cases(shapes: dict, low_precision: dict) -> list[tuple[str, str, str]]:
    """(kernel, shape label, dtype) in the order they are measured: the targets' cases first (shared-latent fp32
    at the paper shape, then at the large one), shared-latent bf16 at the same shapes, the other fp32 cases, the
    other bf16 ones, then fp16; so a tight time budget still measures what matters most."""
    first = [s for s in shapes if s.startswith("shared")] + [s for s in shapes if s.startswith("large")]
    low = {d: [s for s in first if s.split()[0] in low_precision.get(d, ())] for d in DTYPES if d != "fp32"}
    order = [("shared_latent_terms", s, "fp32") for s in first]
    order += [("shared_latent_terms", s, "bf16") for s in low["bf16"]]
    order += [(k, s, "fp32") for k in KERNELS for s in shapes]
    order += [(k, s, "bf16") for k in KERNELS for s in low["bf16"]]
    order += [(k, s, "fp16") for k in KERNELS for s in low["fp16"]]
    return list(dict.fromkeys(order))


def _callables(kernel: str, compiled: dict) -> dict[str, Callable]:
    from iiae import kernels

    fused = getattr(kernels, kernel)
    ref = getattr(kernels.reference, kernel)
    if kernel not in compiled:
        compiled[kernel] = torch.compile(ref, dynamic=False)  # one graph per shape and dtype (see _recompile_room)
    seeded = kernel != "gaussian_kl"

    def wrap(f, seed: bool):
        return (lambda *t: f(*t, seed=1234, offset=0)) if seed else f

    return {"fused": wrap(fused, seeded), "eager": ref, "compile": compiled[kernel]}


def _outputs(result) -> list[torch.Tensor]:
    return list(result) if isinstance(result, (tuple, list)) else [result]


def bench_case(kernel: str, shape: tuple[int, int], impls: dict[str, Callable], device: str,
               quick: bool, dtype: torch.dtype = torch.float32) -> dict[str, dict[str, float]]:
    """{impl: {mode: ms}} for one kernel, shape and dtype."""
    inputs = _inputs(kernel, shape, device, dtype)
    out: dict[str, dict[str, float]] = {}
    for impl, fn in impls.items():
        res = _outputs(fn(*inputs))  # compiles (compile impl) and checks it runs
        grads = [torch.randn_like(r) for r in res]
        times = {}
        times["fwd"] = bench_ms(lambda: fn(*inputs), device, quick=quick)

        def backward_only():
            torch.autograd.backward(res, grads, retain_graph=True)

        times["bwd"] = bench_ms(backward_only, device, grad_to_none=inputs, quick=quick)

        def full():
            torch.autograd.backward(_outputs(fn(*inputs)), grads)

        times["full"] = bench_ms(full, device, grad_to_none=inputs, quick=quick)
        out[impl] = times
        del res
    return out


def _recompile_room(n_graphs: int) -> None:
    """Let dynamo keep one graph per (shape, dtype) of a compiled reference: past its recompile limit (8 by
    default) it would silently run the reference eagerly and the compile column would measure eager."""
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), n_graphs))


def run(device: str, *, quick: bool, peak_override: Optional[float] = None, budget_s: float = 240.0,
        log=print) -> dict:
    """The kernels section. On CUDA the fused impl is the Triton path (IIAE_KERNELS=triton)."""
    from iiae import kernels

    # compile baselines are benchmarked with retain_graph backward; donated buffers would forbid that
    try:
        import torch._functorch.config as functorch_config

        functorch_config.donated_buffer = False
    except (ImportError, AttributeError):
        pass
    _recompile_room(64)
    previous = os.environ.get("IIAE_KERNELS")
    if device == "cuda":
        os.environ["IIAE_KERNELS"] = "triton"
    started = time.perf_counter()
    try:
        probe = torch.zeros(1, device=device)
        backend = kernels.backend(probe)
        name = torch.cuda.get_device_properties(0).name if device == "cuda" else "cpu"
        peak, peak_source = peak_bandwidth(name, peak_override) if device == "cuda" else (float("nan"), "n/a")
        # "dtype": what the table header says; each entry names its own
        result: dict = {"backend": backend, "dtype": "fp32 unless the shape says /bf16 or /fp16", "peak_gbs": peak,
                        "peak_source": peak_source, "copy_gbs": copy_bandwidth(device, quick),
                        "launch_ms": launch_floor_ms(device, quick), "results": {}}
        compiled: dict = {}
        shapes = QUICK_SHAPES if quick else SHAPES
        for kernel, shape_label, dtype_name in cases(shapes, QUICK_LOW_PRECISION if quick else LOW_PRECISION):
            label = case_label(shape_label, dtype_name)
            dtype = DTYPES[dtype_name]
            entry = result["results"].setdefault(kernel, {})
            if time.perf_counter() - started > budget_s:
                entry[label] = {"skipped": f"time budget of {budget_s:.0f} s spent", "dtype": str(dtype)[6:]}
                continue
            rows, cols = shapes[shape_label]
            tick = time.perf_counter()
            try:
                times = bench_case(kernel, (rows, cols), _callables(kernel, compiled), device, quick, dtype)
            except Exception as err:  # one failing case must not hide the others
                entry[label] = {"error": f"{type(err).__name__}: {err}"[:500], "dtype": str(dtype)[6:]}
                log(f"  {kernel} {label}: ERROR {type(err).__name__}: {err}")
                continue
            n, size = rows * cols, dtype.itemsize
            _, fwd_b, bwd_b = KERNELS[kernel]
            nbytes = {"fwd": fwd_b * n * size, "bwd": bwd_b * n * size, "full": (fwd_b + bwd_b) * n * size}
            modes = {}
            for mode in MODES:
                f, e, c = times["fused"][mode], times["eager"][mode], times["compile"][mode]
                gbs = nbytes[mode] / (f * 1e-3) / 1e9
                modes[mode] = {"fused_ms": f, "eager_ms": e, "compile_ms": c, "bytes": nbytes[mode],
                               "fused_gbs": gbs, "eager_gbs": nbytes[mode] / (e * 1e-3) / 1e9,
                               "compile_gbs": nbytes[mode] / (c * 1e-3) / 1e9,
                               "pct_of_peak": 100 * gbs / peak if bu.finite(peak) else None,
                               "vs_eager": e / f, "vs_compile": c / f}
            entry[label] = {"rows": rows, "cols": cols, "shape": shape_label, "dtype": str(dtype)[6:], **modes}
            log(f"  {kernel} {label}: full {times['fused']['full']:.4f} ms fused, "
                f"{times['eager']['full']:.4f} eager, {times['compile']['full']:.4f} compile "
                f"({time.perf_counter() - tick:.1f} s)")
        result["targets"] = _targets(result, quick)
        return result
    finally:
        if previous is None:
            os.environ.pop("IIAE_KERNELS", None)
        else:
            os.environ["IIAE_KERNELS"] = previous


def _targets(result: dict, quick: bool) -> dict:
    """shared-latent ≥ 3× eager and ≥ 1.2× compile at paper shape (full step), ≥ 80 % of peak at the large one;
    fp32 (plain labels)."""
    shared = result["results"].get("shared_latent_terms", {})
    paper = shared.get("shared 8x8192", {}).get("full", {})
    large_label = next((k for k in shared if k.startswith("large") and "/" not in k), None)
    large = shared.get(large_label, {}) if large_label else {}
    pct = {m: large.get(m, {}).get("pct_of_peak") for m in MODES}
    out = {
        "shared_paper_vs_eager": {"value": paper.get("vs_eager"), "target": 3.0},
        "shared_paper_vs_compile": {"value": paper.get("vs_compile"), "target": 1.2},
        "shared_large_pct_of_peak": {"value": min((v for v in pct.values() if v is not None), default=None),
                                     "target": 80.0, "shape": large_label, "per_mode": pct},
    }
    for t in out.values():
        t["meets_target"] = t["value"] is not None and t["value"] >= t["target"]
    return out


def rows_for_csv(result: dict) -> list[dict]:
    rows = []
    for kernel, shapes in result.get("results", {}).items():
        for label, modes in shapes.items():
            for mode in MODES:
                m = modes.get(mode)
                if not isinstance(m, dict):
                    continue
                rows.append({"kernel": kernel, "shape": modes.get("shape", label), "mode": mode,
                             "dtype": modes.get("dtype", "float32"),
                             **{k: m[k] for k in ("fused_ms", "eager_ms", "compile_ms", "fused_gbs", "vs_eager",
                                                  "vs_compile", "pct_of_peak")},
                             "peak_gbs": result["peak_gbs"], "copy_gbs": result["copy_gbs"]})
    return rows


CSV_FIELDS = ["kernel", "shape", "mode", "dtype", "fused_ms", "eager_ms", "compile_ms", "fused_gbs", "vs_eager",
              "vs_compile", "pct_of_peak", "peak_gbs", "copy_gbs"]

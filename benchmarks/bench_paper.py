"""Paper-scale train step (MNIST-CDCB 256 px, the paper's 16.8 M-parameter model, batch 8): fp32 eager with the
torch kernels vs bf16 + fused Triton kernels + torch.compile, both through the engine's train step.

The step number, the annealing factor and the noise seed change every step, as in training: the loss and c_t are
computed outside the compiled model (the seed becomes a dynamic int after its second value), so compilation
happens during warm-up only. `recompiles_while_timed` reports any recompilation left during the timed steps.

Each variant runs in its own process (`python benchmarks/bench_paper.py --variant ...` prints one JSON line):
Accelerate's mixed precision is process-wide state, and compile caches and IIAE_KERNELS must not leak from one
variant into the other.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import bench_util as bu

VARIANTS = {
    # name → (IIAE_KERNELS, recipe overrides)
    # 'no' quoted: the override value is YAML, where a bare no is the boolean false
    "fp32_eager": ("torch", ["train.mixed_precision='no'", "train.compile=false"]),
    "bf16_fused_compile": ("auto", ["train.mixed_precision=bf16", "train.compile=true"]),
}


def measure(recipe_path: str, variant: str, device: str, *, steps: int, rounds: int, warmup: int) -> dict:
    bu.require_iiae()
    import torch

    from bench_step import EngineLoop, load, memory_batch

    recipe = load(recipe_path, VARIANTS[variant][1])
    from iiae import kernels

    engine = EngineLoop.build(recipe, device)
    batch = memory_batch(recipe, device)
    sync = bu.sync_for(device)
    backend = kernels.backend(batch["x"])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tick = time.perf_counter()
    engine.run(batch, warmup)  # includes compilation for the compiled variant
    sync()
    warmup_s = time.perf_counter() - tick
    from torch._dynamo.utils import counters

    graphs_before = counters["stats"]["unique_graphs"]
    blocks = [bu.timed(lambda n: engine.run(batch, n), steps, sync) for _ in range(rounds)]
    per_step = statistics.median(blocks)
    out = {"variant": variant, "kernels_backend": backend, "mixed_precision": recipe.train.mixed_precision,
           "compile": recipe.train.compile, "batch_size": recipe.data.batch_size,
           "img_per_s": recipe.data.batch_size / per_step, "ms_per_step": 1e3 * per_step,
           "spread": bu.spread(blocks), "warmup_s": warmup_s, "steps_timed": steps * rounds,
           "compiled_graphs": counters["stats"]["unique_graphs"],
           "recompiles_while_timed": counters["stats"]["unique_graphs"] - graphs_before}
    if device == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def run(recipe_path: str, device: str, *, quick: bool, timeout_s: float = 300.0, log=print) -> dict:
    """Both variants, each in a subprocess; the speed-up of the second over the first."""
    steps, rounds, warmup = (2, 2, 3) if quick else (10, 5, 5)
    result: dict = {"recipe": recipe_path, "device": device}
    for variant, (kernels_env, _) in VARIANTS.items():
        env = dict(os.environ, IIAE_KERNELS=kernels_env)
        cmd = [sys.executable, __file__, "--recipe", recipe_path, "--variant", variant, "--device", device,
               "--steps", str(steps), "--rounds", str(rounds), "--warmup", str(warmup)]
        tick = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            result[variant] = {"error": f"timed out after {timeout_s:.0f} s"}
            log(f"  {variant}: timed out")
            continue
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
            result[variant] = {"error": f"exit {proc.returncode}: " + " | ".join(tail)[-1500:]}
            log(f"  {variant}: ERROR (exit {proc.returncode})\n    " + "\n    ".join(tail))
            continue
        result[variant] = json.loads(lines[-1])
        log(f"  {variant}: {result[variant]['img_per_s']:.1f} img/s ({time.perf_counter() - tick:.0f} s incl. start-up)")
    a, b = result.get("fp32_eager", {}), result.get("bf16_fused_compile", {})
    if "img_per_s" in a and "img_per_s" in b:
        result["speedup"] = b["img_per_s"] / a["img_per_s"]
        result["target"] = 2.0
        result["meets_target"] = result["speedup"] >= 2.0
    return result


def main() -> int:
    p = argparse.ArgumentParser(description="one variant of the paper-scale step (used by throughput.py)")
    p.add_argument("--recipe", default=str(bu.ROOT / "recipes" / "mnist_cdcb.yaml"))
    p.add_argument("--variant", choices=list(VARIANTS), required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=5)
    a = p.parse_args()
    os.environ["IIAE_KERNELS"] = VARIANTS[a.variant][0]
    print(json.dumps(measure(a.recipe, a.variant, a.device, steps=a.steps, rounds=a.rounds, warmup=a.warmup)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

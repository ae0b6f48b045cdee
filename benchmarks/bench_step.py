"""The engine's train step vs a bare PyTorch loop on the same model config and the same in-memory batch.

The engine side is `iiae.training.trainer.Trainer.build(recipe)` — the same construction as training — and its
`train_step`. The bare side is the few lines a PyTorch user would write.
"""
from __future__ import annotations

import contextlib
import statistics
from dataclasses import dataclass
from typing import Optional

import bench_util as bu

bu.require_iiae()

import torch  # noqa: E402


def load(recipe_path: str, overrides: Optional[list[str]] = None):
    from iiae.config import load_recipe

    return load_recipe(recipe_path, overrides or [])


def _model_and_optimizer(recipe):
    """The bare loop's model and Adam, initialised as the Trainer initialises them (same seeds, same weights)."""
    from accelerate.utils import set_seed
    from iiae.models import IIAE

    set_seed(recipe.seed)
    model = IIAE.from_recipe(recipe)
    set_seed(recipe.seed, device_specific=True)
    o = recipe.optim
    optimizer = torch.optim.Adam(model.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    return model, optimizer


@dataclass
class EngineLoop:
    """The engine's optimizer step: `Trainer.build(recipe)` (no run folder: no logging, eval or checkpoint
    cadence) and `trainer.train_step`, exactly what `fit()` runs per step."""

    trainer: object

    @classmethod
    def build(cls, recipe, device: str) -> "EngineLoop":
        from iiae.training.trainer import Trainer

        trainer = Trainer.build(recipe, device=device)
        trainer.model.train()
        return cls(trainer)

    @property
    def accelerator(self):
        return self.trainer.accelerator

    @property
    def state(self):
        return self.trainer.state

    def step(self, micro_batches: list[dict]) -> dict:
        return self.trainer.train_step(micro_batches)

    def run(self, batch: dict, n: int) -> None:
        micro = [batch] * self.trainer.recipe.train.gradient_accumulation_steps
        for _ in range(n):
            self.step(micro)


class BareLoop:
    """`out = model(x, y, seed=t); loss = iiae_loss(...); loss.backward(); opt.step(); opt.zero_grad()` — the
    same model config, weights initialised the same way, plain Adam, no Accelerator (autocast, compile and
    channels-last only when the recipe asks the engine for them, so both sides do the same arithmetic)."""

    def __init__(self, recipe, device: str):
        self.recipe = recipe
        model, self.optimizer = _model_and_optimizer(recipe)
        self.model = model.to(device)
        self.memory_format = torch.channels_last if recipe.model.channels_last else torch.preserve_format
        self.model = self.model.to(memory_format=self.memory_format)
        if recipe.train.compile:
            self.model = torch.compile(self.model)
        self.model.train()
        mp = recipe.train.mixed_precision or "no"  # unset: the engine side runs fp32 without a launcher
        self.autocast = (lambda: torch.autocast(device, dtype=torch.bfloat16 if mp == "bf16" else torch.float16)) \
            if mp != "no" else contextlib.nullcontext
        self.t = 0

    def run(self, batch: dict, n: int) -> None:
        from iiae.models.objective import annealing, iiae_loss

        x, y = (batch[k].to(memory_format=self.memory_format) for k in "xy")
        objective = self.recipe.objective
        for _ in range(n):
            t = self.t
            for _ in range(self.recipe.train.gradient_accumulation_steps):
                with self.autocast():
                    out = self.model(x, y, seed=t)
                    loss, _ = iiae_loss(objective, annealing(t, objective.anneal_steps), x, y, out)
                loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
            self.t += 1


def memory_batch(recipe, device: str, seed: int = 0) -> dict:
    """One batch as the loader yields it (float [B,3,H,W] in [−1, 1]; features [B,F]), already on `device`."""
    m, b = recipe.model, recipe.data.batch_size
    gen = torch.Generator().manual_seed(seed)
    from iiae.models import input_kind

    shape = (b, m.feature_dim) if input_kind(m) == "feature" else (b, m.channels, m.image_size, m.image_size)
    x = torch.rand(shape, generator=gen) * 2 - 1
    y = torch.rand(shape, generator=gen) * 2 - 1
    return {"x": x.to(device), "y": y.to(device), "cls": torch.zeros(b, dtype=torch.long)}


def _interleaved(engine, bare, batch: dict, sync, quick: bool, block_s: float, rounds: int):
    """Per-block seconds of the (warmed-up) engine and bare loops in alternating blocks of ≈ block_s (quick: 3
    rounds of tiny blocks); returns the times, iterations per block and rounds."""
    probe = min(bu.timed(lambda n: engine.run(batch, n), 2, sync), bu.timed(lambda n: bare.run(batch, n), 2, sync))
    iters, rounds = (bu.iters_for(probe, 0.15, hi=4), 3) if quick else (bu.iters_for(probe, block_s), rounds)
    times = bu.interleaved({"engine": lambda n: engine.run(batch, n), "bare": lambda n: bare.run(batch, n)},
                           iters, rounds, sync)
    return times, iters, rounds


def engine_vs_bare(recipe_path: str, device: str, *, quick: bool, block_s: float = 1.0, rounds: int = 12
                   ) -> tuple[dict, EngineLoop]:
    """samples/s of the engine step and of the bare loop (medians of interleaved blocks) and their ratio.
    Returns the figures and the engine loop (reused by the loader section: no second model build)."""
    recipe = load(recipe_path)
    engine = EngineLoop.build(recipe, device)
    bare = BareLoop(recipe, device)
    batch = memory_batch(recipe, device)
    sync = bu.sync_for(device)
    samples_per_step = recipe.data.batch_size * recipe.train.gradient_accumulation_steps

    warmup = 1 if quick else 3
    engine.run(batch, warmup)  # first steps: allocator, Adam state, (compile)
    bare.run(batch, warmup)
    times, iters, rounds = _interleaved(engine, bare, batch, sync, quick, block_s, rounds)
    e, b = statistics.median(times["engine"]), statistics.median(times["bare"])
    ratio = bu.paired_ratio(times["bare"], times["engine"])  # engine speed / bare speed
    result = {
        "recipe": recipe.name,
        "engine_samples_per_s": samples_per_step / e,
        "bare_samples_per_s": samples_per_step / b,
        "ratio": ratio,
        "target": 0.97,
        "meets_target": ratio >= 0.97,
        "engine_ms_per_step": 1e3 * e,
        "bare_ms_per_step": 1e3 * b,
        "engine_spread": bu.spread(times["engine"]),
        "bare_spread": bu.spread(times["bare"]),
        "batch_size": recipe.data.batch_size,
        "iters_per_block": iters,
        "rounds": rounds,
        "parameters": sum(p.numel() for p in bare.model.parameters()),
    }
    del bare
    return result, engine


def profile_steps(recipe_path: str, device: str, steps: int = 10) -> str:
    """torch.profiler tables (self CPU time) of `steps` engine steps and `steps` bare steps, for README notes."""
    from torch.profiler import ProfilerActivity, profile

    recipe = load(recipe_path)
    engine = EngineLoop.build(recipe, device)
    bare = BareLoop(recipe, device)
    batch = memory_batch(recipe, device)
    engine.run(batch, 3)
    bare.run(batch, 3)
    out = []
    for name, loop in (("engine", engine), ("bare", bare)):
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with profile(activities=acts) as prof:
            loop.run(batch, steps)
        out.append(f"== {name}: {recipe.name}, {steps} steps ==\n"
                   + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    return "\n\n".join(out)


# ---- the engine at its fastest accurate settings vs the bare fp32 eager loop ---------------------------------
FP32_EAGER = ["train.mixed_precision=no", "train.compile=false", "model.channels_last=false"]


def native_bf16(device: str) -> bool:
    """bf16 pays on CUDA and on CPUs with AVX-512 BF16 or AMX; elsewhere it is emulated (~10x slower here)."""
    if device == "cuda":
        return True
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def fast_variants(device: str, quick: bool) -> dict[str, list[str]]:
    """The settings that train within rounding of fp32 (tests/test_trainer.py::test_fast_settings_train_close_to_fp32)
    and may be faster on this device. --quick leaves out torch.compile (a minute of compilation each)."""
    variants = {"channels_last": ["model.channels_last=true"]}
    if native_bf16(device):
        variants["bf16+channels_last"] = ["train.mixed_precision=bf16", "model.channels_last=true"]
    if not quick:
        variants["compile"] = ["train.compile=true"]
        variants["compile+channels_last"] = ["train.compile=true", "model.channels_last=true"]
        if native_bf16(device):
            variants["bf16+compile+channels_last"] = ["train.mixed_precision=bf16", "train.compile=true",
                                                      "model.channels_last=true"]
    return variants


def fastest_vs_bare(recipe_path: str, device: str, *, quick: bool, block_s: float = 1.0, rounds: int = 8,
                    log=print) -> dict:
    """Each fast variant of the engine timed in interleaved blocks against the bare fp32 eager loop (same model
    config, batch and data), one variant at a time (accelerate's precision state is global to the process)."""
    import time

    bare = BareLoop(load(recipe_path, FP32_EAGER), device)
    batch = memory_batch(bare.recipe, device)
    sync = bu.sync_for(device)
    bare.run(batch, 1 if quick else 3)
    samples_per_step = bare.recipe.data.batch_size * bare.recipe.train.gradient_accumulation_steps
    out = {"variants": {}, "bare_settings": "fp32, eager, contiguous", "target": 1.5}
    for name, overrides in fast_variants(device, quick).items():
        engine = EngineLoop.build(load(recipe_path, overrides), device)
        tick = time.perf_counter()
        engine.run(batch, 1 if quick else 3)  # compilation, if any, happens here
        warmup = time.perf_counter() - tick
        times, _, _ = _interleaved(engine, bare, batch, sync, quick, block_s, rounds)
        e, b = statistics.median(times["engine"]), statistics.median(times["bare"])
        out["variants"][name] = {"overrides": overrides, "engine_ms_per_step": 1e3 * e, "bare_ms_per_step": 1e3 * b,
                                 "engine_samples_per_s": samples_per_step / e,
                                 "ratio": bu.paired_ratio(times["bare"], times["engine"]), "warmup_s": warmup}
        log(f"  {name}: {1e3 * e:.1f} ms/step vs bare fp32 {1e3 * b:.1f} → {out['variants'][name]['ratio']:.2f}× "
            f"(warm-up {warmup:.1f} s)")
        del engine
    best = max(out["variants"], key=lambda n: out["variants"][n]["ratio"])
    out.update(fastest=best, ratio=out["variants"][best]["ratio"])
    out["meets_target"] = out["ratio"] >= out["target"]
    return out

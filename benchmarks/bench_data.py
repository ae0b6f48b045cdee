"""The streaming loader's samples/s (shards → decode → batch, the recipe's worker count) vs the train step's
consumption, and the train step fed by that loader (as engine/train.py feeds it) vs fed from memory.

Shards: `--data DIR`, else the recipe's `data.root` when it holds a dataset.json, else small synthetic
MNIST-CDCB shards made in a temporary folder by the real converter (`iiae prepare mnist-cdcb`) from fake
MNIST IDX files (engine/data/synthetic.py) — PNG decode costs the same per image either way.
"""
from __future__ import annotations

import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import bench_util as bu

bu.require_iiae()


class DataSource:
    """Finds or makes shards for a recipe; synthetic ones live in one temporary folder removed by close()."""

    def __init__(self, data_arg: Optional[str], quick: bool, log=print):
        self.data_arg, self.quick, self.log = data_arg, quick, log
        self._tmp: Optional[Path] = None

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def root_for(self, recipe) -> tuple[Path, bool]:
        """(shard folder, synthetic?)"""
        from iiae.models import input_kind

        if self.data_arg:
            return Path(self.data_arg).resolve(), False
        root = Path(recipe.data.root)
        if not root.is_absolute() and not (root / "dataset.json").exists():
            root = bu.ROOT / root  # recipes name data/... relative to the repository
        if (root / "dataset.json").exists():
            return root, False
        if input_kind(recipe.model) == "feature" or recipe.data.class_matched:
            raise RuntimeError(f"{recipe.name}: no shards at {recipe.data.root} and no synthetic stand-in for "
                               f"feature datasets; pass --data DIR")
        return self._synthetic(recipe.model.image_size), True

    def _synthetic(self, size: int) -> Path:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="iiae_bench_"))
        out = self._tmp / f"mnist_cdcb_{size}"
        if (out / "dataset.json").exists():
            return out
        from iiae.data.synthetic import MNIST_FILES, write_mnist_idx

        mnist = self._tmp / "fake_mnist"
        if not (mnist / MNIST_FILES[0]).exists():
            write_mnist_idx(mnist)
        pairs = 256 if self.quick else 2048
        self.log(f"  making synthetic {size}-px MNIST-CDCB shards ({pairs} pairs per split) in {out}")
        from iiae.cli import main as iiae

        tick = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the one JSON object
            code = iiae(["prepare", "mnist-cdcb", "--mnist", str(mnist), "--size", str(size), "--limit", str(pairs),
                         "--out", str(out)])
        if code != 0:
            raise RuntimeError(f"iiae prepare mnist-cdcb failed (exit {code})")
        self.log(f"  prepared in {time.perf_counter() - tick:.1f} s")
        return out


def loader_and_step(engine, recipe_path: str, root: Path, *, quick: bool, block_s: float = 1.0,
                    rounds: int = 8) -> dict:
    """One rank's training loader (the recipe's num_workers) alone vs the engine step on the in-memory batch,
    in alternating blocks: samples/s of each (medians) and the median of the per-round ratios, so a change of
    machine load during the run hits both sides of a ratio alike. Before each timed loader block the batches
    the DataLoader workers prefetched while the step ran are taken untimed."""
    from bench_step import load, memory_batch
    from iiae.data import load_dataset_info, make_train_loader

    recipe = load(recipe_path, [f"data.root={root}", "data.batches_per_epoch=1000000"])
    info = load_dataset_info(root)
    device = engine.accelerator.device.type
    sync = bu.sync_for(device)
    batch = memory_batch(recipe, device)
    per_step = recipe.data.batch_size * recipe.train.gradient_accumulation_steps
    workers = recipe.data.num_workers
    prefetched = 2 * workers  # torch DataLoader: prefetch_factor 2 per worker

    tick = time.perf_counter()
    loader = iter(make_train_loader(recipe, info, rank=0, world_size=1, epoch=0))
    first = next(loader)
    first_s = time.perf_counter() - tick
    try:
        for _ in range(2 if quick else 5):  # the shuffle buffer fills and the workers reach a steady state
            next(loader)

        def load_block(k: int) -> float:
            for _ in range(prefetched):
                next(loader)
            tick = time.perf_counter()
            n = sum(next(loader)["x"].shape[0] for _ in range(k))
            return (time.perf_counter() - tick) / n  # seconds per sample

        per_sample = load_block(4)
        batch_s = per_sample * recipe.data.batch_size
        k = bu.iters_for(batch_s, 0.1 if quick else block_s / 2, lo=4, hi=2000)
        # after a loader block the workers refill their prefetch queue; let them finish before a step block
        # starts, or the step block would be timed while sharing the CPUs with them
        settle = 2 * prefetched * batch_s + 0.02 if workers else 0.0
        step_probe = bu.timed(lambda n: engine.run(batch, n), 1, sync)
        iters = bu.iters_for(step_probe, 0.1 if quick else block_s / 2, hi=4 if quick else 10_000)
        loads, steps = [], []
        for r in range(2 if quick else rounds):
            if r % 2 == 0:
                loads.append(load_block(k))
                time.sleep(settle)
            steps.append(bu.timed(lambda n: engine.run(batch, n), iters, sync) / per_step)
            if r % 2 == 1:
                loads.append(load_block(k))
                time.sleep(settle)
    finally:
        loader.close()  # ends the epoch early: the DataLoader shuts its workers down
    return {"loader_samples_per_s": 1 / statistics.median(loads), "step_samples_per_s": 1 / statistics.median(steps),
            "ratio": bu.paired_ratio(steps, loads), "first_batch_s": first_s, "loader_batches_per_block": k,
            "loader_spread": bu.spread(loads), "batch_shape": list(first["x"].shape), "num_workers": workers}


def fed_vs_memory(engine, recipe_path: str, root: Path, *, quick: bool, loader_samples_per_s: float,
                  block_s: float = 1.0, rounds: int = 8) -> dict:
    """Engine steps whose batches come from the loader through the Trainer's own `batches()` vs the same
    engine on the in-memory batch, in alternating blocks: ≈ 1 when the loader keeps up while sharing the CPUs."""
    from bench_step import load, memory_batch
    from iiae.data import load_dataset_info

    recipe = load(recipe_path, [f"data.root={root}"])
    info = load_dataset_info(root)
    device = engine.accelerator.device.type
    sync = bu.sync_for(device)
    batch = memory_batch(recipe, device)
    gas = recipe.train.gradient_accumulation_steps
    per_step = recipe.data.batch_size * gas
    workers = recipe.data.num_workers
    # after a fed block the workers refill their prefetch queue (2 batches each): wait for it outside the timing
    settle = (2 * 2 * workers * recipe.data.batch_size / loader_samples_per_s + 0.02) if workers else 0.0
    engine.trainer.info = info  # built without a run: the data it streams from is set here
    stream = engine.trainer.batches()

    def fed(n: int) -> None:
        for _ in range(n):
            engine.step([next(stream) for _ in range(gas)])

    def memory(n: int) -> None:
        engine.run(batch, n)

    fed_t, mem_t = [], []
    try:
        fed(2 if not quick else 1)  # worker start-up and the shuffle buffer fill
        iters = bu.iters_for(bu.timed(memory, 1, sync), 0.15 if quick else block_s, hi=4 if quick else 10_000)
        for r in range(2 if quick else rounds):
            for name in (("fed", "memory") if r % 2 == 0 else ("memory", "fed")):
                if name == "fed":
                    fed_t.append(bu.timed(fed, iters, sync))
                    time.sleep(settle)
                else:
                    mem_t.append(bu.timed(memory, iters, sync))
    finally:
        stream.close()  # stops the loader's worker processes
    return {"fed_step_samples_per_s": per_step / statistics.median(fed_t),
            "memory_step_samples_per_s": per_step / statistics.median(mem_t),
            "fed_vs_memory": bu.paired_ratio(mem_t, fed_t)}


def loader_vs_step(engine, recipe_path: str, source: DataSource, *, quick: bool, block_s: float = 1.0) -> dict:
    from bench_step import load

    recipe = load(recipe_path)
    root, synthetic = source.root_for(recipe)
    result = {"recipe": recipe.name, "data": str(root), "synthetic": synthetic}
    result.update(loader_and_step(engine, recipe_path, root, quick=quick, block_s=block_s))
    result.update(target=5.0, meets_target=result["ratio"] >= 5.0)
    result.update(fed_vs_memory(engine, recipe_path, root, quick=quick, block_s=block_s,
                                loader_samples_per_s=result["loader_samples_per_s"]))
    return result


def profile_loader(recipe_path: str, source: DataSource, batches: int = 100) -> str:
    """cProfile of the loader's per-sample work in this process (num_workers=0), sorted by own time."""
    import cProfile
    import io
    import pstats

    from bench_step import load
    from iiae.data import load_dataset_info, make_train_loader

    root, _ = source.root_for(load(recipe_path))
    recipe = load(recipe_path, [f"data.root={root}", "data.num_workers=0", f"data.batches_per_epoch={batches}"])
    info = load_dataset_info(root)
    prof = cProfile.Profile()
    prof.enable()
    for _ in make_train_loader(recipe, info, rank=0, world_size=1, epoch=0):
        pass
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
    return f"== loader (in-process, num_workers=0): {recipe.name}, {batches} batches ==\n" + buf.getvalue()

"""Train an IIAE recipe.

    accelerate launch [--config_file recipes/accelerate/X.yaml] engine/train.py recipes/Y.yaml [a.b=v ...]
    torchrun --nproc_per_node N engine/train.py recipes/Y.yaml ...      python engine/train.py ...      iiae train ...

Accelerate owns devices, DDP, mixed precision, gradient accumulation and DeepSpeed; the data loader is
not passed through `accelerator.prepare` (it already splits shards by rank and worker).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the package, not sibling modules
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm

import kernels
from engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from engine.config import flat_hparams, load_recipe, save_recipe
from engine.data import load_dataset_info, make_train_loader, train_batches_per_epoch
from engine.errors import UserError
from engine.logging_utils import MetricsLog, plot_curves
from engine.models import IIAE, check_fits
from engine.objective import annealing
from engine.run_dir import RunLock, check_output_dir, claim_output_dir
from engine.selection import Selector
from engine.step import TrainState, train_step


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML, e.g. recipes/mnist_cdcb_cpu.yaml")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.max_steps=100")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run in train.output_dir first")


class StopFlag:
    """SIGTERM/SIGINT: finish the current step, checkpoint, exit non-zero. A second signal exits at once (a step
    that never ends, a checkpoint write that hangs): the newest complete checkpoint stays as it was."""

    def __init__(self):
        self.signal = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._set)

    def _set(self, signum, _frame):
        name = signal.Signals(signum).name
        if self.signal is not None:
            _say(f"second {name}: exiting now; the newest complete checkpoint is kept (resume: the same command "
                 "plus --resume)")
            os._exit(128 + signum)
        _say(f"{name}: stopping after this step (a second {name} exits at once)")
        self.signal = signum

    def agreed(self, accelerator: Accelerator) -> bool:
        """All ranks stop at the same step: any rank's signal stops everyone."""
        flag = torch.tensor(float(self.signal is not None), device=accelerator.device)
        if accelerator.num_processes > 1:
            flag = accelerator.reduce(flag, reduction="sum")
        return bool(flag > 0)


def _say(line: str) -> None:
    os.write(2, f"\n{line}\n".encode())  # not print(): a handler may interrupt a print on the same stream


def batch_stream(recipe, info, accelerator: Accelerator, state: TrainState):
    """Micro-batches forever, epoch after epoch, recording the position in `state` for exact resume."""
    while True:
        loader = make_train_loader(recipe, info, rank=accelerator.process_index, world_size=accelerator.num_processes,
                                   epoch=state.data_epoch, skip_batches=state.batch_in_epoch)
        for batch in loader:
            state.batch_in_epoch += 1
            yield batch
        state.data_epoch, state.batch_in_epoch = state.data_epoch + 1, 0


def lr_schedule(optimizer: torch.optim.Optimizer, recipe) -> torch.optim.lr_scheduler.LRScheduler:
    """Learning rate per optimizer step: constant (the paper) or a cosine decay over the run."""
    o, steps = recipe.optim, recipe.train.max_steps
    if o.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=o.lr * o.min_lr_ratio)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def validation_metrics(model: IIAE, recipe, info, device) -> dict:
    from engine import evaluate

    if recipe.data.class_matched:
        return evaluate.sketchy_metrics(model, info, recipe.data.valid_split, device=device)
    return evaluate.paired_metrics(model, info, recipe.data.valid_split, limit=recipe.data.valid_limit, device=device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="engine/train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_intermixed_args(argv)  # overrides may follow --resume
    try:
        return run(args)
    except UserError as err:
        print(f"train: error: {err}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    cfg = recipe.train
    out = check_output_dir(cfg.output_dir, {"data.root": recipe.data.root})
    lock = RunLock(out)  # taken by the main process when it claims the folder; released by end_run
    try:
        return _train(args, recipe, out, lock)
    finally:
        lock.release()


def _train(args: argparse.Namespace, recipe, out: Path, lock: RunLock) -> int:
    cfg = recipe.train
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # without it, CPU ranks do not synchronise gradients
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with=cfg.trackers or None,
        step_scheduler_with_optimizer=False,  # one scheduler step per optimizer step, whatever the rank count
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "tensorboard")),
    )
    main_proc = accelerator.is_main_process
    resume = args.resume or cfg.resume == "auto"

    # ---- run folder, data, model, optimizer ------------------------------------------------------------
    info = load_dataset_info(recipe.data.root, verify=main_proc)
    check_fits(recipe.model, info)
    train_batches_per_epoch(recipe, info, accelerator.num_processes)  # refuses a batch that cannot fit, early
    if main_proc:
        claim_output_dir(out, resume=resume, explicit_resume=args.resume, overwrite=args.overwrite, lock=lock)
        save_recipe(recipe, out / "recipe.yaml")
    accelerator.wait_for_everyone()
    checkpoint = latest_checkpoint(out) if resume else None

    set_seed(recipe.seed)  # identical initial weights on every rank
    model = IIAE(recipe.to_dict())
    set_seed(recipe.seed, device_specific=True)  # different dropout masks per rank
    o = recipe.optim
    optimizer = torch.optim.Adam(model.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    ds = accelerator.state.deepspeed_plugin
    if ds is not None:  # no dataloader goes through prepare(), so DeepSpeed cannot infer the micro-batch
        ds.deepspeed_config["train_micro_batch_size_per_gpu"] = recipe.data.batch_size
    scheduler = lr_schedule(optimizer, recipe)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if cfg.compile:
        model = torch.compile(model)
    state = TrainState(seed=recipe.seed, selector=Selector(cfg.select_after, cfg.exclusive_limit))
    if checkpoint is not None:
        load_checkpoint(accelerator, checkpoint, state)
        accelerator.print(f"resumed from {checkpoint} at step {state.step}")
    raw_model: IIAE = accelerator.unwrap_model(model)

    log = MetricsLog(out / "metrics.jsonl", enabled=main_proc)
    log.truncate_after(state.step)
    if main_proc:
        (out / "samples").mkdir(exist_ok=True)
        backend = kernels.backend(torch.empty(1, device=accelerator.device))
        (out / "run.json").write_text(json.dumps({
            "kernels_backend": backend, "device": str(accelerator.device), "num_processes": accelerator.num_processes,
            "mixed_precision": cfg.mixed_precision, "distributed_type": str(accelerator.distributed_type),
            "torch": torch.__version__, "resumed_from": str(checkpoint) if checkpoint else None,
        }, indent=2))
    accelerator.init_trackers(recipe.name, config=flat_hparams(recipe))
    sample_batch = _sample_batch(recipe, info) if main_proc and info.kind == "image" else None

    # ---- the loop --------------------------------------------------------------------------------------
    stop = StopFlag()
    stream = batch_stream(recipe, info, accelerator, state)
    bar = tqdm(total=cfg.max_steps, initial=state.step, disable=not main_proc, desc=recipe.name, dynamic_ncols=True)
    model.train()
    try:
        while state.step < cfg.max_steps:
            tick = time.perf_counter()
            micro = [next(stream) for _ in range(cfg.gradient_accumulation_steps)]
            terms = train_step(accelerator, model, optimizer, micro, step=state.step, seed=state.next_seed(),
                               check_finite=cfg.check_finite, max_grad_norm=cfg.max_grad_norm)
            scheduler.step()
            state.step += 1
            state.train_seconds += time.perf_counter() - tick
            bar.update(1)

            if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:
                values = {k: v.item() for k, v in terms.items()}
                values.update(lr=scheduler.get_last_lr()[0], c_t=annealing(state.step - 1, recipe.objective.anneal_steps), train_seconds=state.train_seconds,
                              skipped_samples=int(micro[-1].get("skipped", 0)),
                              resized_samples=int(micro[-1].get("resized", 0)))
                accelerator.log({f"train/{k}": v for k, v in values.items()}, step=state.step)
                log.write(state.step, "train", values)
                bar.set_postfix(loss=f"{values['loss']:.4g}", c_t=f"{values['c_t']:.3f}")

            if state.step % cfg.eval_every == 0 or state.step == cfg.max_steps:
                if main_proc:
                    metrics = validation_metrics(raw_model, recipe, info, accelerator.device)
                    metrics["train_seconds"] = state.train_seconds
                    log.write(state.step, "valid", metrics)
                    accelerator.log({f"valid/{k}": v for k, v in metrics.items()}, step=state.step)
                    if cfg.selection == "best" and "recall_at_1_x2y" in metrics and state.selector.update(state.step, metrics):
                        _save_best(raw_model, out, state.step, metrics)
                    bar.write(f"step {state.step}: " + "  ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
                    plot_curves(out / "metrics.jsonl", out / "curves.png", title=recipe.name)
                accelerator.wait_for_everyone()

            if sample_batch is not None and state.step % cfg.sample_every == 0:
                _save_samples(raw_model, sample_batch, out / "samples" / f"step_{state.step:07d}.png", accelerator.device)

            stopping = stop.agreed(accelerator)
            if state.step % cfg.checkpoint_every == 0 or state.step == cfg.max_steps or stopping:
                save_checkpoint(accelerator, out, state.step, cfg.keep_checkpoints, state)
            if stopping:
                bar.close()
                name = signal.Signals(stop.signal).name if stop.signal else "a signal on another rank"
                accelerator.print(f"stopped by {name} after step {state.step}; checkpoint saved in {out / 'checkpoints'}.\n"
                                  f"resume with: the same command plus --resume")
                return end_run(accelerator, 128 + (stop.signal or signal.SIGTERM), lock)
    except BaseException:  # the error line goes below the bar, not above it
        bar.close()
        raise

    bar.close()
    if main_proc:
        if cfg.selection == "last" or state.selector.best_step is None:
            if cfg.selection == "best":
                accelerator.print("warning: no validation point met the selection rule; saving the final weights")
            _save_best(raw_model, out, state.step, {"selection": "last"})
        plot_curves(out / "metrics.jsonl", out / "curves.png", title=recipe.name)
        accelerator.print(f"done: {state.step} steps, {state.train_seconds:.1f} s of training; model in {out / 'best'}")
    return end_run(accelerator, 0, lock)


def end_run(accelerator: Accelerator, code: int, lock: RunLock | None = None) -> int:
    """Ends the run on every rank: trackers finished, process group destroyed, exit code `code`.

    DDP keeps its gloo process group alive past `destroy_process_group` (torch leaks it), and the group's
    threads can abort the interpreter's teardown: SIGABRT, "terminate called without an active exception",
    after the run has written everything. A worker of a multi-process run therefore leaves without it.
    """
    several = accelerator.num_processes > 1
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if lock is not None:
        lock.release()
    if several:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _save_best(model: IIAE, out: Path, step: int, metrics: dict) -> None:
    """Write into a temporary folder, then move each file into best/ atomically, weights before selection.json:
    a crash at any moment leaves a best/ that loads."""
    best, tmp = out / "best", out / "best" / ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    (tmp / "selection.json").write_text(json.dumps({"step": step, **metrics}, indent=2))
    for name in sorted(p.name for p in tmp.iterdir() if p.name != "selection.json") + ["selection.json"]:
        os.replace(tmp / name, best / name)
    tmp.rmdir()


def _sample_batch(recipe, info, n: int = 8) -> dict:
    from engine.data import iter_eval_batches

    return next(iter(iter_eval_batches(info, recipe.data.valid_split, n, image_size=recipe.model.image_size, limit=n)))


def _save_samples(model: IIAE, batch: dict, path: Path, device) -> None:
    from engine.translate import translation_grid

    gen = torch.Generator(device="cpu").manual_seed(0)  # same exclusive draws at every step: comparable grids
    grid = translation_grid(model, batch["x"].to(device), batch["y"].to(device), n_rows=batch["x"].shape[0], generator=gen)
    grid.save(path)


if __name__ == "__main__":
    sys.exit(main())

"""The Trainer: built once from a recipe (`Trainer.build`), one optimizer step (`train_step`), the loop (`fit`).

Accelerate owns devices, DDP, mixed precision, gradient accumulation and DeepSpeed; the data loader is not
passed through `accelerator.prepare` (it already splits shards by rank and worker). What happens around the
steps — metric logging, validation and model selection, sample grids, checkpoints — are components, each owning
its cadence (`due(step)`, `after_step(trainer, terms, micro)`, `end(trainer)`); the trainer only wires them.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Iterator, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed

from iiae.training.checkpoint import Checkpointer, chosen_checkpoint, latest_checkpoint, load_checkpoint, set_aside_after
from iiae.config import Recipe, save_recipe
from iiae.device import resolve_device
from iiae.training.nonfinite import FiniteWatch
from iiae.errors import DataError
from iiae.training.metric_logger import MetricLogger
from iiae.models import IIAE, check_fits, input_kind
from iiae.models.objective import TERMS, annealing, iiae_loss
from iiae.progress import progress_bar
from iiae.training.resume import recipe_changes, stretch_schedule
from iiae.run_dir import RunDir
from iiae.training.run_folder import check_shared_folder, claim_output_dir
from iiae.safe_files import atomic_write
from iiae.training.sample_grids import SampleGrids
from iiae.training.selection import Selector, Validation
from iiae.training.shutdown import StopFlag, end_run
from iiae.training.state import TrainState
from iiae.training.weight_average import WeightAverage


def build_accelerator(recipe: Recipe, run: Optional[RunDir] = None, device: Optional[str] = None) -> Accelerator:
    """The Accelerator of a recipe. Mixed precision: the recipe's `train.mixed_precision` when set (a notice when
    `accelerate launch`/`config` said otherwise), else the launcher's (accelerate reads its environment)."""
    cfg = recipe.train
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    kwargs = dict(
        # without cpu=True, CPU ranks do not synchronise gradients; with it, accelerate ignores DeepSpeed (which
        # runs on CPU through DS_ACCELERATOR=cpu)
        cpu=resolve_device(device).type == "cpu" and not deepspeed,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        step_scheduler_with_optimizer=False,  # one scheduler step per optimizer step, whatever the rank count
    )
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if cfg.mixed_precision is not None:
        kwargs["mixed_precision"] = cfg.mixed_precision
        if launcher not in (None, cfg.mixed_precision) and int(os.environ.get("RANK", "0")) == 0:
            print(f"notice: train.mixed_precision={cfg.mixed_precision} overrides the launcher's {launcher}",
                  file=sys.stderr)
    if run is not None:
        check_trackers_installed(cfg.trackers)
        kwargs.update(log_with=cfg.trackers or None, project_config=ProjectConfiguration(
            project_dir=str(run.root), logging_dir=str(run.tensorboard)))
    try:
        return Accelerator(**kwargs)
    except ValueError:  # a second Trainer in one process with another precision: accelerate's state is global
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(**kwargs)


def check_trackers_installed(trackers: list[str]) -> None:
    """A requested tracker whose package is missing: one line at start (accelerate would drop it or fail later)."""
    from accelerate import utils

    from iiae.errors import UserError

    for name in trackers:
        if not getattr(utils, f"is_{name}_available")():
            keep = [t for t in trackers if t != name]
            raise UserError(f"train.trackers: {name} is not installed here; `pip install {name.replace('_', '-')}`, "
                            f"or leave it out (train.trackers=[{', '.join(keep)}])")


def _cast_buffers_like_parameters(model: torch.nn.Module) -> None:
    dtype = next(model.parameters()).dtype
    for buf in model.buffers():
        if buf.is_floating_point() and buf.dtype != dtype:
            buf.data = buf.data.to(dtype)


def _init_weights(model: IIAE, source: str) -> None:
    """`train.init_from`: the weights of another model with the same architecture, or one line saying why not."""
    from iiae.errors import UserError
    from iiae.models.loading import load_model

    other = load_model(source)
    try:
        model.load_state_dict(other.state_dict(), strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise UserError(f"train.init_from: {source} has another model section than this recipe's ({first}); "
                        "expected a model of the same architecture and sizes") from None


def _resume_changes(recipe: Recipe, run: RunDir, resume: bool, overwrite: bool) -> Optional[dict]:
    """The allowed recipe changes of a resume (refused ones raise before anything is written); None when this
    start resumes nothing. The run's own files a resume reads are checked here too, before anything is written."""
    from iiae.errors import UserError
    from iiae.training.metric_logger import read_tracker_ids
    from iiae.safe_files import refuse_link

    if not resume or overwrite or latest_checkpoint(run.root) is None:
        return None
    refuse_link(run.recipe, "the recipe the run trained with (a YAML file)")
    if not run.recipe.is_file():  # without it the checkpoint's recipe is unknown: no change could be checked
        raise UserError(f"{run.recipe}: missing, so this run cannot be resumed safely (the recipe its checkpoints "
                        "were trained with is unknown); nothing was written: restore the file, or start again with "
                        "--overwrite or train.output_dir=<new folder>")
    changes = recipe_changes(run.read_recipe(), recipe)
    read_tracker_ids(run.tracker_ids)  # a tampered trackers.json: one line now, not after the first writes
    return changes


def lr_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe) -> torch.optim.lr_scheduler.LRScheduler:
    """Learning rate per optimizer step: constant (the paper) or a cosine decay over the run."""
    o, steps = recipe.optim, recipe.train.max_steps
    if o.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=o.lr * o.min_lr_ratio)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def _check_eval_splits(recipe: Recipe, info) -> None:
    """The splits validation reads exist: a missing one fails now, not at the first validation point."""
    for key in ("valid_split", "monitor_split"):
        split = getattr(recipe.data, key)
        if split is None:
            continue
        for domain in (None,) if info.layout == "paired" else ("x", "y"):
            try:
                info.split(split, domain)
            except DataError as err:
                raise DataError(f"data.{key}: {err}") from None


class Trainer:
    def __init__(self, recipe: Recipe, accelerator: Accelerator, model: torch.nn.Module, raw_model: IIAE, optimizer,
                 scheduler, state: TrainState, *, run: Optional[RunDir] = None, info=None):
        self.recipe, self.accelerator, self.model = recipe, accelerator, model
        self.optimizer, self.scheduler, self.state = optimizer, scheduler, state
        # the module that DDP / DeepSpeed / torch.compile wrap, kept from before prepare(): accelerate's
        # unwrap_model imports DeepSpeed whenever it is installed (~3 s per process)
        self.raw_model = raw_model
        self.run, self.info = run, info
        self.lock = run.lock if run is not None else None
        self.components: list = []
        self.logger: Optional[MetricLogger] = None
        self.stopping = False
        self.watch = FiniteWatch() if recipe.train.check_finite else None
        self.finished: Optional[str] = None  # a component's reason to end the run before max_steps
        self.average: Optional[WeightAverage] = None  # optim.ema_decay
        self.bar = None
        channels_last = recipe.model.channels_last and input_kind(recipe.model) == "image"
        self.memory_format = torch.channels_last if channels_last else torch.preserve_format

    @classmethod
    def build(cls, recipe: Recipe, run: Optional[RunDir] = None, *, resume: bool = False,
              explicit_resume: bool = False, overwrite: bool = False, device: Optional[str] = None,
              resume_from: Optional[os.PathLike] = None) -> "Trainer":
        """Accelerator, model, optimizer, schedule and state, once. With `run` (a training run): the data checked
        against the recipe, the run folder claimed and locked, the newest checkpoint (or `resume_from`, one of the
        run's) restored when resuming, and the components. Without (benchmarks, tests): no files, no data;
        `train_step` on batches you give."""
        accelerator = build_accelerator(recipe, run, device)
        main = accelerator.is_main_process
        info, checkpoint, changes = None, None, None
        if run is not None:
            from iiae.data import load_dataset_info, train_batches_per_epoch

            # the main process checks the shards (other ranks only read dataset.json)
            info = load_dataset_info(recipe.data.root, verify=recipe.data.verify_mode if main else "none")
            check_fits(recipe.model, info, notice=main)
            train_batches_per_epoch(recipe, info, accelerator.num_processes)  # refuses a batch that cannot fit
            _check_eval_splits(recipe, info)
            chosen = chosen_checkpoint(run, resume_from) if resume_from is not None else None
            changes = _resume_changes(recipe, run, resume, overwrite)  # before anything is written
            if main:
                claim_output_dir(run.root, resume=resume, explicit_resume=explicit_resume, overwrite=overwrite,
                                 lock=run.lock)
                if chosen is not None:
                    set_aside_after(run, chosen)
                save_recipe(recipe, run.recipe)
            accelerator.wait_for_everyone()
            check_shared_folder(accelerator, run)  # multi-node: every rank must see the same run folder
            checkpoint = chosen or (latest_checkpoint(run.root) if resume else None)

        set_seed(recipe.seed)  # identical initial weights on every rank
        model = IIAE.from_recipe(recipe)
        if recipe.train.init_from and checkpoint is None:
            _init_weights(model, recipe.train.init_from)
            accelerator.print(f"initialised the weights from {recipe.train.init_from}")
        if recipe.model.channels_last:
            model = model.to(memory_format=torch.channels_last)
        set_seed(recipe.seed, device_specific=True)  # different dropout masks per rank
        o = recipe.optim
        optimizer = torch.optim.Adam(model.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
        ds = accelerator.state.deepspeed_plugin
        if ds is not None:  # no dataloader goes through prepare(), so DeepSpeed cannot infer the micro-batch
            ds.deepspeed_config["train_micro_batch_size_per_gpu"] = recipe.data.batch_size
            if ds.deepspeed_config.get("gradient_clipping") == "auto":  # accelerate would fill in 1.0
                ds.deepspeed_config["gradient_clipping"] = recipe.train.max_grad_norm or 0.0  # 0: off, as in DDP
        raw_model = model
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, lr_schedule(optimizer, recipe))
        if ds is not None:  # DeepSpeed bf16/fp16 casts the parameters only; BatchNorm needs its statistics alike
            _cast_buffers_like_parameters(raw_model)
        launcher_compiles = accelerator.state.dynamo_plugin.backend.value.lower() != "no"
        if recipe.train.compile and launcher_compiles:
            accelerator.print("notice: the launcher's dynamo_backend already compiles the model; train.compile is "
                              "not applied a second time")
        elif recipe.train.compile:  # the model only: the loss and c_t stay outside, so steps never recompile it
            model = torch.compile(model, backend=recipe.train.compile_backend)
        cfg = recipe.train
        selector = Selector(cfg.select_after, cfg.exclusive_limit, cfg.exclusive_max_hits)
        state = TrainState(seed=recipe.seed, selector=selector)
        if checkpoint is not None:
            load_checkpoint(accelerator, checkpoint, state)
            stretch_schedule(scheduler, recipe)
            accelerator.print(f"resumed from {checkpoint} at step {state.step}")
            for key, (before, after) in (changes or {}).items():
                accelerator.print(f"notice: resumed with {key} = {after!r} (the run had {before!r})")
        trainer = cls(recipe, accelerator, model, raw_model, optimizer, scheduler, state, run=run, info=info)
        if run is not None:
            trainer._attach_components(checkpoint, changes)
        return trainer

    @property
    def eval_model(self) -> IIAE:
        """The weights validation, sample grids and the saved model read: the average when there is one."""
        return self.average.module if self.average is not None else self.raw_model

    def _attach_components(self, checkpoint, changes=None) -> None:
        recipe, run, acc, cfg = self.recipe, self.run, self.accelerator, self.recipe.train
        if recipe.optim.ema_decay is not None:
            if acc.state.deepspeed_plugin is not None:
                from iiae.errors import UserError

                raise UserError("optim.ema_decay: not available with DeepSpeed (its ZeRO stages cast or shard the "
                                "weights the average reads); expected optim.ema_decay: null, or a launch without it")
            self.average = WeightAverage(self.raw_model, recipe.optim.ema_decay)
            if checkpoint is not None:
                self.average.load(checkpoint)
        if acc.is_main_process:
            from iiae import kernels

            atomic_write(run.run_info, json.dumps({
                "kernels_backend": kernels.backend(torch.empty(1, device=acc.device)), "device": str(acc.device),
                "num_processes": acc.num_processes, "mixed_precision": acc.mixed_precision,
                "distributed_type": str(acc.distributed_type), "torch": torch.__version__,
                "resumed_from": str(checkpoint) if checkpoint else None,
                "recipe_changes": {k: list(v) for k, v in (changes or {}).items()},
            }, indent=2), "the run's run.json")
        acc.print(f"{recipe.name}: {acc.num_processes} process(es) on {acc.device}, mixed precision "
                  f"{acc.mixed_precision}, compile {'on' if cfg.compile else 'off'}")
        self.logger = MetricLogger(acc, run.train_log, recipe, resumed_step=self.state.step, run_ids=run.tracker_ids)
        self.components = [
            *([self.average] if self.average is not None else []),  # first: validation reads this step's average
            self.logger,
            Validation(recipe, self.info, run.best),
            SampleGrids(recipe, self.info, run.sample_grid, acc.is_main_process),
            Checkpointer(run.root, cfg.checkpoint_every, cfg.keep_checkpoints, cfg.max_steps),
        ]

    # ---- one optimizer step ------------------------------------------------------------------------------------
    def train_step(self, micro_batches: list[dict]) -> dict[str, torch.Tensor]:
        """Forward, loss, backward over `gradient_accumulation_steps` micro-batches, one optimizer update and one
        scheduler step. The loss terms come back averaged over micro-batches (tensors, no sync), with `c_t`.

        The noise of global row i (micro-batch m, rank r, B rows each: i = (m·world + r)·B + local row) is a
        function of (step seed, i) only, so 1 rank × batch 8, 2 ranks × 4 and 2 accumulation steps × 4 draw the
        same noise for the same rows. c_t is computed here, outside the (possibly compiled) model."""
        acc, cfg, step = self.accelerator, self.recipe.train, self.state.step
        world, rank = acc.num_processes, acc.process_index
        c_t = annealing(step, self.recipe.objective.anneal_steps)
        seed = self.state.next_seed()
        total = None
        for m, batch in enumerate(micro_batches):
            x, y = (batch[k].to(acc.device, non_blocking=True, memory_format=self.memory_format) for k in "xy")
            with acc.accumulate(self.model):
                out = self.model(x, y, seed=seed, row_offset=(m * world + rank) * x.shape[0])
                loss, terms = iiae_loss(self.recipe.objective, c_t, x, y, out)
                # one tensor of the loss and its terms, watched and summed: a few ops per step, not a few per term
                values = torch.stack([loss, *(terms[n] for n in TERMS)]).detach().float()
                if self.watch is not None:
                    self.watch.observe(step, values)
                acc.backward(loss)
                if cfg.max_grad_norm is not None and acc.sync_gradients:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            total = values if total is None else total + values
        self.scheduler.step()
        self.state.step += 1
        totals = dict(zip(("loss", *TERMS), (total / len(micro_batches)).unbind()))
        totals["c_t"] = torch.tensor(c_t, dtype=torch.float64)  # logged as computed
        return totals

    # ---- the loop ----------------------------------------------------------------------------------------------
    def batches(self) -> Iterator[dict]:
        """Micro-batches forever, epoch after epoch, recording the position in the state for exact resume."""
        from iiae.data import make_train_loader

        acc, state = self.accelerator, self.state
        while True:
            loader = make_train_loader(self.recipe, self.info, rank=acc.process_index, world_size=acc.num_processes,
                                       epoch=state.data_epoch, skip_batches=state.batch_in_epoch)
            for batch in loader:
                state.batch_in_epoch += 1
                yield batch
            state.data_epoch, state.batch_in_epoch = state.data_epoch + 1, 0

    def _catch_up(self) -> None:
        if self.watch is not None:
            self.watch.check(self.accelerator, self.state.step)
        if self.accelerator.device.type == "cuda":
            torch.cuda.synchronize(self.accelerator.device)

    def fit(self) -> int:
        """Train to `train.max_steps` (or until a component sets `finished`); returns the exit code (0, or
        128 + signal after a stop)."""
        cfg, acc, state = self.recipe.train, self.accelerator, self.state
        stop, stream = StopFlag(), self.batches()
        self.bar = progress_bar(total=cfg.max_steps, initial=state.step, disable=not acc.is_main_process,
                                desc=self.recipe.name, dynamic_ncols=True)
        self.model.train()
        try:
            while state.step < cfg.max_steps:
                tick = time.perf_counter()
                micro = [next(stream) for _ in range(cfg.gradient_accumulation_steps)]
                terms = self.train_step(micro)
                # host syncs only where a component acts: the stop agreement of several ranks, the finite check
                # before anything is logged or written, and the device catching up (inside train_seconds)
                sync_point = any(component.due(state.step) for component in self.components)
                self.stopping = stop.agreed(acc, sync_point)
                if sync_point or self.stopping:
                    self._catch_up()
                state.train_seconds += time.perf_counter() - tick
                self.bar.update(1)
                for component in self.components:
                    component.after_step(self, terms, micro)
                if self.finished:
                    break
                if self.stopping:
                    self.bar.close()
                    acc.print(f"stopped by {stop.name} after step {state.step}; checkpoint saved in "
                              f"{self.run.checkpoints}.\nresume with: the same command plus --resume")
                    return end_run(acc, stop.exit_code, self.lock)
        finally:  # an error line goes below the bar, not above it
            self.bar.close()
        for component in self.components:
            component.end(self)
        why = f" ({self.finished})" if self.finished else ""
        acc.print(f"done: {state.step} steps{why}, {state.train_seconds:.1f} s of training; model in {self.run.best}")
        return end_run(acc, 0, self.lock)

"""Runs the Trainer's `train_step` on a fixed global batch of 8 rows split over ranks and accumulation steps.

    python tests/ddp_harness.py OUT.json ACCUM        (or under torchrun)

BatchNorm uses its (frozen) running statistics and dropout is off, so that 1 rank × 8, 1 rank × 2 × 4,
2 ranks × 4 and 2 nodes × 4 see exactly the same computation; the noise is keyed by (step seed, global row)
in the engine. Rank 0 writes the mean loss per step and a checksum of the weights.
"""
import json
import sys
from pathlib import Path

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from iiae.config import load_recipe
from iiae.training.shutdown import end_run
from iiae.training.trainer import Trainer

GLOBAL_BATCH, STEPS = 8, 4


def main(out: str, accum: int) -> None:
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes/debug.yaml",
                         ["model.dropout=0", "optim.lr=1e-3", f"train.gradient_accumulation_steps={accum}"])
    trainer = Trainer.build(recipe, device="cpu")
    acc = trainer.accelerator
    for m in trainer.model.modules():
        if isinstance(m, _BatchNorm):
            m.eval()
    g = torch.Generator().manual_seed(1)
    X = torch.rand(STEPS, GLOBAL_BATCH, 3, 32, 32, generator=g) * 2 - 1
    Y = torch.rand(STEPS, GLOBAL_BATCH, 3, 32, 32, generator=g) * 2 - 1
    world, rank = acc.num_processes, acc.process_index
    micro = GLOBAL_BATCH // (world * accum)
    losses = []
    for t in range(STEPS):
        # micro-batch m of rank r holds global rows (m·world + r)·micro ...: the engine's row convention
        chunks = [slice((m * world + rank) * micro, (m * world + rank + 1) * micro) for m in range(accum)]
        terms = trainer.train_step([{"x": X[t, c], "y": Y[t, c]} for c in chunks])
        losses.append(acc.reduce(terms["loss"], reduction="mean").item())
    checksum = sum(p.double().sum().item() for p in trainer.raw_model.parameters())
    sums = acc.gather(torch.tensor([checksum], dtype=torch.float64)).tolist()
    if acc.is_main_process:
        Path(out).write_text(json.dumps({"world": world, "accum": accum, "losses": losses, "checksums": sums}))
    end_run(acc, 0)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))

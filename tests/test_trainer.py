"""The Trainer in-process: built once without a run folder, one step at a time (what benchmarks drive)."""
from pathlib import Path

import pytest
import torch

from engine.config import load_recipe
from engine.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def _batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.rand(8, 3, 32, 32, generator=g) * 2 - 1, "y": torch.rand(8, 3, 32, 32, generator=g) * 2 - 1}


def test_train_step_advances_state_and_reports_c_t():
    trainer = Trainer.build(load_recipe(ROOT / "recipes/debug.yaml"), device="cpu")
    before = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    first = trainer.train_step([_batch()])
    second = trainer.train_step([_batch()])
    assert trainer.state.step == 2
    assert float(first["c_t"]) == 0.0 and float(second["c_t"]) == pytest.approx(1 - torch.exp(torch.tensor(-0.01)))
    assert {"loss", "recon_x", "kl_ry", "c_t"} <= set(first)
    assert any(not torch.equal(before[k], v) for k, v in trainer.raw_model.state_dict().items())


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_model_never_recompiles_after_warm_up(backend):
    """Step, noise seed and c_t change every step; after two warm-up steps (the seed becomes a dynamic int),
    22 more steps compile nothing new."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    recipe = load_recipe(ROOT / "recipes/debug.yaml", ["train.compile=true", f"train.compile_backend={backend}"])
    trainer = Trainer.build(recipe, device="cpu")
    batch = [_batch()]
    for _ in range(2):
        trainer.train_step(batch)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0  # it did compile
    seen = set()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(22):
            terms = trainer.train_step(batch)
            seen.add(float(terms["c_t"]))
    assert counters["stats"]["unique_graphs"] == graphs
    assert len(seen) == 22 and trainer.state.step == 24

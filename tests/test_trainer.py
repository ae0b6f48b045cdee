"""The Trainer in-process: built once without a run folder, one step at a time (what benchmarks drive)."""
import sys
from pathlib import Path

import pytest
import torch

from iiae.config import load_recipe
from iiae.training.nonfinite import TrainingDiverged
from iiae.training.trainer import Trainer

pytestmark = pytest.mark.integration  # trains or starts processes: not in `make test-unit`

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


HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__")


def test_train_step_reads_nothing_back_from_the_device(monkeypatch):
    """The finite check folds into device tensors; no engine or kernel code converts a tensor to a Python value
    (a host sync on CUDA) inside a step. Only the FiniteWatch.check at a logging step reads it, and raises then."""
    trainer = Trainer.build(load_recipe(ROOT / "recipes/debug.yaml"), device="cpu")
    trainer.train_step([_batch()])  # first step: lazy state
    reads = []
    ours = (str(ROOT / "engine"), str(ROOT / "kernels"))
    for name in HOST_READS:
        def spy(self, *args, _original=getattr(torch.Tensor, name), _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            # the step seed comes from the state's CPU generator: no device involved
            if caller.startswith(ours) and sys._getframe(1).f_code.co_name != "next_seed":
                reads.append(f"{_name} from {caller}:{sys._getframe(1).f_lineno}")
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, spy)
    bad = _batch(1)
    bad["x"][0, 0, 0, 0] = float("nan")
    trainer.train_step([_batch(2)])
    trainer.train_step([bad])
    trainer.train_step([_batch(3)])
    monkeypatch.undo()
    assert reads == []
    bad_terms = "recon_x, recon_y, kl_x, kl_s, kl_rx, kl_ry"  # a NaN pixel of x: everything but kl_y
    with pytest.raises(TrainingDiverged, match=rf"not finite at step 2 \(offending term: {bad_terms}\)"):
        trainer.watch.check(trainer.accelerator, trainer.state.step)


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


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state; each case here starts from none, and leaves none."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("recipe_value, launcher, effective, notice", [
    (None, None, "no", False),      # plain python: fp32
    (None, "bf16", "bf16", False),  # accelerate launch --mixed_precision bf16 / accelerate config
    ("no", "bf16", "no", True),     # the recipe wins, and says so
    ("bf16", None, "bf16", False),
])
def test_mixed_precision_follows_the_launcher_unless_the_recipe_sets_it(
        fresh_accelerate_state, monkeypatch, capsys, recipe_value, launcher, effective, notice):
    if launcher is None:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    else:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
    overrides = [] if recipe_value is None else [f"train.mixed_precision='{recipe_value}'"]
    trainer = Trainer.build(load_recipe(ROOT / "recipes/debug.yaml", overrides), device="cpu")
    assert trainer.accelerator.mixed_precision == effective
    assert ("overrides the launcher's" in capsys.readouterr().err) == notice


def test_launcher_compile_and_train_compile_never_compile_twice(fresh_accelerate_state, monkeypatch, capsys):
    from torch._dynamo.eval_frame import OptimizedModule

    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "aot_eager")  # what `accelerate launch --dynamo_backend` sets
    trainer = Trainer.build(load_recipe(ROOT / "recipes/debug.yaml", ["train.compile=true"]), device="cpu")
    assert isinstance(trainer.model, OptimizedModule) and not isinstance(trainer.model._orig_mod, OptimizedModule)
    assert "already compiles the model" in capsys.readouterr().out


@pytest.mark.parametrize("overrides", [["train.mixed_precision=bf16"], ["model.channels_last=true"],
                                       ["train.mixed_precision=bf16", "model.channels_last=true"]])
def test_fast_settings_train_close_to_fp32(fresh_accelerate_state, overrides):
    """bf16 autocast and channels-last run the same step: the first losses stay within bf16 rounding of fp32,
    the KL terms stay fp32 (the kernels' contract under autocast), and training moves."""
    recipe = ROOT / "recipes/debug.yaml"
    base = Trainer.build(load_recipe(recipe, ["model.dropout=0"]), device="cpu")
    ref = [float(base.train_step([_batch(i)])["loss"]) for i in range(3)]
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    fast = Trainer.build(load_recipe(recipe, ["model.dropout=0", *overrides]), device="cpu")
    if "model.channels_last=true" in overrides:
        conv = next(p for p in fast.raw_model.parameters() if p.dim() == 4)
        assert conv.is_contiguous(memory_format=torch.channels_last)
    steps = [fast.train_step([_batch(i)]) for i in range(3)]
    assert all(t["kl_s"].dtype == torch.float32 and t["loss"].dtype == torch.float32 for t in steps)
    got = [float(t["loss"]) for t in steps]
    assert got == pytest.approx(ref, rel=0.02)  # bf16 keeps 8 bits of mantissa: ~0.4 % per rounding
    assert got[0] != got[2]

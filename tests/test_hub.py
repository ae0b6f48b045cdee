"""Hub round trip with the client mocked at its boundary (no network), the model card, strict loading."""
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from huggingface_hub import HfApi
from PIL import Image
from safetensors.torch import load_file, save_file

from iiae import cli
from iiae.config import load_recipe, save_recipe
from iiae.errors import UserError
from iiae.hub.push import model_card, push
from iiae.models import IIAE

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
METRICS = {"model": "run", "dataset": "mnist-cdcb", "split": "test", "recall_at_1_x2y": 0.9844,
           "recall_at_1_y2x": 0.975, "exclusive_recall_at_1_x2y": 0.0011, "exclusive_recall_at_1_y2x": 0.0012, "n": 64}


def _run_dir(tmp_path: Path, metrics=True, samples=True) -> Path:
    torch.manual_seed(0)
    recipe = load_recipe(RECIPES / "debug.yaml")
    run = tmp_path / "run"
    IIAE.from_recipe(recipe).save_pretrained(run / "best")
    (run / "best" / "selection.json").write_text(json.dumps({"step": 12, "score": 1.9}))
    save_recipe(recipe, run / "recipe.yaml")
    if metrics:
        (run / "eval_results.json").write_text(json.dumps(METRICS))
    if samples:
        (run / "samples").mkdir()
        Image.new("RGB", (8, 8)).save(run / "samples" / "step_000012.png")
        Image.new("RGB", (8, 8)).save(run / "samples" / "step_000012_swap.png")
    return run


def test_model_card_contents(tmp_path):
    run = _run_dir(tmp_path)
    card = model_card(run, "alice/iiae-debug")
    front = card.split("---")[1]
    assert yaml.safe_load(front)["library_name"] == "iiae"
    assert "# iiae-debug" in card
    assert "| recall_at_1_x2y | 0.9844 |" in card and "| n | 64 |" in card
    assert "| 0.2 | 1 | 5 |" in card  # beta, Lambda, lambda_paper = Lambda / beta
    assert "mnist-cdcb" in card and "CB: a white digit on a coloured background" in card
    # the usage block: three lines of Python that load and translate
    usage = re.search(r"```python\n(.*?)```", card, re.S).group(1).strip().splitlines()
    assert len(usage) == 3 and 'IIAE.from_pretrained("alice/iiae-debug")' in usage[1] and "translate" in usage[2]
    # the resolved recipe, parseable back to the same dict
    recipe_block = re.search(r"```yaml\n(.*?)```", card, re.S).group(1)
    assert yaml.safe_load(recipe_block) == load_recipe(run / "recipe.yaml").to_dict()
    assert "@inproceedings{hwang2020variational" in card
    assert "Variational Interaction Information Maximization for Cross-domain Disentanglement" in card
    assert "Hwang, HyeongJoo and Kim, Geon-Hyeong and Hong, Seunghoon and Kim, Kee-Eung" in card
    assert "![translations](translation_grid.png)" in card


def test_model_card_without_metrics_or_samples(tmp_path):
    card = model_card(_run_dir(tmp_path, metrics=False, samples=False), "bob/m")
    assert "Not evaluated yet" in card and "translation_grid.png" not in card


def test_push_uploads_one_commit(tmp_path, hub):
    run = _run_dir(tmp_path)
    url = push(run, "alice/iiae-debug", private=True, token="hf_test")
    assert url.endswith("/commit/abc123")
    assert hub["repo"] == [("alice/iiae-debug", {"private": True, "exist_ok": True, "repo_type": "model"})]
    assert len(hub["commit"]) == 1
    repo_id, files, _ = hub["commit"][0]
    assert sorted(files) == sorted(["config.json", "model.safetensors", "selection.json", "README.md", "eval_results.json",
                                    "translation_grid.png", "swap_grid.png"])
    assert files["README.md"].decode() == model_card(run, "alice/iiae-debug")
    assert files["model.safetensors"] == (run / "best" / "model.safetensors").read_bytes()
    recipe = load_recipe(run / "recipe.yaml").to_dict()
    # the model's own sections only: no local paths (data.root, train.output_dir) on the Hub
    assert json.loads(files["config.json"]) == {"model": recipe["model"], "objective": recipe["objective"]}
    assert files["translation_grid.png"] == (run / "samples" / "step_000012.png").read_bytes()


def test_push_cli(tmp_path, hub, capsys):
    run = _run_dir(tmp_path, samples=False)
    assert cli.main(["push", str(run), "--repo-id", "alice/m"]) == 0
    assert "alice/m" in capsys.readouterr().out
    assert hub["repo"][0][1]["private"] is False
    assert "translation_grid.png" not in hub["commit"][0][1]


def test_push_errors_are_one_line(tmp_path, hub, monkeypatch, capsys):
    assert cli.main(["push", str(tmp_path / "nope"), "--repo-id", "alice/m"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="best"):
        push(tmp_path / "empty", "alice/m")
    from unittest.mock import Mock

    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    for err, first_line in [(HfHubHTTPError("401 Client Error: Unauthorized\ndetail", response=Mock()), "401 Client"),
                            (OfflineModeIsEnabled("Cannot reach the Hub: offline mode is enabled."), "Cannot reach")]:
        def fail(self, repo_id, err=err, **kw):
            raise err

        monkeypatch.setattr(HfApi, "create_repo", fail)
        with pytest.raises(UserError, match=f"push to alice/m failed: {first_line}") as info:
            push(_run_dir(tmp_path / first_line), "alice/m")
        assert "\n" not in str(info.value)
    assert hub["commit"] == []


def _saved(tmp_path: Path) -> tuple[IIAE, Path]:
    torch.manual_seed(0)
    model = IIAE.from_recipe(load_recipe(RECIPES / "debug.yaml"))
    # non-trivial BN statistics, so the buffers are checked too
    model.train()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "model"
    model.save_pretrained(path)
    return model.eval(), path


def test_save_reload_is_bitwise_equal(tmp_path):
    model, path = _saved(tmp_path)
    loaded = IIAE.from_pretrained(path)
    assert not loaded.training
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    y = torch.rand(4, 3, 32, 32) * 2 - 1
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(model.encode_shared(x, "x"), loaded.encode_shared(x, "x"))
    assert torch.equal(model.encode_exclusive(y, "y"), loaded.encode_exclusive(y, "y"))
    t1 = model.translate(x, "y", n=3, generator=torch.Generator().manual_seed(1))
    t2 = loaded.translate(x, "y", n=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(t1, t2)
    with torch.no_grad():
        assert torch.equal(model(x, y).x_hat, loaded(x, y).x_hat)


def _tamper(path: Path, tmp_path: Path, name: str, change) -> Path:
    out = tmp_path / name
    shutil.copytree(path, out)
    tensors = load_file(out / "model.safetensors")
    change(tensors)
    save_file(tensors, out / "model.safetensors")
    return out


def test_strict_loading_rejects_missing_and_extra_tensors(tmp_path):
    _, path = _saved(tmp_path)
    missing = _tamper(path, tmp_path, "missing", lambda t: t.pop("parts.r_head.x.conv.weight"))
    with pytest.raises(UserError, match="tensor parts.r_head.x.conv.weight is missing from model.safetensors"):
        IIAE.from_pretrained(missing)
    extra = _tamper(path, tmp_path, "extra", lambda t: t.__setitem__("parts.spare.weight", torch.zeros(3)))
    with pytest.raises(UserError, match="tensor parts.spare.weight is not in the model config.json declares"):
        IIAE.from_pretrained(extra)


def test_strict_loading_rejects_a_config_that_does_not_match(tmp_path):
    from iiae.models.loading import load_model

    _, path = _saved(tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["model"]["z_shared"] = 8
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"tensor parts\..* is shape \[.*\] in model.safetensors, \[.*\] in config.json"):
        IIAE.from_pretrained(path)
    with pytest.raises(UserError, match="the config and the weights are of different models") as err:
        load_model(path)
    assert "\n" not in str(err.value)
    config["model"]["no_such_key"] = 1
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="no_such_key: unknown key"):
        IIAE.from_pretrained(path)


def test_an_unreachable_hub_fails_in_one_attempt(monkeypatch):
    import socket

    from huggingface_hub import constants

    from iiae.errors import UserError
    from iiae.models.loading import load_model

    with socket.socket() as s:  # a local port nobody listens on: the connection is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(UserError, match=rf"alice/none: not in the local Hugging Face cache, .*127.0.0.1:{port} "
                                        "unreachable"):
        load_model("alice/none")


def test_the_card_is_a_model_card_with_a_model_index(tmp_path):
    from huggingface_hub import ModelCard

    run = _run_dir(tmp_path)
    (run / "best" / "selection.json").write_text(json.dumps({"step": 12, "train_seconds": 90.0}))
    (run / "run.json").write_text(json.dumps({"device": "cpu", "num_processes": 2, "mixed_precision": "no",
                                              "torch": "2.13.0+cpu"}))
    (tmp_path / "README.md").write_text(model_card(run, "alice/iiae-debug"))
    card = ModelCard.load(tmp_path / "README.md")
    assert (card.data.library_name, card.data.license, card.data.datasets) == ("iiae", "apache-2.0", ["mnist-cdcb"])
    assert "arxiv:2012.04251" in card.data.tags and card.data.model_name == "iiae-debug"
    got = {r.metric_name: (r.metric_value, r.dataset_name, r.dataset_split) for r in card.data.eval_results}
    assert got["Recall@1 X→Y (shared codes)"] == (0.9844, "mnist-cdcb", "test")
    assert got["Recall@1 Y→X (exclusive codes, ablation)"] == (0.0012, "mnist-cdcb", "test")
    assert len(got) == 4  # exactly the indexed metrics eval_results.json holds
    for section in ("## Install", "## Preprocessing", "## Usage", "## Training", "## Limitations", "## Citation"):
        assert section in card.text
    assert "step 12 after 1.5 min of training on 2 × cpu" in card.text and "resized to 32×32" in card.text
    (run / "best" / "selection.json").write_text(json.dumps({"step": 12, "selection": "last", "train_seconds": 60.0,
                                                            "reason": "no validation point met the selection rule"}))
    text = model_card(run, "alice/iiae-debug")
    assert "The final weights (step 12; no validation point met the selection rule) after 1.0 min of training" in text
    assert "Selected at" not in text


def test_save_pretrained_and_push_to_hub_write_the_same_kind_of_card(tmp_path, hub, monkeypatch):
    from huggingface_hub import ModelCard

    def upload_folder(self, *, repo_id, folder_path, **kw):  # push_to_hub's one upload, recorded
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        hub["commit"].append((repo_id, files, kw))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/abc123")

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)

    torch.manual_seed(0)
    model = IIAE.from_recipe(load_recipe(RECIPES / "debug.yaml"))
    model.save_pretrained(tmp_path / "m")
    card = ModelCard.load(tmp_path / "m" / "README.md")
    assert card.data.library_name == "iiae" and "arxiv:2012.04251" in card.data.tags
    assert "More Information Needed" not in card.text and "## Preprocessing" in card.text
    model.push_to_hub("alice/pushed")
    (_, files, _), = hub["commit"]
    pushed = files["README.md"].decode()
    assert pushed.startswith("---") and "# pushed" in pushed and 'IIAE.from_pretrained("alice/pushed")' in pushed

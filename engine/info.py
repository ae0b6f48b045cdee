"""`iiae info RECIPE [a.b=v ...] [--json]`: a summary, parameter counts, latent shapes, then the whole resolved
recipe (every key, after the overrides), so an override can be confirmed before training."""
from __future__ import annotations

import argparse
import json

from iiae.config import load_recipe


# model options printed only where a recipe leaves the paper's value
PAPER_OPTIONS = {"shared_input_norm": "none", "decoder_conditioning": "concat", "exclusive_maps": [],
                 "shared_code_norm": "none"}

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML or shipped recipe name, e.g. recipes/mnist_cdcb.yaml or mnist_cdcb")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def summary(recipe) -> dict:
    from iiae.models import IIAE, input_kind

    model = IIAE.from_recipe(recipe)
    z_shared, z_exclusive = model.latent_shapes()
    counts = model.parameter_counts()
    obj = recipe.objective
    return {
        "name": recipe.name,
        "arch": recipe.model.arch,
        "model": recipe.model.model_dump(),
        "input": input_kind(recipe.model),
        "parameters": counts["total"],
        "parameters_per_part": {k: v for k, v in counts.items() if k != "total"},
        "z_shared": z_shared,
        "z_exclusive": z_exclusive,
        "beta": obj.beta,
        "Lambda": obj.Lambda,
        "lambda_paper": obj.lambda_paper,
        "recon": obj.recon,
        "recon_weight": obj.recon_weight,
        "recon_weight_y": obj.recon_weight_y,
        "anneal_steps": obj.anneal_steps,
        "batch_size": recipe.data.batch_size,
        "max_steps": recipe.train.max_steps,
        "data_root": recipe.data.root,
        "output_dir": recipe.train.output_dir,
        "recipe": recipe.to_dict(),
    }


def run(args: argparse.Namespace) -> int:
    info = summary(load_recipe(args.recipe, args.overrides))
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"recipe      {info['name']}  (arch {info['arch']})")
    m = info["model"]
    inputs = (f"{m['feature_dim']}-d features" if info["input"] == "feature" else
              f"{m['image_size']} px  channels shared {m['shared_channels']} exclusive {m['exclusive_channels']}")
    options = [f"{key} {m[key]}" for key, paper in PAPER_OPTIONS.items() if m[key] != paper]
    print(f"model       {inputs}  dropout {m['dropout']:g}" + "".join(f"  {o}" for o in options))
    print(f"objective   beta={info['beta']}  Lambda={info['Lambda']}  lambda_paper={info['lambda_paper']:g}  "
          f"recon={info['recon']} x{info['recon_weight']:g}"
          + (f" (y x{info['recon_weight_y']:g})" if info["recon_weight_y"] is not None else "")
          + f"  anneal={info['anneal_steps']} steps")
    exclusive = info["z_exclusive"]  # one shape when both domains agree
    exclusive = exclusive["x"] if exclusive["x"] == exclusive["y"] else "  ".join(f"{d} {s}" for d, s in exclusive.items())
    print(f"latents     z_shared {info['z_shared']}  z_exclusive {exclusive}")
    print(f"data        {info['data_root']}  batch {info['batch_size']}")
    print(f"train       {info['max_steps']} steps -> {info['output_dir']}")
    print("parameters")
    for part, n in info["parameters_per_part"].items():
        print(f"  {part:<10} {n:>12,}")
    print(f"  {'total':<10} {info['parameters']:>12,}")
    print("resolved recipe")
    print("\n".join(f"  {line}" for line in _yaml_text(info["recipe"]).splitlines()))
    return 0


def _yaml_text(recipe: dict) -> str:
    """Sections as blocks, lists on one line ([32, 64]): the way the recipes are written."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
    return yaml.dump(recipe, Dumper=Dumper, sort_keys=False)

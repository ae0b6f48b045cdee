"""Train an IIAE recipe.

    accelerate launch [--config_file recipes/accelerate/X.yaml] engine/train.py recipes/Y.yaml [a.b=v ...]
    torchrun --nproc_per_node N engine/train.py recipes/Y.yaml ...      python engine/train.py ...      iiae train ...

The recipe is loaded and checked, the run folder named; `iiae.training.trainer.Trainer` does the rest.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the installed package `iiae`, never sibling modules
    del sys.path[0]
    try:
        import iiae  # noqa: F401
    except ImportError:
        sys.exit(f"{sys.argv[0]}: the package `iiae` is not installed in {sys.executable}: run `pip install -e .` "
                 "(or `make setup`) in the checkout first")

from iiae.config import load_recipe
from iiae.data.location import is_remote
from iiae.errors import UserError
from iiae.run_dir import RunDir
from iiae.training.run_folder import check_output_dir
from iiae.training.trainer import Trainer


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML or shipped recipe name, e.g. recipes/mnist_cdcb_cpu.yaml or "
                                  "mnist_cdcb_cpu (`iiae recipes`)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.max_steps=100")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from the newest complete checkpoint, or from CHECKPOINT (one of the run's; newer "
                        "ones are kept as abandoned-checkpoint_N)")
    p.add_argument("--overwrite", action="store_true", help="replace this engine's run in train.output_dir first")


def run(args: argparse.Namespace) -> int:
    if isinstance(args.resume, str) and "=" in args.resume and not Path(args.resume).exists():
        args.overrides.append(args.resume)  # `--resume a.b=v`: an override after a bare --resume
        args.resume = True
    recipe = load_recipe(args.recipe, args.overrides)
    local_data = {} if is_remote(recipe.data.root) else {"data.root": recipe.data.root}
    run_dir = RunDir(check_output_dir(recipe.train.output_dir, local_data))
    try:
        chosen = args.resume if isinstance(args.resume, str) else None
        trainer = Trainer.build(recipe, run_dir, resume=bool(args.resume) or recipe.train.resume == "auto",
                                explicit_resume=bool(args.resume), overwrite=args.overwrite, resume_from=chosen)
        return trainer.fit()
    finally:
        run_dir.lock.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="engine/train.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_intermixed_args(argv)  # overrides may follow --resume
    try:
        return run(args)
    except UserError as err:
        print(f"train: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())

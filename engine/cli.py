"""`iiae` command line: one subcommand per module, each with `add_arguments(parser)` and `run(args) -> int`.

User errors (recipe, data, checkpoint, arguments) print one line on stderr and exit 2; nothing written
before the error is removed.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from iiae.errors import UserError
from iiae.version import installed_version

# subcommand → (module, one-line help); modules are imported only when their command runs
COMMANDS = {
    "recipes": ("iiae.recipes", "list, show or copy the recipes that ship with the engine"),
    "info": ("iiae.info", "show a recipe's resolved settings, parameter counts and latent shapes"),
    "prepare": ("iiae.data.prepare", "convert a raw dataset into webdataset shards + dataset.json"),
    "train": ("iiae.train", "train a recipe (same as `python engine/train.py`)"),
    "eval": ("iiae.evaluation.evaluate", "evaluate a run or Hub model with the paper's retrieval protocol"),
    "translate": ("iiae.inference.translate", "translate image files, or draw translation and exclusive-swap grids"),
    "embed": ("iiae.inference.embed", "save the shared (or exclusive) codes of image files"),
    "retrieve": ("iiae.inference.search", "find each query image's nearest images of the other domain"),
    "push": ("iiae.hub.push", "publish a run's selected model (and optionally a demo Space) to the Hugging Face Hub"),
    "app": ("iiae.app", "serve an interactive page for a trained model (translate, swap, retrieve), or export it "
                        "as a Hugging Face Space"),
}


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line, like every other user error (the usage is one `--help` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _Parser(prog="iiae", description="Interaction Information Auto-Encoder engine")
    parser.add_argument("--version", action="version", version=f"iiae {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = argv[0] if argv else None
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    args, extra = parser.parse_known_args(argv)
    if extra:  # `key=value` overrides may follow flags such as --resume
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except UserError as err:
        print(f"iiae {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"iiae {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0


if __name__ == "__main__":
    sys.exit(main())

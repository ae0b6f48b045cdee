"""Write a small paired image dataset in either `iiae prepare paired` layout (`iiae.data.synthetic.write_paired`):
X a disc or square of one colour on a background of another, Y its white silhouette.

  python scripts/shapes.py OUT --pairs 1000 [--size 64] [--layout side|folders] [--seed 0]
"""
import argparse
import sys
from pathlib import Path

from iiae.data.synthetic import write_paired


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--pairs", type=int, default=1000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--layout", choices=("side", "folders"), default="side")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    write_paired(args.out, args.pairs, size=args.size, layout=args.layout, seed=args.seed)
    print(f"wrote {args.pairs} pairs ({args.layout}) into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

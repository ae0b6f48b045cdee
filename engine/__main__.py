"""`python -m iiae ...` is the `iiae` command."""
import sys

from .cli import main

sys.exit(main())

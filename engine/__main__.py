"""`python -m iiae ...` is the `iiae` command."""
import sys

from iiae.cli import main

sys.exit(main())

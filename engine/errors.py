"""User-facing errors: each is printed by the CLI as one line (no traceback) with its `exit_code` (2: bad input;
3: the training diverged)."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Optional



class UserError(Exception):
    """Bad input from the user (recipe, data, checkpoint, argument): the message says what and where."""

    exit_code = 2


class DataError(UserError):
    """Missing, corrupt or mismatched data; the message says which `iiae prepare` command fixes it."""


class RecipeError(UserError, ValueError):
    """A recipe problem, reported as one line naming the file and the key."""


def shown(text, limit: int = 80) -> str:
    """Text the engine does not trust (a file's value, a long path), fit for a one-line message: control characters
    escaped (no newline or terminal escape gets through), at most `limit` characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def first_line(err: BaseException, lines: int = 1) -> str:
    """The first `lines` non-empty lines of an error's message (its type name when it has none), joined, and
    how many more follow: what a one-line message quotes of an exception."""
    text = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    more = f" (+{len(text) - lines} more)" if len(text) > lines else ""
    return " ".join(text[:lines]) + (more if lines > 1 else "")


def write_failure(err: BaseException, where: Optional[Path] = None) -> str:
    """What a failed write says in one line: "no space left on device" when an ENOSPC is in the error's chain,
    or (torch's writer reports a full disk as "unexpected pos" without an errno) when `where` has under 16 MiB
    free; else the error's first line."""
    cause: Optional[BaseException] = err
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            return "no space left on device"
        cause = cause.__cause__ or cause.__context__
    if where is not None and shutil.disk_usage(where).free < 1 << 24:
        return "no space left on device"
    return first_line(err)

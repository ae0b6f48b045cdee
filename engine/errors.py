"""User-facing errors: each is printed by the CLI as one line (no traceback) with exit code 2."""


class UserError(Exception):
    """Bad input from the user (recipe, data, checkpoint, argument): the message says what and where."""


class DataError(UserError):
    """Missing, corrupt or mismatched data; the message says which `iiae prepare` command fixes it."""


def first_line(err: BaseException, lines: int = 1) -> str:
    """The first `lines` non-empty lines of an error's message (its type name when it has none), joined, and
    how many more follow: what a one-line message quotes of an exception."""
    text = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    more = f" (+{len(text) - lines} more)" if len(text) > lines else ""
    return " ".join(text[:lines]) + (more if lines > 1 else "")

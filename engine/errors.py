"""User-facing errors: each is printed by the CLI as one line (no traceback) with exit code 2."""


class UserError(Exception):
    """Bad input from the user (recipe, data, checkpoint, argument): the message says what and where."""


class DataError(UserError):
    """Missing, corrupt or mismatched data; the message says which `iiae prepare` command fixes it."""

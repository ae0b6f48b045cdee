"""The schema machinery every typed file shares (recipes, model config.json, dataset.json sections): strict models
and the one-line message of a validation error, `source: key.sub: what (got value)`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from iiae.errors import RecipeError, shown


class Strict(BaseModel):
    """Unknown keys are errors, and so is an assignment that does not validate."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def format_validation_error(source: str | Path, err: ValidationError, prefix: str = "") -> str:
    """The first problem of a pydantic error as `source: key.sub: what (got value)`: every schema's one line."""
    first = err.errors()[0]
    key = ".".join([prefix] * bool(prefix) + [str(p) for p in first["loc"]]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        return f"{source}: {key}: required key is missing"
    if first["type"] == "extra_forbidden":
        return f"{source}: {key}: unknown key"
    got = first.get("input")
    if isinstance(got, dict):
        return f"{source}: {key}: {msg}"
    return f"{source}: {key}: {msg} (got {shown(repr(got))})"  # a hostile file's value is quoted, not echoed whole


def validated(section: type[Strict], data: Any, source: str, key: str):
    """A recipe section (`ModelConfig`, `ObjectiveConfig`, ...) from a dict; errors name `source: key.sub`."""
    if isinstance(data, section):
        return data
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: {key}: expected a mapping, got {type(data).__name__}")
    try:
        return section.model_validate(data)
    except ValidationError as err:
        raise RecipeError(format_validation_error(source, err, prefix=key)) from None

"""Typed recipes: the schema, YAML loading with `a.b=value` overrides, and one-line errors.

Every command loads recipes through `load_recipe`, so a malformed recipe fails the same way everywhere:
`RecipeError("recipes/x.yaml: data.batch_size: Input should be greater than 0 (got 0)")`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, ValidationError, field_validator, model_validator

from iiae.errors import RecipeError
from iiae.models.config import ModelConfig, ObjectiveConfig
from iiae.schema import Strict, format_validation_error


def expand_path(value: Optional[str]) -> Optional[str]:
    """`~` and `$VARS` of a local path expanded (URLs and pipe: commands are left as they are)."""
    import os

    from iiae.data.location import is_remote

    if value is None or is_remote(value):
        return value
    return os.path.expanduser(os.path.expandvars(value))


class DataConfig(Strict):
    # a folder (`~` and $VARS expanded) or a URL: https://host/dir, pipe:CMD with {} for the file name
    # (iiae.data.location)
    root: str
    batch_size: PositiveInt = 8
    num_workers: NonNegativeInt = 2
    shuffle_buffer: NonNegativeInt = 1000
    # training pairs of images: none, flip (left-right mirror) or dihedral (the 8 rotations and mirrors of the
    # square), the same one to both images of a pair; evaluation never augments
    augment: Literal["none", "flip", "dihedral"] = "none"
    # pix2pix's random jitter, in pixels of model.image_size: each training pair is scaled up to image_size +
    # jitter and cropped back to image_size at one random offset for both images (pix2pix: 286 -> 256 is 30)
    jitter: NonNegativeInt = 0
    # keep decoded training samples in memory after their first read (small datasets; needs num_workers: 0,
    # since worker processes are re-created every data epoch). About count x 2 x 3 x size^2 bytes.
    cache: bool = False
    # batches per rank per data epoch; default: train samples // global batch
    batches_per_epoch: Optional[PositiveInt] = None
    valid_split: str = "valid"
    eval_split: str = "test"
    # a split also evaluated at every validation point and logged (kind "monitor"), never used for selection:
    # e.g. test, to draw its Recall@1 against training time where the valid split overlaps training (Maps)
    monitor_split: Optional[str] = None
    # cap on validation pairs used for in-training model selection (None: all)
    valid_limit: Optional[PositiveInt] = None
    # Sketchy: one sketch and one photo of each training class per step
    class_matched: bool = False
    # shard check at start: all (sha256 of every shard), size (byte sizes: cheap for remote data), none;
    # default: all for a local folder, size for a URL
    verify: Optional[Literal["all", "size", "none"]] = None

    @property
    def verify_mode(self) -> str:
        from iiae.data.location import is_remote

        return self.verify or ("size" if is_remote(self.root) else "all")

    @field_validator("root")
    @classmethod
    def _expanded(cls, value: str) -> str:
        return expand_path(value)

    @model_validator(mode="after")
    def _cache_in_process(self) -> "DataConfig":
        if self.cache and self.num_workers > 0:
            raise ValueError(f"cache: true needs num_workers: 0 (got {self.num_workers}); worker processes "
                             "are re-created every data epoch and would lose the cache")
        return self


class OptimConfig(Strict):
    lr: PositiveFloat = 2e-4
    betas: tuple[Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]] = (0.5, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: float = Field(0.0, ge=0.0)
    # "constant" is the paper; "cosine" decays lr to lr·min_lr_ratio over train.max_steps
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    # an exponential moving average of the weights, updated every optimizer step: validation, selection, sample
    # grids and the saved model use it (null: the live weights, the paper); 0.999 averages over ~1,000 steps
    ema_decay: Optional[float] = Field(None, gt=0.0, lt=1.0)


class TrainConfig(Strict):
    output_dir: str
    max_steps: PositiveInt
    eval_every: PositiveInt = 1000
    checkpoint_every: PositiveInt = 1000
    sample_every: PositiveInt = 1000
    log_every: PositiveInt = 10
    keep_checkpoints: PositiveInt = 3
    resume: Literal["never", "auto"] = "never"
    # model selection: "best" = best validation shared Recall@1 (x2y + y2x) among the validation points from
    # step select_after on whose exclusive codes retrieve at most exclusive_max_hits pairs (the official rule:
    # <= 1) and at most the fraction exclusive_limit of them, in both directions (null: that bound is off);
    # "last" = final weights
    selection: Literal["best", "last"] = "best"
    select_after: NonNegativeInt = 0
    exclusive_max_hits: Optional[NonNegativeInt] = 1
    exclusive_limit: Optional[float] = Field(None, ge=0.0, le=1.0)
    # None: what `accelerate config` / `accelerate launch --mixed_precision` says (fp32 without a launcher);
    # set: the recipe wins, with a notice when the launcher says otherwise
    mixed_precision: Optional[Literal["no", "bf16", "fp16"]] = None
    gradient_accumulation_steps: PositiveInt = 1
    # torch.compile of the model (once; skipped with a notice when the launcher's dynamo_backend already compiles)
    compile: bool = False
    # torch.compile backend: "inductor" (generated kernels) or e.g. "aot_eager" (tracing only, no codegen)
    compile_backend: str = "inductor"
    max_grad_norm: Optional[PositiveFloat] = None
    trackers: list[Literal["tensorboard", "wandb", "mlflow", "comet_ml", "aim"]] = ["tensorboard"]
    # per tracker, keyword arguments of its init (accelerate's init_kwargs): {wandb: {entity: me, tags: [a]}}
    tracker_kwargs: dict[str, dict[str, Any]] = {}
    # stop with a clear message when the loss stops being finite
    check_finite: bool = True
    # start from these weights (a run dir, a model folder or a Hub id; same model section), with a fresh optimizer
    # and step 0; a resumed run ignores it (its checkpoint holds the weights)
    init_from: Optional[str] = None

    @field_validator("output_dir", "init_from")
    @classmethod
    def _expanded(cls, value: Optional[str]) -> Optional[str]:
        return expand_path(value)


class Recipe(Strict):
    name: str
    seed: int = Field(0, ge=0, lt=2**31)  # numpy's seeds are 32-bit; set_seed adds the rank
    model: ModelConfig
    objective: ObjectiveConfig
    data: DataConfig
    optim: OptimConfig = OptimConfig()
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        """JSON-native dict (tuples become lists): what config.json and recipe.yaml hold."""
        return self.model_dump(mode="json")


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 (PyYAML's default) also reads yes/no/on/off, so
    `mixed_precision: no` or `name=off` became False."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Yaml12Loader)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text or text.startswith("="):
        raise RecipeError(f"override {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = _yaml(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _field_type(path: list[str]) -> Any:
    """The annotation of recipe key `path` (["optim", "lr"]), or None for a key the schema does not have."""
    node: Any = Recipe
    for part in path:
        fields = getattr(node, "model_fields", None)
        if not isinstance(node, type) or fields is None or part not in fields:
            return None
        node = fields[part].annotation
    return node


def _typed(path: list[str], value: Any, raw: str) -> Any:
    """An override value as its field reads it: a string field gets the text as written (`name=1e3`, `name=off`),
    a list field accepts one item (`train.trackers=wandb`)."""
    import typing

    kind = _field_type(path)
    args = typing.get_args(kind)
    if kind is str or (typing.get_origin(kind) is typing.Union and str in args):
        return raw if isinstance(value, (bool, int, float)) else value
    if typing.get_origin(kind) is list and not isinstance(value, list) and value is not None:
        return [value]
    return value


def apply_overrides(data: dict, overrides: list[str], source: str = "override") -> dict:
    for text in overrides:
        path, value = _parse_override(text)
        value = _typed(path, value, text.split("=", 1)[1])
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"{source}: {'.'.join(path)}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return data


def recipe_from_dict(data: Any, source: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: expected a mapping of sections (name, model, objective, data, train)")
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(format_validation_error(source, err)) from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe YAML (a path, or a shipped recipe's name: `iiae.recipes.resolve`), apply `a.b=value` overrides,
    validate. Raises RecipeError (one line)."""
    from iiae.recipes import resolve

    if Path(path).expanduser().is_dir():  # else resolve() would look for a shipped recipe of that name
        raise RecipeError(f"{path}: is a folder; expected a recipe YAML file")
    path = resolve(path)
    try:
        data = _yaml(path.read_text())
    except (OSError, UnicodeDecodeError) as err:  # EACCES, a fifo, bytes that are not text ...
        raise RecipeError(f"{path}: cannot be read ({getattr(err, 'strerror', None) or err}); "
                          "expected a recipe YAML file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise RecipeError(f"{path}:{where}: YAML syntax error: {problem}") from None
    if isinstance(data, dict):
        data = apply_overrides(data, overrides or [], source=str(path))
    return recipe_from_dict(data, source=str(path))


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    from iiae.safe_files import atomic_write

    # a temp file renamed over `path` (a link or folder there is refused): never written through a link
    atomic_write(path, yaml.safe_dump(recipe.to_dict(), sort_keys=False), "a recipe YAML file")


def flat_hparams(recipe: Recipe) -> dict[str, Any]:
    """`{"model.arch": "image", ...}` with scalar values only: what trackers accept as hparams."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(node, (int, float, str, bool)):
            out[prefix] = node
        else:
            out[prefix] = str(node)

    walk("", recipe.to_dict())
    return out

"""`IIAE`: the networks of any architecture and the sampling through the fused kernels (the loss is
`iiae.models.objective`'s).

The recipe's `model` and `objective` sections build it, so `save_pretrained` / `from_pretrained` (Hugging Face
Hub mixin, safetensors) round-trip exactly those as `config.json`.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch
from huggingface_hub import PyTorchModelHubMixin
from huggingface_hub.constants import CONFIG_NAME as HUB_CONFIG_NAME
from huggingface_hub.constants import PYTORCH_WEIGHTS_NAME, SAFETENSORS_SINGLE_FILE
from torch import nn
from torch.nn import functional as F

from iiae import kernels

from iiae.errors import UserError
from iiae.models.blocks import init_weights
from iiae.models.config import ModelConfig, ObjectiveConfig
from iiae.models.objective import KLTerms
from iiae.models.registry import ARCHITECTURES
from iiae.schema import validated

if TYPE_CHECKING:
    from iiae.config import Recipe

DOMAINS = ("x", "y")
OTHER = {"x": "y", "y": "x"}
SHARED_NORM_EPS = 1e-4  # variance floor: a blank input stays finite
SPHERE_EPS = 1e-6  # shared_code_norm "sphere": a zero mean stays finite


@dataclass
class IIAEOutput:
    """One forward pass: reconstructions, samples, KL vectors [B] and the (mu, logvar) of every posterior
    ("x", "y": exclusive q; "s": joint q(z^s|x,y); "rx", "ry": the shared encoders r)."""

    x_hat: torch.Tensor
    y_hat: torch.Tensor
    z_s: torch.Tensor
    z_x: torch.Tensor
    z_y: torch.Tensor
    kl: KLTerms
    posteriors: dict[str, tuple[torch.Tensor, torch.Tensor]]


def _seed(seed: int, stream: int) -> int:
    """The kernel seed of latent number `stream`: a distinct 31-bit seed per latent."""
    return (seed + stream) % (1 << 31)


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Eval mode (BN running statistics, no dropout) for the block; the previous mode comes back afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def inference(method):
    """Run a method in eval mode without gradients, then restore the previous mode: inference never
    samples, never applies dropout and never updates BatchNorm statistics."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with eval_mode(self), torch.no_grad():
            return method(self, *args, **kwargs)

    return wrapper


MAX_CONFIG_BYTES = 1 << 20
# the Hub format's own names (huggingface_hub's): the one weights file loaded, and the pickle never loaded
WEIGHTS_NAME, PICKLE_NAME, CONFIG_NAME = SAFETENSORS_SINGLE_FILE, PYTORCH_WEIGHTS_NAME, HUB_CONFIG_NAME


def _weights_file(model_id: str, hub: dict) -> str:
    """The model.safetensors of a model folder or Hub repo; UserError where there is only a pickle (or nothing).
    A file missing from the local cache stays a LocalEntryNotFoundError, so the caller may go online."""
    import os

    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    refusal = (f"{model_id}: holds no {WEIGHTS_NAME}; the engine loads safetensors weights only (a {PICKLE_NAME} "
               "could run code when unpickled and is never loaded): save the model with `save_pretrained`")
    if os.path.isdir(model_id):
        path = Path(model_id) / WEIGHTS_NAME
        if not path.is_file():
            raise UserError(refusal)
        return str(path)
    try:
        return hf_hub_download(repo_id=model_id, filename=WEIGHTS_NAME, **hub)
    except LocalEntryNotFoundError:
        pickle = try_to_load_from_cache(model_id, PICKLE_NAME, cache_dir=hub["cache_dir"], revision=hub["revision"])
        if isinstance(pickle, str):  # the cache holds this repo, with a pickle instead of safetensors
            raise UserError(refusal) from None
        raise
    except EntryNotFoundError:  # the repo itself has no safetensors file
        raise UserError(refusal) from None


def _check_shapes(cls, model_id: str, weights: str, model_kwargs: dict) -> None:
    """Refuse, in one line, a config whose tensors are not the weights file's: built on the meta device, so a
    config declaring a huge model allocates nothing."""
    from safetensors import safe_open

    with torch.device("meta"):
        declared = {k: tuple(v.shape) for k, v in cls(**model_kwargs).state_dict().items()}
    try:
        with safe_open(weights, framework="pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as err:  # not a safetensors file, a damaged header
        raise UserError(f"{model_id}: {WEIGHTS_NAME} is unreadable ({err}); expected the weights `save_pretrained` "
                        "writes") from None
    for name in sorted(declared.keys() | stored.keys()):
        if declared.get(name) != stored.get(name):
            what = (f"missing from {WEIGHTS_NAME}" if name not in stored else
                    "not in the model config.json declares" if name not in declared else
                    f"shape {list(stored[name])} in {WEIGHTS_NAME}, {list(declared[name])} in config.json")
            raise UserError(f"{model_id}: tensor {name} is {what}; the config and the weights are of different "
                            "models")


def _check_domain(domain: str) -> str:
    if domain not in DOMAINS:
        raise ValueError(f"domain must be 'x' or 'y', got {domain!r}")
    return domain


class IIAE(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="iiae",
    tags=["iiae", "cross-domain-disentanglement", "image-to-image"],
    license="apache-2.0",
):
    """Interaction Information Auto-Encoder (Hwang et al., NeurIPS 2020).

    Built from the recipe's `model` and `objective` sections (dicts or configs): what `config.json` holds. A
    config.json written by older versions holds the whole recipe; its other sections are ignored."""

    def __init__(self, model: dict, objective: dict, **_other_recipe_sections):
        super().__init__()
        self.cfg: ModelConfig = validated(ModelConfig, model, "config", "model")
        self.objective: ObjectiveConfig = validated(ObjectiveConfig, objective, "config", "objective")
        # the shape of one input, checked by every encoder call
        image = self.arch.INPUT_KIND == "image"
        self.input_shape = (self.cfg.channels, self.cfg.image_size, self.cfg.image_size) if image else \
            (self.cfg.feature_dim,)
        self.parts = self.arch.build(self.cfg)
        self.apply(init_weights)

    @property
    def arch(self):
        """The architecture's module (looked up, not held: a model holding a module could not be deep-copied)."""
        return ARCHITECTURES[self.cfg.arch]

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> "IIAE":
        return cls(model=recipe.model.model_dump(mode="json"), objective=recipe.objective.model_dump(mode="json"))

    def _save_pretrained(self, save_directory: Path) -> None:
        # each tensor copied out on its own: under DeepSpeed ZeRO the parameters are views of one flat buffer,
        # which safetensors refuses to save
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().clone() for k, v in self.state_dict().items()}
        save_file(state, str(Path(save_directory) / WEIGHTS_NAME), metadata={"format": "pt"})

    def generate_model_card(self, *args, **kwargs):
        """The engine's card (`iiae.models.card.build_card`) for `save_pretrained` / `push_to_hub`, instead of the
        mixin's generic one; `model_card_kwargs` may add repo_id, recipe, metrics, training."""
        from iiae.models.card import build_card

        return build_card(self.cfg, self.objective, **kwargs)

    def push_to_hub(self, repo_id: str, *args, model_card_kwargs: Optional[dict] = None, **kwargs):
        # the card names the repo it is pushed to
        return super().push_to_hub(repo_id, *args, model_card_kwargs={"repo_id": repo_id, **(model_card_kwargs or {})},
                                   **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        # a local config.json is read whole by the mixin: a huge one is refused before it is parsed
        config = Path(str(pretrained_model_name_or_path)) / CONFIG_NAME
        if config.is_file() and config.stat().st_size > MAX_CONFIG_BYTES:
            raise UserError(f"{config}: {config.stat().st_size:,} bytes; expected a model config.json of at most "
                            f"{MAX_CONFIG_BYTES:,} bytes")
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision=None, cache_dir=None, force_download: bool = False,
                         local_files_only: bool = False, token=None, map_location: str = "cpu", strict: bool = True,
                         **model_kwargs):
        """Strict loading of model.safetensors only (a pickle, pytorch_model.bin, is never loaded): the config's
        declared shapes are checked against the weights file's header on the meta device (nothing allocated),
        before the model is built; non-finite weights are refused."""
        from safetensors.torch import load_model

        for section, config in (("model", ModelConfig), ("objective", ObjectiveConfig)):  # errors name the file
            validated(config, model_kwargs.get(section), f"{model_id}/{CONFIG_NAME}", section)
        hub = dict(revision=revision, cache_dir=cache_dir, force_download=force_download,
                   local_files_only=local_files_only, token=token)
        weights = _weights_file(model_id, hub)
        _check_shapes(cls, model_id, weights, model_kwargs)
        model = cls(**model_kwargs)
        # strict: a missing or extra tensor is an error, never a silently random layer
        load_model(model, weights, strict=strict, device=map_location)
        model.eval()
        bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:  # a diverged run's weights would evaluate at chance and look like a result
            raise UserError(f"{model_id}: {len(bad)} tensor(s) hold NaN or inf (first: {bad[0]}); "
                            "refusing to load non-finite weights")
        return model

    # ---- inputs -----------------------------------------------------------------------------------------
    def preprocess(self, images) -> torch.Tensor:
        """PIL images or image paths (one, or a sequence) → float [B, 3, S, S] in [−1, 1] on the model's device,
        made as `iiae prepare` made the training data: RGB, resized to the model's image_size (area filter
        when shrinking)."""
        from iiae.data.image_io import load_images

        if len(self.input_shape) != 3:
            raise ValueError(f"arch {self.cfg.arch} reads {self.cfg.feature_dim}-d feature vectors, not images")
        single = isinstance(images, (str, Path)) or hasattr(images, "getpixel")  # a path or one PIL image
        return load_images([images] if single else images, self.cfg.image_size).to(next(self.parameters()).device)

    @staticmethod
    def postprocess(images: torch.Tensor):
        """Decoder output [B, 3, H, W] (or one [3, H, W]) in [−1, 1] → a list of PIL images (or one)."""
        from iiae.data.image_io import to_pil

        return to_pil(images[None])[0] if images.dim() == 3 else to_pil(images)

    def _check_input(self, v: torch.Tensor) -> None:
        # convolutions accept any size: a 64-px image would silently come back 64 px from a 32-px model
        if tuple(v.shape[1:]) != self.input_shape or v.dim() != len(self.input_shape) + 1:
            what = "images" if len(self.input_shape) == 3 else "feature vectors"
            hint = "; IIAE.preprocess resizes images" if len(self.input_shape) == 3 else ""
            raise ValueError(f"expected {what} [B, {', '.join(map(str, self.input_shape))}] for this model, got "
                             f"shape {list(v.shape)}{hint}")

    # ---- encoders -------------------------------------------------------------------------------------
    def _clip(self, logvar: torch.Tensor) -> torch.Tensor:
        return logvar.clamp(max=self.objective.logvar_max)

    def _as_weights(self, v: torch.Tensor) -> torch.Tensor:
        self._check_input(v)
        # DeepSpeed bf16/fp16 casts the weights, not the inputs (accelerate's autocast is off under DeepSpeed)
        dtype = next(self.parameters()).dtype
        return v if v.dtype == dtype else v.to(dtype)

    def exclusive_posterior(self, v: torch.Tensor, domain: str) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.parts.exclusive[_check_domain(domain)](self._as_weights(v))
        return mu, self._clip(logvar)

    def shared_features(self, v: torch.Tensor, domain: str) -> torch.Tensor:
        v = self._as_weights(v)
        # what is shared (shape) must not depend on contrast: a near-black digit on black, or a white one on a
        # pale background, reaches the shared trunk as strongly as any other. "channel" also takes away the
        # colour, which the objective would otherwise be indifferent to placing in z^s or in the exclusive code
        if self.cfg.shared_input_norm == "image":
            v = F.layer_norm(v, v.shape[1:], eps=SHARED_NORM_EPS)
        elif self.cfg.shared_input_norm == "channel":
            v = F.group_norm(v, v.shape[1], eps=SHARED_NORM_EPS)
        return self.parts.shared[_check_domain(domain)](v)

    def _shared_mean(self, mu: torch.Tensor) -> torch.Tensor:
        if self.cfg.shared_code_norm == "none":
            return mu
        size = mu.shape[1:].numel()  # "sphere": every mean at the norm of a typical N(0, I) draw of z^s
        norm = mu.flatten(1).norm(dim=1).clamp(min=SPHERE_EPS).view(-1, *[1] * (mu.dim() - 1))
        return mu * (size ** 0.5 / norm)

    def shared_posterior(self, v: torch.Tensor, domain: str) -> tuple[torch.Tensor, torch.Tensor]:
        """r^d(z^s | d)."""
        mu, logvar = self.parts.r_head[_check_domain(domain)](self.shared_features(v, domain))
        return self._shared_mean(mu), self._clip(logvar)

    @inference
    def encode_shared(self, v: torch.Tensor, domain: str) -> torch.Tensor:
        """Mean of r^d(z^s | d): the code used for cross-domain retrieval."""
        return self.shared_posterior(v, domain)[0]

    @inference
    def encode_exclusive(self, v: torch.Tensor, domain: str) -> torch.Tensor:
        """Mean of q(z^d | d)."""
        return self.exclusive_posterior(v, domain)[0]

    def decode(self, z_s: torch.Tensor, z_d: torch.Tensor, domain: str) -> torch.Tensor:
        return self.parts.decoder[_check_domain(domain)](z_s, z_d)

    @inference
    def translate(
        self,
        v: torch.Tensor,
        to_domain: str,
        exclusive: Optional[torch.Tensor] = None,
        n: int = 1,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Decode the r mean of `v` (from the other domain) into `to_domain`.

        With `exclusive` ([B, *latent_shapes()[1][to_domain]]) returns [B, ...]: the guided translation. Without
        it, draws n exclusive codes from N(0, I) per input and returns [n, B, ...]: diverse translations."""
        z_s = self.encode_shared(v, OTHER[_check_domain(to_domain)])
        if exclusive is not None:
            return self.decode(z_s, exclusive.to(z_s), to_domain)
        size = (n, v.shape[0], *self.latent_shapes()[1][to_domain])
        z_d = torch.randn(size, generator=generator, device=generator.device if generator else "cpu").to(z_s)
        return torch.stack([self.decode(z_s, z, to_domain) for z in z_d])

    # ---- training forward ------------------------------------------------------------------------------
    def _sample(self, fn, mu: torch.Tensor, *args, seed: Optional[int], stream: int, row_offset: int):
        """Call a kernel with the right noise: zeros in eval mode (means); with a seed, noise that depends only
        on (seed, latent, global row), the kernels' RNG contract at offset row_offset·row_size (kernels/__init__);
        without a seed, the backend's default RNG."""
        if not self.training:
            return fn(mu, *args, torch.zeros_like(mu))
        if seed is None:
            return fn(mu, *args)
        return fn(mu, *args, seed=_seed(seed, stream), offset=row_offset * mu.shape[1:].numel())

    def forward(self, x: torch.Tensor, y: torch.Tensor, seed: Optional[int] = None, row_offset: int = 0) -> IIAEOutput:
        """What the networks compute for a pair batch: posteriors, samples (means in eval mode), reconstructions
        and the KL vectors. The objective weighs them outside (`iiae.models.objective.iiae_loss`), so a compiled
        forward never sees the step or the annealing factor.

        `seed` makes the reparameterisation noise a function of (seed, latent, row_offset + row) on every backend."""
        mu_x, lv_x = self.exclusive_posterior(x, "x")
        mu_y, lv_y = self.exclusive_posterior(y, "y")
        h_x, h_y = self.shared_features(x, "x"), self.shared_features(y, "y")
        mu_rx, lv_rx = self.parts.r_head["x"](h_x)
        mu_ry, lv_ry = self.parts.r_head["y"](h_y)
        mu_s, lv_s = self.parts.joint(h_x, h_y)
        mu_rx, mu_ry, mu_s = (self._shared_mean(mu) for mu in (mu_rx, mu_ry, mu_s))
        lv_rx, lv_ry, lv_s = self._clip(lv_rx), self._clip(lv_ry), self._clip(lv_s)

        z_s, kl_s, kl_rx, kl_ry = self._sample(
            kernels.shared_latent_terms, mu_s, lv_s, mu_rx, lv_rx, mu_ry, lv_ry, seed=seed, stream=0, row_offset=row_offset
        )
        z_x = self._sample(kernels.reparameterize, mu_x, lv_x, seed=seed, stream=1, row_offset=row_offset)
        z_y = self._sample(kernels.reparameterize, mu_y, lv_y, seed=seed, stream=2, row_offset=row_offset)
        x_hat, y_hat = self.decode(z_s, z_x, "x"), self.decode(z_s, z_y, "y")
        kl = KLTerms(kernels.gaussian_kl(mu_x, lv_x), kernels.gaussian_kl(mu_y, lv_y), kl_s, kl_rx, kl_ry)
        posteriors = {"x": (mu_x, lv_x), "y": (mu_y, lv_y), "s": (mu_s, lv_s), "rx": (mu_rx, lv_rx), "ry": (mu_ry, lv_ry)}
        return IIAEOutput(x_hat, y_hat, z_s, z_x, z_y, kl, posteriors)

    # ---- introspection ----------------------------------------------------------------------------------
    def latent_shapes(self) -> tuple[list[int], dict[str, list[int]]]:
        """The shape of one z^s and of one exclusive code per domain ("x", "y")."""
        return self.arch.latent_shapes(self.cfg)

    def parameter_counts(self) -> dict[str, int]:
        counts = {name: sum(p.numel() for p in module.parameters()) for name, module in self.parts.named_children()}
        counts["total"] = sum(counts.values())
        return counts

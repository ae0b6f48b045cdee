"""The typed config beside the models: `model` (what is built) and `objective` (how it is weighed), the two
sections a model's config.json holds; a recipe (`iiae.config.Recipe`) holds them with its data and training."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from iiae.data.format import MAX_FEATURE_DIM, MAX_IMAGE_SIZE
from iiae.schema import Strict

LOGVAR_MAX = 9.21035  # log(1e4): variances are clipped from above at 1e4, as the official code does
# What a model may declare (a recipe or a downloaded config.json): generous for any real model, small enough that
# building one from a hostile 4 KB config.json cannot allocate gigabytes before its weights are checked
MAX_WIDTH = 4096  # channels or units of any layer, and latent sizes
MAX_STAGES = 8  # stride-2 blocks per trunk
Width = Annotated[int, Field(gt=0, le=MAX_WIDTH)]


class ModelConfig(Strict):
    arch: Literal["image", "flat", "mlp"] = "image"
    image_size: Annotated[int, Field(gt=0, le=MAX_IMAGE_SIZE)] = 256  # any side the stride-2 stages divide (below)
    channels: Annotated[int, Field(gt=0, le=4)] = 3
    # conv trunks (image, flat): one stride-2 block per entry
    shared_channels: list[Width] = Field([32, 64, 128, 256], max_length=MAX_STAGES)
    exclusive_channels: list[Width] = Field([32, 64, 128, 256], max_length=MAX_STAGES)
    # transposed-conv decoder: one stride-2 block per entry, then a last one to `channels`
    decoder_channels: list[Width] = Field([512, 256, 128, 64], max_length=MAX_STAGES)
    z_shared: Width = 128  # image: channels of the z^s map; flat, mlp: its size
    z_exclusive: Width = 8
    head_hidden: Width = 256  # flat: width of the r and q heads
    feature_dim: Annotated[int, Field(gt=0, le=MAX_FEATURE_DIM)] = 512  # mlp: input feature size
    mlp_hidden: list[Width] = Field([512, 256], min_length=2, max_length=2)  # mlp: encoder widths
    decoder_hidden: Width = 128  # mlp: decoder width
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    # standardise each input before the shared encoders (not in the paper; no parameters; IIAE.shared_features):
    # "image": zero mean, unit variance over all its values (contrast gone, hue kept); "channel": each channel
    # on its own (contrast and colour gone: the shared code cannot carry them). true = "image", false = "none".
    shared_input_norm: Literal["none", "image", "channel"] = "none"
    # how the image decoders (image, flat) read z^d: "concat" as the paper (tiled beside z^s at the input only);
    # "film" also scales and shifts every transposed-conv block's features by z^d (not in the paper)
    decoder_conditioning: Literal["concat", "film"] = "concat"
    # image arch: the domains whose exclusive code is a map (z_exclusive channels from a conv head, one more
    # stride-2 stage than exclusive_channels, tiled over z^s in the decoder), not the paper's vector: room for
    # content that is local, not global (a satellite's texture: a field here, roofs there), which a vector cannot place
    exclusive_maps: list[Literal["x", "y"]] = Field([], max_length=2)
    # the means of q(z^s|x,y), r^x and r^y: "none" as the paper; "sphere" rescales each to norm sqrt(size of z^s),
    # the typical norm of a N(0, I) draw (not in the paper): a code's norm then carries nothing, so codes whose
    # other side predicts less of them (a satellite's, from its map) cannot attract queries by a small norm
    shared_code_norm: Literal["none", "sphere"] = "none"
    # image models: weights and batches in channels-last memory layout (faster convolutions on many CPUs and GPUs;
    # the same function, other rounding)
    channels_last: bool = False

    @field_validator("shared_input_norm", mode="before")
    @classmethod
    def _from_bool(cls, value: Any) -> Any:
        return {True: "image", False: "none"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _fits_its_architecture(self) -> "ModelConfig":
        from iiae.models.registry import ARCHITECTURES  # the architecture knows its own constraints

        ARCHITECTURES[self.arch].check(self)
        return self


class ObjectiveConfig(Strict):
    beta: float = Field(ge=0.0)
    Lambda: float = Field(1.0, ge=0.0)  # the paper's lambda is Lambda / beta
    recon: Literal["l1", "mse"] = "l1"
    recon_weight: PositiveFloat = 1000.0
    # Y's reconstruction weight when it differs from X's (None: recon_weight, the paper). Not in the paper: an
    # opt-in variant for a domain whose structure is faint in pixels (a map's streets, ~20/255 from the ground)
    recon_weight_y: PositiveFloat | None = None
    anneal_steps: PositiveInt = 25000
    # multiplies (K_x + K_y); 1 is the paper. Raised only in the ablation.
    exclusive_kl_scale: float = Field(1.0, ge=0.0)
    logvar_max: float = LOGVAR_MAX

    @property
    def y_recon_weight(self) -> float:
        return self.recon_weight if self.recon_weight_y is None else self.recon_weight_y

    @property
    def lambda_paper(self) -> float:
        return self.Lambda / self.beta if self.beta > 0 else float("inf")

"""`arch: flat` — the Cars model: vector z^s (128-d) from flattened conv features; 46,952,230 parameters."""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from iiae.models.blocks import (ConvExclusiveEncoder, GaussianMLP, IIAEParts, JointHead, bn1d, check_conv_stages, conv_trunk,
                     deconv_stack, film_layers, run_deconvs)

INPUT_KIND = "image"  # what a dataset must hold (dataset.json `kind`) for this architecture
DOMAINS = ("x", "y")


class SharedTrunk(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.convs = conv_trunk(cfg.channels, cfg.shared_channels)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.convs(v).flatten(1)


class FlatDecoder(nn.Module):
    """Linear to the first feature map (BN, dropout, ReLU), reshape, then the image decoder's transposed convs."""

    def __init__(self, cfg):
        super().__init__()
        self.side = cfg.image_size >> (len(cfg.decoder_channels) + 1)
        self.ch = cfg.decoder_channels[0]
        n = self.side * self.side * self.ch
        proj = [nn.Linear(cfg.z_shared + cfg.z_exclusive, n), bn1d(n)]
        proj += [nn.Dropout(cfg.dropout)] if cfg.dropout > 0 else []
        self.project = nn.Sequential(*proj, nn.ReLU())
        # as the official code: dropout after the projection and after the first two transposed convs (512, 256)
        self.deconvs = deconv_stack(self.ch, cfg.decoder_channels, cfg.channels, cfg.dropout, 2)
        self.film = film_layers(cfg)

    def forward(self, z_s: torch.Tensor, z_d: torch.Tensor) -> torch.Tensor:
        h = self.project(torch.cat([z_s, z_d], dim=1))
        h = rearrange(h, "b (c h w) -> b c h w", c=self.ch, h=self.side, w=self.side)
        return run_deconvs(self.deconvs, self.film, h, z_d)


def check(cfg) -> None:
    check_conv_stages(cfg)
    if cfg.exclusive_maps:  # its decoder projects [z^s, z^d] through one Linear
        raise ValueError(f"exclusive_maps: the flat arch has vector exclusive codes only, got {cfg.exclusive_maps}")


def build(cfg) -> IIAEParts:
    side = cfg.image_size >> len(cfg.shared_channels)
    h_dim = side * side * cfg.shared_channels[-1]
    return IIAEParts(
        exclusive={d: ConvExclusiveEncoder(cfg.channels, cfg.exclusive_channels, cfg.image_size, cfg.z_exclusive) for d in DOMAINS},
        shared={d: SharedTrunk(cfg) for d in DOMAINS},
        r_head={d: GaussianMLP([h_dim, cfg.head_hidden, cfg.z_shared]) for d in DOMAINS},
        joint=JointHead(GaussianMLP([2 * h_dim, cfg.head_hidden, cfg.z_shared])),
        decoder={d: FlatDecoder(cfg) for d in DOMAINS},
    )


def latent_shapes(cfg) -> tuple[list[int], dict[str, list[int]]]:
    return [cfg.z_shared], {d: [cfg.z_exclusive] for d in DOMAINS}

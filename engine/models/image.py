"""`arch: image` — the paper's convolutional model (MNIST-CDCB, Facades, Maps).

At 256 px with the default channels it is exactly the paper's network: 16,801,830 parameters,
z^s an 8x8x128 map, z^x and z^y 8-d vectors.
"""
from __future__ import annotations

import torch
from einops import repeat
from torch import nn

from iiae.models.blocks import (ConvExclusiveEncoder, GaussianConv, IIAEParts, JointHead, check_conv_stages, conv_trunk,
                     deconv_stack, film_layers, run_deconvs)

INPUT_KIND = "image"  # what a dataset must hold (dataset.json `kind`) for this architecture
DOMAINS = ("x", "y")


class ImageDecoder(nn.Module):
    """p_d(z^s, z^d): the exclusive code tiled over the z^s map (a vector over every position, a map over its
    block of positions), concatenated, then transposed convs (each block also FiLM-modulated by z^d under
    `decoder_conditioning: film`)."""

    def __init__(self, cfg):
        super().__init__()
        self.net = deconv_stack(cfg.z_shared + cfg.z_exclusive, cfg.decoder_channels, cfg.channels, cfg.dropout, 2)
        self.film = film_layers(cfg)

    def forward(self, z_s: torch.Tensor, z_d: torch.Tensor) -> torch.Tensor:
        cells = z_d if z_d.dim() == 4 else z_d[:, :, None, None]  # a vector is a 1x1 map
        tiled = repeat(cells, "b c h w -> b c (h i) (w j)", i=z_s.shape[2] // cells.shape[2],
                       j=z_s.shape[3] // cells.shape[3])
        return run_deconvs(self.net, self.film, torch.cat([z_s, tiled], dim=1), z_d)


def check(cfg) -> None:
    check_conv_stages(cfg)
    shared, exclusive = latent_shapes(cfg)
    for d in cfg.exclusive_maps:
        if shared[1] % exclusive[d][1]:
            raise ValueError(f"exclusive_channels: a {exclusive[d][1]}-px exclusive map does not tile the "
                             f"{shared[1]}-px z^s map; expected a side that divides it")
    # the decoder must undo exactly the downsampling that produced z^s
    if len(cfg.decoder_channels) != len(cfg.shared_channels):
        raise ValueError(f"decoder_channels: image arch needs {len(cfg.shared_channels)} entries "
                         f"(one per shared_channels entry), got {len(cfg.decoder_channels)}")


def build(cfg) -> IIAEParts:
    c_h = cfg.shared_channels[-1]
    return IIAEParts(
        exclusive={d: ConvExclusiveEncoder(cfg.channels, cfg.exclusive_channels, cfg.image_size, cfg.z_exclusive,
                                             spatial=d in cfg.exclusive_maps) for d in DOMAINS},
        shared={d: conv_trunk(cfg.channels, cfg.shared_channels) for d in DOMAINS},
        r_head={d: GaussianConv(c_h, cfg.z_shared) for d in DOMAINS},
        joint=JointHead(GaussianConv(2 * c_h, cfg.z_shared)),
        decoder={d: ImageDecoder(cfg) for d in DOMAINS},
    )


def latent_shapes(cfg) -> tuple[list[int], dict[str, list[int]]]:
    side = cfg.image_size >> (len(cfg.shared_channels) + 1)
    exclusive_side = cfg.image_size >> (len(cfg.exclusive_channels) + 1)
    exclusive = {d: [cfg.z_exclusive] + [exclusive_side] * 2 * (d in cfg.exclusive_maps) for d in DOMAINS}
    return [cfg.z_shared, side, side], exclusive

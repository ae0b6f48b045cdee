"""`arch: mlp` — the Sketchy model on 512-d VGG features; 2,470,784 parameters, all codes 64-d."""
from __future__ import annotations

import torch
from torch import nn

from iiae.models.blocks import GaussianMLP, IIAEParts, JointHead, mlp

INPUT_KIND = "feature"  # what a dataset must hold (dataset.json `kind`) for this architecture
DOMAINS = ("x", "y")


class FeatureDecoder(nn.Module):
    """p_d(z^s, z^d): Linear, BN, ReLU, Linear back to feature space (no output activation)."""

    def __init__(self, cfg):
        super().__init__()
        self.net = mlp([cfg.z_shared + cfg.z_exclusive, cfg.decoder_hidden, cfg.feature_dim], final_act=False, act=nn.ReLU)

    def forward(self, z_s: torch.Tensor, z_d: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z_s, z_d], dim=1))


def check(cfg) -> None:
    """Feature vectors: no spatial stages to fit; the decoder is an MLP (no blocks for FiLM)."""
    if cfg.decoder_conditioning != "concat":
        raise ValueError(f"decoder_conditioning: the mlp arch supports only concat, got {cfg.decoder_conditioning!r}")
    if cfg.exclusive_maps:
        raise ValueError(f"exclusive_maps: the mlp arch has vector exclusive codes only, got {cfg.exclusive_maps}")


def build(cfg) -> IIAEParts:
    wide, narrow = cfg.mlp_hidden
    return IIAEParts(
        exclusive={d: GaussianMLP([cfg.feature_dim, wide, narrow, cfg.z_exclusive]) for d in DOMAINS},
        shared={d: mlp([cfg.feature_dim, wide], final_act=True) for d in DOMAINS},
        r_head={d: GaussianMLP([wide, narrow, cfg.z_shared]) for d in DOMAINS},
        joint=JointHead(GaussianMLP([2 * wide, wide, cfg.z_shared])),
        decoder={d: FeatureDecoder(cfg) for d in DOMAINS},
    )


def latent_shapes(cfg) -> tuple[list[int], dict[str, list[int]]]:
    return [cfg.z_shared], {d: [cfg.z_exclusive] for d in DOMAINS}

"""The IIAE objective (docs/ARCHITECTURE.md §6), exactly as the official code computes it.

    L = (β+Λ)(R_x + R_y) + c_t(β+Λ)(K_x + K_y) + c_t·β·K_s + Λ(K_rx + K_ry),   c_t = 1 − exp(−t / anneal_steps)

R_d: weighted reconstruction error; K_x, K_y, K_s: KL of q(z^x|x), q(z^y|y), q(z^s|x,y) to N(0, I);
K_rx, K_ry: KL(q(z^s|x,y) ‖ r^d(z^s|d)), gradients into both sides. The paper's λ is Λ/β.
The KL vectors come from the fused kernels; this module only weighs and sums them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from iiae.models.config import ObjectiveConfig

TERMS = ("recon_x", "recon_y", "kl_x", "kl_y", "kl_s", "kl_rx", "kl_ry")  # the KL ones are KLTerms' fields


def annealing(step: int, anneal_steps: int) -> float:
    """c_t for t optimizer steps taken so far (0 at the first step)."""
    return 1.0 - math.exp(-step / anneal_steps)


def reconstruction(pred: torch.Tensor, target: torch.Tensor, kind: str, weight: float) -> torch.Tensor:
    """w · mean|pred − target| (L1) or w · mean (pred − target)² (MSE), over all elements, in fp32 or wider."""
    dtype = torch.promote_types(pred.dtype, torch.float32)
    err = pred.to(dtype) - target.to(dtype)
    return weight * (err.abs().mean() if kind == "l1" else err.square().mean())


@dataclass
class KLTerms:
    """Per-sample KL vectors [B] from the kernels."""

    kl_x: torch.Tensor
    kl_y: torch.Tensor
    kl_s: torch.Tensor
    kl_rx: torch.Tensor
    kl_ry: torch.Tensor


def iiae_loss(cfg: ObjectiveConfig, c_t: float | torch.Tensor, x: torch.Tensor, y: torch.Tensor, out
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total loss for the model's output `out` (an IIAEOutput) on inputs x, y, and every term of `TERMS`
    (batch means) for logging. `c_t` is the annealing factor of this step, computed by the caller outside any
    compiled region (`annealing`)."""
    beta, lam, kl = cfg.beta, cfg.Lambda, out.kl
    terms = {
        "recon_x": reconstruction(out.x_hat, x, cfg.recon, cfg.recon_weight),
        "recon_y": reconstruction(out.y_hat, y, cfg.recon, cfg.y_recon_weight),
        **{name: getattr(kl, name).mean() for name in TERMS[2:]},
    }
    total = (
        (beta + lam) * (terms["recon_x"] + terms["recon_y"])
        + c_t * (beta + lam) * cfg.exclusive_kl_scale * (terms["kl_x"] + terms["kl_y"])
        + c_t * beta * terms["kl_s"]
        + lam * (terms["kl_rx"] + terms["kl_ry"])
    )
    return total, terms

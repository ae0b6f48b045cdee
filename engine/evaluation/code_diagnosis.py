"""`iiae eval --diagnose`: why a paired shared-code retrieval fails, read off the r^x / r^y means themselves.

Write r^x_i = m_i + u_i (m: what the other domain can predict, u: content only x has) and r^y_i ≈ c·m_i. Ranking
the gallery r^x by |g_j|² − 2 q·g_j, a query from y pulls toward its partner in proportion to c, while the spread
of |r^x_j|² (which holds |u_j|²) does not shrink with it: y queries then retrieve the small-norm x codes, the
hubs. The figures below tell these causes apart, each way (x2y: x queries, y gallery; y2x the reverse):

- `miss_norm_rank_*`: over the misses, the mean percentile (0 = smallest, 1 = largest) of the retrieved gallery
  code's squared norm among all gallery norms. ≈ 0.5 when misses are unrelated to norm, near 0 for norm hubs;
  NaN, as `miss_smaller_*`, when the gallery's codes have one norm.
- `miss_smaller_*`: the fraction of misses whose retrieved code has a smaller norm than the true partner's.
- `r2_x_from_y`, `r2_y_from_x`: the linear R² of one domain's codes from the other's (least squares with a bias,
  its strength chosen on held-out pairs, scored on pairs it never saw): how much of r^x the y side can predict (low: a large u).
- `recall_at_1_*_cosine`, `recall_at_1_*_centred`, `recall_at_1_*_csls`: Recall@1 ranked blind to norms (cosine),
  by cosine after each side's mean code is subtracted (centred: blind to a direction all codes share), and with
  CSLS, which also charges each gallery code its similarity to its nearest queries (Conneau et al., 2018). The last
  two are transductive: they read every query. If these lift the figure, the misses are hubs of the ranking rather
  than codes without the pair's content. Diagnostics only: the paper's figure is the squared Euclidean one.
- `active_dims`: dimensions where the r^x or r^y means vary across the data by more than 0.01 (the "active
  units" of Burda et al., 2016), and `active_var_x` / `active_var_y`: their mean variance on those dimensions
  (r^y ≪ r^x: the y side shrinks its codes toward the prior mean, c < 1).
"""
from __future__ import annotations

from typing import Callable

import torch

from iiae.evaluation.retrieval_metrics import nearest, recall_at_1

HUB_DISCOUNTING = ("cosine", "centred", "csls")  # rankings beside the paper's (retrieval_metrics.RANKINGS)
ONE_NORM = 1e-4  # relative spread of the gallery's squared norms below which they count as one (rounding)
ACTIVE_VARIANCE = 0.01  # Burda et al.: a unit is active when Var_data(E_q[u]) > 0.01
RIDGE_STRENGTHS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # relative to the mean squared norm of a code


def _miss_norms(query: torch.Tensor, gallery: torch.Tensor) -> tuple[float, float]:
    picked = nearest(query, gallery)
    misses = picked != torch.arange(len(query), device=picked.device)
    if not misses.any():
        return float("nan"), float("nan")
    norms = gallery.float().pow(2).sum(1)
    if norms.max() - norms.min() <= ONE_NORM * norms.max():  # codes of one norm (shared_code_norm "sphere")
        return float("nan"), float("nan")
    percentile = norms.argsort().argsort().double() / max(len(norms) - 1, 1)  # rank of each norm, 0..1
    return (percentile[picked[misses]].mean().item(),
            (norms[picked[misses]] < norms[misses]).double().mean().item())


def _ridge(a: torch.Tensor, b: torch.Tensor, strength: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ridge regression of b on a (with a bias) as a function; solved in the smaller of the two spaces (rows
    or features), which gives the same solution either way."""
    mean_a, mean_b = a.mean(0), b.mean(0)
    xa, xb = a - mean_a, b - mean_b
    lam = strength * xa.pow(2).sum(1).mean().clamp(min=1e-12)  # relative to the mean squared row norm
    if xa.shape[1] <= xa.shape[0]:
        w = torch.linalg.solve(xa.T @ xa + lam * torch.eye(xa.shape[1], dtype=xa.dtype), xa.T @ xb)
    else:
        w = xa.T @ torch.linalg.solve(xa @ xa.T + lam * torch.eye(xa.shape[0], dtype=xa.dtype), xb)
    return lambda v: (v - mean_a) @ w + mean_b


def _r2(pred: torch.Tensor, target: torch.Tensor) -> float:
    total = (target - target.mean(0)).pow(2).sum()
    return (1 - (target - pred).pow(2).sum() / total).item() if total > 0 else float("nan")


def linear_r2(source: torch.Tensor, target: torch.Tensor) -> float:
    """Held-out R² of `target` from `source` by ridge least squares with a bias (1 − residual / total variance,
    summed over the target's dimensions): the ridge strength chosen on a split of the even rows, refitted on all of
    them, scored on the odd rows. Codes have more dimensions than pairs, so an unregularised fit would interpolate."""
    a, b = source.double(), target.double()
    fit_a, fit_b, test_a, test_b = a[0::2], b[0::2], a[1::2], b[1::2]
    half = len(fit_a) // 2
    best = max(RIDGE_STRENGTHS, key=lambda s: _r2(_ridge(fit_a[:half], fit_b[:half], s)(fit_a[half:]), fit_b[half:]))
    return _r2(_ridge(fit_a, fit_b, best)(test_a), test_b)


def diagnose(r_x: torch.Tensor, r_y: torch.Tensor) -> dict:
    """Every figure of the module docstring for paired codes r_x[i] ↔ r_y[i] ([N, D] each)."""
    if r_x.shape != r_y.shape or r_x.dim() != 2 or len(r_x) < 4:
        raise ValueError(f"expected two [N, D] code sets of one shape with N >= 4, got {tuple(r_x.shape)} and "
                         f"{tuple(r_y.shape)}")
    out = {}
    for way, q, g in (("x2y", r_x, r_y), ("y2x", r_y, r_x)):
        out[f"miss_norm_rank_{way}"], out[f"miss_smaller_{way}"] = _miss_norms(q, g)
        for ranking in HUB_DISCOUNTING:
            out[f"recall_at_1_{way}_{ranking}"] = recall_at_1(q, g, ranking=ranking)
    out["r2_x_from_y"], out["r2_y_from_x"] = linear_r2(r_y, r_x), linear_r2(r_x, r_y)
    var_x, var_y = r_x.double().var(0), r_y.double().var(0)
    active = (var_x > ACTIVE_VARIANCE) | (var_y > ACTIVE_VARIANCE)
    out["active_dims"] = int(active.sum())
    out["active_var_x"] = var_x[active].mean().item() if active.any() else 0.0
    out["active_var_y"] = var_y[active].mean().item() if active.any() else 0.0
    return out

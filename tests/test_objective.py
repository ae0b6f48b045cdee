"""The objective of docs/ARCHITECTURE.md §6 against an independent float64 computation of the formula."""
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from iiae import kernels
from iiae.config import load_recipe
from iiae.models.config import LOGVAR_MAX, ObjectiveConfig
from iiae.models import IIAE
from iiae.models.objective import KLTerms, annealing, iiae_loss

ROOT = Path(__file__).resolve().parents[1]


def kl_prior_np(mu, lv):
    return (0.5 * (mu**2 + np.exp(lv) - 1 - lv)).reshape(len(mu), -1).sum(1)


def kl_pair_np(mu_q, lv_q, mu_p, lv_p):
    return (0.5 * (lv_p - lv_q + (np.exp(lv_q) + (mu_q - mu_p) ** 2) / np.exp(lv_p) - 1)).reshape(len(mu_q), -1).sum(1)


def formula_np(cfg, t, x_hat, x, y_hat, y, kx, ky, ks, krx, kry):
    b, lam = cfg.beta, cfg.Lambda
    c = 1 - math.exp(-t / cfg.anneal_steps)
    err = (lambda a, r: np.abs(a - r).mean()) if cfg.recon == "l1" else (lambda a, r: ((a - r) ** 2).mean())
    w_y = cfg.recon_weight if cfg.recon_weight_y is None else cfg.recon_weight_y
    rx, ry = cfg.recon_weight * err(x_hat, x), w_y * err(y_hat, y)
    return (b + lam) * (rx + ry) + c * (b + lam) * (kx.mean() + ky.mean()) + c * b * ks.mean() + lam * (krx.mean() + kry.mean())


def test_annealing():
    assert annealing(0, 100) == 0.0
    assert annealing(100, 100) == pytest.approx(1 - math.exp(-1))
    assert annealing(10**9, 100) == pytest.approx(1.0)


@pytest.mark.parametrize("recon_weight_y", [None, 3000.0], ids=["same_weight", "y_weighted"])
@pytest.mark.parametrize("recon", ["l1", "mse"])
@pytest.mark.parametrize("step", [0, 37, 5000])
def test_loss_matches_formula(recon, step, recon_weight_y):
    g = torch.Generator().manual_seed(step)
    cfg = ObjectiveConfig(beta=0.2, Lambda=1.0, recon=recon, recon_weight=1000, recon_weight_y=recon_weight_y,
                          anneal_steps=250)
    B = 5
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    x, x_hat, y, y_hat = r(B, 3, 8, 8), r(B, 3, 8, 8), r(B, 3, 8, 8), r(B, 3, 8, 8)
    mu = {k: r(B, 4, 2, 2) for k in ("s", "rx", "ry")}
    lv = {k: r(B, 4, 2, 2) for k in ("s", "rx", "ry")}
    mx, lx, my, ly = r(B, 6), r(B, 6), r(B, 6), r(B, 6)
    _, ks, krx, kry = kernels.shared_latent_terms(mu["s"], lv["s"], mu["rx"], lv["rx"], mu["ry"], lv["ry"], torch.zeros_like(mu["s"]))
    kl = KLTerms(kernels.gaussian_kl(mx, lx), kernels.gaussian_kl(my, ly), ks, krx, kry)
    out = SimpleNamespace(x_hat=x_hat, y_hat=y_hat, kl=kl)  # the IIAEOutput fields the objective reads
    total, terms = iiae_loss(cfg, annealing(step, cfg.anneal_steps), x, y, out)
    n = {k: v.numpy() for k, v in mu.items()}
    nl = {k: v.numpy() for k, v in lv.items()}
    expected = formula_np(
        cfg, step, x_hat.numpy(), x.numpy(), y_hat.numpy(), y.numpy(),
        kl_prior_np(mx.numpy(), lx.numpy()), kl_prior_np(my.numpy(), ly.numpy()), kl_prior_np(n["s"], nl["s"]),
        kl_pair_np(n["s"], nl["s"], n["rx"], nl["rx"]), kl_pair_np(n["s"], nl["s"], n["ry"], nl["ry"]),
    )
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert set(terms) == {"recon_x", "recon_y", "kl_x", "kl_y", "kl_s", "kl_rx", "kl_ry"}


@pytest.mark.parametrize("mu,lv,expected", [(0.0, 0.0, 0.0), (1.0, 0.0, 5.0), (1.0, 1.0, 0.5 * 10 * (math.e - 1))])
def test_golden_kl(mu, lv, expected):
    m, l = torch.full((1, 10), mu), torch.full((1, 10), lv)
    assert kernels.gaussian_kl(m, l).item() == pytest.approx(expected, rel=1e-5)


def test_model_terms_match_its_posteriors():
    """Eval mode (means): every KL term equals the formula applied to the model's own posteriors, clipped."""
    m = IIAE.from_recipe(load_recipe(ROOT / "recipes/debug.yaml")).eval().double()
    x, y = torch.rand(3, 3, 32, 32, dtype=torch.float64) * 2 - 1, torch.rand(3, 3, 32, 32, dtype=torch.float64) * 2 - 1
    out = m(x, y)
    _, terms = iiae_loss(m.objective, annealing(40, m.objective.anneal_steps), x, y, out)
    with torch.no_grad():
        mx, lx = m.exclusive_posterior(x, "x")
        hx, hy = m.shared_features(x, "x"), m.shared_features(y, "y")
        mrx, lrx = m.parts.r_head["x"](hx)
        ms, ls = m.parts.joint(hx, hy)
    np_ = lambda t: t.numpy()
    lrx, ls = lrx.clamp(max=LOGVAR_MAX), ls.clamp(max=LOGVAR_MAX)
    assert terms["kl_x"].item() == pytest.approx(kl_prior_np(np_(mx), np_(lx)).mean(), rel=1e-9)
    assert terms["kl_s"].item() == pytest.approx(kl_prior_np(np_(ms), np_(ls)).mean(), rel=1e-9)
    assert terms["kl_rx"].item() == pytest.approx(kl_pair_np(np_(ms), np_(ls), np_(mrx), np_(lrx)).mean(), rel=1e-9)
    # decoded from the joint z^s (the mean here) with z^x, never from r
    assert torch.allclose(out.x_hat, m.decode(ms, mx, "x"))
    assert terms["recon_x"].item() == pytest.approx(1000 * (out.x_hat - x).abs().mean().item(), rel=1e-9)


def test_logvar_clip():
    m = IIAE.from_recipe(load_recipe(ROOT / "recipes/debug.yaml")).eval()
    with torch.no_grad():
        m.parts.exclusive["x"].head.net[0].bias[4:].fill_(50.0)  # logvar half of [mu | logvar]
    _, lv = m.exclusive_posterior(torch.rand(2, 3, 32, 32), "x")
    assert lv.max().item() == pytest.approx(LOGVAR_MAX)


def test_gradients_reach_q_and_r():
    """K_rx has no stop-gradient: both q(z^s|x,y) and r^x receive gradient from it."""
    m = IIAE.from_recipe(load_recipe(ROOT / "recipes/debug.yaml"))
    out = m(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), seed=0)
    out.kl.kl_rx.mean().backward()
    assert m.parts.r_head["x"].conv.weight.grad.abs().sum() > 0
    assert m.parts.joint.head.conv.weight.grad.abs().sum() > 0
    assert m.parts.r_head["y"].conv.weight.grad is None or m.parts.r_head["y"].conv.weight.grad.abs().sum() == 0

"""Retrieval metrics: Recall@K (squared Euclidean; the paper reports K = 1) for paired data, mAP@all, mAP@K and
P@K (cosine) for Sketchy, and the top-k lists `iiae retrieve` prints.

Every function walks the queries in chunks, so only a [chunk, N_gallery] block of distances exists at a time:
10,000 x 8,192-d queries against as many gallery items need ~40 MB beyond the embeddings themselves.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

DEFAULT_CHUNK = 1024
METRICS = ("euclidean", "cosine")  # `top_k`: squared Euclidean (paired image models), cosine (feature models)
# the keys paired evaluation reports: shared codes (the result) and exclusive codes (≈ 1/N when disentangled)
SHARED_RECALL = ("recall_at_1_x2y", "recall_at_1_y2x")
EXCLUSIVE_RECALL = ("exclusive_recall_at_1_x2y", "exclusive_recall_at_1_y2x")
RECALL_KS = (5, 10)  # Recall@K beside the paper's Recall@1 (shared codes), as other retrieval papers report


def _check(query: torch.Tensor, gallery: torch.Tensor) -> None:
    if query.dim() != 2 or gallery.dim() != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(f"expected [N, D] query and [M, D] gallery, got {tuple(query.shape)} and {tuple(gallery.shape)}")
    if gallery.shape[0] == 0:
        raise ValueError("empty gallery")


@torch.no_grad()
def nearest(query: torch.Tensor, gallery: torch.Tensor, chunk: int = DEFAULT_CHUNK,
            penalty: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Index of the nearest gallery row (squared Euclidean, plus `penalty[j]` for gallery row j when given: see
    `RANKINGS`) for every query row; ties go to the lowest index.

    Returns LongTensor[N] on the query's device."""
    _check(query, gallery)
    query, gallery = query.float(), gallery.float()
    # |q - g|^2 = |q|^2 - 2 q.g + |g|^2; |q|^2 is constant per row, so the argmin needs only |g|^2 - 2 q.g
    g_sq = gallery.pow(2).sum(1) if penalty is None else gallery.pow(2).sum(1) + penalty.float()
    out = torch.empty(query.shape[0], dtype=torch.long, device=query.device)
    for start in range(0, query.shape[0], chunk):
        q = query[start : start + chunk]
        d = torch.addmm(g_sq, q, gallery.T, beta=1.0, alpha=-2.0)
        out[start : start + chunk] = d.argmin(1)  # argmin returns the first minimum: the lowest index wins ties
    return out


@torch.no_grad()
def partner_ranks(query: torch.Tensor, gallery: torch.Tensor, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """0-based rank of each query's partner (gallery row i for query i) among all gallery rows by squared
    Euclidean distance; a tie ranks the lower index first, as `nearest` does (rank 0 ⇔ nearest is the partner)."""
    _check(query, gallery)
    if query.shape[0] != gallery.shape[0]:
        raise ValueError(f"paired retrieval needs as many queries as gallery rows: {query.shape[0]} vs {gallery.shape[0]}")
    query, gallery = query.float(), gallery.float()
    g_sq = gallery.pow(2).sum(1)
    out = torch.empty(query.shape[0], dtype=torch.long, device=query.device)
    for start in range(0, query.shape[0], chunk):
        d = torch.addmm(g_sq, query[start : start + chunk], gallery.T, beta=1.0, alpha=-2.0)
        rows = torch.arange(d.shape[0], device=d.device)
        own = d[rows, rows + start][:, None]
        before = torch.arange(d.shape[1], device=d.device)[None] < (rows + start)[:, None]
        out[start : start + chunk] = ((d < own) | ((d == own) & before)).sum(1)
    return out


def recall_at_k(query: torch.Tensor, gallery: torch.Tensor, ks=(1, 5, 10), chunk: int = DEFAULT_CHUNK) -> dict[int, float]:
    """{K: fraction of queries whose partner is among their K nearest gallery rows} (squared Euclidean)."""
    ranks = partner_ranks(query, gallery, chunk)
    return {k: (ranks < k).float().mean().item() for k in ks}


@torch.no_grad()
def top_k(query: torch.Tensor, gallery: torch.Tensor, k: int, metric: str = "euclidean",
          chunk: int = DEFAULT_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best gallery rows per query, best first: (indices [N, k], scores [N, k]) — squared Euclidean
    distances (smallest first) or cosine similarities (largest first)."""
    _check(query, gallery)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    k = min(k, gallery.shape[0])
    query, gallery = query.float(), gallery.float()
    if metric == "cosine":
        query, gallery = F.normalize(query, dim=1), F.normalize(gallery, dim=1)
    g_sq = gallery.pow(2).sum(1)
    indices, scores = [], []
    for start in range(0, query.shape[0], chunk):
        q = query[start : start + chunk]
        if metric == "cosine":
            best = (q @ gallery.T).topk(k, dim=1)
            indices.append(best.indices), scores.append(best.values)
        else:
            d = torch.addmm(g_sq, q, gallery.T, beta=1.0, alpha=-2.0) + q.pow(2).sum(1, keepdim=True)
            best = d.topk(k, dim=1, largest=False)
            indices.append(best.indices), scores.append(best.values.clamp(min=0))
    return torch.cat(indices), torch.cat(scores)


HUBNESS_K = 10  # the k of the k-occurrence whose skewness measures hubness (Radovanović et al., JMLR 2010)


@torch.no_grad()
def hubness(query: torch.Tensor, gallery: torch.Tensor, k: int = HUBNESS_K, chunk: int = DEFAULT_CHUNK) -> dict:
    """How unevenly a retrieval uses its gallery (squared Euclidean): `max`, how many queries retrieve the most
    retrieved gallery row first (1 when every query finds its own partner; large when one row is near everything, a
    hub), and `skew`, the skewness of the k-occurrence N_k (for each gallery row, how many queries have it among
    their k nearest): about 0 without hubs, large and positive with them."""
    first = torch.bincount(nearest(query, gallery, chunk), minlength=gallery.shape[0])
    among, _ = top_k(query, gallery, k, chunk=chunk)
    n_k = torch.bincount(among.flatten(), minlength=gallery.shape[0]).double()
    spread = n_k.std(unbiased=False)
    skew = (((n_k - n_k.mean()) / spread) ** 3).mean().item() if spread > 0 else 0.0
    return {"max": int(first.max()), "skew": skew}


# ---- rankings: the paper's, and three that discount hubs (diagnostics beside it, never the reported figure) ----
CSLS_K = 10  # the neighbourhood of CSLS's hub penalty, as in Conneau et al. (ICLR 2018)


def _unit(query: torch.Tensor, gallery: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return F.normalize(query.float(), dim=1), F.normalize(gallery.float(), dim=1)


@torch.no_grad()
def csls_penalty(query: torch.Tensor, gallery: torch.Tensor, k: int = CSLS_K, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """r(g_j): gallery row j's mean cosine similarity to its k most similar queries: large for a hub."""
    q, g = _unit(query, gallery)
    k = min(k, len(q))
    return torch.cat([(g[start : start + chunk] @ q.T).topk(k, dim=1).values.mean(1)
                      for start in range(0, len(g), chunk)])


def _csls(query: torch.Tensor, gallery: torch.Tensor):
    # CSLS(q, g) = 2 cos(q, g) - r(q) - r(g); on unit vectors 2 cos = 2 - |q - g|^2 and r(q) is constant per query,
    # so the best CSLS is the smallest |q - g|^2 + r(g) (the query side's r is left out: it ranks nothing)
    return (*_unit(query, gallery), csls_penalty(query, gallery))


def _centred(query: torch.Tensor, gallery: torch.Tensor):
    # centred cosine (Suzuki et al., EMNLP 2013): each side less its own mean, so a direction every code shares,
    # which makes the codes nearest to it hubs under cosine, ranks nothing; transductive like CSLS
    query, gallery = query.float(), gallery.float()
    return (*_unit(query - query.mean(0), gallery - gallery.mean(0)), None)


# name -> (query, gallery) -> (query, gallery, penalty per gallery row or None), ranked by `nearest`
RANKINGS: dict[str, Callable] = {
    "euclidean": lambda query, gallery: (query, gallery, None),  # the paper's: squared Euclidean on the r means
    "cosine": lambda query, gallery: (*_unit(query, gallery), None),  # blind to norms, so to norm hubs
    "centred": _centred,  # cosine after each side's mean is taken out: blind to a shared direction as well
    "csls": _csls,  # cosine less each gallery row's similarity to its nearest queries: transductive, hubs pay
}


def recall_at_1(query: torch.Tensor, gallery: torch.Tensor, chunk: int = DEFAULT_CHUNK,
                ranking: str = "euclidean") -> float:
    """Fraction of queries whose nearest gallery row (under `ranking`, see RANKINGS) is their partner (query i's
    partner is gallery i)."""
    if query.shape[0] != gallery.shape[0]:
        raise ValueError(f"paired retrieval needs as many queries as gallery rows: {query.shape[0]} vs {gallery.shape[0]}")
    if ranking not in RANKINGS:
        raise ValueError(f"ranking must be one of {', '.join(RANKINGS)}, got {ranking!r}")
    q, g, penalty = RANKINGS[ranking](query, gallery)
    hits = nearest(q, g, chunk, penalty=penalty) == torch.arange(query.shape[0], device=query.device)
    return hits.float().mean().item()


@torch.no_grad()
def _ranked_relevance(q, g, q_labels, g_labels, chunk):
    """Yields, per chunk of queries, a bool [c, M]: is the gallery item at each cosine rank relevant (same label)."""
    _check(q, g)
    q, g = F.normalize(q.float(), dim=1), F.normalize(g.float(), dim=1)
    g_labels = g_labels.to(g.device)
    for start in range(0, q.shape[0], chunk):
        sim = q[start : start + chunk] @ g.T
        # stable sort: equal similarities keep gallery order, so ties rank the lowest index first
        order = sim.sort(dim=1, descending=True, stable=True).indices
        yield g_labels[order] == q_labels[start : start + chunk].to(g.device)[:, None]


def mean_average_precision(
    q: torch.Tensor, g: torch.Tensor, q_labels: torch.Tensor, g_labels: torch.Tensor, chunk: int = 256
) -> float:
    """mAP@all with cosine similarity: per query, the mean of precision@rank over the ranks of its relevant
    gallery items (same label), averaged over queries. A query with no relevant item scores 0."""
    total = 0.0
    for rel in _ranked_relevance(q, g, q_labels, g_labels, chunk):
        rel = rel.float()
        ranks = torch.arange(1, rel.shape[1] + 1, device=rel.device)
        precision = rel.cumsum(1) / ranks
        n_rel = rel.sum(1)
        ap = (precision * rel).sum(1) / n_rel.clamp(min=1)
        total += ap.sum().item()
    return total / q.shape[0]


def mean_average_precision_at_k(
    q: torch.Tensor, g: torch.Tensor, q_labels: torch.Tensor, g_labels: torch.Tensor, k: int = 200, chunk: int = 256
) -> float:
    """mAP@k as the zero-shot SBIR literature reports it (the SAKE and Doodle2Search evaluation code: average
    precision over each query's k most cosine-similar gallery items, normalised by the relevant items among
    those k; a query with none scores 0)."""
    if k > g.shape[0]:
        raise ValueError(f"k={k} exceeds the gallery size {g.shape[0]}")
    total = 0.0
    for rel in _ranked_relevance(q, g, q_labels, g_labels, chunk):
        rel = rel[:, :k].float()
        precision = rel.cumsum(1) / torch.arange(1, k + 1, device=rel.device)
        total += ((precision * rel).sum(1) / rel.sum(1).clamp(min=1)).sum().item()
    return total / q.shape[0]


def precision_at_k(
    q: torch.Tensor, g: torch.Tensor, q_labels: torch.Tensor, g_labels: torch.Tensor, k: int = 100, chunk: int = 256
) -> float:
    """Mean fraction of relevant items (same label) among each query's k most cosine-similar gallery items."""
    if k > g.shape[0]:
        raise ValueError(f"k={k} exceeds the gallery size {g.shape[0]}")
    total = 0.0
    for rel in _ranked_relevance(q, g, q_labels, g_labels, chunk):
        total += rel[:, :k].float().mean(1).sum().item()
    return total / q.shape[0]


def _comparable(ex: torch.Tensor, ey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exclusive codes of one size: a map code (flattened channel-major, [N, C·H·W]) beside a vector one ([N, C],
    `exclusive_maps`) is averaged over its positions; codes of one size come back as they are."""
    size = min(ex.shape[1], ey.shape[1])
    return ex.reshape(len(ex), size, -1).mean(-1), ey.reshape(len(ey), size, -1).mean(-1)


def paired_scores(sx: torch.Tensor, sy: torch.Tensor, ex: torch.Tensor, ey: torch.Tensor) -> dict:
    """The paired protocol on codes [N, D] (pair i = row i of each): Recall@1 both ways on the shared (s) and
    exclusive (e) means, Recall@5, @10 and hubness on the shared ones; what `iiae eval` reports for a prepared
    split and for a folder of pair files (`--pairs`)."""
    ways = (("x2y", sx, sy), ("y2x", sy, sx))
    ex, ey = _comparable(ex, ey)
    at_k = {way: recall_at_k(q, g, RECALL_KS) for way, q, g in ways}
    hubs = {way: hubness(q, g) for way, q, g in ways}  # a diagnostic: do a few gallery codes attract the queries?
    return {
        **dict(zip(SHARED_RECALL, (recall_at_1(sx, sy), recall_at_1(sy, sx)))),
        **{f"recall_at_{k}_{way}": at_k[way][k] for k in RECALL_KS for way in at_k},
        **dict(zip(EXCLUSIVE_RECALL, (recall_at_1(ex, ey), recall_at_1(ey, ex)))),
        **{f"hubness_{stat}_{way}": hubs[way][stat] for stat in ("max", "skew") for way in hubs},
    }

"""Retrieval metrics on constructed embeddings with known answers."""
import pytest
import torch

from iiae.evaluation.retrieval_metrics import (mean_average_precision, mean_average_precision_at_k, nearest, partner_ranks, precision_at_k,
                              recall_at_1, recall_at_k, top_k)


def test_identity_gallery_is_perfect():
    q = torch.randn(300, 64)
    assert recall_at_1(q, q.clone()) == 1.0
    assert torch.equal(nearest(q, q), torch.arange(300))


def test_shuffled_gallery_is_near_chance():
    gen = torch.Generator().manual_seed(0)
    n = 2000
    q = torch.randn(n, 32, generator=gen)
    g = q[torch.randperm(n, generator=gen)]
    # every query still finds its exact copy, but at a random position: a hit only for fixed points (~1/n each)
    assert recall_at_1(q, g) < 5 / n
    assert recall_at_1(torch.randn(n, 32, generator=gen), torch.randn(n, 32, generator=gen)) < 10 / n


def test_ties_break_to_lowest_index():
    g = torch.tensor([[5.0, 5.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    q = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.5]])
    # q0: exact duplicates at 1 and 3; q1: rows 1, 2, 3, 4 all at distance 1; q2: nearest is row 2
    assert nearest(q, g).tolist() == [1, 1, 2]
    assert nearest(q, g, chunk=1).tolist() == [1, 1, 2]
    # all-equal codes (a collapsed encoder): every query picks gallery 0, so only pair 0 is a hit
    same = torch.ones(10, 4)
    assert nearest(same, same).tolist() == [0] * 10
    assert recall_at_1(same, same) == pytest.approx(0.1)


def test_chunked_equals_unchunked():
    gen = torch.Generator().manual_seed(1)
    q, g = torch.randn(257, 48, generator=gen), torch.randn(301, 48, generator=gen)
    full = nearest(q, g, chunk=10_000)
    assert torch.equal(nearest(q, g, chunk=7), full)
    assert torch.equal(full, torch.cdist(q.double(), g.double()).argmin(1))
    ql, gl = torch.randint(0, 5, (257,), generator=gen), torch.randint(0, 5, (301,), generator=gen)
    assert mean_average_precision(q, g, ql, gl, chunk=5) == pytest.approx(mean_average_precision(q, g, ql, gl, chunk=1000))
    assert precision_at_k(q, g, ql, gl, k=20, chunk=3) == pytest.approx(precision_at_k(q, g, ql, gl, k=20, chunk=999))


def test_recall_counts_partial_hits():
    q = torch.eye(4)
    g = torch.eye(4)[[0, 1, 3, 2]]  # pairs 2 and 3 swapped
    assert recall_at_1(q, g) == 0.5
    assert recall_at_1(g, q) == 0.5


def test_map_hand_computed():
    # one query along e1; gallery cosine similarities 0, 1, .6, .8
    q = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8], [0.8, 0.6]])  # sims 0, 1, .6, .8
    g_labels = torch.tensor([1, 1, 0, 1])
    # ranking: g1 (rel), g3 (rel), g2 (not), g0 (rel) → precisions at relevant ranks 1/1, 2/2, 3/4
    expected = (1 + 1 + 3 / 4) / 3
    assert mean_average_precision(q, g, torch.tensor([1]), g_labels) == pytest.approx(expected)
    assert precision_at_k(q, g, torch.tensor([1]), g_labels, k=3) == pytest.approx(2 / 3)
    # a second query whose only relevant item ranks last: AP = 1/4; mAP averages the two
    q2 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    labels2 = torch.tensor([1, 2])
    g_labels2 = torch.tensor([2, 1, 1, 1])
    aps = [(1 / 1 + 2 / 2 + 3 / 3) / 3, 1 / 4]  # label 1: g1, g3, g2 relevant at ranks 1-3; label 2: g0 at rank 4
    assert mean_average_precision(q2, g, labels2, g_labels2) == pytest.approx(sum(aps) / 2)


def test_cosine_ignores_norm_and_no_relevant_scores_zero():
    q = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    g = torch.tensor([[10.0, 0.0], [0.0, 0.1]])
    labels = torch.tensor([0, 1])
    assert mean_average_precision(q, g, labels, labels) == 1.0
    assert precision_at_k(q, g, labels, labels, k=1) == 1.0
    assert mean_average_precision(q, g, torch.tensor([7, 7]), labels) == 0.0
    with pytest.raises(ValueError):
        precision_at_k(q, g, labels, labels, k=3)


@pytest.mark.slow
def test_paper_scale_fits_in_bounded_memory():
    # 10,000 x 8,192-d codes both ways (the 256-px z^s): beyond the two 328 MB embeddings only chunk-sized blocks
    import resource

    gen = torch.Generator().manual_seed(3)
    q = torch.randn(10_000, 8192, generator=gen)
    g = q + 0.01 * torch.randn(q.shape, generator=gen)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert recall_at_1(q, g) == 1.0
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert grown < 300e6  # a full 10,000 x 10,000 distance matrix alone would be 400 MB


def test_large_inputs_run_chunked():
    # the paper's gallery size and code width at reduced count: shapes flow through the chunked path
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(1500, 8192, generator=gen)
    assert recall_at_1(q, q + 1e-3 * torch.randn(q.shape, generator=gen), chunk=512) == 1.0


def test_partner_ranks_and_recall_at_k_against_a_full_sort():
    gen = torch.Generator().manual_seed(3)
    q, g = torch.randn(57, 6, generator=gen), torch.randn(57, 6, generator=gen)
    g[10] = g[3]  # a tie: query 10's partner ties with row 3, which ranks first
    d = torch.cdist(q, g).pow(2)
    expected = torch.tensor([int((d[i] < d[i, i]).sum() + ((d[i] == d[i, i]) & (torch.arange(57) < i)).sum())
                             for i in range(57)])
    assert torch.equal(partner_ranks(q, g, chunk=8), expected)
    at_k = recall_at_k(q, g, (1, 5, 10, 57), chunk=16)
    assert at_k == {k: (expected < k).float().mean().item() for k in (1, 5, 10, 57)}
    assert at_k[1] == recall_at_1(q, g) and at_k[57] == 1.0 and at_k[1] < at_k[5] < at_k[10]


def test_top_k_is_the_sorted_head_for_both_metrics():
    gen = torch.Generator().manual_seed(4)
    q, g = torch.randn(9, 5, generator=gen), torch.randn(30, 5, generator=gen)
    idx, dist = top_k(q, g, 4, chunk=4)
    full = torch.cdist(q, g).pow(2)
    assert torch.equal(idx, full.argsort(1)[:, :4])
    torch.testing.assert_close(dist, full.sort(1).values[:, :4], atol=1e-4, rtol=1e-4)
    idx, sim = top_k(q * 7, g, 3, metric="cosine")  # cosine ignores the query's norm
    cos = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(g, dim=1).T
    assert torch.equal(idx, cos.argsort(1, descending=True)[:, :3])
    assert top_k(q, g[:2], 10)[0].shape == (9, 2)  # k beyond the gallery: all of it
    with pytest.raises(ValueError, match="metric must be"):
        top_k(q, g, 3, metric="manhattan")


def test_map_at_k_hand_computed():
    # one query; gallery ranked by cosine: relevant at ranks 1, 3 and 5 (of 6)
    q = torch.tensor([[1.0, 0.0]])
    angles = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    g = torch.stack([angles.cos(), angles.sin()], 1)
    q_cls, g_cls = torch.tensor([1]), torch.tensor([1, 0, 1, 0, 1, 0])
    # top 3: ranks 1 and 3 relevant → (1/1 + 2/3) / 2; top 6 equals mAP@all
    assert mean_average_precision_at_k(q, g, q_cls, g_cls, k=3) == pytest.approx((1 + 2 / 3) / 2)
    assert mean_average_precision_at_k(q, g, q_cls, g_cls, k=6) == pytest.approx(
        mean_average_precision(q, g, q_cls, g_cls))
    assert mean_average_precision_at_k(q, g, q_cls, torch.zeros(6, dtype=torch.long), k=3) == 0.0
    with pytest.raises(ValueError, match="exceeds the gallery"):
        mean_average_precision_at_k(q, g, q_cls, g_cls, k=7)


def test_hubness_scores_a_planted_hub():
    """A gallery with one row at the centre of every query: it is retrieved first by all of them and its
    k-occurrence stands out; with each query's own partner in the gallery nothing does."""
    from iiae.evaluation.retrieval_metrics import hubness

    torch.manual_seed(0)
    queries = torch.randn(50, 8) * 10
    partners = queries + 0.01 * torch.randn(50, 8)
    hubbed = torch.cat([partners[:49] + 100.0, torch.zeros(1, 8)])  # row 49 is near everything, the rest far away
    # k = 1: N_1 is all ones with the partners (no spread: skew 0), one 50 among 49 zeros with the hub
    assert hubness(queries, partners, k=1) == {"max": 1, "skew": 0.0}
    planted = hubness(queries, hubbed, k=1)
    assert planted["max"] == 50 and planted["skew"] == pytest.approx(49 ** 0.5 - 1 / 49 ** 0.5)
    # the default k = 10 ranks the hubbed gallery above the partners' (which random points skew a little)
    assert hubness(queries, hubbed)["skew"] > hubness(queries, partners)["skew"]
    assert 1 < hubness(queries, torch.randn(50, 8) * 10)["max"] < 50  # an unrelated gallery: mild hubs


def test_csls_ranks_as_its_definition_and_discounts_norm_hubs():
    """CSLS (Conneau et al. 2018) written out in full, 2 cos(q, g) - r_T(q) - r_S(g) with r the mean cosine to the
    k most similar rows of the other side, picks what `recall_at_1(ranking="csls")` picks, query by query; on the
    issue's model of Maps (r^x = m + u, r^y = m / 2) cosine and CSLS recover map queries the paper's ranking loses."""
    import torch.nn.functional as F

    from iiae.evaluation.retrieval_metrics import CSLS_K, RANKINGS, csls_penalty, nearest, recall_at_1

    g = torch.Generator().manual_seed(0)
    q, gal = torch.randn(60, 8, generator=g), torch.randn(60, 8, generator=g)
    cos = F.normalize(q, dim=1) @ F.normalize(gal, dim=1).T
    r_t, r_s = cos.topk(CSLS_K, dim=1).values.mean(1), cos.T.topk(CSLS_K, dim=1).values.mean(1)
    assert torch.allclose(csls_penalty(q, gal, chunk=7), r_s, atol=1e-6)  # chunking changes nothing
    full = 2 * cos - r_t[:, None] - r_s[None, :]

    def ranked(name):
        query, gallery, penalty = RANKINGS[name](q, gal)
        return nearest(query, gallery, penalty=penalty)

    assert torch.equal(ranked("csls"), full.argmax(1)) and torch.equal(ranked("cosine"), cos.argmax(1))
    assert torch.equal(ranked("euclidean"), (torch.cdist(q, gal) ** 2).argmin(1))

    m = torch.randn(400, 16, generator=g)
    u = torch.randn(400, 48, generator=g) * torch.rand(400, 1, generator=g) * 2
    r_x, r_y = torch.cat([m, u], 1), torch.cat([0.5 * m, torch.zeros(400, 48)], 1)
    euclid, cosine, csls = (recall_at_1(r_y, r_x, ranking=r) for r in ("euclidean", "cosine", "csls"))
    assert euclid < 0.2 and cosine > euclid + 0.2 and csls > cosine + 0.2
    assert recall_at_1(r_x, r_y, ranking="csls") == 1.0  # satellite queries: u is common to the candidates
    with pytest.raises(ValueError, match="ranking must be one of"):
        recall_at_1(r_x, r_y, ranking="dot")


def test_centred_cosine_is_cosine_after_each_side_loses_its_mean_and_discounts_a_shared_direction():
    """Centred cosine (Suzuki et al. 2013) picks what cosine picks on mean-free copies of both sides; when each side's
    codes share a direction of their own (b_x, b_y), the gallery codes with the least else point along b_x, nearest
    to every query, and become hubs of cosine; centring takes both offsets out and the partners back."""
    import torch.nn.functional as F

    from iiae.evaluation.retrieval_metrics import RANKINGS, hubness, nearest, recall_at_1

    g = torch.Generator().manual_seed(0)
    q, gal = torch.randn(50, 8, generator=g) + 3, torch.randn(50, 8, generator=g) - 1
    query, gallery, penalty = RANKINGS["centred"](q, gal)
    cos = F.normalize(q - q.mean(0), dim=1) @ F.normalize(gal - gal.mean(0), dim=1).T
    assert penalty is None and torch.equal(nearest(query, gallery), cos.argmax(1))

    s = torch.randn(300, 16, generator=g) * torch.rand(300, 1, generator=g) * 2  # per-pair content, norms vary
    b_x, b_y = torch.zeros(16), torch.zeros(16)
    b_x[0], b_y[1] = 4.0, 4.0  # each side's own offset
    r_x, r_y = b_x + s, b_y + 0.7 * s + 0.1 * torch.randn(300, 16, generator=g)
    cosine, centred, csls = (recall_at_1(r_y, r_x, ranking=r) for r in ("cosine", "centred", "csls"))
    assert cosine < 0.4 and centred > 0.9 and csls < centred
    assert hubness(*RANKINGS["cosine"](r_y, r_x)[:2])["max"] > 5 * hubness(*RANKINGS["centred"](r_y, r_x)[:2])["max"]


def test_code_diagnosis_tells_norm_hubs_from_unrelated_misses():
    """r^x = m + u (u: content y cannot predict, of varying norm), r^y = c·m: y queries miss toward small-norm x
    codes, r^x is poorly predicted from r^y, r^y varies less; with u = 0 and c = 1 none of that holds."""
    from iiae.evaluation.code_diagnosis import diagnose, linear_r2

    g = torch.Generator().manual_seed(0)
    m = torch.randn(400, 16, generator=g)
    u = torch.randn(400, 48, generator=g) * torch.rand(400, 1, generator=g) * 2
    r_x, r_y = torch.cat([m, u], 1), torch.cat([0.5 * m, torch.zeros(400, 48)], 1)
    hubbed = diagnose(r_x, r_y)
    assert hubbed["miss_norm_rank_y2x"] < 0.2 and hubbed["miss_smaller_y2x"] > 0.9
    assert 0.05 < hubbed["r2_x_from_y"] < 0.3  # m holds a fifth of the variance of r^x (16 of 80 units)
    assert hubbed["r2_y_from_x"] > 0.99  # r^y is a linear function of r^x
    assert hubbed["active_dims"] == 64 and hubbed["active_var_y"] < 0.3 * hubbed["active_var_x"]
    assert hubbed["recall_at_1_y2x_csls"] > hubbed["recall_at_1_y2x_cosine"] > 0.3  # hubs of the ranking
    noisy = m + 0.5 * torch.randn(400, 16, generator=g)
    plain = diagnose(m, noisy)  # misses from noise alone: unrelated to the gallery norms
    assert 0.35 < plain["miss_norm_rank_y2x"] < 0.65 and 0.3 < plain["miss_smaller_y2x"] < 0.7
    assert plain["r2_x_from_y"] > 0.75 and plain["active_dims"] == 16
    assert linear_r2(m, torch.randn(400, 4, generator=g)) < 0.05  # unrelated targets: nothing predicted
    on_sphere = diagnose(*(torch.nn.functional.normalize(r, dim=1) for r in (r_x, r_y)))  # one norm: no norm rank
    assert all(on_sphere[f"miss_{k}_{way}"] != on_sphere[f"miss_{k}_{way}"] for k in ("norm_rank", "smaller")
               for way in ("x2y", "y2x"))
    with pytest.raises(ValueError, match="one shape"):
        diagnose(r_x, r_y[:, :10])


def test_exclusive_map_codes_are_compared_with_vectors_by_their_mean_over_positions():
    """`exclusive_maps`: X's exclusive code a [C, H, W] map, Y's a C-vector. The exclusive ablation ranks Y's
    vectors by distance to the mean of each X map over its positions: equal means retrieve their partner."""
    from iiae.evaluation.retrieval_metrics import paired_scores

    g = torch.Generator().manual_seed(0)
    n, c = 40, 4
    shared = torch.randn(n, 8, generator=g)
    ey = torch.randn(n, c, generator=g)
    wiggle = torch.randn(n, c, 3, 3, generator=g)
    ex = ey[:, :, None, None] + wiggle - wiggle.mean((2, 3), keepdim=True)  # its mean over positions is ey
    scores = paired_scores(shared, shared, ex.flatten(1), ey)
    assert scores["exclusive_recall_at_1_x2y"] == 1.0 and scores["exclusive_recall_at_1_y2x"] == 1.0
    unrelated = paired_scores(shared, shared, torch.randn(n, c * 9, generator=g), ey)
    assert unrelated["exclusive_recall_at_1_x2y"] <= 0.1

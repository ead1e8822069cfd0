"""Cross-modality localization maths on hand-made arrays: eq. 8, the protocol, losses, pairs, models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avel.crossmodal.localize import (best_start, evaluate_distances, event_span, localize, window_scores)
from avel.crossmodal.losses import cca_loss, cca_projection, contrastive_loss
from avel.crossmodal.models import AVDLN, DCCA, CrossModalConfig, build_model, euclidean_distance
from avel.crossmodal.pairs import positive_pairs, sample_pairs
from avel.errors import AvelError

pytestmark = pytest.mark.usefixtures("one_thread")



def brute_force_start(dist: np.ndarray, start: int, length: int, direction: str) -> int:
    """Eq. 8 written out with 1-based t as in the paper, loops only: the reference for `localize`."""
    total = dist.shape[0]
    best_t, best_score = None, None
    for t in range(1, total - length + 2):
        score = 0.0
        for s in range(1, length + 1):
            query_second, search_second = start + s - 1, t + s - 2
            if direction == "A2V":  # D(V_{s+t-1}, A^_s)
                score += float(dist[search_second, query_second])
            else:  # D(V^_s, A_{s+t-1})
                score += float(dist[query_second, search_second])
        if best_score is None or score < best_score:  # strict: the first minimum wins
            best_t, best_score = t, score
    return best_t - 1


# ---- eq. 8 ------------------------------------------------------------------------------------------

def test_window_scores_by_hand():
    pair = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.float32)  # query l=2, video T=4
    np.testing.assert_array_equal(window_scores(pair), [1 + 6, 2 + 7, 3 + 8])
    assert best_start(pair) == 0


def test_ties_pick_the_first_minimum():
    pair = np.array([[3.0, 1.0, 2.0, 1.0, 5.0]])  # l=1: starts 1 and 3 tie at 1.0
    assert best_start(pair) == 1
    pair2 = np.array([[5.0, 1.0, 2.0, 0.0], [0.0, 1.0, 3.0, 2.0]])  # l=2: scores a_t + b_(t+1)
    np.testing.assert_array_equal(window_scores(pair2), [5 + 1, 1 + 3, 2 + 2])
    assert best_start(pair2) == 1  # starts 1 and 2 tie at 4: the earliest wins
    assert best_start(np.full((3, 10), 0.25)) == 0  # constant distances: start 0


def test_length_one_is_argmin_of_the_row():
    rng = np.random.default_rng(0)
    row = rng.random((1, 10))
    assert best_start(row) == int(np.argmin(row[0]))


def test_length_t_minus_one_has_two_candidates():
    pair = np.ones((9, 10))
    pair[np.arange(9), np.arange(9) + 1] = 0.0  # the window starting at 1 matches perfectly
    np.testing.assert_array_equal(window_scores(pair), [9.0, 0.0])
    assert best_start(pair) == 1


def test_full_length_query_has_one_candidate_and_longer_is_an_error():
    assert window_scores(np.ones((10, 10))).shape == (1,)
    with pytest.raises(AvelError, match="query of 11 s is longer than the 10-s video"):
        window_scores(np.ones((11, 10)))
    with pytest.raises(AvelError, match="longer than"):
        localize(np.ones((10, 10)), 0, 11, "A2V")
    with pytest.raises(AvelError, match="outside"):
        localize(np.ones((10, 10)), 8, 3, "V2A")


def test_localize_matches_brute_force_both_directions():
    rng = np.random.default_rng(1)
    for _ in range(200):
        dist = rng.integers(0, 4, size=(10, 10)).astype(np.float32)  # small integers: many ties
        length = int(rng.integers(1, 10))
        start = int(rng.integers(0, 10 - length + 1))
        for direction in ("A2V", "V2A"):
            assert localize(dist, start, length, direction) == brute_force_start(dist, start, length, direction)


def test_directions_use_the_right_axis():
    # dist[i, j] = D(V_i, A_j). Audio second 2 is close to visual second 5 only; visual 2 to audio 7 only.
    dist = np.ones((10, 10))
    dist[5, 2] = 0.0
    dist[2, 7] = 0.0
    assert localize(dist, 2, 1, "A2V") == 5
    assert localize(dist, 2, 1, "V2A") == 7


# ---- evaluation protocol ----------------------------------------------------------------------------

def test_event_span_and_skip_reasons():
    assert event_span(np.array([0, 0, 1, 1, 1, 0, 0, 0, 0, 0])) == (2, 3)
    assert event_span(np.zeros(10)) == "no_event"
    assert event_span(np.ones(10)) == "full_length"
    assert event_span(np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0])) == "non_contiguous"
    assert event_span(np.array([0] * 9 + [1])) == (9, 1)


def test_evaluate_distances_counts_accuracy_and_chance():
    t = 10
    masks = np.zeros((5, t))
    masks[1] = 1  # full length: skipped
    masks[2, 3:6] = 1  # l=3 at 3
    masks[3, 0:1] = 1  # l=1 at 0
    masks[4, 1:10] = 1  # l=9 at 1
    # video 0: no event -> skipped
    dists = np.ones((5, t, t), np.float32)
    eye = np.eye(t, dtype=np.float32)
    dists[2] = 1 - eye  # perfect: synchronized pairs have distance 0 -> both directions right
    dists[3] = 1.0
    dists[3, 4, 0] = 0.0  # audio 0 looks like visual 4: A2V -> 4 (wrong); V2A all ties -> 0 (right)
    dists[4] = 1 - eye  # perfect
    res = evaluate_distances(dists, masks, rows=[10, 11, 12, 13, 14])
    assert res.evaluated == 3
    assert res.skipped == {"no_event": 1, "full_length": 1, "non_contiguous": 0}
    assert [(v.row, v.start, v.length, v.a2v, v.v2a) for v in res.videos] == [
        (12, 3, 3, 3, 3), (13, 0, 1, 4, 0), (14, 1, 9, 1, 1)]
    assert res.accuracy("A2V") == pytest.approx(100 * 2 / 3)
    assert res.accuracy("V2A") == pytest.approx(100.0)
    assert res.chance == pytest.approx(100 * (1 / 8 + 1 / 10 + 1 / 2) / 3)
    d = res.to_dict(per_video=True)
    assert d["evaluated"] == 3 and d["skipped"] == 2 and len(d["videos"]) == 3


# ---- losses -----------------------------------------------------------------------------------------

def test_contrastive_loss_by_hand():
    d = torch.tensor([0.5, 1.0, 3.0, 0.0])
    y = torch.tensor([1.0, 0.0, 0.0, 1.0])
    # 0.5^2, (2-1)^2, max(0, 2-3)^2 = 0, 0
    assert contrastive_loss(d, y, margin=2.0).item() == pytest.approx((0.25 + 1.0 + 0.0 + 0.0) / 4)
    assert contrastive_loss(d, y, margin=1.0).item() == pytest.approx((0.25 + 0.0 + 0.0 + 0.0) / 4)


def numpy_canonical_correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Independent CCA: singular values of Qx^T Qy from QR of the centred data (Bjorck & Golub)."""
    qx, _ = np.linalg.qr(x - x.mean(0))
    qy, _ = np.linalg.qr(y - y.mean(0))
    return np.linalg.svd(qx.T @ qy, compute_uv=False)


def test_cca_loss_matches_an_independent_cca():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 3))
    x = np.c_[z + 0.5 * rng.normal(size=(500, 3)), rng.normal(size=(500, 2))]
    y = np.c_[z @ rng.normal(size=(3, 3)) + rng.normal(size=(500, 3)), rng.normal(size=(500, 1))]
    ref = numpy_canonical_correlations(x, y)
    got = -cca_loss(torch.tensor(x), torch.tensor(y), reg=0.0).item()
    assert got == pytest.approx(ref.sum(), rel=1e-6)
    got2 = -cca_loss(torch.tensor(x), torch.tensor(y), k=2, reg=0.0).item()
    assert got2 == pytest.approx(ref[:2].sum(), rel=1e-6)


def test_cca_loss_of_linearly_related_views_is_minus_dim_and_has_gradients():
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(size=(200, 4)), requires_grad=True)
    y = x.detach() @ torch.tensor(rng.normal(size=(4, 4))) + 3.0
    loss = cca_loss(x, y, reg=0.0)
    assert loss.item() == pytest.approx(-4.0, abs=1e-6)
    cca_loss(x, y + torch.tensor(rng.normal(size=(200, 4))), reg=1e-3).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_cca_projection_whitens_and_correlates():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(2000, 2))
    x = torch.tensor(np.c_[z, rng.normal(size=(2000, 3))] + rng.normal(size=(2000, 5)) * 0.3)
    y = np.c_[z @ [[1.0, 2.0], [0.5, -1.0]], rng.normal(size=(2000, 2))]
    y = torch.tensor(y + rng.normal(size=(2000, 4)) * 0.3)
    m1, p1, m2, p2, corr = cca_projection(x, y, k=3, reg=0.0)
    u, v = ((x - m1) @ p1).numpy(), ((y - m2) @ p2).numpy()  # (N, 3) canonical variates
    np.testing.assert_allclose(np.cov(u.T), np.eye(3), atol=1e-8)
    np.testing.assert_allclose(np.cov(v.T), np.eye(3), atol=1e-8)
    np.testing.assert_allclose(np.cov(u.T, v.T)[:3, 3:], np.diag(corr.numpy()), atol=1e-8)
    np.testing.assert_allclose(corr.numpy(), numpy_canonical_correlations(x.numpy(), y.numpy())[:3], rtol=1e-8)


# ---- pairs ------------------------------------------------------------------------------------------

def test_sample_pairs_labels_and_counts():
    mask = np.zeros((3, 10))
    mask[0, 2:5] = 1
    mask[1] = 1
    # video 2: no event
    pairs = sample_pairs(mask, np.random.default_rng(0), shifted_per_positive=2, background=True,
                         into_background=False)
    n_pos, n_bg = int(mask.sum()), int((mask == 0).sum())
    assert len(pairs) == n_pos + 2 * n_pos + n_bg
    pos = pairs.same == 1
    assert pos.sum() == n_pos
    assert (pairs.audio_t[pos] == pairs.visual_t[pos]).all() and (mask[pairs.video[pos], pairs.audio_t[pos]] == 1).all()
    shifted = (pairs.same == 0) & (pairs.audio_t != pairs.visual_t)
    assert shifted.sum() == 2 * n_pos
    # the unshifted side of a shifted negative is an event second of its video
    a_ev = mask[pairs.video[shifted], pairs.audio_t[shifted]] == 1
    v_ev = mask[pairs.video[shifted], pairs.visual_t[shifted]] == 1
    assert (a_ev | v_ev).all()
    assert 0 < a_ev.sum() < shifted.sum()  # both modalities get shifted
    bg = (pairs.same == 0) & (pairs.audio_t == pairs.visual_t)
    assert bg.sum() == n_bg and (mask[pairs.video[bg], pairs.audio_t[bg]] == 0).all()


def test_shifted_negatives_into_background_pair_event_with_non_event():
    mask = np.zeros((3, 10))
    mask[0, 2:5] = 1  # 3 event seconds, 7 background
    mask[1] = 1  # full length: no background second to move to
    mask[2, 9] = 1
    pairs = sample_pairs(mask, np.random.default_rng(1), shifted_per_positive=3, background=False)
    neg = pairs.same == 0
    assert neg.sum() == 3 * (3 + 1)  # videos 0 and 2 only
    a_ev = mask[pairs.video[neg], pairs.audio_t[neg]] == 1
    v_ev = mask[pairs.video[neg], pairs.visual_t[neg]] == 1
    assert (a_ev ^ v_ev).all()  # exactly one side is an event second
    assert not (pairs.video[neg] == 1).any()
    moved = np.where(a_ev, pairs.visual_t[neg], pairs.audio_t[neg])[pairs.video[neg] == 0]
    assert set(moved) <= {0, 1, 5, 6, 7, 8, 9}


def test_sample_pairs_is_seeded_and_options_work():
    mask = (np.random.default_rng(3).random((20, 10)) > 0.5).astype(np.float32)
    a = sample_pairs(mask, np.random.default_rng(7))
    b = sample_pairs(mask, np.random.default_rng(7))
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("video", "audio_t", "visual_t", "same"))
    only_pos = sample_pairs(mask, np.random.default_rng(7), shifted_per_positive=0, background=False)
    assert len(only_pos) == int(mask.sum()) and (only_pos.same == 1).all()
    assert len(positive_pairs(mask)) == int(mask.sum())


# ---- models -----------------------------------------------------------------------------------------

def test_avdln_shapes_and_distance_matrix_agrees_with_pairwise_forward():
    torch.manual_seed(0)
    model = build_model(CrossModalConfig(method="avdln"))
    assert isinstance(model, AVDLN)
    audio, visual = torch.randn(3, 10, 128), torch.randn(3, 10, 512)
    dm = model.distance_matrix(audio, visual)
    assert dm.shape == (3, 10, 10)
    i, j = 4, 7
    torch.testing.assert_close(dm[:, i, j], model(audio[:, j], visual[:, i]))
    assert model(audio, visual).shape == (3, 10)


def test_distance_has_the_keras_epsilon_floor():
    x = torch.zeros(2, 5)
    assert euclidean_distance(x, x).tolist() == pytest.approx([1e-7 ** 0.5] * 2)
    assert euclidean_distance(x, x + torch.tensor([3.0, 4.0, 0, 0, 0])).tolist() == pytest.approx([5.0, 5.0])


def test_dcca_projection_is_part_of_the_state_and_whitens():
    torch.manual_seed(0)
    cfg = CrossModalConfig(method="dcca", cca_dim=8, cca_reg=1e-9)
    model = build_model(cfg)
    assert isinstance(model, DCCA)
    z = torch.randn(3000, 16)
    audio = torch.cat([z, torch.randn(3000, 112)], 1)
    visual = torch.cat([z @ torch.randn(16, 16), torch.randn(3000, 496)], 1)
    corr = model.fit_projection(audio, visual)
    assert corr.shape == (8,) and (corr[:-1] >= corr[1:]).all() and 0 < corr[0] <= 1
    ea = model.embed_audio(audio)
    assert ea.shape == (3000, 8)
    np.testing.assert_allclose(np.cov(ea.detach().numpy().T), np.eye(8), atol=1e-3)
    assert {"audio_mean", "audio_proj", "visual_mean", "visual_proj", "correlations"} <= set(model.state_dict())


def test_config_validation():
    with pytest.raises(AvelError, match="unknown cross-modal method 'xyz'"):
        build_model(CrossModalConfig(method="xyz"))
    with pytest.raises(AvelError, match="cca_dim"):
        build_model(CrossModalConfig(method="dcca", cca_dim=65))
    with pytest.raises(AvelError, match="unknown fields"):
        CrossModalConfig.from_dict({"method": "avdln", "bogus": 1})
    assert CrossModalConfig.from_dict(CrossModalConfig(method="dcca").to_dict()) == CrossModalConfig(method="dcca")

"""The Relations and Contrastive pages' numbers (kd_core.relations) on small known inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kd_core import crd, losses, methods, relations


def test_class_sorted_batch_is_balanced_sorted_and_stable():
    y = np.array([2, 0, 1, 0, 2, 1, 1, 0, 2, 2, 1, 0, 0])
    b = relations.class_sorted_batch(y, 6, seed=3)
    assert len(b) == 6 and len(set(b.tolist())) == 6
    assert (np.diff(y[b]) >= 0).all()  # sorted by class
    assert np.bincount(y[b], minlength=3).tolist() == [2, 2, 2]  # balanced
    assert np.array_equal(b, relations.class_sorted_batch(y, 6, seed=3))  # reproducible
    bigger = relations.class_sorted_batch(y, 9, seed=3)
    assert set(b.tolist()) <= set(bigger.tolist())  # a larger N keeps the smaller one's images
    assert len(relations.class_sorted_batch(y, 100)) == len(y)  # at most every sample
    # a class that runs out leaves the rest to the others
    y2 = np.array([0, 1, 1, 1, 1])
    assert sorted(y2[relations.class_sorted_batch(y2, 4)].tolist()) == [0, 1, 1, 1]


def test_pool_indices():
    assert np.array_equal(relations.pool_indices(10, 20), np.arange(10))
    p = relations.pool_indices(5000, 1000, seed=0)
    assert len(p) == 1000 and len(np.unique(p)) == 1000 and (np.diff(p) > 0).all() and p.max() < 5000
    assert np.array_equal(p, relations.pool_indices(5000, 1000, seed=0))


def test_matrices_are_the_losses_definitions():
    torch.manual_seed(0)
    e = torch.randn(7, 5)
    m = relations.relation_matrices(e, anchor=2)
    assert set(m) == set(relations.MATRICES)
    assert np.allclose(m["distance"], losses.normalised_distances(e).numpy(), atol=1e-6)
    assert np.allclose(m["angle"], losses.angle_potentials(e)[2].numpy(), atol=1e-5)
    assert np.allclose(m["sp"], losses.similarity_matrix(e).numpy(), atol=1e-6)
    assert np.allclose(m["pkt"], losses.pkt_probabilities(e).numpy(), atol=1e-6)
    # known values: three points on a line at 0, 1, 3
    line = torch.tensor([[0.0], [1.0], [3.0]])
    d = relations.relation_matrices(line, anchor=1)
    assert np.allclose(d["distance"], np.array([[0, 1, 3], [1, 0, 2], [3, 2, 0]]) / 2.0)  # mean distance 2
    assert d["angle"][0, 2] == pytest.approx(-1.0)  # 0 and 3 lie on opposite sides of the anchor 1
    assert d["angle"][0, 0] == pytest.approx(1.0)


def test_losses_vanish_for_a_scaled_copy_of_the_teacher():
    torch.manual_seed(1)
    t = torch.rand(10, 6)
    same = relations.relational_losses(3.0 * t, t)  # every relation is scale-free
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in same.values()), same
    other = relations.relational_losses(torch.rand(10, 4), t)
    assert all(v > 0 for v in other.values())
    assert relations.matrix_gap(np.eye(2), np.zeros((2, 2))) == pytest.approx(0.5)


def test_2d_maps_and_alignment():
    rng = np.random.default_rng(0)
    x = np.c_[np.linspace(0, 10, 40), np.zeros(40), 0.01 * rng.normal(size=40)]
    p = relations.embed_2d(x, "pca")
    assert p.shape == (40, 2) and abs(p[:, 0].std()) > 100 * abs(p[:, 1].std())  # the line is the first axis
    t = relations.embed_2d(rng.normal(size=(60, 8)), "tsne")
    assert t.shape == (60, 2) and np.isfinite(t).all()
    with pytest.raises(ValueError, match="at most"):
        relations.embed_2d(np.zeros((relations.TSNE_MAX + 1, 3)), "tsne")
    with pytest.raises(ValueError, match="unknown"):
        relations.embed_2d(x, "umap")
    ref = rng.normal(size=(30, 2))
    rot = np.array([[0.0, -1.0], [-1.0, 0.0]])  # a reflection
    moved = 5.0 * ref @ rot + np.array([3.0, -2.0])
    assert np.allclose(relations.align_to(ref, moved), ref, atol=1e-9)


def test_retrieval_similarity_and_info_nce():
    torch.manual_seed(2)
    e = torch.randn(16, 8)
    assert relations.retrieval_accuracy(e, e) == 1.0  # identical embeddings: every sample finds itself
    assert relations.retrieval_accuracy(e, e[torch.roll(torch.arange(16), 1)]) == 0.0
    sim = relations.similarity(e, e)
    assert sim.shape == (16, 16) and np.allclose(np.diag(sim), 1.0, atol=1e-6)
    s = torch.randn(16, 8)
    sim = relations.similarity(s, e)
    for tau in (0.07, 0.5):
        nce = relations.per_sample_info_nce(sim, tau)
        assert nce.mean() == pytest.approx(float(losses.info_nce_loss(s, e, tau)), rel=1e-5)
        p = relations.row_softmax(sim, tau)
        assert np.allclose(p.sum(1), 1.0)
        assert p[np.arange(16), np.arange(16)] == pytest.approx(np.exp(-nce))
    assert relations.row_softmax(sim, 0.05).max(1).mean() > relations.row_softmax(sim, 1.0).max(1).mean()  # sharper


def test_linear_map_and_projection_heads():
    torch.manual_seed(3)
    src = torch.randn(200, 5)
    w_true = torch.randn(5, 3)
    dst = src @ w_true + 0.5
    w = relations.fit_linear_map(src, dst, ridge=1e-9)
    assert torch.allclose(relations.apply_map(w, src), dst, atol=1e-3)
    s, t = torch.randn(4, 32), torch.randn(4, 128)
    proj = methods.Projections(32, 128, 16)
    gs, gt = relations.project(proj, s, t)
    assert gs.shape == gt.shape == (4, 16) and torch.allclose(gs.norm(dim=1), torch.ones(4))
    c = crd.CRD(32, 128, feat_dim=8, n_data=10)
    gs, gt = relations.project(c, s, t)
    assert gs.shape == (4, 8) and torch.allclose(gt.norm(dim=1), torch.ones(4))
    assert relations.project(None, s, t) is None
    assert relations.project(methods.Regressors([((8,), (4,))]), s, t) is None  # FitNets regressors: no heads

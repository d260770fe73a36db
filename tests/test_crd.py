"""CRD (Tian, Krishnan & Isola 2020) against its definition: the NCE loss of eq. 18 by
hand, the scores P = exp(v·M/tau)/Z with Z estimated on the first batch, the memory
banks' momentum update (shape kept, unit rows), negatives that are other images, and a
short end-to-end run on mnist-mini."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from kd_core import crd, features, methods, train
from kd_core.config import Config


def hand_nce(p: torch.Tensor, n_data: int) -> torch.Tensor:
    """Eq. 18 written out: h = P / (P + K/N); -(1/B) sum_i [log h_i0 + sum_k log(1 - h_ik)]."""
    b, k1 = p.shape
    k = k1 - 1
    total = 0.0
    for i in range(b):
        h0 = p[i, 0] / (p[i, 0] + k / n_data)
        total = total + math.log(h0)
        for j in range(1, k1):
            hk = p[i, j] / (p[i, j] + k / n_data)
            total = total + math.log(1 - hk)
    return torch.tensor(-total / b, dtype=torch.float64)


def test_nce_loss_matches_the_papers_formula():
    g = torch.Generator().manual_seed(0)
    log_p = torch.randn(3, 5, generator=g, dtype=torch.float64) - 3.0  # B = 3, K = 4
    for n_data in (10, 1000):
        got = crd.nce_loss(log_p, n_data)
        assert float(got) == pytest.approx(float(hand_nce(log_p.exp(), n_data)), rel=1e-9)
    # a confident positive and negatives far below the noise level: the loss goes to 0
    sharp = torch.tensor([[5.0, -30.0, -30.0]])
    assert float(crd.nce_loss(sharp, 100)) < 1e-2


def small(seed: int = 0, **kw) -> crd.CRD:
    torch.manual_seed(seed)
    kw.setdefault("n_data", 12)
    return crd.CRD(s_dim=5, t_dim=6, feat_dim=4, nce_k=3, tau=0.5, seed=seed, **kw)


def test_forward_is_the_definition_on_random_tensors():
    m = small()
    s, t = torch.randn(4, 5), torch.randn(4, 6)
    index = torch.tensor([0, 3, 7, 11])
    mem_s, mem_t = m.memory_s.clone(), m.memory_t.clone()
    gen = copy.deepcopy(m.generator)  # replays the negatives the module draws
    loss = m(s, t, index)

    neg = crd.sample_negatives(index, 3, 12, gen)
    idx = torch.cat([index[:, None], neg], 1)
    with torch.no_grad():
        v_s = F.normalize(m.embed_s.linear(s), dim=1)
        v_t = F.normalize(m.embed_t.linear(t), dim=1)
    expected = 0.0
    for v, bank in ((v_s, mem_t), (v_t, mem_s)):  # student anchors on the teacher's bank, and back
        e = torch.exp(torch.stack([bank[idx[i]] @ v[i] for i in range(4)]) / 0.5)  # (B, K+1)
        z = 12 * e.mean()  # estimated on the first batch
        expected = expected + hand_nce((e / z).double(), 12)
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    assert float(m.z[0]) > 0 and float(m.z[1]) > 0
    # Z stays as estimated on the first batch
    z0 = m.z.clone()
    m(s, t, torch.tensor([1, 2, 4, 5]))
    assert torch.equal(m.z, z0)


def test_memory_bank_momentum_update_keeps_size_and_unit_rows():
    m = small(n_data=12)
    old_s, old_t = m.memory_s.clone(), m.memory_t.clone()
    assert torch.allclose(old_s.norm(dim=1), torch.ones(12))
    s, t = torch.randn(3, 5), torch.randn(3, 6)
    index = torch.tensor([2, 5, 9])
    m(s, t, index)
    m.flush()
    v_s, v_t = m.project(s, t)
    for bank, old, v in ((m.memory_s, old_s, v_s), (m.memory_t, old_t, v_t)):
        want = F.normalize(0.5 * old[index] + 0.5 * v.detach(), dim=1)  # m = 0.5, re-normalised
        assert torch.allclose(bank[index], want, atol=1e-6)
        others = torch.tensor([i for i in range(12) if i not in index.tolist()])
        assert torch.equal(bank[others], old[others])  # only the positives' rows move
    for _ in range(20):
        m(torch.randn(4, 5), torch.randn(4, 6), torch.randperm(12)[:4])
    m.flush()
    for bank in (m.memory_s, m.memory_t):
        assert bank.shape == (12, 4)
        assert torch.allclose(bank.norm(dim=1), torch.ones(12), atol=1e-5)
    # evaluation does not move the banks
    m.eval()
    before = m.memory_s.clone()
    m(torch.randn(4, 5), torch.randn(4, 6), torch.tensor([0, 1, 2, 3]))
    m.flush()
    assert torch.equal(m.memory_s, before)


def test_negatives_are_other_images_and_both_scoring_paths_agree():
    g = torch.Generator().manual_seed(1)
    index = torch.arange(10)
    neg = crd.sample_negatives(index, 500, 10, g)
    assert neg.shape == (10, 500)
    assert (neg != index[:, None]).all() and neg.min() >= 0 and neg.max() <= 9
    assert len(neg.unique()) == 10  # every other image can be drawn
    # with known classes, negatives come from the other classes (the authors' 'exact' mode)
    labels = torch.arange(30) % 3
    idx30 = torch.tensor([0, 1, 2, 4])
    neg = crd.sample_negatives(idx30, 200, 30, g, labels=labels, target=labels[idx30])
    assert (labels[neg] != labels[idx30][:, None]).all()
    m = small(n_data=200)
    anchor = F.normalize(torch.randn(4, 4), dim=1)
    idx = torch.randint(0, 200, (4, 4))
    dense = m.log_scores(anchor, m.memory_t, idx, 0)
    m.DENSE_FACTOR = 0  # force the gather path
    gathered = m.log_scores(anchor, m.memory_t, idx, 0)
    assert torch.allclose(dense, gathered, atol=1e-5)


def test_gradients_reach_both_heads_and_a_bank_sized_lazily_reloads():
    m = small(n_data=None)
    assert m.n_data == 0
    s = torch.randn(4, 5, requires_grad=True)
    m(s, torch.randn(4, 6), torch.tensor([3, 8, 1, 6])).backward()
    assert m.n_data == 9  # grown to the largest index seen
    assert s.grad is not None and m.embed_s.linear.weight.grad.abs().sum() > 0
    assert m.embed_t.linear.weight.grad.abs().sum() > 0
    assert not m.memory_s.requires_grad
    m(torch.randn(2, 5), torch.randn(2, 6), torch.tensor([2, 4]))
    assert m.n_data == 9  # never shrinks
    fresh = small(seed=5, n_data=None)
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh.memory_t, m.memory_t) and torch.equal(fresh.z, m.z)


def test_the_registry_entry_and_defaults_follow_the_paper():
    meth = methods.get("crd")
    d = meth.defaults()
    assert (d["tau"], d["momentum"], d["feat_dim"], d["beta"], d["other_class"]) == (0.07, 0.5, 128, 0.8, 1)
    assert meth.family == "contrastive" and meth.make_modules is not None
    mod = meth.make_modules([((128,), (32,))], meth.resolve_params({"nce_k": 64}))
    assert isinstance(mod, crd.CRD) and mod.nce_k == 64 and mod.embed_s.linear.in_features == 32 and mod.other_class
    latex = meth.formula_latex(4.0, 0.0, d)
    assert r"\sum_{k=1}^{1024}" in latex and "- 0.8" in latex and r"\mathrm{KL}" in latex


def test_crd_trains_end_to_end_on_mnist_mini(tmp_path):
    """One epoch, every label: the student reads digits, the CRD term is finite, and the
    banks end at (N_data, 128) with unit rows."""
    trainer = train.Trainer(Config(dataset="mnist-mini", method="crd", epochs=1, labeled_fraction=1.0, baseline=False))
    r = trainer.run()
    assert r["status"] == "finished"
    assert r["student"]["test_accuracy"] > 0.8, r["student"]["test_accuracy"]
    terms = [s["losses"]["crd"] for s in r["step_losses"]]
    assert all(math.isfinite(v) for v in terms)
    assert sum(terms[-10:]) < sum(terms[:10])  # the contrastive loss goes down
    bank = trainer.modules
    bank.flush()
    n = len(trainer.ds.x_train)
    assert torch.equal(bank.labels, trainer.ds.y_train)  # every image's class, for the other-class negatives
    for b in (bank.memory_s, bank.memory_t):
        assert b.shape == (n, 128)
        assert torch.allclose(b.norm(dim=1), torch.ones(n), atol=1e-4)
    # saved with the student (safetensors) and rebuilt from the registry at full size
    features.save_trainer_student(tmp_path / "crd.safetensors", trainer)
    _, loaded, _ = features.load_student(tmp_path / "crd.safetensors")
    assert torch.equal(loaded.memory_t, bank.memory_t) and torch.equal(loaded.labels, bank.labels)
    snap = trainer.snapshot()["modules"]  # the frozen copy projects like the live one
    x = torch.randn(3, 32), torch.randn(3, 128)
    a, b2 = snap.project(*x)
    assert a.shape == b2.shape == (3, 128) and torch.allclose(a.norm(dim=1), torch.ones(3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_crd_runs_on_cuda_like_on_the_cpu():
    cpu = small(seed=3, n_data=50)
    gpu = small(seed=3, n_data=50).cuda()
    s, t, index = torch.randn(8, 5), torch.randn(8, 6), torch.randperm(50)[:8]
    a = cpu(s, t, index)
    b = gpu(s.cuda(), t.cuda(), index.cuda())
    assert b.device.type == "cuda"
    assert float(a) == pytest.approx(float(b), rel=1e-4)
    gpu.flush()
    assert gpu.memory_s.device.type == "cuda"

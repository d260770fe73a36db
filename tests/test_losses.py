"""Each loss against its paper's definition, written out naively (loops, no shortcuts)
on random tensors."""

import math

import pytest
import torch

from kd_core import losses


@pytest.fixture(autouse=True)
def _float64_and_seed():
    """Double precision so the comparisons with the by-hand sums are tight; restored after."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old)


def softmax_list(z, T):
    e = [math.exp(v / T) for v in z]
    s = sum(e)
    return [v / s for v in e]


def test_kd_loss_is_t_squared_kl_of_softened_distributions():
    s, t = torch.randn(5, 7) * 3, torch.randn(5, 7) * 3
    for T in (0.5, 1.0, 4.0, 20.0):
        ref = 0.0
        for i in range(5):
            p = softmax_list(t[i].tolist(), T)
            q = softmax_list(s[i].tolist(), T)
            ref += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
        ref = T * T * ref / 5
        assert losses.kd_loss(s, t, T).item() == pytest.approx(ref, rel=1e-9)


def test_kd_loss_is_zero_when_student_equals_teacher_and_stable_at_small_t():
    t = torch.randn(4, 10) * 50
    assert losses.kd_loss(t.clone(), t, 0.1).item() == pytest.approx(0.0, abs=1e-9)
    assert torch.isfinite(losses.kd_loss(torch.randn(4, 10) * 50, t, 0.05))


def test_kd_gradient_approaches_logit_matching_at_high_temperature():
    """Hinton et al. 2015, sec. 2.1: for large T and zero-mean logits, the gradient of
    T^2 KL w.r.t. the student's logits tends to (s_i - t_i) / N (here also / batch)."""
    s0 = torch.randn(3, 10)
    t = torch.randn(3, 10)
    s0, t = s0 - s0.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    expected = (s0 - t) / 10 / 3
    errors = []
    for T in (2.0, 20.0, 200.0):
        s = s0.clone().requires_grad_(True)
        losses.kd_loss(s, t, T).backward()
        errors.append(((s.grad - expected).norm() / expected.norm()).item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01


def test_dkd_matches_the_papers_decomposition():
    B, C, T = 6, 5, 3.0
    s, t = torch.randn(B, C) * 2, torch.randn(B, C) * 2
    y = torch.randint(0, C, (B,))
    tckd_ref = nckd_ref = 0.0
    for i in range(B):
        p = softmax_list(t[i].tolist(), T)
        q = softmax_list(s[i].tolist(), T)
        g = y[i].item()
        bt, bs = [p[g], 1 - p[g]], [q[g], 1 - q[g]]
        tckd_ref += sum(a * math.log(a / b) for a, b in zip(bt, bs))
        pt_hat = [p[j] / (1 - p[g]) for j in range(C) if j != g]
        ps_hat = [q[j] / (1 - q[g]) for j in range(C) if j != g]
        nckd_ref += sum(a * math.log(a / b) for a, b in zip(pt_hat, ps_hat))
    tckd_ref *= T * T / B
    nckd_ref *= T * T / B
    tckd, nckd = losses.dkd_parts(s, t, y, T)
    assert tckd.item() == pytest.approx(tckd_ref, rel=1e-6)
    assert nckd.item() == pytest.approx(nckd_ref, rel=1e-6)
    assert losses.dkd_loss(s, t, y, 1.0, 8.0, T).item() == pytest.approx(tckd_ref + 8 * nckd_ref, rel=1e-6)


def test_kd_equals_tckd_plus_weighted_nckd():
    """Zhao et al. 2022, eq. (5): KD = TCKD + (1 - p^T_t) NCKD, per sample."""
    C, T = 6, 2.0
    s, t = torch.randn(1, C), torch.randn(1, C)
    y = torch.tensor([2])
    tckd, nckd = losses.dkd_parts(s, t, y, T)
    pt = torch.softmax(t / T, 1)[0, 2]
    assert losses.kd_loss(s, t, T).item() == pytest.approx((tckd + (1 - pt) * nckd).item(), rel=1e-6)


def test_hint_loss_is_mean_squared_error():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert losses.hint_loss(a, b).item() == pytest.approx(((a - b) ** 2).sum().item() / a.numel())
    with pytest.raises(ValueError):
        losses.hint_loss(a, b[:, :2])


def test_attention_map_and_loss_follow_zagoruyko_komodakis():
    f = torch.randn(3, 5, 4, 4)
    q = losses.attention_map(f, p=2)
    for i in range(3):
        raw = [sum(f[i, c, h, w].item() ** 2 for c in range(5)) / 5 for h in range(4) for w in range(4)]
        norm = math.sqrt(sum(v * v for v in raw))
        assert q[i].tolist() == pytest.approx([v / norm for v in raw])
    g = torch.randn(3, 7, 4, 4)
    qg = losses.attention_map(g)
    ref = sum((q[i, j] - qg[i, j]).item() ** 2 for i in range(3) for j in range(16)) / 48
    assert losses.attention_loss(f, g).item() == pytest.approx(ref)
    # different sizes: the larger map is average-pooled to the smaller
    big = torch.randn(3, 7, 8, 8)
    pooled = torch.nn.functional.avg_pool2d(big, 2)
    assert losses.attention_loss(f, big).item() == pytest.approx(losses.attention_loss(f, pooled).item())
    with pytest.raises(ValueError):
        losses.attention_map(torch.randn(3, 5))


def smooth_l1(a, b):
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def test_rkd_distance_loss_by_hand():
    B = 5
    s, t = torch.randn(B, 4), torch.randn(B, 6)

    def psi(x):
        d = [[math.dist(x[i].tolist(), x[j].tolist()) for j in range(B)] for i in range(B)]
        mu = sum(d[i][j] for i in range(B) for j in range(B) if i != j) / (B * (B - 1))
        return [[v / mu for v in row] for row in d]

    ps, pt = psi(s), psi(t)
    ref = sum(smooth_l1(ps[i][j], pt[i][j]) for i in range(B) for j in range(B)) / (B * B)
    assert losses.rkd_distance_loss(s, t).item() == pytest.approx(ref, rel=1e-6)
    # invariant to scaling the embedding (distances are normalised by their mean)
    assert losses.rkd_distance_loss(3 * s, t).item() == pytest.approx(ref, rel=1e-6)


def test_rkd_angle_loss_by_hand():
    B = 4
    s, t = torch.randn(B, 3), torch.randn(B, 5)

    def cosang(x, i, j, k):
        a = (x[i] - x[j]).tolist()
        b = (x[k] - x[j]).tolist()
        na, nb = math.sqrt(sum(v * v for v in a)), math.sqrt(sum(v * v for v in b))
        if na == 0 or nb == 0:
            return 0.0
        return sum(u * v for u, v in zip(a, b)) / (na * nb)

    ref = (
        sum(smooth_l1(cosang(s, i, j, k), cosang(t, i, j, k)) for i in range(B) for j in range(B) for k in range(B))
        / B**3
    )
    assert losses.rkd_angle_loss(s, t).item() == pytest.approx(ref, rel=1e-6)


def test_sp_loss_by_hand():
    B = 4
    s, t = torch.randn(B, 2, 3, 3), torch.randn(B, 8)

    def G(x):
        q = x.flatten(1).tolist()
        g = [[sum(a * b for a, b in zip(q[i], q[j])) for j in range(B)] for i in range(B)]
        return [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in g]

    gs, gt = G(s), G(t)
    ref = sum((gt[i][j] - gs[i][j]) ** 2 for i in range(B) for j in range(B)) / B**2
    assert losses.sp_loss(s, t).item() == pytest.approx(ref, rel=1e-6)


def test_pkt_loss_by_hand():
    B = 5
    s, t = torch.randn(B, 4), torch.randn(B, 6)

    def P(x):
        n = [v / v.norm() for v in x]
        k = [[(float(n[i] @ n[j]) + 1) / 2 for j in range(B)] for i in range(B)]
        return [[v / sum(row) for v in row] for row in k]

    ps, pt = P(s), P(t)
    eps = 1e-7
    ref = sum(pt[i][j] * math.log((pt[i][j] + eps) / (ps[i][j] + eps)) for i in range(B) for j in range(B)) / B**2
    assert losses.pkt_loss(s, t).item() == pytest.approx(ref, rel=1e-6)
    assert losses.pkt_loss(t, t).item() == pytest.approx(0.0, abs=1e-9)


def test_info_nce_by_hand():
    B, tau = 4, 0.1
    s, t = torch.randn(B, 3), torch.randn(B, 3)
    sn = [v / v.norm() for v in s]
    tn = [v / v.norm() for v in t]
    ref = 0.0
    for i in range(B):
        logits = [float(sn[i] @ tn[j]) / tau for j in range(B)]
        ref -= logits[i] - math.log(sum(math.exp(v) for v in logits))
    assert losses.info_nce_loss(s, t, tau).item() == pytest.approx(ref / B, rel=1e-6)
    # perfectly aligned embeddings with distinct directions: the loss falls as tau falls
    e = torch.eye(4)
    assert losses.info_nce_loss(e, e, 0.05) < losses.info_nce_loss(e, e, 0.5)


def test_losses_return_batch_averaged_scalars_with_gradients():
    s = torch.randn(8, 4, 3, 3, requires_grad=True)
    t = torch.randn(8, 4, 3, 3)
    for fn in (
        losses.hint_loss,
        losses.attention_loss,
        losses.sp_loss,
        losses.rkd_distance_loss,
        losses.rkd_angle_loss,
        losses.pkt_loss,
    ):
        out = fn(s, t)
        assert out.dim() == 0
        (g,) = torch.autograd.grad(out, s)
        assert torch.isfinite(g).all() and g.abs().sum() > 0

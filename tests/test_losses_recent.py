"""The methods of 2022-2024 (DIST, logit standardisation, CTKD) against their definitions,
written out naively (loops, no shortcuts) on random tensors; and the five points where the
engine now agrees with the reference code (DKD at extreme logits, FitNets' regressor, DKD's
warm-up, the CRD and AT help texts)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kd_core import losses, methods, train
from kd_core.config import Config

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [(4, 5), (8, 10), (16, 3), (3, 100)]
TEMPERATURES = (0.5, 1.0, 4.0, 10.0)


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old)


def softmax_list(z, T):
    m = max(v / T for v in z)
    e = [math.exp(v / T - m) for v in z]
    s = sum(e)
    return [v / s for v in e]


def pearson(a, b, eps=1e-8):
    """Pearson's r; ``eps`` in the denominator as in DIST's reference code (only a
    near-constant column of near one-hot probabilities notices it)."""
    n = len(a)
    ma, mb = sum(a) / n, sum(b) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    va = math.sqrt(sum((x - ma) ** 2 for x in a))
    vb = math.sqrt(sum((y - mb) ** 2 for y in b))
    return cov / (va * vb + eps)


def zscore_list(z):
    n = len(z)
    mean = sum(z) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in z) / (n - 1))  # Bessel's correction
    return [(v - mean) / (std + 1e-7) for v in z]


def kl_list(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


# ---------------------------------------------------------------- DIST


@pytest.mark.parametrize("shape", SHAPES)
def test_dist_loss_is_one_minus_mean_pearson_across_classes_and_across_the_batch(float64, shape):
    B, C = shape
    s, t = torch.randn(B, C) * 3, torch.randn(B, C) * 3
    for T in TEMPERATURES:
        P_s = [softmax_list(s[i].tolist(), T) for i in range(B)]
        P_t = [softmax_list(t[i].tolist(), T) for i in range(B)]
        inter = 1 - sum(pearson(P_s[i], P_t[i]) for i in range(B)) / B
        intra = 1 - sum(pearson([P_s[i][c] for i in range(B)], [P_t[i][c] for i in range(B)]) for c in range(C)) / C
        for w_inter, w_intra in ((1.0, 1.0), (0.3, 2.0), (1.0, 0.0)):
            ref = T * T * (w_inter * inter + w_intra * intra)
            got = losses.dist_loss(s, t, T, inter_weight=w_inter, intra_weight=w_intra).item()
            assert got == pytest.approx(ref, rel=1e-9, abs=1e-12), (shape, T, w_inter, w_intra)
    # the defaults weigh both relations 1
    assert losses.dist_loss(s, t, 4.0).item() == pytest.approx(losses.dist_loss(s, t, 4.0, 1.0, 1.0).item())


def test_dist_loss_is_zero_for_a_copy_and_largest_for_reversed_rankings(float64):
    t = torch.randn(8, 10) * 2
    assert losses.dist_loss(t.clone(), t, 4.0).item() == pytest.approx(0.0, abs=1e-4)  # up to the eps
    # perfectly anti-correlated probabilities give the largest inter-class term: 1 - (-1) = 2
    p = torch.tensor([[0.5, 0.3, 0.2], [0.3, 0.3, 0.4]])
    q = 2 / 3 - p  # sums to 1, centred rows exactly opposite
    assert losses.dist_loss(p.log(), q.log(), 1.0, 1.0, 0.0).item() == pytest.approx(2.0, abs=1e-6)
    # a gradient reaches the student
    s = torch.randn(8, 10, requires_grad=True)
    losses.dist_loss(s, t, 4.0).backward()
    assert s.grad.abs().sum() > 0


# ---------------------------------------------------------------- logit standardisation


@pytest.mark.parametrize("shape", SHAPES)
def test_zscore_is_mean_zero_bessel_std_one_per_sample(float64, shape):
    z = torch.randn(*shape) * 5 + 3
    got = losses.zscore(z)
    for i in range(shape[0]):
        ref = zscore_list(z[i].tolist())
        assert got[i].tolist() == pytest.approx(ref, rel=1e-12, abs=1e-12)
    assert torch.allclose(got.std(dim=-1), torch.ones(shape[0]), atol=1e-6)  # torch.std: Bessel
    # a constant row stays finite (the 1e-7)
    assert torch.isfinite(losses.zscore(torch.full((2, 4), 7.0))).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_ls_kd_loss_is_kd_on_zscored_logits(float64, shape):
    B, C = shape
    s, t = torch.randn(B, C) * 4, torch.randn(B, C) * 9 + 2
    for T in TEMPERATURES:
        ref = 0.0
        for i in range(B):
            p = softmax_list(zscore_list(t[i].tolist()), T)
            q = softmax_list(zscore_list(s[i].tolist()), T)
            ref += kl_list(p, q)
        ref = T * T * ref / B
        assert losses.ls_kd_loss(s, t, T).item() == pytest.approx(ref, rel=1e-9), (shape, T)


def test_ls_kd_does_not_ask_the_student_to_match_the_teachers_logit_scale(float64):
    """The paper's point: a student whose logits are the teacher's, scaled and shifted,
    has nothing left to learn under LS-KD, while plain KD still pushes it."""
    t = torch.randn(6, 10) * 3
    s = 0.2 * t + 1.5
    assert losses.ls_kd_loss(s, t, 2.0).item() == pytest.approx(0.0, abs=1e-9)
    assert losses.kd_loss(s, t, 2.0).item() > 0.1
    assert losses.ls_kd_loss(s, 7 * t - 4, 2.0).item() == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------- CTKD


def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward(float64):
    x = torch.randn(5, requires_grad=True)
    y = losses.reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    (y * torch.arange(5.0)).sum().backward()
    assert x.grad.tolist() == pytest.approx([-0.3 * k for k in range(5)])


def test_cosine_curriculum_rises_from_low_to_high_and_stays():
    lam = [losses.cosine_curriculum(e, 10, high=1.0) for e in range(0, 13)]
    assert lam[0] == 0.0 and lam[10] == pytest.approx(1.0) and lam[12] == pytest.approx(1.0)
    assert lam[5] == pytest.approx(0.5)
    assert all(a < b for a, b in zip(lam[:10], lam[1:11]))
    # the authors' schedule: (cos(pi e / E) + 1) / 2 * (max - min) + min with max = 0, min = -1
    for e in range(1, 11):
        authors = (math.cos(e * math.pi / 10) + 1.0) * 0.5 * (0 - (-1)) + (-1)
        assert -losses.cosine_curriculum(e, 10) == pytest.approx(authors)
    assert losses.cosine_curriculum(3, 4, high=2.0, low=1.0) == pytest.approx(
        1.0 + 0.5 * (1 - math.cos(0.75 * math.pi))
    )


def test_ctkd_temperature_ascends_the_kd_loss_the_student_descends(float64):
    m = methods.get("ctkd")
    mod = m.make_modules([], m.defaults())
    assert mod.value == pytest.approx(1 + 20 / (1 + math.exp(-1)))  # the authors' start: theta = 1
    s = torch.randn(8, 10, requires_grad=True)
    t = torch.randn(8, 10) * 3
    ctx = methods.StepContext(
        s, t, t.argmax(1), torch.ones(8, dtype=torch.bool), [], [], 4.0, m.defaults(), mod, 2.0, None
    )
    kd = m.kd_term(ctx)
    kd.backward()
    T = ctx.report["T"]
    assert float(T) == pytest.approx(mod.value)
    lam = losses.cosine_curriculum(3, 10)  # progress 2.0 is the third epoch
    assert ctx.report["lambda"] == pytest.approx(lam)
    # d KD / d theta by finite differences (no reversal); the parameter gets -lambda times it
    eps = 1e-6
    with torch.no_grad():
        theta = mod.theta.item()

        def kd_at(th):
            Tv = 1 + 20 * torch.sigmoid(torch.tensor(th))
            return losses.kd_loss(s.detach(), t, Tv).item()

        dkd = (kd_at(theta + eps) - kd_at(theta - eps)) / (2 * eps)
    assert mod.theta.grad.item() == pytest.approx(-lam * dkd, rel=1e-5)
    assert kd.item() == pytest.approx(losses.kd_loss(s.detach(), t, float(T)).item())


# ---------------------------------------------------------------- fix 1: DKD at extreme logits


def _tckd_float64(s, t, y, T):
    """TCKD by its definition, in float64 and in log space, one sample at a time."""
    total = 0.0
    for i in range(len(s)):
        logb = []
        for z in (s[i].tolist(), t[i].tolist()):
            zz = [v / T for v in z]
            m = max(zz)
            lse = m + math.log(sum(math.exp(v - m) for v in zz))
            rest = [v for c, v in enumerate(zz) if c != y[i]]
            mr = max(rest)
            lse_rest = mr + math.log(sum(math.exp(v - mr) for v in rest))
            logb.append((zz[y[i]] - lse, lse_rest - lse))
        (ls_gt, ls_rest), (lt_gt, lt_rest) = logb
        total += math.exp(lt_gt) * (lt_gt - ls_gt) + math.exp(lt_rest) * (lt_rest - ls_rest)
    return T * T * total / len(s)


def test_dkd_target_term_is_exact_at_logits_of_magnitude_1000():
    """The student's target probability (or its complement) below 1e-12: TCKD must not be
    clamped; it equals the float64 log-space value and keeps a gradient."""
    torch.manual_seed(1)
    s = (torch.randn(16, 10) * 1000).float()
    t = (torch.randn(16, 10) * 1000).float()
    rows = torch.arange(16)
    y = s.argmin(1)  # the student is sure it is NOT the true class: p_gt underflows...
    t[rows, y] = t.max(1).values + 500  # ...while the teacher is sure it is
    y[:4] = s[:4].argmax(1)  # here the student is sure it IS: 1 - p_gt underflows...
    t[rows[:4], y[:4]] = t[:4].min(1).values - 500  # ...and the teacher sure it is not
    T = 4.0
    ref = _tckd_float64(s.double(), t.double(), y.tolist(), T)
    s_req = s.clone().requires_grad_(True)
    tckd, nckd = losses.dkd_parts(s_req, t, y, T)
    assert ref > 100  # a large divergence, far beyond what a clamp at 1e-12 allows
    assert tckd.item() == pytest.approx(ref, rel=1e-4)
    tckd.backward()
    g = s_req.grad[rows, y]
    # d TCKD / d s_gt = T (p_gt - b^T_gt) / B: -0.25 where the teacher is sure, +0.25 where it is not
    assert g[4:].tolist() == pytest.approx([-T / 16] * 12, rel=1e-4), g
    assert g[:4].tolist() == pytest.approx([T / 16] * 4, rel=1e-4), g
    # and it is the float64 gradient
    s64 = s.double().requires_grad_(True)
    gt = F.one_hot(y, 10).bool()

    def logb(z):
        lse = torch.logsumexp(z / T, -1)
        return torch.stack([(z / T)[gt] - lse, torch.logsumexp((z / T).masked_fill(gt, -math.inf), -1) - lse], -1)

    lb_s, lb_t = logb(s64), logb(t.double())
    (T * T * (lb_t.exp() * (lb_t - lb_s)).sum() / 16).backward()
    assert torch.allclose(s_req.grad.double(), s64.grad, rtol=1e-3, atol=1e-6)


def test_dkd_at_ordinary_logits_is_unchanged(float64):
    s, t = torch.randn(6, 10) * 2, torch.randn(6, 10) * 2
    y = torch.randint(0, 10, (6,))
    tckd, _ = losses.dkd_parts(s, t, y, 4.0)
    assert tckd.item() == pytest.approx(_tckd_float64(s, t, y.tolist(), 4.0), rel=1e-10)


# ---------------------------------------------------------------- fix 2: FitNets' regressor


def test_fitnets_regressor_is_conv_bn_relu_and_the_hint_is_what_the_help_says():
    cfg = Config(dataset="digits", method="fitnets", student="cnn-8-16", epochs=1, labeled_fraction=1.0)
    tr = train.Trainer(cfg)
    reg = tr.modules.maps[0]
    assert [type(m).__name__ for m in reg] == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert reg[0].kernel_size == (1, 1)
    help_text = methods.get("fitnets").params[0].help
    assert "1x1 conv + BN + ReLU" in help_text and "mean squared error" in help_text
    # the hint term of one step is beta * MSE(r(student layer), teacher layer)
    (t_name, s_name, *_) = tr.pairs[0]
    x = tr.ds.x_train[:32]
    lab = torch.ones(32, dtype=torch.bool)
    y = tr.ds.y_train[:32]
    from kd_core import models

    with models.FeatureTaps(tr.teacher.model, [t_name]) as taps:
        t_logits = tr.teacher.model(x)
        t_feat = taps[t_name]
    with models.FeatureTaps(tr.student, [s_name]) as taps:
        s_logits = tr.student(x)
        s_feat = taps[s_name]
    tr.index = torch.arange(len(tr.ds.x_train))
    terms = tr.loss_terms(s_logits, t_logits, y, lab, [s_feat], [t_feat], torch.arange(32), 0.0)
    r = reg(s_feat)
    assert (r >= 0).all()
    if r.shape[-2:] != t_feat.shape[-2:]:
        size = (min(r.shape[-2], t_feat.shape[-2]), min(r.shape[-1], t_feat.shape[-1]))
        r, t_feat = F.adaptive_avg_pool2d(r, size), F.adaptive_avg_pool2d(t_feat, size)
    expected = 100.0 * ((r - t_feat) ** 2).mean()
    assert terms["hint"].item() == pytest.approx(expected.item(), rel=1e-5)


# ---------------------------------------------------------------- fix 3: DKD warm-up


def test_dkd_warmup_is_a_continuous_ramp_from_zero_and_the_help_says_how_the_reference_differs():
    torch.manual_seed(0)
    m = methods.get("dkd")
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    y = torch.randint(0, 10, (8,))
    tckd, nckd = losses.dkd_parts(s, t, y, 4.0)
    params = m.resolve_params({"warmup": 4})

    def weight(progress):
        ctx = methods.StepContext(s, t, y, torch.ones(8, dtype=torch.bool), [], [], 4.0, params, None, progress, None)
        terms = m.terms(ctx)
        return terms["tckd"].item() / tckd.item(), terms["nckd"].item() / (8 * nckd.item())

    assert weight(0.0) == pytest.approx((0.0, 0.0))  # the very first step
    assert weight(1.0) == pytest.approx((0.25, 0.25))
    assert weight(2.5) == pytest.approx((0.625, 0.625))
    assert weight(10.0) == pytest.approx((1.0, 1.0))
    # what the help text says, the formula shows, and where the reference differs
    help_text = m.params[2].help
    assert "min(epochs done / warmup, 1)" in help_text and "from 0 at the first step" in help_text
    assert "min(e / warmup, 1)" in help_text and "1/warmup" in help_text
    assert "epochs\\ done" in m.formula


# ---------------------------------------------------------------- fixes 4 and 5: help texts


def test_crd_help_states_a_weighting_that_the_loss_reproduces():
    crd = methods.get("crd")
    assert "alpha > 0 its CRD+KD" not in crd.summary
    assert "alpha = 0.5 with beta = 0.4" in crd.summary
    # check the claim: alpha = 0.5, beta = 0.4 is half of CE + KD + 0.8 CRD, term by term
    a = train.Trainer(Config(dataset="digits", method="crd", alpha=0.5, params={"beta": 0.4}, epochs=1, seed=0))
    b = train.Trainer(Config(dataset="digits", method="crd", alpha=0.0, params={"beta": 0.8}, epochs=1, seed=0))
    terms = []
    for tr in (a, b):
        tr.prepare()
        idx = torch.arange(64)
        x, y, lab = tr.x[idx], tr.y[idx], tr.labelled[idx]
        s_name, t_name = tr.pairs[0][1], tr.pairs[0][0]
        s_logits, s_feats = train.forward_taps(tr.student, x, [s_name])
        t_feats = (
            [f[idx] for f in tr.t_feats]
            if tr.t_feats is not None
            else train.forward_taps(tr.teacher.model, x, [t_name])[1]
        )
        terms.append(tr.loss_terms(s_logits, tr.t_logits[idx], y, lab, s_feats, t_feats, idx, 0.0))
    ta, tb = terms
    ce = tb["ce"].item()
    kd = losses.kd_loss(train.forward_taps(a.student, a.x[:64], [])[0], a.t_logits[:64], 4.0).item()
    assert ta["ce"].item() == pytest.approx(0.5 * ce, rel=1e-6)
    assert ta["kd"].item() == pytest.approx(0.5 * kd, rel=1e-6)
    assert ta["crd"].item() == pytest.approx(0.5 * tb["crd"].item(), rel=1e-5)


def test_at_help_no_longer_contradicts_its_weight():
    beta = methods.get("at").params[0]
    assert beta.default == 1000.0
    assert "beta/2" not in beta.help and "1000" in beta.help


# ---------------------------------------------------------------- the registry, the loop, the CLI


def test_new_methods_are_registered_with_formula_paper_and_defaults():
    for name, params in {
        "dist": {"beta": 2.0, "inter_weight": 1.0, "intra_weight": 1.0},
        "ls-kd": {"kd_scale": 10.0},
        "ctkd": {"t_start": 1.0, "t_range": 20.0, "curriculum": 10, "lambda_max": 1.0},
    }.items():
        m = methods.get(name)
        assert m.family == "logits" and m.paper and m.summary and r"\mathcal{L}" in m.formula
        assert m.defaults() == params
        for p in m.params:
            assert f"<{p.name}>" in m.formula, (name, p.name)
        assert all(f"<{p.name}>" not in m.formula_latex(4.0, 0.9, m.defaults()) for p in m.params)


def test_ctkd_learned_temperature_moves_during_training_and_is_reported():
    r = train.distil(Config(dataset="digits", method="ctkd", epochs=2, labeled_fraction=1.0, baseline=False))
    assert r["status"] == "finished"
    Ts = [s["tracked"]["T"] for s in r["step_losses"]]
    assert len(Ts) == r["steps"]
    assert Ts[0] == pytest.approx(1 + 20 / (1 + math.exp(-1)), rel=1e-4)
    assert abs(Ts[-1] - Ts[0]) > 0.05, (Ts[0], Ts[-1])  # the temperature is really learned
    assert all(1.0 < T < 21.0 for T in Ts)
    assert r["learned_temperature"] == Ts[-1] and r["tracked"]["T"] == Ts[-1]
    assert r["student"]["test_accuracy"] > 0.5


def test_the_trainer_puts_each_new_methods_terms_in_the_step_events():
    for name, keys in {"dist": {"ce", "dist"}, "ls-kd": {"ce", "kd"}}.items():
        tr = train.Trainer(Config(dataset="digits", method=name, epochs=1, labeled_fraction=1.0, baseline=False))
        steps = [ev for ev in tr.events() if ev["kind"] == "step"]
        assert set(steps[0]["losses"]) == keys
        assert "tracked" not in steps[0]
        assert tr.result["student"]["test_accuracy"] > 0.5


def cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "kd_core", *args],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_methods_command_lists_the_new_methods_with_their_parameters():
    out = cli("methods")
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    assert "beta=2" in lines["dist"] and "inter_weight=1" in lines["dist"] and "intra_weight=1" in lines["dist"]
    assert "kd_scale=10" in lines["ls-kd"]
    assert all(p in lines["ctkd"] for p in ("t_start=1", "t_range=20", "curriculum=10", "lambda_max=1"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dist", "ls-kd", "ctkd"])
def test_each_new_method_trains_from_the_cli(name, tmp_path):
    out = cli("train", "--method", name, "--epochs", "1", "--dataset", "digits", "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "student" in out.stdout
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["config"]["method"] == name and r["status"] == "finished"
    assert r["student"]["test_accuracy"] > 0.3
    assert ("learned_temperature" in r) == (name == "ctkd")
    if name == "ctkd":  # the final learned temperature, in the printed results too
        assert f"at the last step: T = {r['learned_temperature']:.4g}" in out.stdout
    bad = cli("train", "--method", name, "--dataset", "digits", "--param", "nope=1")
    assert bad.returncode == 2 and "has no parameter 'nope'" in bad.stderr and "Traceback" not in bad.stderr


def test_comparison_presets_treat_the_new_methods_as_replacing_kd():
    from kd_core import presets

    base = Config(dataset="digits", method="ctkd", alpha=0.9)
    for name in ("dist", "ls-kd", "ctkd"):
        assert presets.presets_for(name) == ("scratch", "kd", "method")
        own = {p: c for p, _, c in presets.configs(base, name, seeds=[0])}
        assert own["method"].method == name
        assert own["method"].alpha == (0.0 if name == "dist" else 0.9)  # LS-KD / CTKD live in the alpha term


def test_the_leaderboard_reports_the_last_epoch_over_seeds_not_the_best_epoch():
    from kd_core import sweep

    sw = sweep.Sweep.leaderboard(Config(dataset="digits", epochs=3), seeds=[0, 1], methods=["none", "dist", "ctkd"])
    res = sweep.SweepResult(sw)
    histories = {0: ([0.80, 0.85, 0.84], [0.82, 0.83, 0.86]), 1: ([0.90, 0.97, 0.93], [0.91, 0.96, 0.95])}
    for cell, (h0, h1) in histories.items():
        for seed, h in ((0, h0), (1, h1)):
            res.add({"cell_index": cell, "seed": seed, "status": "finished", "student_acc": h[-1], "history": h,
                     "agreement": 0.9, "ece": 0.01, "teacher_acc": 0.99})  # fmt: skip
    rows = {r["method"]: r for r in sweep.leaderboard_rows(res)}
    assert rows["dist"]["acc_mean"] == pytest.approx((0.93 + 0.95) / 2)  # not the best epochs' 0.965
    assert rows["dist"]["acc_std"] == pytest.approx(math.sqrt(2 * 0.01**2))
    assert rows["none"]["acc_mean"] == pytest.approx(0.85)
    assert rows["dist"]["name"] == "DIST" and rows["ctkd"]["name"] == "CTKD (learned T)"
    assert rows["none"]["name"] == "Student (scratch)"
    text = sweep.leaderboard_text(res)
    assert "mean ± std at the last epoch" in text and "94.00 ± 1.41" in text
    assert sweep.last_epoch_accuracy({"history": [], "student_acc": 0.5}) == 0.5

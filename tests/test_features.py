"""Feature distillation, checked against the papers and end to end: linear CKA has the
properties Kornblith et al. 2019 prove, attention overlays and FitNets error maps are what
the losses compare, and a FitNets and an AT run train on mnist-mini and on real-format
CIFAR-10 files, with the regressors saved and loaded back with the student."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from kd_core import features, losses, methods, models, train
from kd_core.config import Config


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------ linear CKA


def cka_by_hand(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. 2019, eq. (5), in feature space: ||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F),
    columns centred."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def test_cka_of_a_representation_with_itself_is_one():
    x = torch.randn(50, 20, generator=_gen(1))
    assert features.linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_matches_the_formula_by_hand():
    for seed, (n, p, q) in enumerate([(40, 10, 30), (25, 64, 5), (60, 3, 3)]):
        x = torch.randn(n, p, generator=_gen(seed))
        y = torch.randn(n, q, generator=_gen(seed + 100)) + 0.5 * x[:, :1]
        want = cka_by_hand(x.double().numpy(), y.double().numpy())
        assert features.linear_cka(x, y) == pytest.approx(want, rel=1e-9)
        assert 0.0 <= features.linear_cka(x, y) <= 1.0
        assert features.linear_cka(x, y) == pytest.approx(features.linear_cka(y, x), rel=1e-12)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling_only():
    x = torch.randn(80, 12, generator=_gen(2)).double()
    y = torch.randn(80, 7, generator=_gen(3)).double() + x[:, :7]
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=_gen(4)).double())
    base = features.linear_cka(x, y)
    assert features.linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)
    assert features.linear_cka(x @ q, x) == pytest.approx(1.0, rel=1e-10)
    assert features.linear_cka(3.7 * x, y) == pytest.approx(base, rel=1e-10)
    assert features.linear_cka(x + 5.0, y) == pytest.approx(base, rel=1e-10)  # centring
    # ... but not to scaling single features (CKA is not invariant to invertible linear maps)
    d = torch.ones(12, dtype=torch.float64)
    d[0] = 20.0
    assert features.linear_cka(x * d, x) < 0.9


def test_cka_flattens_feature_maps_and_needs_the_same_samples():
    x = torch.randn(30, 4, 5, 5, generator=_gen(5))
    y = torch.randn(30, 8, 3, 3, generator=_gen(6))
    assert features.linear_cka(x, y) == pytest.approx(features.linear_cka(x.flatten(1), y.flatten(1)))
    with pytest.raises(ValueError, match="same samples"):
        features.linear_cka(x, y[:10])


# ------------------------------------------------------------ attention


def test_attention_overlay_shapes_and_scale():
    feat = torch.randn(16, 7, 7, generator=_gen(7))
    out = features.attention_overlay(feat, (28, 28), p=2)
    assert out["map"].shape == (7, 7) and out["overlay"].shape == (28, 28)
    assert float(out["map"].norm()) == pytest.approx(1.0, abs=1e-6)  # unit norm, as in the loss
    assert torch.allclose(out["map"].flatten(), losses.attention_map(feat[None], 2)[0])
    assert float(out["overlay"].min()) >= 0.0 and float(out["overlay"].max()) == pytest.approx(1.0)
    # the brightest 7x7 cell is the brightest region of the upsampled overlay
    r, c = divmod(int(out["map"].argmax()), 7)
    rr, cc = divmod(int(out["overlay"].argmax()), 28)
    assert abs(rr // 4 - r) <= 1 and abs(cc // 4 - c) <= 1
    assert features.attention_overlay(feat[None], (32, 32))["overlay"].shape == (32, 32)
    with pytest.raises(ValueError, match="one"):
        features.attention_overlay(torch.randn(2, 16, 7, 7), (28, 28))
    with pytest.raises(ValueError):
        features.attention_overlay(torch.randn(16, 7), (28, 28))


def test_attention_cosine_is_one_for_the_same_map_and_pools_the_larger():
    t = torch.randn(6, 8, 8, 8, generator=_gen(8)).abs()
    assert features.attention_cosine(t, t) == pytest.approx(1.0, abs=1e-6)
    assert features.attention_cosine(3 * t.repeat(1, 2, 1, 1), t) == pytest.approx(1.0, abs=1e-6)  # channels, scale
    s = torch.randn(6, 4, 16, 16, generator=_gen(9)).abs()
    pooled = torch.nn.functional.adaptive_avg_pool2d(s, (8, 8))
    want = (losses.attention_map(pooled) * losses.attention_map(t)).sum(1).mean()
    assert features.attention_cosine(s, t) == pytest.approx(float(want), rel=1e-6)
    # the attention loss is the mean squared distance of the same unit vectors: 2(1 - cos) / HW
    single = features.attention_cosine(s[:1], t[:1])
    assert float(losses.attention_loss(s[:1], t[:1])) == pytest.approx(2 * (1 - single) / 64, rel=1e-4)


# ------------------------------------------------------------ FitNets


def test_fitnets_error_map_is_the_per_position_squared_error_by_hand():
    t_shape, s_shape = (16, 7, 7), (8, 14, 14)
    torch.manual_seed(0)
    regs = methods.Regressors([(t_shape, s_shape)])
    with torch.no_grad():  # a non-trivial batch norm
        regs.maps[0][1].running_mean.uniform_(-0.5, 0.5)
        regs.maps[0][1].running_var.uniform_(0.5, 2.0)
    s = torch.randn(3, *s_shape, generator=_gen(10))
    t = torch.randn(3, *t_shape, generator=_gen(11))
    regs.train()
    r, tt = features.regress(regs, 0, s, t)
    assert regs.training  # the mode is restored
    assert r.shape == tt.shape == (3, 16, 7, 7)
    err = features.fitnets_error_map(r, tt)
    assert err.shape == (3, 7, 7)
    by_hand = torch.zeros(3, 7, 7)
    for b in range(3):
        for h in range(7):
            for w in range(7):
                by_hand[b, h, w] = sum((r[b, c, h, w] - tt[b, c, h, w]) ** 2 for c in range(16)) / 16
    assert torch.allclose(err, by_hand, atol=1e-5)
    assert float(err.mean()) == pytest.approx(float(losses.hint_loss(r, tt)), rel=1e-5)
    # the same tensors the training loss compares (regressors in eval mode, 14x14 pooled to 7x7)
    regs.eval()
    ctx = methods.StepContext(None, None, None, None, [s], [t], 4.0, {"beta": 100.0}, regs, 0.0, None)
    with torch.no_grad():
        hint = float(methods.get("fitnets").terms(ctx)["hint"])
    assert hint == pytest.approx(100 * float(err.mean()), rel=1e-5)


def test_fitnets_error_map_on_vectors_and_shape_checks():
    regs = methods.Regressors([((32,), (8,))])
    r, t = features.regress(regs, 0, torch.randn(4, 8), torch.randn(4, 32))
    err = features.fitnets_error_map(r, t)
    assert err.shape == (4, 32) and torch.allclose(err, (r - t) ** 2)
    with pytest.raises(ValueError, match="shape"):
        features.fitnets_error_map(torch.zeros(2, 3), torch.zeros(2, 4))


# ------------------------------------------------------------ grids and pairs


def test_channel_grid_tiles_the_strongest_channels_with_gaps():
    feat = torch.zeros(10, 3, 4)
    for c in range(10):
        feat[c] = c  # channel c has activation c everywhere
    grid, chans, cols = features.channel_grid(feat, k=5)
    assert chans == [9, 8, 7, 6, 5] and cols == 3
    assert grid.shape == (2 * 3 + 1, 3 * 4 + 2)
    assert np.isnan(grid[3]).all() and np.isnan(grid[:, 4]).all()  # the gaps
    assert grid[0, 0] == 1.0 and grid[0, 5] == pytest.approx(8 / 9)  # one scale for the layer
    assert np.isnan(grid[4:, 10:]).all()  # the sixth tile is empty
    ids = features.tile_channels(chans, 3, 4, cols)
    assert ids.shape == grid.shape and ids[0, 0] == 9 and ids[4, 0] == 6
    assert np.array_equal(np.isnan(ids), np.isnan(grid))
    neg = features.channel_grid(-feat, channels=[9], scale=9.0, signed=True)[0]
    assert (neg == -1.0).all()
    v = features.vector_grid(torch.arange(10.0))
    assert v.shape == (3, 4) and np.nanmax(v) == 1.0 and np.isnan(v).sum() == 2


def test_aligned_pairs_follow_relative_depth():
    def pairs(t, s, shape=(1, 28, 28)):
        return features.aligned_pairs(models.build(t, shape, 10), models.build(s, shape, 10), shape)

    assert pairs("cnn-32-64", "cnn-8-16") == [
        ("stage1", "stage1"),
        ("stage2", "stage2"),
        ("embed", "embed"),
        ("fc", "fc"),
    ]
    assert pairs("resnet20", "resnet8", (3, 32, 32))[:3] == [
        ("stage1", "stage1"),
        ("stage2", "stage2"),
        ("stage3", "stage3"),
    ]
    assert pairs("cnn-32-64-128", "cnn-8-16")[:2] == [("stage2", "stage1"), ("stage3", "stage2")]
    assert pairs("cnn-32-64", "mlp-32") == [("embed", "embed"), ("fc", "fc")]


def test_similarity_to_teacher_scores_each_student_per_pair():
    torch.manual_seed(0)
    t = models.build("cnn-16-32", (1, 28, 28), 10)
    x = torch.randn(40, 1, 28, 28, generator=_gen(12))
    pairs = [("stage2", "stage2"), ("embed", "embed")]
    tf = features.extract(t, x, ["stage2", "embed"])
    assert tf["stage2"].shape == (40, 32, 7, 7) and tf["logits"].shape == (40, 10)
    other = models.build("cnn-4-8", (1, 28, 28), 10)
    rows = features.similarity_to_teacher(
        tf, {"same": tf, "other": features.extract(other, x, ["stage2", "embed"])}, pairs
    )
    assert [r["pair"] for r in rows] == pairs
    assert rows[0]["spatial"] and not rows[1]["spatial"] and rows[1]["attention"] == {}
    assert rows[0]["cka"]["same"] == pytest.approx(1.0) and rows[0]["attention"]["same"] == pytest.approx(1.0)
    assert rows[0]["cka"]["other"] < 1.0 and rows[1]["cka"]["other"] < 1.0


def test_save_and_load_a_student_with_its_regressors(tmp_path):
    torch.manual_seed(0)
    student = models.build("cnn-8-16", (1, 28, 28), 10)
    regs = methods.Regressors([((64, 7, 7), (16, 7, 7)), ((128,), (32,))])
    pairs = [("stage2", "stage2", (64, 7, 7), (16, 7, 7)), ("embed", "embed", (128,), (32,))]
    cfg = Config(method="fitnets", student="cnn-8-16", pairs=["stage2:stage2", "embed:embed"]).to_dict()
    path = tmp_path / "student.safetensors"
    features.save_student(path, student, regs, cfg, pairs, (1, 28, 28), 10)
    s2, r2, meta = features.load_student(path)
    assert meta["pairs"] == pairs and meta["config"]["method"] == "fitnets" and meta["arch"] == "cnn-8-16"
    for a, b in ((student, s2), (regs, r2)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not path.read_bytes().startswith(b"\x80")  # not a pickle
    bare = tmp_path / "bare.safetensors"
    features.save_student(bare, student, None, {"method": "kd"}, [], (1, 28, 28), 10)
    assert features.load_student(bare)[1] is None


# ------------------------------------------------------------ end to end: mnist-mini


def _falls(steps: list[dict], term: str, k: int = 10) -> tuple[float, float]:
    vals = [s["losses"][term] for s in steps]
    return sum(vals[:k]) / k, sum(vals[-k:]) / k


@pytest.mark.parametrize("method, term", [("fitnets", "hint"), ("at", "attention")])
def test_feature_methods_train_end_to_end_on_mnist_mini(method, term):
    cfg = Config(dataset="mnist-mini", method=method, epochs=1, labeled_fraction=1.0, baseline=False)
    trainer = train.Trainer(cfg)
    r = trainer.run()
    assert r["status"] == "finished"
    assert r["student"]["test_accuracy"] > 0.8, r["student"]["test_accuracy"]
    assert all(math.isfinite(v) for s in r["step_losses"] for v in s["losses"].values())
    first, last = _falls(r["step_losses"], term)
    assert last < 0.7 * first, (first, last)
    assert r["pairs"] == [("stage2", "stage2")]
    snap = trainer.snapshot()
    assert (snap["modules"] is not None) == (method == "fitnets")


# ------------------------------------------------------------ end to end: CIFAR-10 files


def write_tiny_cifar(root, per_batch: int = 40, n_test: int = 50) -> None:
    """Real-format CIFAR-10 (python pickles, as torchvision reads them): a colour tint per
    class plus noise, so there is something to learn."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    tints = rng.integers(40, 215, size=(10, 3))

    def batch(n, offset):
        y = (np.arange(n) + offset) % 10
        x = np.clip(tints[y][:, :, None, None] + rng.normal(0, 40, size=(n, 3, 32, 32)), 0, 255).astype(np.uint8)
        return {"data": x.reshape(n, 3072), "labels": y.tolist()}

    for b in range(5):
        with open(base / f"data_batch_{b + 1}", "wb") as fh:
            pickle.dump(batch(per_batch, b), fh)
    with open(base / "test_batch", "wb") as fh:
        pickle.dump(batch(n_test, 7), fh)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}, fh)


@pytest.fixture(scope="module")
def cifar_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("kd-cifar-home")
    write_tiny_cifar(home / "datasets")
    return home


@pytest.mark.parametrize("method, pairs", [("fitnets", ["stage3:stage2"]), ("at", ["stage2:stage2", "stage3:stage3"])])
def test_feature_methods_train_on_cifar10_files_and_save_their_regressors(
    method, pairs, cifar_home, monkeypatch, tmp_path
):
    monkeypatch.setenv("KD_PLAYGROUND_HOME", str(cifar_home))
    cfg = Config(
        dataset="cifar10",
        teacher="resnet14",
        student="resnet8",
        method=method,
        pairs=pairs,
        epochs=1,
        teacher_epochs=1,
        train_subset=150,
        batch_size=32,
        labeled_fraction=1.0,
        baseline=False,
    )
    trainer = train.Trainer(cfg)
    r = trainer.run()
    assert r["status"] == "finished", r["message"]
    assert trainer.ds.in_shape == (3, 32, 32) and len(trainer.ds.y_train) == 150
    assert r["steps"] == 5 and [p[:2] for p in trainer.pairs] == [tuple(p.split(":")) for p in pairs]
    assert all(math.isfinite(v) for s in r["step_losses"] for v in s["losses"].values())
    assert {"hint" if method == "fitnets" else "attention"} <= set(r["step_losses"][0]["losses"])
    path = tmp_path / "student.safetensors"
    features.save_trainer_student(path, trainer)
    student, modules, meta = features.load_student(path)
    assert meta["config"]["method"] == method and meta["in_shape"] == (3, 32, 32)
    x = trainer.ds.x_test[:4]
    trainer.student.eval()
    assert torch.equal(student(x), trainer.student(x))
    if method == "fitnets":
        # teacher stage3 (64, 8, 8) <- student stage2 (32, 16, 16): a 1x1 conv to 64 channels, then pooled
        assert modules is not None and modules.maps[0][0].weight.shape == (64, 32, 1, 1)
        trained = trainer.modules.state_dict()
        assert all(torch.equal(trained[k].cpu(), v) for k, v in modules.state_dict().items())
        trainer.modules.eval()
        f = torch.randn(2, 32, 16, 16)
        assert torch.equal(modules(0, f), trainer.modules(0, f))
    else:
        assert modules is None

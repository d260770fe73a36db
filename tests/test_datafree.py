"""No labels, no data: DeepInversion, DFAD and SEED — losses against their papers'
definitions on random tensors, synthesis that moves towards the requested classes, short
data-free runs whose student provably never sees a real training image, label-free runs
judged by k-NN and a linear probe, the CLI and the job manager's Stop."""

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from kd_core import data, datafree, methods, models, train
from kd_core.config import Config
from kd_core.errors import ConfigError
from kd_core.jobs import JobManager

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- losses on random tensors


def _norm(v):
    return math.sqrt(sum(x * x for x in v))


@pytest.mark.parametrize("seed", [0, 1])
def test_bn_statistics_loss_is_its_definition(seed):
    """R_BN = sum_l ||mu_l(x) - running_mean_l||_2 + ||var_l(x) - running_var_l||_2, with the
    per-channel mean and biased variance over batch and positions (DeepInversion eq. 4)."""
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(4, 3, 5, 6, generator=g) * 2 + 1, torch.randn(7, 5, generator=g)]
    means = [torch.randn(3, generator=g), torch.randn(5, generator=g)]
    variances = [torch.rand(3, generator=g) + 0.5, torch.rand(5, generator=g) + 0.5]
    expected = 0.0
    for a, mu, var in zip(inputs, means, variances):
        vals_per_channel = []
        for c in range(a.shape[1]):
            vals = a[:, c].flatten().tolist()
            vals_per_channel.append(vals)
        m = [sum(v) / len(v) for v in vals_per_channel]
        s2 = [sum((x - mc) ** 2 for x in v) / len(v) for v, mc in zip(vals_per_channel, m)]
        expected += _norm([a - b for a, b in zip(m, mu.tolist())]) + _norm([a - b for a, b in zip(s2, var.tolist())])
    got = datafree.bn_statistics_loss(inputs, means, variances)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_bn_hooks_read_every_batchnorm_input_and_its_running_statistics():
    torch.manual_seed(0)
    net = models.build("cnn-4-8", (1, 8, 8), 10)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(32, 1, 8, 8) * 0.5 + 0.2)  # give the BatchNorm layers running statistics
    net.eval()
    x = torch.randn(16, 1, 8, 8)
    seen = []
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    handles = [b.register_forward_hook(lambda m, i, o: seen.append(i[0])) for b in bns]
    net(x)
    for h in handles:
        h.remove()
    expected = datafree.bn_statistics_loss(seen, [b.running_mean for b in bns], [b.running_var for b in bns])
    with datafree.BNStatistics(net) as bn:
        net(x)
        got = bn.loss()
    assert len(bn.layers) == 2
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_tv_loss_is_the_mean_absolute_neighbour_difference():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 1, 4, 5, generator=g)
    v = [abs(x[b, 0, i + 1, j] - x[b, 0, i, j]).item() for b in range(2) for i in range(3) for j in range(5)]
    h = [abs(x[b, 0, i, j + 1] - x[b, 0, i, j]).item() for b in range(2) for i in range(4) for j in range(4)]
    assert datafree.tv_loss(x).item() == pytest.approx(sum(v) / len(v) + sum(h) / len(h), rel=1e-5)
    assert datafree.tv_loss(torch.ones(1, 1, 4, 4)).item() == 0.0


@pytest.mark.parametrize("tau_s,tau_t", [(0.07, 0.01), (0.2, 0.2)])
def test_seed_loss_is_the_cross_entropy_of_similarity_distributions(tau_s, tau_t):
    """SEED: anchors = queue then the image's own teacher embedding;
    L = -mean_i sum_j p_T(j|i) log p_S(j|i), p = softmax(z . d / tau)."""
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    q = torch.nn.functional.normalize(torch.randn(5, 4, generator=g), dim=1)

    def unit(v):
        n = _norm(v)
        return [x / n for x in v]

    def dot(a, b):
        return sum(x * y for x, y in zip(a, b))

    total = 0.0
    for i in range(3):
        si, ti = unit(s[i].tolist()), unit(t[i].tolist())
        anchors = [row.tolist() for row in q] + [ti]
        ls = [dot(si, d) / tau_s for d in anchors]
        lt = [dot(ti, d) / tau_t for d in anchors]
        zs = math.log(sum(math.exp(v) for v in ls))
        mt = max(lt)
        pt = [math.exp(v - mt) for v in lt]
        pt = [v / sum(pt) for v in pt]
        total += -sum(p * (v - zs) for p, v in zip(pt, ls))
    got = datafree.seed_loss(s, t, q, tau_s, tau_t)
    assert got.item() == pytest.approx(total / 3, rel=1e-5)


# ---------------------------------------------------------------- representation scores


def test_knn_vote_by_hand():
    """k = 3, tau = 1: the three most similar training images vote exp(similarity)."""
    train_emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    train_y = torch.tensor([0, 1, 1, 1])
    test_emb = torch.tensor([[1.0, 0.05]])
    te = test_emb / test_emb.norm()
    sims = [(te @ (e / e.norm())).item() for e in train_emb]
    top = sorted(range(4), key=lambda i: -sims[i])[:3]
    votes = [0.0, 0.0]
    for i in top:
        votes[int(train_y[i])] += math.exp(sims[i])
    expected = int(votes[1] > votes[0])
    acc = datafree.knn_accuracy(train_emb, train_y, test_emb, torch.tensor([expected]), k=3, tau=1.0)
    assert acc == 1.0


def test_knn_and_linear_probe_on_a_tiny_fixture():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 6, generator=g) * 5
    y_tr, y_te = torch.arange(60) % 3, torch.arange(30) % 3
    x_tr = centres[y_tr] + 0.3 * torch.randn(60, 6, generator=g)
    x_te = centres[y_te] + 0.3 * torch.randn(30, 6, generator=g)
    assert datafree.knn_accuracy(x_tr, y_tr, x_te, y_te) == 1.0
    assert datafree.linear_probe_accuracy(x_tr, y_tr, x_te, y_te) == 1.0
    noise_tr, noise_te = torch.randn(60, 6, generator=g), torch.randn(30, 6, generator=g)
    assert datafree.knn_accuracy(noise_tr, y_tr, noise_te, y_te) < 0.7
    assert datafree.linear_probe_accuracy(noise_tr, y_tr, noise_te, y_te) < 0.7


# ---------------------------------------------------------------- synthesis


@pytest.fixture(scope="module")
def digits_teacher():
    return train.get_teacher("digits")


def test_inversion_moves_images_towards_the_requested_classes(digits_teacher):
    targets = torch.arange(40) % 10
    recs = list(datafree.invert(digits_teacher.model, targets, (1, 8, 8), 40, 1.0, 0.5, 1e-3, 0.2, jitter=0))
    first, last = recs[0], recs[-1]
    assert first["confidence"] < 0.3  # noise: the teacher is unsure
    assert last["confidence"] > 0.9
    assert all(p > 0.7 for p in last["per_class"])  # every requested class, not just a few
    assert last["bn"] < first["bn"]  # the BatchNorm statistics come closer to the teacher's
    with torch.no_grad():
        pred = digits_teacher.model(last["images"]).argmax(1)
    assert (pred == targets).float().mean() > 0.9


# ---------------------------------------------------------------- data-free runs


class _Forbidden:
    """Stands in for the real training tensors: any use raises."""

    def __getattr__(self, name):
        raise AssertionError(f"the data-free run read the real training images (.{name})")

    def __getitem__(self, key):
        raise AssertionError("the data-free run indexed the real training images")

    def __len__(self):
        raise AssertionError("the data-free run asked how many real training images there are")


def _sealed_datafree(monkeypatch, dataset="digits"):
    """datafree's view of the data: the real test set (to evaluate) and no training images."""
    real = data.load(dataset)
    sealed = data.Dataset(
        real.name, _Forbidden(), _Forbidden(), real.x_test, real.y_test, real.classes, real.mean, real.std
    )

    class SealedData:
        DATASETS = data.DATASETS

        @staticmethod
        def load(name, train_subset=None):
            assert name == dataset
            return sealed

    monkeypatch.setattr(datafree, "data_mod", SealedData)
    return real


def _watch_student(monkeypatch, student_arch):
    """Record every batch the student network is trained on (forward calls in train mode)."""
    seen = []
    build = models.build

    def spy_build(name, in_shape, num_classes):
        model = build(name, in_shape, num_classes)
        if name == student_arch:

            def hook(module, inputs):
                if module.training:
                    seen.append(inputs[0].detach().clone())

            model.register_forward_pre_hook(hook)
        return model

    monkeypatch.setattr(datafree.models, "build", spy_build)
    return seen


def quick_datafree(method="deepinversion", **params):
    base = {
        "deepinversion": dict(images=200, synth_batch=100, synth_steps=40, distil_steps=200),
        "dfad": dict(iterations=60, student_steps=3),
    }[method]
    return Config(
        dataset="digits", method=method, epochs=2, batch_size=64, baseline=False, params=base | params, seed=0
    )


def _run(cfg):
    events = list(train.method_events(cfg))
    return events, events[-1]["result"]


@pytest.mark.slow
def test_deepinversion_student_beats_chance_without_any_real_training_image(monkeypatch, digits_teacher):
    real = _sealed_datafree(monkeypatch)
    seen = _watch_student(monkeypatch, "mlp-32")
    events, r = _run(quick_datafree())
    assert r["status"] == "finished"
    assert r["transfer_set"] == "synthetic" and r["real_training_images_seen"] == 0
    assert r["student"]["test_accuracy"] > 0.5  # chance is 0.1
    assert r["test_accuracy"] == r["student"]["test_accuracy"]
    assert r["synthesis"]["images"] == 200 and r["synthesis_seconds"] > 0
    assert r["synthesis"]["final_confidence"] > 0.9
    # the student was trained, and never on a real training image
    assert len(seen) > 200
    flat_real = real.x_train.flatten(1)
    for batch in seen[:: max(1, len(seen) // 20)]:
        d = torch.cdist(batch.flatten(1), flat_real).min()
        assert d > 1e-3
    stages = {e.get("stage") for e in events}
    assert {"synthesis", "distillation"} <= stages
    grids = [e["grid"] for e in events if e["kind"] == "epoch" and "grid" in e]
    assert grids and grids[-1].shape == (2 * 8, 10 * 8)
    json.dumps({k: v for k, v in r.items() if k != "step_losses"})  # the CLI can write it


@pytest.mark.slow
def test_without_bn_term_the_teacher_is_as_sure_of_adversarial_noise(digits_teacher):
    """The page's slider: with bn_weight 0 the teacher labels the images just as confidently,
    yet their BatchNorm statistics stay far from the training data's."""
    targets = torch.arange(40) % 10
    runs = {}
    for w in (0.0, 1.0):
        recs = list(datafree.invert(digits_teacher.model, targets, (1, 8, 8), 40, w, 0.5, 1e-3, 0.2, jitter=0))
        with datafree.BNStatistics(digits_teacher.model) as bn:
            digits_teacher.model(recs[-1]["images"])
            runs[w] = (recs[-1]["confidence"], bn.loss().item())
    assert runs[0.0][0] > 0.9 and runs[1.0][0] > 0.9
    assert runs[0.0][1] > 2 * runs[1.0][1]


@pytest.mark.slow
def test_dfad_student_learns_from_generated_images_only(monkeypatch, digits_teacher):
    _sealed_datafree(monkeypatch)
    events, r = _run(quick_datafree("dfad", iterations=80, bn_weight=1.0))
    assert r["status"] == "finished"
    assert r["transfer_set"] == "synthetic" and r["real_training_images_seen"] == 0
    assert r["student"]["test_accuracy"] > 0.2
    assert r["synthesis"]["images"] == 80 * 3 * 64


# ---------------------------------------------------------------- label-free


@pytest.mark.slow
def test_seed_without_labels_beats_the_random_student_embedding():
    """On mnist-mini (on 8x8 digits even a random network's embedding scores over 90% by
    k-NN, so the fixture would prove nothing)."""
    cfg = Config(dataset="mnist-mini", method="seed", alpha=1.0, labeled_fraction=0.0, epochs=1, seed=0)
    events, r = _run(cfg)
    assert r["status"] == "finished" and r["labels_used"] == 0
    rep = r["representation"]
    assert rep["student"]["knn_accuracy"] > rep["random"]["knn_accuracy"] + 0.08
    assert rep["student"]["knn_accuracy"] > 0.9 * rep["teacher"]["knn_accuracy"]
    assert rep["student"]["linear_probe_accuracy"] > rep["random"]["linear_probe_accuracy"] + 0.08
    assert r["knn_accuracy"] == rep["student"]["knn_accuracy"]
    assert r["linear_probe_accuracy"] == rep["student"]["linear_probe_accuracy"]
    assert len(r["embedding_2d"]["student"]) == len(r["embedding_2d"]["labels"]) == len(r["embedding_2d"]["random"])
    assert any(e["kind"] == "epoch" and "student_knn" in e for e in events)


# ---------------------------------------------------------------- settings, CLI, jobs


def test_labeled_fraction_zero_is_valid_only_without_label_terms():
    Config(method="seed", alpha=1.0, labeled_fraction=0.0).validate()
    Config(method="kd", alpha=1.0, labeled_fraction=0.0).validate()
    Config(method="deepinversion", labeled_fraction=0.0).validate()
    Config(method="dfad", alpha=0.3, labeled_fraction=0.0).validate()
    with pytest.raises(ConfigError, match="alpha 0.9 keeps a"):
        Config(method="seed", alpha=0.9, labeled_fraction=0.0).validate()
    with pytest.raises(ConfigError, match="always trains on labels"):
        Config(method="none", labeled_fraction=0.0).validate()
    with pytest.raises(ConfigError, match="always trains on labels"):
        Config(method="dkd", labeled_fraction=0.0).validate()


def test_methods_are_registered():
    for name in ("deepinversion", "dfad", "seed"):
        m = methods.get(name)
        assert m.pipeline is not None and m.title and m.paper
    assert not methods.get("deepinversion").uses_labels
    assert not methods.get("dfad").uses_labels


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "kd_core", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


BAD = [
    (["--method", "kd", "--labeled-fraction", "0"], "set alpha 1"),
    (["--method", "seed", "--labeled-fraction", "0"], "alpha 0.9 keeps a (1 - alpha) CE term"),
    (["--method", "none", "--labeled-fraction", "0"], "always trains on labels"),
    (["--method", "deepinversion", "--param", "bn_weight=-1"], "bn_weight must be in"),
    (["--method", "deepinversion", "--param", "images=5"], "images must be in"),
    (["--method", "dfad", "--param", "student_steps=2.5"], "whole number"),
    (["--method", "seed", "--param", "tau_t=0"], "tau_t must be in"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_settings_exit_2_with_one_line(args, needle, capsys):
    """``python -m kd_core train ...``'s ``main`` in this process (tests/test_cli.py runs
    one bad value through a real process)."""
    from kd_core.__main__ import main

    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(["train", "--dataset", "digits", *args]))
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], err


def test_methods_listing_names_them():
    out = cli("methods").stdout
    for name in ("deepinversion", "dfad", "seed"):
        assert f"\n{name} " in "\n" + out


@pytest.mark.slow
def test_cli_deepinversion_writes_the_json(tmp_path):
    out = tmp_path / "r.json"
    p = cli(
        "train",
        "--dataset",
        "digits",
        "--method",
        "deepinversion",
        "--param",
        "images=100",
        "--param",
        "synth_steps=30",
        "--param",
        "distil_steps=100",
        "--epochs",
        "3",
        "--json",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    assert r["transfer_set"] == "synthetic" and r["real_training_images_seen"] == 0
    assert 0 <= r["test_accuracy"] <= 1 and r["synthesis_seconds"] > 0
    # baseline on: the same student distilled on real images and trained from scratch
    assert r["real_kd"]["test_accuracy"] > 0.5 and r["baseline"]["test_accuracy"] > 0.3
    assert "real training images seen by the student: 0" in p.stdout


@pytest.mark.slow
def test_cli_seed_label_free_writes_knn_and_probe(tmp_path):
    out = tmp_path / "s.json"
    p = cli(
        "train",
        "--dataset",
        "digits",
        "--method",
        "seed",
        "--alpha",
        "1",
        "--labeled-fraction",
        "0",
        "--epochs",
        "1",
        "--json",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    for key in ("teacher", "student", "random"):
        assert 0 <= r["representation"][key]["knn_accuracy"] <= 1
        assert 0 <= r["representation"][key]["linear_probe_accuracy"] <= 1
    assert r["labels_used"] == 0 and "k-NN" in p.stdout


@pytest.mark.slow
def test_job_stop_keeps_what_was_done(digits_teacher):
    jm = JobManager(max_running=1)
    job = jm.submit(quick_datafree(synth_steps=200, images=400))
    deadline = time.time() + 300
    while job.step < 5 and not job.done and time.time() < deadline:
        time.sleep(0.05)
    job.stop()
    while not job.done and time.time() < deadline:
        time.sleep(0.05)
    snap = job.snapshot()
    assert snap["status"] == "stopped", snap["message"]
    assert snap["result"] is not None and snap["result"]["status"] == "stopped"
    assert 0 <= snap["result"]["student"]["test_accuracy"] <= 1
    assert any(e.get("stage") == "synthesis" and "grid" in e for e in snap["epochs"])
    assert "student" in job.trainer.models

"""Beyond one teacher: ensemble KD, born-again networks, teacher-assistant KD and deep
mutual learning — losses against the papers' definitions, short end-to-end runs, the CLI
and the leaderboard."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kd_core import beyond, losses, methods, ship, sweep, teachers, train
from kd_core.__main__ import main
from kd_core.config import Config
from kd_core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def quick(**kw) -> Config:
    base = dict(dataset="digits", epochs=1, batch_size=64, labeled_fraction=1.0)
    base.update(kw)
    return Config(**base)


# ---------------------------------------------------------------- losses on random tensors


@pytest.mark.parametrize("T", [1.0, 4.0, 0.5])
def test_ensemble_blend_is_the_average_of_softened_probabilities(T):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 5, 7, generator=g) * 3  # K=3 teachers, B=5, C=7
    blend = losses.ensemble_soft_targets(z, T, "mean")
    expected = torch.zeros(5, 7)
    for k in range(3):
        e = torch.exp(z[k] / T)
        expected += e / e.sum(1, keepdim=True) / 3
    assert torch.allclose(blend, expected, atol=1e-6)
    assert torch.allclose(blend.sum(1), torch.ones(5))


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_confidence_blend_weights_each_teacher_by_its_negative_entropy(T):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(4, 6, 10, generator=g) * 2
    blend = losses.ensemble_soft_targets(z, T, "confidence")
    w = losses.ensemble_weights(z, "confidence")
    for b in range(6):
        H = []
        for k in range(4):
            p = [math.exp(v) for v in z[k, b].tolist()]
            p = [v / sum(p) for v in p]
            H.append(-sum(v * math.log(v) for v in p))
        ws = [math.exp(-h) for h in H]
        ws = [v / sum(ws) for v in ws]
        assert w[:, b].tolist() == pytest.approx(ws, abs=1e-6)
        expected = sum(ws[k] * F.softmax(z[k, b] / T, dim=0) for k in range(4))
        assert torch.allclose(blend[b], expected, atol=1e-6)
    # the surer teacher counts more: a near one-hot teacher beside a flat one
    z2 = torch.stack([torch.tensor([[8.0, 0, 0]]), torch.zeros(1, 3)])
    w2 = losses.ensemble_weights(z2, "confidence")
    assert w2[0, 0] > 0.5 > w2[1, 0]
    with pytest.raises(ValueError):
        losses.ensemble_weights(z2, "median")


@pytest.mark.parametrize("weighting", ["mean", "confidence"])
def test_ensemble_teacher_makes_the_ordinary_kd_loss_distil_the_blend(weighting):
    g = torch.Generator().manual_seed(2)
    nets = [torch.nn.Linear(5, 4) for _ in range(3)]
    x, s = torch.randn(8, 5, generator=g), torch.randn(8, 4, generator=g)
    T = 3.0
    ens = beyond.EnsembleTeacher(nets, T, weighting)
    with torch.no_grad():
        z = torch.stack([n(x) for n in nets])
        p_bar = losses.ensemble_soft_targets(z, T, weighting)
        assert torch.allclose(F.softmax(ens(x) / T, dim=1), p_bar, atol=1e-6)
        # T^2 KL(p_bar || p_S), by hand
        log_ps = F.log_softmax(s / T, dim=1)
        by_hand = (p_bar * (p_bar.log() - log_ps)).sum(1).mean() * T**2
        assert losses.kd_loss(s, ens(x), T).item() == pytest.approx(by_hand.item(), rel=1e-5)
        assert losses.ensemble_kd_loss(s, z, T, weighting).item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_mutual_learning_loss_is_the_papers():
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(6, 5, generator=g, requires_grad=True)
    z2 = torch.randn(6, 5, generator=g, requires_grad=True)
    z3 = torch.randn(6, 5, generator=g)
    y = torch.randint(0, 5, (6,), generator=g)
    # two students: L1 = CE(y, p1) + KL(p2 || p1)
    p1, p2 = F.softmax(z1, 1), F.softmax(z2, 1)
    kl = (p2 * (p2.log() - p1.log())).sum(1).mean()
    expected = F.cross_entropy(z1, y) + kl
    got = losses.mutual_learning_loss(z1, [z2.detach()], y)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    got.backward()
    assert z2.grad is None and z1.grad is not None  # the peer is only a target
    # three students, weight 0.5: CE + 0.5 / 2 * (KL(p2||p1) + KL(p3||p1))
    p3 = F.softmax(z3, 1)
    kl3 = (p3 * (p3.log() - p1.log())).sum(1).mean()
    got = losses.mutual_learning_loss(z1, [z2.detach(), z3], y, weight=0.5)
    assert got.item() == pytest.approx((F.cross_entropy(z1, y) + 0.25 * (kl + kl3)).item(), rel=1e-5)
    # CE over the labelled samples only; the KL over all
    lab = torch.tensor([True, False, True, False, False, False])
    got = losses.mutual_learning_loss(z1, [z2.detach()], y, lab)
    assert got.item() == pytest.approx((F.cross_entropy(z1[lab], y[lab]) + kl).item(), rel=1e-5)


# ---------------------------------------------------------------- registry and config


def test_registry_lists_the_new_methods_without_touching_the_per_step_one():
    allm = methods.all_methods()
    for name in ("ensemble", "born-again", "ta", "dml"):
        m = methods.get(name)
        assert name in allm and name not in methods.METHODS
        assert m.title and m.summary and m.paper and m.formula.startswith(r"\mathcal{L}")
        latex = m.formula_latex(4.0, 0.9, m.defaults())
        assert "<" not in latex, latex
        for p in m.params:
            assert p.low <= p.default <= p.high and p.help
    with pytest.raises(ConfigError, match="chains several runs"):
        train.Trainer(quick(method="born-again"))
    with pytest.raises(ConfigError, match="generations must be in"):
        quick(method="born-again", params={"generations": 9}).validate()
    with pytest.raises(ConfigError, match="unknown model"):
        quick(method="ta", assistant="transformer-9").validate()
    assert beyond.member_specs(quick(method="ensemble")) == [("cnn-32-64", 0), ("cnn-32-64", 1), ("cnn-32-64", 2)]
    assert beyond.member_specs(quick(method="ensemble", params={"teachers": 3, "archs": 2})) == [
        ("cnn-32-64", 0),
        ("mlp-256-128", 0),
        ("cnn-32-64", 1),
    ]


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_ensemble_trains_end_to_end_and_reports_every_teacher(monkeypatch, kd_home):
    cfg = quick(method="ensemble", params={"teachers": 2, "weighting": 1}, labeled_fraction=0.5)
    r = train.distil(cfg)
    assert r["status"] == "finished" and r["student"]["test_accuracy"] > 0.3
    assert [m["seed"] for m in r["teachers"]] == [0, 1]
    assert all(m["test_accuracy"] > 0.9 for m in r["teachers"])
    e = r["ensemble"]
    assert e["weighting"] == "confidence" and e["k"] == 2 and e["test_accuracy"] > 0.9
    assert e["test_accuracy"] == r["teacher"]["test_accuracy"]
    assert set(r["step_losses"][0]["losses"]) == {"ce", "kd"}
    # the teachers are cached on disk like the single teacher: a second ensemble trains none
    # (shipped with the project, or written to the disk cache when trained)
    assert all(
        teachers.is_available(m["key"]) and (ship.is_shipped(m["key"]) or (kd_home / "teachers" / m["key"]).exists())
        for m in r["teachers"]
    )
    for m in r["teachers"]:
        teachers.forget(m["key"])
    beyond._ensembles.clear()
    monkeypatch.setattr(teachers, "train_teacher", lambda *a, **k: pytest.fail("a cached teacher was retrained"))
    t = beyond.ensemble_teacher(cfg)
    assert all(m["from_cache"] for m in t.members)
    # one image: each teacher's soft targets and the blend, for a page to draw
    img = beyond.image_soft_targets(cfg, 5)
    assert len(img["members"]) == 2 and img["weighting"] == "confidence"
    blend = sum(m["weight"] * torch.tensor(m["probs"]) for m in img["members"])
    assert torch.allclose(blend, torch.tensor(img["blend"]), atol=1e-5)
    assert sum(img["blend"]) == pytest.approx(1.0, abs=1e-5)
    assert sum(m["weight"] for m in img["members"]) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ConfigError, match="image index"):
        beyond.image_soft_targets(cfg, 10**6)


@pytest.mark.slow
def test_ensemble_is_at_least_as_accurate_as_its_mean_member():
    """Two seeds of the preset teacher, and the preset teacher alternated with an MLP (three
    teachers), at the dataset's recipe: blending their probabilities, averaged or weighted by
    confidence, is at least as accurate as the average teacher. On digits, whose teachers
    train in seconds (mnist-mini shows the same: members 98.2/98.3/98.0%, ensemble 98.3%;
    with an MLP member 98.2/94.4/98.3%, ensemble 98.2% at T = 1 — measured, see the note)."""
    for archs, k in ((1, 2), (2, 3)):
        for weighting in (0, 1):
            t = beyond.ensemble_teacher(
                Config(
                    dataset="digits", method="ensemble", params={"weighting": weighting, "archs": archs, "teachers": k}
                )
            )
            accs = [m["test_accuracy"] for m in t.members]
            assert len(accs) == k and len({m["arch"] for m in t.members}) == archs
            assert t.test_accuracy >= sum(accs) / len(accs), (archs, weighting, t.test_accuracy, accs)
            assert t.info["test_accuracy_at_T1"] >= sum(accs) / len(accs), (archs, weighting, t.info, accs)


def test_born_again_generations_end_to_end():
    events = list(train.method_events(quick(method="born-again", params={"generations": 2})))
    assert events[0]["kind"] == "start" and events[-1]["kind"] == "end"
    assert sum(ev["kind"] == "stage_end" for ev in events) == 2
    assert {ev["generation"] for ev in events if ev["kind"] == "epoch"} == {1, 2}
    r = events[-1]["result"]
    gens = r["generations"]
    assert [g["generation"] for g in gens] == [0, 1, 2]
    assert all(g["arch"] == "cnn-32-64" for g in gens)
    assert r["student"]["arch"] == "cnn-32-64" and r["student"]["test_accuracy"] == gens[-1]["test_accuracy"]
    assert r["teacher"]["test_accuracy"] == gens[0]["test_accuracy"]
    assert "baseline" in r and r["status"] == "finished"
    assert {s["stage"] for s in r["step_losses"]} == {"generation 1", "generation 2"}


def test_teacher_assistant_end_to_end_with_the_direct_run_beside():
    r = train.distil(quick(method="ta", assistant="cnn-8-16"))
    assert r["status"] == "finished"
    assert [c["role"] for c in r["chain"]] == ["teacher", "assistant", "student via assistant", "student direct"]
    assert r["assistant"]["arch"] == "cnn-8-16" and r["student"]["arch"] == "mlp-32"
    assert r["student"]["test_accuracy"] == r["chain"][2]["test_accuracy"]
    assert r["direct"]["test_accuracy"] == r["chain"][3]["test_accuracy"]
    assert 0 <= r["student"]["agreement"] <= 1 and "agreement_with_assistant" in r["student"]
    assert "baseline" in r


def test_deep_mutual_learning_end_to_end_with_live_curves_per_student():
    cfg = quick(method="dml", epochs=2, params={"students": 3})
    events = list(train.method_events(cfg))
    epochs = [ev for ev in events if ev["kind"] == "epoch"]
    assert [ev["epoch"] for ev in epochs] == [1, 2]
    assert all(len(ev["student_accs"]) == 3 and "baseline_acc" in ev for ev in epochs)
    steps = [ev for ev in events if ev["kind"] == "step"]
    assert set(steps[0]["losses"]) == {"student1", "student2", "student3"}
    r = events[-1]["result"]
    assert r["teacher"] is None and len(r["students"]) == 3
    assert [h["test_accuracy"] for h in r["students"][1]["history"]] == [ev["student_accs"][1] for ev in epochs]
    assert r["student"]["test_accuracy"] > 0.3
    # reproducible
    again = train.distil(cfg)
    assert again["student"]["test_accuracy"] == r["student"]["test_accuracy"]
    # without the mimicry term, student 1 is its independent twin (same initialisation and batches)
    alone = train.distil(quick(method="dml", labeled_fraction=0.5, params={"beta": 0.0}))
    assert alone["student"]["test_accuracy"] == alone["baseline"]["test_accuracy"]


# ---------------------------------------------------------------- CLI and leaderboard


def cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "kd_core", *args],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


BAD = [
    (["--method", "born-again", "--generations", "9"], "generations must be in [1, 5]"),
    (["--method", "born-again", "--generations", "x"], "generations must be a whole number"),
    (["--method", "kd", "--generations", "2"], "has no parameter 'generations'"),
    (["--method", "ta", "--assistant", "transformer-9"], "transformer-9"),
    (["--method", "ensemble", "--param", "weighting=3"], "weighting must be in"),
    (["--method", "dml", "--param", "students=1"], "students must be in"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_values_exit_2_with_one_line(args, needle, capsys):
    with pytest.raises(SystemExit) as e:  # argparse's own errors exit directly
        raise SystemExit(main(["train", "--dataset", "digits", *args]))
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], err


@pytest.mark.slow
def test_cli_lists_and_runs_the_chained_methods(tmp_path):
    p = cli("methods")
    assert p.returncode == 0
    for name in ("ensemble", "born-again", "ta", "dml", "kd"):
        assert name in p.stdout
    out = tmp_path / "ban.json"
    p = cli(
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--method",
        "born-again",
        "--generations",
        "2",
        "--json",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    assert "generation 2 (cnn-32-64)" in p.stdout
    r = json.loads(out.read_text())
    assert len(r["generations"]) == 3 and "step_losses" not in r


def test_leaderboard_has_the_new_methods(tmp_path, monkeypatch, capsys):
    base = Config(dataset="digits", epochs=1)
    lb = sweep.Sweep.leaderboard(base, seeds=[0], beyond=True)
    names = [c["method"] for c in lb.cells]
    assert names[-len(methods.BEYOND) :] == list(methods.BEYOND)
    assert {c["method"]: cfgs[0].alpha for c, cfgs in zip(lb.cells, lb.configs)}["born-again"] == base.alpha
    assert [c["method"] for c in sweep.Sweep.leaderboard(base, seeds=[0]).cells] == ["none"] + [
        m for m in methods.METHODS if m != "none"
    ]  # the classic table is unchanged
    monkeypatch.setattr(sweep, "leaderboard_dir", lambda: tmp_path)
    rc = main(
        [
            "leaderboard",
            "--dataset",
            "digits",
            "--methods",
            "none,born-again,ta,dml",
            "--seeds",
            "0",
            "--epochs",
            "1",
            "--n-jobs",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    for name in ("Born-again (teacher-sized, last gen.)", "TA KD", "DML (student 1)", "Teacher (cnn-32-64)"):
        assert name in out
    rows = list(csv.DictReader((tmp_path / "digits.csv").open()))
    assert [r["method"] for r in rows] == ["teacher", "none", "born-again", "ta", "dml"]
    assert all(r["acc_mean"] for r in rows)

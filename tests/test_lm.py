"""Language models (kd_core.lm): each loss against its paper's definition written as plain
loops on random tensors; the corpora (a corpus the test writes, fortune files with colour
codes, Debian's real fortunes and Tang/Song poems, a missing one); the models (causal, the
decoding cache); training that learns; the scratch twin on the same data; Stop; the teacher
cache; the CLI (bad input exits 2 with one line; the JSON has teacher/student/baseline)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from kd_core.errors import ConfigError, DataUnavailableError
from kd_core.jobs import JobManager
from kd_core.lm import corpus, explain, losses, models
from kd_core.lm import jobs as lm_jobs
from kd_core.lm import train as lm_train

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ losses vs their definitions
def _probs(z, T):
    return [[math.exp(v / T) / sum(math.exp(u / T) for u in row) for v in row] for row in z]


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def _rows(x):
    return x.reshape(-1, x.shape[-1]).tolist()


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 4, 7, generator=g, dtype=torch.float64) * 2, torch.randn(
        3, 4, 7, generator=g, dtype=torch.float64
    ) * 2


@pytest.mark.parametrize("T", [0.5, 1.0, 3.0])
def test_forward_and_reverse_kl_match_their_definitions(logits, T):
    s, t = logits
    ps, pt = _probs(_rows(s), T), _probs(_rows(t), T)
    fwd = T * T * sum(_kl(a, b) for a, b in zip(pt, ps)) / len(ps)
    rev = T * T * sum(_kl(b, a) for a, b in zip(pt, ps)) / len(ps)
    assert float(losses.forward_kl(s, t, T)) == pytest.approx(fwd, rel=1e-9)
    assert float(losses.reverse_kl(s, t, T)) == pytest.approx(rev, rel=1e-9)
    assert fwd != pytest.approx(rev, rel=1e-3)  # the two directions differ


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_generalised_jsd_matches_gkd_definition(logits, beta):
    s, t = logits
    ps, pt = _probs(_rows(s), 1.0), _probs(_rows(t), 1.0)
    total = 0.0
    for a, b in zip(pt, ps):
        m = [beta * x + (1 - beta) * y for x, y in zip(a, b)]
        total += beta * _kl(a, m) + (1 - beta) * _kl(b, m)
    assert float(losses.generalized_jsd(s, t, beta)) == pytest.approx(total / len(ps), rel=1e-9)


def test_generalised_jsd_limits(logits):
    s, t = logits
    fwd, rev = float(losses.forward_kl(s, t)), float(losses.reverse_kl(s, t))
    # GKD's convention at the ends: beta = 0 is the forward KL, beta = 1 the reverse KL
    assert float(losses.generalized_jsd(s, t, 0.0)) == pytest.approx(fwd, rel=1e-12)
    assert float(losses.generalized_jsd(s, t, 1.0)) == pytest.approx(rev, rel=1e-12)
    # and the divergence tends to them: JSD(beta) / beta -> KL(p_T || p_S) as beta -> 0
    eps = 1e-5
    assert float(losses.generalized_jsd(s, t, eps)) / eps == pytest.approx(fwd, rel=1e-3)
    assert float(losses.generalized_jsd(s, t, 1 - eps)) / eps == pytest.approx(rev, rel=1e-3)
    # symmetric at beta = 1/2 (the classic JSD) and never negative
    assert float(losses.generalized_jsd(s, t, 0.5)) == pytest.approx(float(losses.generalized_jsd(t, s, 0.5)), rel=1e-9)
    for b in np.linspace(0, 1, 11):
        assert float(losses.generalized_jsd(s, t, float(b))) >= 0


@pytest.mark.parametrize("k", [1, 2, 4, 7])
def test_topk_targets_keep_the_k_largest_renormalised(logits, k):
    s, t = logits
    T = 2.0
    q = losses.topk_targets(t, k, T)
    for row, got in zip(_probs(_rows(t), T), _rows(q)):
        keep = sorted(range(len(row)), key=lambda i: -row[i])[:k]
        z = sum(row[i] for i in keep)
        want = [row[i] / z if i in keep else 0.0 for i in range(len(row))]
        assert got == pytest.approx(want, abs=1e-12)
    ps = _probs(_rows(s), T)
    want = T * T * sum(_kl(qq, p) for qq, p in zip(_rows(q), ps)) / len(ps)
    assert float(losses.topk_kl(s, t, k, T)) == pytest.approx(want, rel=1e-9)
    mass = sum(1 - sum(sorted(row, reverse=True)[:k]) for row in _probs(_rows(t), T)) / len(ps)
    assert losses.topk_mass_lost(t, k, T) == pytest.approx(mass, abs=1e-9)


def test_topk_with_every_class_is_the_forward_kl_and_information_is_lost_as_k_shrinks(logits):
    s, t = logits
    assert float(losses.topk_kl(s, t, 7, 2.0)) == pytest.approx(float(losses.forward_kl(s, t, 2.0)), rel=1e-9)
    lost = [losses.topk_mass_lost(t, k, 2.0) for k in range(1, 8)]
    assert all(a > b for a, b in zip(lost, lost[1:])) and lost[-1] == pytest.approx(0, abs=1e-12)


def test_hidden_mse_is_the_mean_squared_difference():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 5, 6, generator=g), torch.randn(2, 5, 6, generator=g)
    want = sum((x - y) ** 2 for x, y in zip(a.flatten().tolist(), b.flatten().tolist())) / a.numel()
    assert float(losses.hidden_mse(a, b)) == pytest.approx(want, rel=1e-5)


# ------------------------------------------------------------------ corpora
def _write_corpus(tmp_path: Path) -> Path:
    docs = [f"document {i}: the quick brown fox jumps over the lazy dog {i * 7}." * 3 for i in range(60)]
    path = tmp_path / "tiny.txt"
    path.write_text("\n\n".join(docs), encoding="utf-8")
    return path


def test_corpus_loader_on_a_file_the_test_writes(tmp_path):
    path = _write_corpus(tmp_path)
    c = corpus.load(f"file:{path}")
    again = corpus.split([d for d in path.read_text().split("\n\n")])
    assert (c.train, c.val, c.test) == again  # the split is fixed by its seed
    total = len(c.train) + len(c.val) + len(c.test)
    assert 0.8 < len(c.train) / total < 0.95 and c.val and c.test
    assert set(c.train + c.val + c.test) == set(c.chars) and list(c.chars) == sorted(c.chars)
    docs = lambda text: {d for d in text.split("\n\n") if d}  # noqa: E731
    assert not docs(c.train) & docs(c.test)  # a document is in one split only
    ids = c.encode("the fox")
    assert c.decode(ids) == "the fox" and ids.dtype == torch.long
    assert c.unknown("the fox 象") == ["象"]


def test_fortune_files_are_read_without_colour_codes(tmp_path, monkeypatch):
    (tmp_path / "tang300").write_text(
        "\x1b[32m《静夜思》\x1b[m\n\x1b[33m作者：李白\x1b[m\n床前明月光，疑是地上霜。\n%\n" * 40, encoding="utf-8"
    )
    (tmp_path / "song100").write_text(
        "《如梦令》\n作者：李清照\n昨夜雨疏风骤，浓睡不消残酒。\n%\n" * 40, encoding="utf-8"
    )
    (tmp_path / "wisdom").write_text("Know thyself.\n%\nN_\bot underlined.\n%\n" * 30, encoding="utf-8")
    monkeypatch.setenv("KD_FORTUNES_DIR", str(tmp_path))
    entries = corpus.read_fortune_file(tmp_path / "tang300")
    assert entries[0] == "《静夜思》\n作者：李白\n床前明月光，疑是地上霜。" and len(entries) == 40
    poems = corpus.load("tang-song")
    assert "\x1b" not in poems.train + poems.test and "床" in poems.chars
    english = corpus.load("fortunes")
    assert "Not underlined." in english.train + english.val + english.test and "\b" not in english.chars


def test_a_missing_corpus_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_FORTUNES_DIR", str(tmp_path / "nowhere"))
    for name, package in (("fortunes", "fortunes"), ("tang-song", "fortunes-zh")):
        with pytest.raises(DataUnavailableError, match=f"apt-get install {package}$"):
            corpus.load(name)
    assert corpus.available()["fortunes"] is not None
    with pytest.raises(DataUnavailableError, match="does not exist"):
        corpus.load(f"file:{tmp_path / 'none.txt'}")


def test_default_corpus_ships_with_python():
    c = corpus.load("pydoc")
    assert len(c.train) > 300_000 and 80 < c.vocab_size < 200
    assert "def" in c.train


@pytest.mark.skipif(
    not Path("/usr/share/games/fortunes/tang300").exists() and not os.environ.get("CI"),
    reason="Debian's fortunes / fortunes-zh are not installed (CI installs them)",
)
def test_real_debian_fortunes_and_tang_song_poems(monkeypatch):
    monkeypatch.delenv("KD_FORTUNES_DIR", raising=False)
    english = corpus.load("fortunes")
    assert len(english.train) > 500_000 and english.vocab_size < 200 and "\x1b" not in english.chars
    poems = corpus.load("tang-song")
    assert len(poems.train) > 20_000 and poems.vocab_size > 1500
    assert "李白" in poems.train + poems.val + poems.test and "\x1b" not in poems.chars


# ------------------------------------------------------------------ models
@pytest.mark.parametrize("arch", list(models.ARCHS))
def test_models_are_causal_and_decode_with_their_cache(arch):
    torch.manual_seed(0)
    m = models.build(arch, 30).eval()
    x = torch.randint(0, 30, (2, 20))
    y = x.clone()
    y[:, 12:] = (y[:, 12:] + 1) % 30
    with torch.no_grad():
        a, b = m(x), m(y)
    assert a.shape == (2, 20, 30)
    assert torch.allclose(a[:, :12], b[:, :12], atol=1e-6) and not torch.allclose(a[:, 12:], b[:, 12:])
    if arch.startswith("gpt"):
        cache: list = []
        with torch.no_grad():
            parts = [m(x[:, :8], cache=cache)] + [m(x[:, i : i + 1], cache=cache) for i in range(8, 20)]
        assert torch.allclose(torch.cat(parts, 1), a, atol=1e-5)
    out = models.generate(m, x[:, :5], 100, 1.0, torch.Generator().manual_seed(0))  # past the 64-char window
    assert out.shape == (2, 105) and torch.equal(out[:, :5], x[:, :5])


def test_model_sizes_and_costs_order_teacher_above_students():
    prof = {a: models.profile(models.build(a, 100)) for a in models.ARCHS}
    t = prof[models.DEFAULT_TEACHER]
    for a in ("gpt-mini", "gpt-micro", "mlp"):
        assert prof[a]["params"] < t["params"] / 3 and prof[a]["flops_per_token"] < t["flops_per_token"] / 3
    assert all(p["latency_ms_per_token"] > 0 for p in prof.values())


# ------------------------------------------------------------------ training
TINY = dict(teacher_steps=40, steps=40, eval_every=20, batch_size=16)


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    return f"file:{_write_corpus(tmp_path_factory.mktemp('lm'))}"


def test_distilled_student_loss_falls_and_teacher_is_cached(tiny_corpus, kd_home):
    cfg = lm_train.LMConfig(corpus=tiny_corpus, **TINY)
    events = list(lm_train.LMTrainer(cfg).events())
    steps = [e for e in events if e["kind"] == "step"]
    assert [e["kind"] for e in events][0] == "start" and events[-1]["kind"] == "end"
    first, last = np.mean([e["loss"] for e in steps[:5]]), np.mean([e["loss"] for e in steps[-5:]])
    assert last < 0.7 * first
    r = events[-1]["result"]
    evals = r["history"]
    assert evals[-1]["student_perplexity"] < evals[0]["student_perplexity"]
    assert r["student"]["test_perplexity"] < 0.5 * corpus.load(tiny_corpus).vocab_size  # far better than uniform
    for role in ("teacher", "student", "baseline"):
        for key in (
            "test_perplexity",
            "bits_per_char",
            "mean_entropy",
            "top1_accuracy",
            "agreement",
            "params",
            "tokens_per_s",
        ):
            assert r[role][key] is not None, (role, key)
        assert r[role]["bits_per_char"] == pytest.approx(math.log2(r[role]["test_perplexity"]))
    key = lm_train.get_teacher(tiny_corpus, cfg.teacher, cfg.teacher_steps).key
    assert (kd_home / "lm_teachers" / key / "weights.safetensors").exists()
    assert lm_train.teacher_cached(tiny_corpus, cfg.teacher, cfg.teacher_steps)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["reverse-kl", "gkd", "seq-kd", "top-k", "hidden", "scratch"])
def test_every_method_trains(tiny_corpus, method):
    params = {"on_policy": 1.0} if method == "gkd" else {}
    cfg = lm_train.LMConfig(corpus=tiny_corpus, method=method, params=params, **{**TINY, "steps": 20})
    r = lm_train.LMTrainer(cfg).run()
    assert r["status"] == "finished" and r["steps"] == 20
    assert math.isfinite(r["student"]["test_perplexity"])
    assert ("baseline" in r) == (method != "scratch")


def test_scratch_twin_sees_the_same_data_in_the_same_order(tiny_corpus):
    """With alpha = 0 the 'distilled' student's loss is plain CE: it must end identical to its
    scratch twin (same initial weights, same windows, same order)."""
    r = lm_train.LMTrainer(lm_train.LMConfig(corpus=tiny_corpus, alpha=0.0, **{**TINY, "steps": 15})).run()
    assert r["student"]["test_perplexity"] == pytest.approx(r["baseline"]["test_perplexity"], rel=1e-6)


def test_stop_keeps_what_was_done(tiny_corpus):
    tr = lm_train.LMTrainer(lm_train.LMConfig(corpus=tiny_corpus, **{**TINY, "steps": 400}))
    for ev in tr.events():
        if ev["kind"] == "step" and ev["step"] == 6:
            tr.stop()
    assert ev["kind"] == "end" and ev["status"] == "stopped"
    assert ev["result"]["steps"] == 6 and ev["result"]["history"][-1]["step"] == 6
    assert math.isfinite(ev["result"]["student"]["test_perplexity"])


def test_the_apps_stop_button_stops_a_job_mid_run(tiny_corpus):
    """What the page's Stop does: ``job.stop()`` on a queued LMJob ends its run early, keeps
    what was done and records the evaluations. (The job once never reached its trainer: Stop
    did nothing after the teacher was trained.)"""
    manager = JobManager(max_running=1)
    job = lm_jobs.submit(manager, lm_train.LMConfig(corpus=tiny_corpus, **{**TINY, "steps": 4000}))
    deadline = time.monotonic() + 600  # a bound for a busy machine, not a timing assertion
    while job.snapshot()["step"] < 25 and not job.done and time.monotonic() < deadline:
        time.sleep(0.05)
    job.stop()
    job.join(600)
    snap = job.snapshot()
    assert snap["status"] == "stopped", snap["message"]
    assert 25 <= snap["result"]["steps"] < 4000
    assert snap["steps"][-1]["step"] == snap["result"]["steps"]
    assert snap["evals"] and snap["evals"][0]["step"] == 20


def test_bad_configs_are_refused():
    for kwargs, needle in [
        ({"method": "magic"}, "unknown method"),
        ({"temperature": 0}, "temperature"),
        ({"train_fraction": 0}, "train-fraction"),
        ({"student": "gpt-9"}, "unknown language model"),
        ({"method": "gkd", "params": {"beta": 2}}, "beta must be in"),
        ({"method": "kd", "params": {"k": 3}}, "has no parameter k"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            lm_train.LMConfig(**kwargs).validate()


def test_forward_kl_covers_both_modes_and_reverse_kl_picks_one():
    teacher = explain.bimodal(40, separation=16, weight=0.55)
    fwd, rev = explain.fit_unimodal(teacher, "forward"), explain.fit_unimodal(teacher, "reverse")
    assert rev["entropy"] < fwd["entropy"]
    assert abs(rev["mean"] - 27.5) < 1.0  # on the heavier (right) mode
    assert abs(fwd["mean"] - 19.5) < 3.0 and fwd["std"] > 2 * rev["std"]  # between the modes, wide


# ------------------------------------------------------------------ CLI
def cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "kd_core", "lm", *args],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--temperature", "abc"], "temperature must be a number"),
        (["train", "--temperature", "0"], "temperature must be in"),
        (["train", "--method", "magic"], "unknown method 'magic'"),
        (["train", "--train-fraction", "1.5"], "train-fraction must be in"),
        (["train", "--corpus", "klingon"], "unknown corpus 'klingon'"),
        (["train", "--steps", "0"], "steps must be"),
        (["train", "--param", "beta"], "NAME=VALUE"),
        (["train", "--method", "top-k", "--param", "k=0"], "k must be in"),
        (["sample", "--chars", "0"], "chars must be in"),
        (["fly"], "invalid choice"),
    ],
)
def test_cli_bad_values_exit_2_with_one_line(args, needle, capsys):
    """``python -m kd_core lm ARGS``'s ``main`` in this process (one real process below)."""
    from kd_core.__main__ import main

    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(["lm", *args]))
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err


def test_a_bad_lm_value_exits_2_from_a_real_process():
    r = cli("train", "--temperature", "0")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_cli_missing_corpus_exits_2_saying_how_to_install(tmp_path):
    env = dict(os.environ, KD_FORTUNES_DIR=str(tmp_path))
    r = subprocess.run(
        [sys.executable, "-m", "kd_core", "lm", "train", "--corpus", "tang-song"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.strip().endswith("apt-get install fortunes-zh")


@pytest.mark.slow
def test_cli_train_writes_teacher_student_baseline_json_and_samples(tiny_corpus, tmp_path):
    out = tmp_path / "lm.json"
    r = cli(
        "train",
        "--corpus",
        tiny_corpus,
        "--teacher-steps",
        "40",
        "--steps",
        "30",
        "--batch-size",
        "16",
        "--json",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    assert "distilled vs scratch" in r.stdout
    res = json.loads(out.read_text())
    for role in ("teacher", "student", "baseline"):
        for key in (
            "test_perplexity",
            "bits_per_char",
            "mean_entropy",
            "top1_accuracy",
            "agreement",
            "params",
            "tokens_per_s",
        ):
            assert key in res[role]
    assert res["history"] and res["student"]["sample"]
    s = cli("sample", "--corpus", tiny_corpus, "--teacher-steps", "40", "--prompt", "the ", "--chars", "50")
    assert s.returncode == 0 and s.stdout.startswith("the ") and len(s.stdout) >= 50

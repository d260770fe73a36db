"""kd_core.presets: the configs of a method's-own-effect comparison, their summary over seeds
(mean, sample std, the within-noise rule checked by hand) and a real tiny comparison."""

import math
import statistics

import pytest

from kd_core import presets
from kd_core.config import Config
from kd_core.errors import ConfigError


def test_configs_pull_the_method_apart_from_kd():
    base = Config(dataset="digits", method="rkd", alpha=0.7, temperature=2.0, epochs=3, params={"angle_weight": 10.0})
    got = presets.configs(base, seeds=[0, 5])
    assert [(p, s) for p, s, _ in got] == [(p, s) for p in ("scratch", "kd", "method", "method+kd") for s in (0, 5)]
    by = {(p, s): c for p, s, c in got}
    assert by["scratch", 0].method == "none" and not by["scratch", 0].baseline
    assert by["kd", 5].method == "kd" and by["kd", 5].alpha == 0.7 and by["kd", 5].params == {}
    assert by["method", 0].method == "rkd" and by["method", 0].alpha == 0.0
    assert by["method", 0].params == {"angle_weight": 10.0}
    assert by["method+kd", 5].alpha == 0.7 and by["method+kd", 5].seed == 5
    # the rest of the set-up is the base's
    assert all(c.temperature == 2.0 and c.epochs == 3 and c.dataset == "digits" for _, _, c in got)
    # the base is not changed
    assert base.seed == 0 and base.params == {"angle_weight": 10.0}


def test_presets_per_kind_of_method():
    assert presets.presets_for("kd") == ("scratch", "kd")
    assert presets.presets_for("dkd") == ("scratch", "kd", "method")  # DKD replaces the KD term
    assert presets.presets_for("at") == presets.PRESETS
    with pytest.raises(ConfigError, match="single-student"):
        presets.presets_for("dml")
    with pytest.raises(ConfigError, match="seed"):
        presets.configs(Config(method="at"), seeds=[])


def test_kd_alpha_falls_back_to_the_default_when_the_base_has_none():
    got = presets.configs(Config(method="at", alpha=0.0), seeds=[0])
    assert {p: c.alpha for p, _, c in got} == {"scratch": 0.0, "kd": 0.9, "method": 0.0, "method+kd": 0.9}


def test_summary_means_stds_and_the_noise_rule_by_hand():
    accs = {
        "scratch": [0.80, 0.82, 0.81],
        "kd": [0.85, 0.86, 0.84],
        "method": [0.815, 0.80, 0.83],
        "method+kd": [0.85, 0.87, None],  # one diverged
    }
    results = [{"preset": p, "seed": i, "acc": a} for p, xs in accs.items() for i, a in enumerate(xs)]
    s = presets.summarise("at", results)
    assert s.presets["method+kd"].n == 2 and s.presets["method+kd"].failed == 1
    for p, xs in accs.items():
        ok = [x for x in xs if x is not None]
        assert s.presets[p].mean == pytest.approx(sum(ok) / len(ok))
        assert s.presets[p].std == pytest.approx(statistics.stdev(ok))
    comps = {(c.a, c.b): c for c in s.comparisons}
    # method vs scratch: delta 0.005, pooled std ~0.0125 -> within noise
    c = comps["method", "scratch"]
    sd_m, sd_s = statistics.stdev([0.815, 0.80, 0.83]), statistics.stdev([0.80, 0.82, 0.81])
    pooled = math.sqrt((sd_m**2 + sd_s**2) / 2)
    assert c.delta == pytest.approx(0.815 - 0.81) and c.pooled_std == pytest.approx(pooled)
    assert c.within_noise is True and c.verdict == "noise"
    # kd vs scratch: delta 0.04, pooled std 0.01 -> a real difference
    c = comps["kd", "scratch"]
    assert c.within_noise is False and c.verdict == "better"
    assert not s.all_within_noise
    assert [r["preset"] for r in s.rows()] == list(presets.PRESETS)


def test_one_seed_makes_no_claim():
    s = presets.summarise("kd", [{"preset": "scratch", "seed": 0, "acc": 0.5}, {"preset": "kd", "seed": 0, "acc": 0.9}])
    (c,) = s.comparisons
    assert c.within_noise is None and c.verdict == "unknown" and math.isnan(s.presets["kd"].std)
    assert not s.all_within_noise


def test_a_real_tiny_comparison_trains_every_preset():
    base = Config(dataset="digits", method="rkd", epochs=2, labeled_fraction=0.5)
    seen = []
    s = presets.run(base, seeds=[0, 1], on_run=lambda p, seed, r: seen.append((p, seed, r["config"]["method"])))
    assert [x[:2] for x in seen] == [(p, sd) for p in presets.PRESETS for sd in (0, 1)]
    assert {x[2] for x in seen if x[0] == "scratch"} == {"none"}
    for p in s.presets.values():
        assert p.n == 2 and p.failed == 0
        assert p.mean > 0.5  # ten classes: far above chance after two epochs on digits


def test_feature_taps_on_a_shared_teacher_do_not_read_other_threads_batches():
    """Comparison presets run side by side on one cached teacher: each run's taps must see
    only its own forward passes (found when an 'at + KD' run crashed with a size mismatch)."""
    import threading

    import torch

    from kd_core import models

    torch.manual_seed(0)
    model = models.build("cnn-32-64", (1, 28, 28), 10).eval()
    xs = [torch.randn(64, 1, 28, 28) for _ in range(4)]
    with torch.no_grad():
        want = []
        for x in xs:
            with models.FeatureTaps(model, ["stage2"]) as taps:
                model(x)
                want.append(taps["stage2"].clone())
    got: dict[int, list] = {}
    start = threading.Barrier(len(xs))

    def work(i):
        out = []
        start.wait()
        with torch.no_grad():
            for _ in range(20):
                with models.FeatureTaps(model, ["stage2"]) as taps:
                    model(xs[i])
                    out.append(taps["stage2"].clone())
        got[i] = out

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for i, outs in got.items():
        for f in outs:
            assert torch.allclose(f, want[i], atol=1e-6)

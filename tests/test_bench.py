"""The benchmark keeps working: ``python -m benchmarks --quick`` runs as a user would run
it (a subprocess), prints its report and writes every section of the JSON with positive
numbers. How fast anything is, is not checked here: that is PERFORMANCE.md's business."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


@pytest.mark.slow
def test_quick_bench_reports_every_section(quick):
    proc, res = quick
    assert res["mode"] == "quick"
    for section in ("environment", "training", "live_app", "redraw", "memory", "targets"):
        assert section in res, section
    env = res["environment"]
    for key in ("torch", "torch_threads", "cpu", "device", "load_average_start"):
        assert env.get(key) is not None, key
    for text in ("floor", "conventional", "live app", "redraws", "memory", "targets", env["torch"]):
        assert text in proc.stdout, text


@pytest.mark.slow
def test_quick_bench_measures_methods_floor_and_conventional_loop(quick):
    _, res = quick
    assert set(res["training"]) == {"mnist-mini", "cifar10-shaped"}
    for suite in res["training"].values():
        assert _positive(suite["floor"]["samples_per_s"])
        assert 2 <= len(suite["methods"]) <= 3 and "kd" in suite["methods"]
        for name, row in suite["methods"].items():
            assert _positive(row["samples_per_s"]) and _positive(row["ratio"]), name
        assert not suite["errors"], suite["errors"]
        assert _positive(suite["conventional"]["engine_kd_speedup"])


@pytest.mark.slow
def test_quick_bench_measures_the_app_redraws_and_memory(quick):
    _, res = quick
    live = res["live_app"]
    assert _positive(live["headless"]["samples_per_s"]) and math.isfinite(live["cost"])
    assert any(k.startswith("poll_") and live[k]["polls"] >= 1 for k in live)
    for key in ("soft_target_slider", "feature_map", "relations_n64"):
        assert _positive(res["redraw"][key]["median_ms"]), key
    assert res["redraw"]["soft_target_slider"]["samples_forwarded_per_call"] == 0
    assert _positive(res["memory"]["lab_run"]["peak_rss_mb"])
    assert res["memory"]["lab_run"]["status"] == "finished"
    assert "skipped" in res["memory"]["app"]  # ten browser sessions: full mode only


def test_bench_rejects_an_unknown_method():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--methods", "kd,magic", "--json", ""],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown method(s) magic" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_the_batched_bench_compares_the_ways_side_by_side(tmp_path):
    """``python -m benchmarks.batched --quick``: the sweep three ways, the speed-up with K,
    the Lab's pair — every figure there and positive, the three sweeps equally accurate."""
    out = tmp_path / "batched.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.batched", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    (sw,) = res["sweep"]
    assert [r["way"] for r in sw["rows"]] == ["batched", "joblib", "sequential"]
    for r in sw["rows"]:
        assert r["errors"] == 0 and r["cells"] == 4
        assert all(_positive(r[k]) for k in ("wall_seconds", "samples_per_second", "peak_rss_mb", "x_batched_time"))
    accs = [r["mean_accuracy"] for r in sw["rows"]]
    assert max(accs) - min(accs) < 0.01  # the same students, whichever way they trained
    (ks,) = res["k_scaling"]
    assert [r["k"] for r in ks["rows"]] == [1, 4]
    assert all(_positive(r["speedup"]) and _positive(r["peak_rss_mb"]) for r in ks["rows"])
    (lab,) = res["lab_pair"]
    assert _positive(lab["trainer_seconds"]) and _positive(lab["batched_seconds"])
    assert "T x alpha sweep" in proc.stdout and "One training step of K" in proc.stdout

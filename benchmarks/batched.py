"""Many students at once, measured side by side in one run:
``python -m benchmarks.batched [--quick] [--json FILE]`` (see PERFORMANCE.md).

1. A T x alpha sweep (4 x 4, 2 epochs, one seed) of a dataset's default pair, three ways,
   each in a fresh child process (imports, data, teacher and all): the batched backend
   (every cell in one batch of students), one process per cell (joblib, one worker per
   core) and the cells one after another in one process. Reported: wall time, the ratio to
   the batched sweep, student-samples trained per second (all cells), and the peak
   resident memory of the child and its workers together (sampled every 0.1 s).
2. How the speed-up grows with K (1, 2, 4, ..., 32): one training step (forward, backward,
   Adam) of K students as one batch against the same K students one by one, in one
   process, alternating the two (the median of several steps each): samples per second
   per student, the ratio, and the training memory of the batch (what
   ``batched.member_bytes`` estimates, the group-size rule's figure, and the peak resident
   memory a child process reaches with that batch).
3. The Lab's run (distilled + scratch) as a batch of two against today's Trainer, the two
   alternating, on the same data and teacher: wall seconds of the training steps.

Nothing here asserts a speed; tests/test_bench.py runs ``--quick`` and checks the report's
shape.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import torch

from kd_core import batched, models, paths, train
from kd_core import data as data_mod
from kd_core.config import Config

from .common import ROOT, environment, log

TEMPS, ALPHAS = (1.0, 2.0, 4.0, 8.0), (0.25, 0.5, 0.75, 1.0)
WAYS = ("batched", "joblib", "sequential")


# ---------------------------------------------------------------- 1. the sweep, three ways


def sweep_child(way: str, dataset: str, epochs: int, temps, alphas) -> dict:
    """(In a child process.) One sweep, one way; returns what it trained and how long."""
    from kd_core import sweep

    t0 = time.perf_counter()
    sw = sweep.Sweep.grid(Config(dataset=dataset, epochs=epochs), temps, alphas, seeds=(0,))
    sw.prepare_teacher()  # the teacher is cached or shipped: loaded, not trained
    if way == "sequential":
        results = [train.distil(cfgs[0]) for cfgs in sw.configs]
        accs = [r["student"]["test_accuracy"] for r in results]
        errors = sum(r["status"] != "finished" for r in results)
    else:
        res = sw.run(backend=way, n_jobs=os.cpu_count() if way == "joblib" else None)
        accs = [r["student_acc"] for r in res.items]
        errors = len(res.errors())
    samples = sw.total * epochs * len(data_mod.load(dataset).y_train)  # every student sees every image
    return {
        "way": way,
        "cells": sw.total,
        "seconds_inside": time.perf_counter() - t0,
        "samples": samples,
        "mean_accuracy": statistics.fmean(a for a in accs if a is not None),
        "errors": errors,
    }


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.Error:
            pass
    return total


def _child(code: str, timeout: float = 1800) -> tuple[dict, float, float]:
    """Run ``code`` in a child Python; returns (its last stdout line as JSON, wall seconds,
    peak resident memory of it and its descendants, MiB)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate(timeout=timeout)
    wall = time.perf_counter() - t0
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed: {err.strip()[-800:]}")
    return json.loads(out.strip().splitlines()[-1]), wall, peak[0] / 2**20


def sweep_ways(dataset: str, epochs: int, temps=TEMPS, alphas=ALPHAS) -> dict:
    rows = []
    for way in WAYS:
        log(f"sweep {dataset}: {way}")
        code = (
            "import json, warnings; warnings.filterwarnings('ignore'); from benchmarks import batched; "
            f"print(json.dumps(batched.sweep_child({way!r}, {dataset!r}, {epochs}, {list(temps)!r}, {list(alphas)!r})))"
        )
        r, wall, peak = _child(code)
        r.update(wall_seconds=wall, peak_rss_mb=peak, samples_per_second=r["samples"] / wall)
        rows.append(r)
    ref = next(r for r in rows if r["way"] == "batched")
    for r in rows:
        r["x_batched_time"] = r["wall_seconds"] / ref["wall_seconds"]
    cfg = Config(dataset=dataset).resolved()
    return {
        "dataset": dataset,
        "pair": f"{cfg.teacher} -> {cfg.student}",
        "grid": f"{len(temps)} x {len(alphas)}",
        "epochs": epochs,
        "rows": rows,
    }


# ---------------------------------------------------------------- 2. the speed-up with K


def step_times(dataset: str, k: int, steps: int) -> dict:
    """Median seconds of one training step of ``k`` students one by one and as a batch."""
    cfg = Config(dataset=dataset).resolved()
    ds = data_mod.load(dataset)
    device = models.pick_device()
    g = torch.Generator().manual_seed(0)
    x = ds.x_train[torch.randint(0, len(ds.y_train), (k, cfg.batch_size), generator=g)].to(device)
    y = torch.randint(0, ds.num_classes, (k, cfg.batch_size), generator=g).to(device)
    nets = [models.build(cfg.student, ds.in_shape, ds.num_classes).to(device) for _ in range(k)]
    opts = [torch.optim.Adam(n.parameters(), lr=1e-3, foreach=True) for n in nets]
    group = batched.Together(nets, [1e-3] * k, steps + 4, ds.in_shape)
    F = torch.nn.functional

    def one_by_one():
        for n, o, xb, yb in zip(nets, opts, x, y):
            o.zero_grad(set_to_none=True)
            F.cross_entropy(n(xb), yb).backward()
            o.step()

    state = {"i": 0}

    def together():
        group.zero_grad()
        F.cross_entropy(group.forward(x)[0].flatten(0, 1), y.flatten()).backward()
        group.step(min(state["i"], steps + 3))
        state["i"] += 1

    def seconds(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for _ in range(2):  # warm-up: the first batched calls build their kernels
        one_by_one()
        together()
    apart, joint = [], []
    for _ in range(steps):
        apart.append(seconds(one_by_one))
        joint.append(seconds(together))
    return {"one_by_one": statistics.median(apart), "together": statistics.median(joint)}


def k_child(dataset: str, k: int, steps: int) -> dict:
    """(In a child process.) Step times for ``k`` students, and the process's peak memory."""
    from .app import _peak_rss_mb

    train.set_threads()
    base = _peak_rss_mb()
    t = step_times(dataset, k, steps)
    return t | {"peak_rss_mb": _peak_rss_mb(), "rss_before_mb": base}


def k_scaling(dataset: str, ks, steps: int) -> dict:
    cfg = Config(dataset=dataset).resolved()
    ds = data_mod.load(dataset)
    per = batched.member_bytes(cfg.student, ds.in_shape, ds.num_classes, cfg.batch_size)
    rows = []
    for k in ks:
        log(f"K = {k} on {dataset}")
        code = (
            "import json, warnings; warnings.filterwarnings('ignore'); from benchmarks import batched; "
            f"print(json.dumps(batched.k_child({dataset!r}, {k}, {steps})))"
        )
        t, _, _ = _child(code)
        b = cfg.batch_size
        rows.append(
            {
                "k": k,
                "samples_per_s_per_student_one_by_one": b / t["one_by_one"],
                "samples_per_s_per_student_together": b / t["together"],
                "speedup": t["one_by_one"] / t["together"],
                "estimated_mb": k * per / 2**20,
                "peak_rss_mb": t["peak_rss_mb"],
            }
        )
    return {
        "dataset": dataset,
        "student": cfg.student,
        "batch_size": cfg.batch_size,
        "member_mb": per / 2**20,
        "group_size_at_budget": batched.group_size(cfg, ds),
        "budget_mb": batched.memory_budget() / 2**20,
        "rows": rows,
    }


# ---------------------------------------------------------------- 3. the Lab's pair


def lab_pair(dataset: str, epochs: int, rounds: int) -> dict:
    """The Lab's default run (kd, scratch baseline) as a Trainer and as a batch of two,
    alternating ``rounds`` times; the median seconds of their training steps."""
    cfg = Config(dataset=dataset, epochs=epochs, baseline=True)
    train.distil(cfg)  # the teacher and its outputs once, outside the timing
    alone, joint, accs = [], [], {}
    for _ in range(rounds):
        tr = train.Trainer(cfg)
        r = tr.run()
        alone.append(r["student"]["train_seconds"])
        accs["trainer"] = (r["student"]["test_accuracy"], r["baseline"]["test_accuracy"])
        run = batched.BatchedRun([cfg])
        r = run.run()[0]
        joint.append(r["student"]["train_seconds"])
        accs["batched"] = (r["student"]["test_accuracy"], r["baseline"]["test_accuracy"])
    a, j = statistics.median(alone), statistics.median(joint)
    return {
        "dataset": dataset,
        "epochs": epochs,
        "rounds": rounds,
        "trainer_seconds": a,
        "batched_seconds": j,
        "speedup": a / j,
        "accuracies": accs,
        "auto_uses_batch": batched.faster_together(cfg, 2)[0],
    }


# ---------------------------------------------------------------- the run


def run(quick: bool = False) -> dict:
    train.set_threads()
    device = models.pick_device()
    out = {"mode": "quick" if quick else "full", "environment": environment(device)}
    if quick:
        out["sweep"] = [sweep_ways("digits", 1, (1.0, 4.0), (0.5, 1.0))]
        out["k_scaling"] = [k_scaling("digits", (1, 4), 3)]
        out["lab_pair"] = [lab_pair("digits", 1, 1)]
    else:
        out["sweep"] = [sweep_ways("mnist-mini", 2), sweep_ways("digits", 2)]
        ks = (1, 2, 4, 8, 16, 32)
        out["k_scaling"] = [k_scaling("mnist-mini", ks, 7), k_scaling("digits", ks, 15)]
        out["lab_pair"] = [lab_pair("mnist-mini", 2, 3), lab_pair("digits", 5, 5)]
    return out


def report(res: dict) -> str:
    env = res["environment"]
    lines = [
        f"Many students at once — {env['cpu']} ({env['usable_cpus']} usable CPUs), torch {env['torch']}, "
        f"device {env['device']}, {res['mode']} run, {env['date']}",
        "",
    ]
    for s in res["sweep"]:
        lines.append(f"T x alpha sweep {s['grid']}, {s['epochs']} epochs, {s['dataset']} ({s['pair']}), one seed:")
        lines.append(
            f"  {'way':12s} {'wall s':>8s} {'x batched':>10s} {'student-samples/s':>18s} "
            f"{'peak MiB':>9s} {'mean acc.':>10s}"
        )
        for r in s["rows"]:
            lines.append(
                f"  {r['way']:12s} {r['wall_seconds']:8.1f} {r['x_batched_time']:10.2f} "
                f"{r['samples_per_second']:18,.0f} {r['peak_rss_mb']:9.0f} {100 * r['mean_accuracy']:9.2f}%"
                + (f"  ({r['errors']} errors)" if r["errors"] else "")
            )
        lines.append("")
    for s in res["k_scaling"]:
        lines.append(
            f"One training step of K {s['student']} students ({s['dataset']}, batch {s['batch_size']}): "
            f"one by one vs one batch; {s['member_mb']:.1f} MiB per student (estimate), "
            f"{s['group_size_at_budget']} per group at the {s['budget_mb']:.0f} MiB budget"
        )
        lines.append(
            f"  {'K':>3s} {'samples/s/student apart':>24s} {'together':>9s} {'speed-up':>9s} "
            f"{'est. MiB':>9s} {'peak RSS MiB':>13s}"
        )
        for r in s["rows"]:
            lines.append(
                f"  {r['k']:3d} {r['samples_per_s_per_student_one_by_one']:24,.0f} "
                f"{r['samples_per_s_per_student_together']:9,.0f} {r['speedup']:9.2f} "
                f"{r['estimated_mb']:9.1f} {r['peak_rss_mb']:13.0f}"
            )
        lines.append("")
    for p in res["lab_pair"]:
        lines.append(
            f"The Lab's run ({p['dataset']}, kd + scratch, {p['epochs']} epochs, median of {p['rounds']}): "
            f"Trainer {p['trainer_seconds']:.2f} s, batch of two {p['batched_seconds']:.2f} s "
            f"({p['speedup']:.2f}x); the app uses the batch here: {'yes' if p['auto_uses_batch'] else 'no'}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.batched")
    ap.add_argument("--quick", action="store_true", help="digits only, tiny grid (the test suite runs it)")
    ap.add_argument("--json", default="artifacts/bench_batched.json", help="where the results go ('' for none)")
    a = ap.parse_args(argv)
    res = run(a.quick)
    print(report(res))
    if a.json:
        paths.atomic_write_text(a.json, json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

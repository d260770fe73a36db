"""``python -m benchmarks [--quick] [--json FILE] [--repeats N] [--methods A,B]``: run the
benchmark, print the report, write the JSON (see benchmarks/__init__.py, PERFORMANCE.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from kd_core import data as data_mod
from kd_core import models, paths, teachers, train
from kd_core.errors import KDError

from .app import app_memory, lab_run_memory, live_app, redraws, soft_targets_apptest
from .common import (
    DEFAULT_JSON,
    LIVE_COST_TARGET,
    RATIO_TARGETS,
    REDRAW_TARGET_MS,
    SPEEDUP_TARGET,
    cifar_shaped,
    environment,
    log,
    settings,
)
from .engine import pick_methods, softmax_micro, teacher_forward_ms, threads_comparison, training_suite
from .report import report, targets


def run(quick: bool = False, repeats: int | None = None, method_names: list[str] | None = None) -> dict:
    """Run the benchmark; returns the results (see ``report``)."""
    s = settings(quick, repeats)
    names = pick_methods(method_names, quick)
    train.set_threads()
    device = models.pick_device()
    t_start = time.perf_counter()
    res: dict = {
        "mode": "quick" if quick else "full",
        "rounds": s.repeats,
        "settings": asdict(s),
        "environment": environment(device),
        "targets_definition": {
            "ratio": RATIO_TARGETS,
            "conventional_speedup": SPEEDUP_TARGET,
            "live_cost": LIVE_COST_TARGET,
            "redraw_ms": REDRAW_TARGET_MS,
        },
    }
    mini = data_mod.load("mnist-mini", train_subset=s.mnist_subset)
    cifar = cifar_shaped(s.cifar_train, s.cifar_test)
    res["training"] = {
        "mnist-mini": training_suite(
            "mnist-mini",
            "mnist-mini",
            mini,
            names,
            s.mnist_steps,
            s.repeats,
            device,
            False,
            synthetic=False,
            subset=s.mnist_subset,
        ),
        "cifar10-shaped": training_suite(
            "cifar10-shaped (random tensors)",
            "cifar10",
            cifar,
            names,
            s.cifar_steps,
            s.repeats,
            device,
            s.per_step_variants,
            synthetic=True,
        ),
    }
    if s.per_step_variants:
        res["training"]["cifar10-shaped"]["teacher_forward_ms"] = teacher_forward_ms("resnet20", cifar, device)
        res["training"]["mnist-mini"]["teacher_forward_ms"] = teacher_forward_ms(
            models.preset("mnist-mini")[0], mini, device
        )
    if s.threads:
        log("[bench] threads: 1 vs 2")
        res["threads"] = [
            threads_comparison(mini, "mnist-mini", "mnist-mini", 21, 5, device),
            threads_comparison(cifar, "cifar10", "cifar10-shaped", 2, 5, device),
        ]
        res["softmax_micro"] = softmax_micro()
    log("[bench] live app")
    res["live_app"] = live_app(s, device)
    log("[bench] redraws")
    res["redraw"] = redraws(s, device)
    if s.app:
        log("[bench] soft-targets page through AppTest (needs the app's teacher: trained once if missing)")
        teachers.get("mnist-mini")
        res["redraw"]["soft_target_slider_app"] = soft_targets_apptest(3)
    log("[bench] memory: a Lab run in a child process")
    res["memory"] = {"lab_run": lab_run_memory(s)}
    if s.app:
        log("[bench] memory: the app with ten idle browser sessions")
        try:
            res["memory"]["app"] = app_memory(10)
        except Exception as e:  # report, do not lose the rest
            res["memory"]["app"] = {"skipped": f"{type(e).__name__}: {e}"}
    else:
        res["memory"]["app"] = {"skipped": "quick mode"}
    res["environment"]["load_average_end"] = (
        [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    )
    res["environment"]["torch_threads_end"] = torch.get_num_threads()
    res["seconds"] = time.perf_counter() - t_start
    res["targets"] = targets(res)
    return res


def main(
    quick: bool = False,
    json_path: str | None = DEFAULT_JSON,
    repeats: int | None = None,
    method_names: list[str] | None = None,
) -> int:
    """The CLI's entry point: run, print the report, write the JSON."""
    res = run(quick=quick, repeats=repeats, method_names=method_names)
    print(report(res))
    if json_path:
        paths.atomic_write_text(Path(json_path), json.dumps(res, indent=1, default=str))
        print(f"\nresults written to {json_path}")
    return 0


def cli(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="measure the engine against the student alone and the conventional loop, "
        "the live app's cost, the redraws and the memory (see PERFORMANCE.md)",
    )
    p.add_argument("--quick", action="store_true", help="a few steps of 2-3 methods: checks that it works (tests)")
    p.add_argument(
        "--json",
        metavar="FILE",
        default=DEFAULT_JSON,
        help=f"write the results as JSON (default: {DEFAULT_JSON}; '' for none)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        metavar="N",
        help="interleaved rounds per measurement (default: 9; quick: 1)",
    )
    p.add_argument("--methods", default="", metavar="A,B", help="only these methods (default: the whole registry)")
    a = p.parse_args(argv)
    names = [n.strip() for n in a.methods.split(",") if n.strip()] if a.methods else None
    try:
        if a.repeats is not None and a.repeats < 1:
            raise KDError(f"--repeats must be at least 1, got {a.repeats}")
        return main(quick=a.quick, json_path=a.json or None, repeats=a.repeats, method_names=names)
    except KDError as e:
        sys.stderr.write(f"python -m benchmarks: error: {e}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(cli())

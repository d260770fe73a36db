"""What every part of the benchmark shares: settings, targets, the machine's facts, random
teachers and CIFAR-shaped data (speed does not depend on the weights or the pixels)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kd_core import data as data_mod
from kd_core import models, teachers

ROOT = Path(__file__).resolve().parents[1]  # the repository
DEFAULT_JSON = "artifacts/bench.json"

# The targets (2-core CPU).
RATIO_TARGETS = {"logits": 1.15, "feature": 1.6, "relational": 1.6, "contrastive": 1.6}
SPEEDUP_TARGET = 3.0  # engine KD vs the conventional loop on mnist-mini, default pair
LIVE_COST_TARGET = 0.10  # the live app may cost at most 10% of headless throughput
REDRAW_TARGET_MS = 100.0

SOFT_T = [0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0]  # the page's slider
T_GRID = np.geomspace(0.1, 20.0, 81)  # the page's entropy curve
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


@dataclass(frozen=True)
class Settings:
    quick: bool
    repeats: int
    mnist_subset: int | None  # train_subset of mnist-mini (None: all 4,000 images)
    mnist_steps: int | None  # steps per measurement on mnist-mini; None: one epoch
    cifar_train: int  # images of the CIFAR-10-shaped transfer set
    cifar_test: int
    cifar_steps: int
    per_step_variants: bool  # also feature methods with the teacher's features computed per step
    threads: bool  # compare 1 and 2 intra-op threads
    live_rounds: int
    live_epochs: int
    live_subset: int | None
    live_polls: tuple[float, ...]  # seconds between polls of the live page
    live_switch_interval: float | None  # also: poll every 1 s with this GIL switch interval (a diagnosis)
    redraw_repeats: int
    app: bool  # the real app: slider reruns through AppTest, ten browser sessions


def settings(quick: bool = False, repeats: int | None = None) -> Settings:
    if quick:
        return Settings(
            quick=True,
            repeats=repeats or 1,
            mnist_subset=640,
            mnist_steps=3,
            cifar_train=128,
            cifar_test=64,
            cifar_steps=2,
            per_step_variants=False,
            threads=False,
            live_rounds=1,
            live_epochs=2,
            live_subset=640,
            live_polls=(0.5,),
            live_switch_interval=None,
            redraw_repeats=3,
            app=False,
        )
    # many short interleaved rounds: each ratio pairs measurements a second or two apart
    return Settings(
        quick=False,
        repeats=repeats or 9,
        mnist_subset=None,
        mnist_steps=21,
        cifar_train=1024,
        cifar_test=512,
        cifar_steps=2,
        per_step_variants=True,
        threads=True,
        live_rounds=2,
        live_epochs=5,
        live_subset=None,
        live_polls=(1.0, 0.5),
        live_switch_interval=0.001,
        redraw_repeats=15,
        app=True,
    )


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def quartiles(xs) -> tuple[float, float]:
    """(first, third) quartile; the extremes when there are fewer than four values."""
    if len(xs) < 4:
        return min(xs), max(xs)
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------- the machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "") if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device) -> dict:
    """Everything the figures depend on."""
    import psutil

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "torch_threads": torch.get_num_threads(),
        "KD_PLAYGROUND_THREADS": os.environ.get("KD_PLAYGROUND_THREADS", "") or "unset (1)",
        "interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "device": str(device),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_start": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "git": _git(),
    }


# ---------------------------------------------------------------- teachers and data


def random_teacher(dataset: str, arch: str, in_shape, num_classes: int, device, key: str = "bench") -> teachers.Teacher:
    """A frozen teacher with random weights: it costs what a trained one costs."""
    torch.manual_seed(12345)
    model = models.build(arch, in_shape, num_classes).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return teachers.Teacher(model, arch, dataset, float("nan"), key, 0, 0.0, False)


def cifar_shaped(n_train: int, n_test: int, seed: int = 0) -> data_mod.Dataset:
    """Random tensors of CIFAR-10's shape (3x32x32, 10 classes), already 'normalised'."""
    g = torch.Generator().manual_seed(seed)
    info = data_mod.DATASETS["cifar10"]
    x = torch.randn(n_train, *info.in_shape, generator=g)
    y = torch.randint(0, info.num_classes, (n_train,), generator=g)
    xt = torch.randn(n_test, *info.in_shape, generator=g)
    yt = torch.randint(0, info.num_classes, (n_test,), generator=g)
    return data_mod.Dataset(
        "cifar10", x, y, xt, yt, [f"class {i}" for i in range(info.num_classes)], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    )

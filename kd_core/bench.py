"""The performance benchmark: ``python -m kd_core bench`` (``make bench``).

It measures, side by side in one run, what the engine costs against two references:

* **the floor**: the same student trained alone on the same data with a minimal loop
  (index-slice batches, forward, cross-entropy, backward, Adam) — no teacher, no extra loss;
* **the conventional loop**, as public KD code bases write it: a ``DataLoader`` over the
  dataset and a teacher forward pass in every step, plus the KD loss.

Every method of the registry is run through the real ``Trainer`` on ``mnist-mini`` with the
default pair and on CIFAR-10-shaped data (random tensors of the real shape: no download)
with the ResNet pair. Measurements are interleaved (floor, method, floor, method, …) and
repeated, and every method's time is divided by the mean of the two floor measurements
around it, so the ratios survive a noisy shared machine. Then: the live app's cost (a Lab
job polled and redrawn like the page does, against the same run headless), the latency of
the interactive redraws, the peak memory of a Lab run and of the app with ten idle
sessions, and the machine the figures came from.

Teachers here have random weights: speed does not depend on the weights, and the benchmark
needs no trained teacher (except the full mode's app measurements, which use the app's
cached teacher, trained once if missing). ``--quick`` runs a few steps of 2-3 methods so the
test suite can keep the benchmark working; its figures mean little.

The engine never imports streamlit; the app measurements run it in child processes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import data as data_mod
from . import losses, methods, metrics, models, paths, teachers, train, viz
from .config import Config
from .errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
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


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


def _quartiles(xs) -> tuple[float, float]:
    """(first, third) quartile; the extremes when there are fewer than four values."""
    if len(xs) < 4:
        return min(xs), max(xs)
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def _sync(device) -> None:
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


def random_teacher(dataset: str, arch: str, in_shape, num_classes: int, device, key: str = "bench") -> train.Teacher:
    """A frozen teacher with random weights: it costs what a trained one costs."""
    torch.manual_seed(12345)
    model = models.build(arch, in_shape, num_classes).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return train.Teacher(model, arch, dataset, float("nan"), key, 0, 0.0, False)


def registered_teacher(teacher: train.Teacher, key: str):
    """Let ``teachers.get`` (as the Lab's jobs call it) find ``teacher`` under ``key``."""
    return teachers.installed(teacher, key)


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


@contextlib.contextmanager
def dataset_override(ds: data_mod.Dataset | None):
    """While constructing a Trainer, ``data.load(ds.name)`` returns ``ds`` (no download)."""
    if ds is None:
        yield
        return
    real = data_mod.load

    def load(name, **kw):
        if name == ds.name and not kw.get("train_subset"):
            return ds
        return real(name, **kw)

    data_mod.load = load
    try:
        yield
    finally:
        data_mod.load = real


@contextlib.contextmanager
def feature_budget(nbytes: int | None):
    """Override the engine's memory budget for cached teacher features (-1: never cache)."""
    if nbytes is None:
        yield
        return
    old = train.FEATURE_CACHE_BYTES
    train.FEATURE_CACHE_BYTES = nbytes
    try:
        yield
    finally:
        train.FEATURE_CACHE_BYTES = old


# ---------------------------------------------------------------- steppers: run n steps, return seconds


class EngineStepper:
    """The real ``Trainer.events()`` advanced n steps at a time. Only the calls that return a
    step are timed; the end-of-epoch evaluation (and snapshot) is timed apart."""

    def __init__(
        self, cfg: Config, teacher: train.Teacher, device, ds=None, budget: int | None = None, warmup: int = 2
    ):
        with dataset_override(ds):
            self.trainer = train.Trainer(cfg, teacher=teacher, device=device)
        self.device = device
        self.gen = self.trainer.events()
        t0 = time.perf_counter()
        with feature_budget(budget):
            ev = next(self.gen)  # prepares: the teacher's outputs on the transfer set, once
        self.setup_s = time.perf_counter() - t0
        self.steps_per_epoch = -(-ev["transfer_set"] // cfg.batch_size)
        self.transfer_set = ev["transfer_set"]
        self.cached_features = bool(getattr(self.trainer, "cache_feats", False)) and bool(self.trainer.pairs)
        self.eval_s: list[float] = []
        self.run(warmup)

    def run(self, n: int) -> float:
        busy, k = 0.0, 0
        while k < n:
            t0 = time.perf_counter()
            ev = next(self.gen)
            dt = time.perf_counter() - t0
            if ev["kind"] == "step":
                busy += dt
                k += 1
            elif ev["kind"] == "epoch":
                self.eval_s.append(dt)
            elif ev["kind"] == "end":
                raise RuntimeError(f"the run ended early: {ev['status']} {ev['message']}")
        _sync(self.device)
        return busy

    def close(self) -> None:
        self.trainer.stop()
        self.gen.close()


class FloorStepper:
    """The student alone, minimal loop: same data, same batches, same optimiser; CE only."""

    def __init__(self, cfg: Config, x, y, in_shape, num_classes: int, device, warmup: int = 2):
        cfg = cfg.resolved()
        torch.manual_seed(cfg.seed)
        self.model = models.build(cfg.student, in_shape, num_classes).to(device).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, foreach=True)  # as the engine's
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=10**6)
        self.x, self.y, self.bs, self.device = x.to(device), y.to(device), cfg.batch_size, device
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.batches = iter(())
        self.run(warmup)

    def _idx(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(train.epoch_batches(len(self.x), self.bs, self.gen))
            return next(self.batches)

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            idx = self._idx().to(self.device)
            loss = F.cross_entropy(self.model(self.x[idx]), self.y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
        _sync(self.device)
        return time.perf_counter() - t0


class ConventionalStepper:
    """KD as the public code bases write it (e.g. RepDistiller's train_distill): a DataLoader
    over the dataset, the teacher's forward pass in every step, the KD loss, and the loss
    read back for logging."""

    def __init__(
        self, cfg: Config, teacher: torch.nn.Module, x, y, in_shape, num_classes: int, device, warmup: int = 2
    ):
        from torch.utils.data import DataLoader, TensorDataset

        cfg = cfg.resolved()
        torch.manual_seed(cfg.seed)
        self.model = models.build(cfg.student, in_shape, num_classes).to(device).train()
        self.teacher = teacher.eval()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, foreach=True)  # as the engine's
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=10**6)
        self.loader = DataLoader(
            TensorDataset(x.cpu(), y.cpu()),
            batch_size=cfg.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        self.it = iter(self.loader)
        self.cfg, self.device = cfg, device
        self.run(warmup)

    def _batch(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)

    def run(self, n: int) -> float:
        a, T = self.cfg.alpha, self.cfg.temperature
        t0 = time.perf_counter()
        for _ in range(n):
            xb, yb = self._batch()
            xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
            with torch.no_grad():
                t_logits = self.teacher(xb)
            s_logits = self.model(xb)
            loss = (1 - a) * F.cross_entropy(s_logits, yb) + a * losses.kd_loss(s_logits, t_logits, T)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            loss.item()  # the running-average meter every public loop keeps
        _sync(self.device)
        return time.perf_counter() - t0


# ---------------------------------------------------------------- training throughput


def pick_methods(names: list[str] | None, quick: bool) -> list[str]:
    """Methods to measure: ``names`` (checked), else the whole registry (quick: 2-3 of them)."""
    registry = list(methods.METHODS)
    if names:
        bad = [n for n in names if n not in methods.METHODS]
        if bad:
            raise ConfigError(f"unknown method(s) {', '.join(bad)}; choose from: {', '.join(registry)}")
        return list(dict.fromkeys(names))
    if not quick:
        return registry
    picked = ["kd"] if "kd" in methods.METHODS else []
    for family in ("feature", "relational", "contrastive"):
        m = next((m.name for m in methods.METHODS.values() if m.family == family), None)
        if m and len(picked) < 3:
            picked.append(m)
    return picked


def _bench_config(dataset: str, method: str, epochs: int, subset: int | None = None) -> Config:
    # every label visible: the student's CE is over the whole batch, as in the floor and the
    # conventional loop; no scratch baseline beside it (the floor is measured apart)
    return Config(
        dataset=dataset, method=method, baseline=False, labeled_fraction=1.0, epochs=epochs, train_subset=subset
    )


def training_suite(
    label: str,
    dataset: str,
    ds: data_mod.Dataset,
    method_names: list[str],
    n_steps: int | None,
    repeats: int,
    device,
    per_step_variants: bool,
    synthetic: bool,
    subset: int | None = None,
) -> dict:
    """Interleaved throughput of every method, the floor and the conventional loop on one dataset."""
    base = Config(dataset=dataset, train_subset=subset).resolved()
    teacher = random_teacher(dataset, base.teacher, ds.in_shape, ds.num_classes, device)
    n_train = len(ds.x_train)
    steps_per_epoch = -(-n_train // base.batch_size)
    n = n_steps or steps_per_epoch
    epochs = max(2, math.ceil((4 + (2 * repeats + 2) * n) / steps_per_epoch) + 1)
    samples_per_step = n_train / steps_per_epoch
    override = ds if synthetic else None
    log(f"[bench] {label}: preparing the floor, {len(method_names)} method(s) and the conventional loop")

    floor = FloorStepper(base, ds.x_train, ds.y_train, ds.in_shape, ds.num_classes, device)
    variants: dict[str, dict] = {}
    steppers: dict[str, object] = {}
    errors: dict[str, str] = {}
    names = list(method_names) + ([] if "kd" in method_names else ["kd"])
    for name in names:
        m = methods.METHODS[name]
        row = {"method": name, "family": m.family}
        try:
            st = EngineStepper(_bench_config(dataset, name, epochs, subset), teacher, device, ds=override)
        except Exception as e:  # a method that cannot run here is reported, not fatal
            errors[name] = f"{type(e).__name__}: {e}"
            log(f"[bench]   {name}: cannot run ({errors[name]})")
            continue
        row["teacher_features"] = ("cached" if st.cached_features else "per step") if st.trainer.pairs else None
        row["setup_s"] = st.setup_s
        row["pairs"] = [list(p[:2]) for p in st.trainer.pairs]
        row["in_table"] = name in method_names
        variants[name], steppers[name] = row, st
        if per_step_variants and st.trainer.pairs and st.cached_features:
            key = f"{name} (teacher per step)"
            try:
                st2 = EngineStepper(
                    _bench_config(dataset, name, epochs, subset), teacher, device, ds=override, budget=-1
                )
                variants[key] = dict(row, method=name, teacher_features="per step", setup_s=st2.setup_s)
                steppers[key] = st2
            except Exception as e:
                errors[key] = f"{type(e).__name__}: {e}"
    try:
        conv = ConventionalStepper(base, teacher.model, ds.x_train, ds.y_train, ds.in_shape, ds.num_classes, device)
        variants["conventional"] = {
            "method": "kd",
            "family": "logits",
            "teacher_features": None,
            "what": "DataLoader + teacher forward every step + KD loss",
        }
        steppers["conventional"] = conv
    except Exception as e:
        errors["conventional"] = f"{type(e).__name__}: {e}"

    times = {k: [] for k in steppers}
    floor_times: list[float] = []
    for r in range(repeats):
        log(f"[bench] {label}: round {r + 1}/{repeats} ({len(steppers)} variants, {n} steps each)")
        before = floor.run(n)
        floor_times.append(before)
        for key, st in steppers.items():
            t = st.run(n)
            after = floor.run(n)
            floor_times.append(after)
            times[key].append((t, 0.5 * (before + after)))
            before = after
    for st in steppers.values():
        if isinstance(st, EngineStepper):
            st.close()

    floor_med = _median(floor_times)
    out_rows = {}
    for key, row in variants.items():
        ts = times[key]
        ratios = [t / f for t, f in ts]
        t_med = _median([t for t, _ in ts])
        row = dict(row)
        row.update(
            {
                "samples_per_s": n * samples_per_step / t_med,
                "step_ms": 1000 * t_med / n,
                "epoch_s": steps_per_epoch * t_med / n,
                "ratio": _median(ratios),
                "ratio_q1": _quartiles(ratios)[0],
                "ratio_q3": _quartiles(ratios)[1],
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
            }
        )
        st = steppers[key]
        if isinstance(st, EngineStepper) and st.eval_s:
            row["eval_s"] = _median(st.eval_s)
        target = None
        if key in method_names:
            target = RATIO_TARGETS.get(row["family"])
        row["target"] = target
        row["met"] = None if target is None else bool(row["ratio"] <= target)
        out_rows[key] = row

    result = {
        "dataset": label,
        "synthetic": synthetic,
        "teacher": base.teacher,
        "student": base.student,
        "batch_size": base.batch_size,
        "transfer_set": n_train,
        "steps_per_epoch": steps_per_epoch,
        "steps_per_measurement": n,
        "rounds": repeats,
        "floor": {
            "samples_per_s": n * samples_per_step / floor_med,
            "step_ms": 1000 * floor_med / n,
            "epoch_s": steps_per_epoch * floor_med / n,
        },
        "methods": {k: v for k, v in out_rows.items() if k in method_names},
        "per_step": {k: v for k, v in out_rows.items() if k.endswith("(teacher per step)")},
        "errors": errors,
    }
    if "conventional" in out_rows and "kd" in out_rows:
        speedups = [c / k for (c, _), (k, _) in zip(times["conventional"], times["kd"])]
        conv = out_rows["conventional"]
        conv["engine_kd_speedup"] = _median(speedups)
        conv["speedup_min"], conv["speedup_max"] = min(speedups), max(speedups)
        conv["speedup_q1"], conv["speedup_q3"] = _quartiles(speedups)
        conv["engine_kd_samples_per_s"] = out_rows["kd"]["samples_per_s"]
        result["conventional"] = conv
    return result


def teacher_forward_ms(arch: str, ds: data_mod.Dataset, device, batch: int = 64, repeats: int = 5) -> float:
    """What a teacher forward pass costs per step: the bound of computing features per step."""
    model = random_teacher(ds.name, arch, ds.in_shape, ds.num_classes, device).model
    x = ds.x_train[:batch].to(device)
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            _sync(device)
            times.append(time.perf_counter() - t0)
    return 1000 * _median(times)


def threads_comparison(ds: data_mod.Dataset, dataset: str, label: str, n: int, repeats: int, device) -> dict:
    """Engine KD and the floor at 1 and 2 intra-op threads, interleaved."""
    base = Config(dataset=dataset).resolved()
    teacher = random_teacher(dataset, base.teacher, ds.in_shape, ds.num_classes, device)
    synthetic = ds.name == "cifar10"
    kd = EngineStepper(_bench_config(dataset, "kd", 100), teacher, device, ds=ds if synthetic else None)
    floor = FloorStepper(base, ds.x_train, ds.y_train, ds.in_shape, ds.num_classes, device)
    keep = torch.get_num_threads()
    res = {1: {"kd": [], "floor": []}, 2: {"kd": [], "floor": []}}
    try:
        for _r in range(repeats):
            for th in (1, 2):
                torch.set_num_threads(th)
                res[th]["kd"].append(kd.run(n))
                res[th]["floor"].append(floor.run(n))
    finally:
        torch.set_num_threads(keep)
        kd.close()
    out = {
        "dataset": label,
        "steps": n,
        "rounds": repeats,
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    for th in (1, 2):
        out[f"threads_{th}"] = {k: 1000 * _median(v) / n for k, v in res[th].items()}  # ms per step
    out["kd_2_over_1"] = _median([b / a for a, b in zip(res[1]["kd"], res[2]["kd"])])
    out["floor_2_over_1"] = _median([b / a for a, b in zip(res[1]["floor"], res[2]["floor"])])
    return out


def softmax_micro(repeats: int = 2000) -> dict:
    """softmax of a 64x10 tensor (the size of a KD step's logits) at 1 and 2 threads, in µs."""
    keep = torch.get_num_threads()
    z = torch.randn(64, 10)
    out = {}
    try:
        for th in (1, 2):
            torch.set_num_threads(th)
            for _ in range(50):
                F.softmax(z, 1)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                F.softmax(z, 1)
                times.append(time.perf_counter() - t0)
            out[f"threads_{th}_us"] = 1e6 * _median(times)
    finally:
        torch.set_num_threads(keep)
    return out


# ---------------------------------------------------------------- the live app


def render_lab(job, snap: dict) -> int:
    """What the Lab page's live fragment draws from a job's snapshot (pages/lab.py draw_job),
    serialised as Streamlit sends a Plotly figure. Returns the bytes."""
    cfg = snap["config"]
    epochs = snap["epochs"]
    teacher_acc = epochs[0]["teacher_acc"] if epochs else None
    job.eta_seconds()
    figs = [
        viz.accuracy_curves(epochs, teacher_acc, cfg.epochs, "Test accuracy per epoch"),
        viz.loss_curves(snap["steps"], "Loss terms per step"),
    ]
    if epochs:
        figs.append(viz.agreement_curves(epochs, cfg.epochs, "Agreement with the teacher"))
    return sum(len(f.to_json()) for f in figs)


class Poller(threading.Thread):
    """Polls a job every ``interval`` seconds and redraws it, in another thread (like a session)."""

    def __init__(self, job, interval: float):
        super().__init__(daemon=True, name="bench-poller")
        self.job, self.interval = job, interval
        self.render_s: list[float] = []

    def run(self) -> None:
        while not self.job.done:
            t0 = time.perf_counter()
            render_lab(self.job, self.job.snapshot())
            self.render_s.append(time.perf_counter() - t0)
            time.sleep(self.interval)


def live_app(s: Settings, device) -> dict:
    """A Lab run (the Lab's default settings) inside the JobManager's worker while another thread
    polls and redraws it every ``interval`` seconds, against the same run headless
    (``Trainer.run()``). Interleaved: headless, job, headless, job, ...; each job is compared
    with the mean of the headless runs on either side of it."""
    from .jobs import JobManager

    cfg = Config(epochs=s.live_epochs, train_subset=s.live_subset)
    rc = cfg.resolved()
    ds = data_mod.load(rc.dataset, train_subset=rc.train_subset)
    teacher = random_teacher(rc.dataset, rc.teacher, ds.in_shape, ds.num_classes, device)
    key = train.teacher_key(rc.dataset, rc.teacher, rc.teacher_epochs, 0, rc.train_subset)
    variants = [(f"poll_{p:g}s", p, None) for p in s.live_polls]
    if s.live_switch_interval:
        variants.append((f"poll_1s_switch_{1000 * s.live_switch_interval:g}ms", 1.0, s.live_switch_interval))
    pairs = {k: [] for k, _, _ in variants}
    renders = {k: [] for k, _, _ in variants}
    headless = []

    def job_run(interval, switch):
        keep = sys.getswitchinterval()
        if switch:
            sys.setswitchinterval(switch)
        try:
            job = JobManager(max_running=1).submit(cfg, owner="bench")
            poller = Poller(job, interval)
            poller.start()
            poller.join()
        finally:
            sys.setswitchinterval(keep)
        if job.result is None:
            raise RuntimeError(f"the Lab job failed: {job.status} {job.message}")
        return dict(job.result, epoch_events=list(job.epochs)), poller.render_s

    def headless_run():
        epochs = []
        res = train.Trainer(cfg, device=device).run(lambda ev: epochs.append(ev) if ev["kind"] == "epoch" else None)
        return dict(res, epoch_events=epochs)

    with registered_teacher(teacher, key):
        before = headless_run()
        headless.append(before)
        for r in range(s.live_rounds):
            log(f"[bench] live app: round {r + 1}/{s.live_rounds}")
            for k, interval, switch in variants:
                res, rs = job_run(interval, switch)
                after = headless_run()
                headless.append(after)
                pairs[k].append((res, before, after))
                renders[k].extend(rs)
                before = after

    def wall(r):
        return r["wall_seconds"]

    def sps(r):  # the Trainer's own count: time inside the steps only
        return r["student"]["samples_per_second"]

    def loop(r):  # steps per second from the end of epoch 1 to the end of the run, evaluations included
        e = r["epoch_events"]
        return (e[-1]["step"] - e[0]["step"]) / (e[-1]["elapsed"] - e[0]["elapsed"])

    out = {
        "config": {
            "dataset": rc.dataset,
            "method": rc.method,
            "epochs": rc.epochs,
            "baseline": rc.baseline,
            "labeled_fraction": rc.labeled_fraction,
            "train_subset": rc.train_subset,
        },
        "rounds": s.live_rounds,
        "headless": {
            "wall_s": _median([wall(r) for r in headless]),
            "steps_per_s": _median([loop(r) for r in headless]),
            "samples_per_s": _median([sps(r) for r in headless]),
        },
    }
    for k, interval, switch in variants:
        ps = pairs[k]
        out[k] = {
            "interval_s": interval,
            "switch_interval_s": switch or sys.getswitchinterval(),
            "wall_s": _median([wall(j) for j, _, _ in ps]),
            "steps_per_s": _median([loop(j) for j, _, _ in ps]),
            "samples_per_s": _median([sps(j) for j, _, _ in ps]),
            "cost": _median([1 - 2 * loop(j) / (loop(a) + loop(b)) for j, a, b in ps]),
            "cost_wall": _median([2 * wall(j) / (wall(a) + wall(b)) - 1 for j, a, b in ps]),
            "cost_throughput": _median([1 - 2 * sps(j) / (sps(a) + sps(b)) for j, a, b in ps]),
            "render_ms_median": 1000 * _median(renders[k]),
            "render_ms_max": 1000 * max(renders[k], default=0),
            "polls": len(renders[k]),
        }
    page = out.get("poll_1s") or out[variants[0][0]]  # the Lab page's fragment redraws every second
    out["cost"] = page["cost"]
    out["target"] = LIVE_COST_TARGET
    out["met"] = bool(out["cost"] <= LIVE_COST_TARGET)
    return out


# ---------------------------------------------------------------- redraws


def _np_log_softmax(z, T):
    s = np.asarray(z, dtype=np.float64) / T
    s = s - s.max(axis=-1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


def _np_softmax(z, T):
    return np.exp(_np_log_softmax(z, T))


def _entropy_bits(p):
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0).sum(axis=-1)


class _ForwardCounter:
    """Counts the samples that went through any model's forward pass (top-level models only)."""

    def __init__(self):
        self.samples = 0
        self._h = None

    def __enter__(self):
        def hook(module, args, output):
            if hasattr(module, "arch") and args and isinstance(args[0], torch.Tensor):
                self.samples += int(args[0].shape[0])

        self._h = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self._h.remove()


def _time_ms(fn, args_list, repeats: int) -> dict:
    fn(args_list[0])  # warm-up
    times = []
    with _ForwardCounter() as fc:
        for _r in range(repeats):
            for a in args_list:
                t0 = time.perf_counter()
                fn(a)
                times.append(time.perf_counter() - t0)
    return {
        "median_ms": 1000 * _median(times),
        "max_ms": 1000 * max(times),
        "calls": len(times),
        "samples_forwarded_per_call": fc.samples / len(times),
    }


def redraws(s: Settings, device) -> dict:
    """Server time of the interactive redraws, as the pure functions the pages call
    (figures built with kd_core.viz and serialised to JSON as Streamlit does)."""
    ds = data_mod.load("mnist-mini")
    t_arch, s_arch = models.preset("mnist-mini")
    teacher = random_teacher("mnist-mini", t_arch, ds.in_shape, ds.num_classes, "cpu").model
    torch.manual_seed(0)
    student = models.build(s_arch, ds.in_shape, ds.num_classes).eval()
    logits = metrics.predict_logits(teacher, ds.x_test).numpy()  # cached once per teacher by the app
    y = ds.y_test.numpy()
    classes = [str(c) for c in ds.classes]
    K = len(classes)
    i = int(np.flatnonzero(y == 3)[0])
    out = {}

    def soft_targets(T):
        z = logits[i]
        p1, pT = _np_softmax(z, 1.0), _np_softmax(z, T)
        f1 = viz.prob_bars(
            {"teacher at T = 1 (plain softmax)": p1, f"teacher at T = {T:g}": pT},
            classes,
            title="Teacher's probabilities for this image",
            highlight=int(y[i]),
        )
        ent = {"teacher": _entropy_bits(_np_softmax(z[None, :], T_GRID[:, None]))}
        f2 = viz.entropy_curve(T_GRID, ent, T, max_entropy=math.log2(K), title="Entropy of softmax(z / T)")
        p = _np_softmax(logits, T)
        matrix = np.stack([p[y == c].mean(axis=0) for c in range(K)])
        f3 = viz.heatmap(
            matrix, classes, classes, title=f"Average soft targets per true class, T = {T:g}", zmin=0, zmax=1
        )
        return sum(len(f.to_json()) for f in (f1, f2, f3))

    out["soft_target_slider"] = _time_ms(soft_targets, SOFT_T, s.redraw_repeats) | {
        "what": "softmax at T of the cached test logits, probability bars, entropy curve and dark-knowledge "
        "heatmap (kd_core.viz), each serialised with fig.to_json()"
    }

    t_stage, s_stage = models.default_pair(teacher, student, ds.in_shape, "spatial")
    torch.manual_seed(1)
    scratch = models.build(s_arch, ds.in_shape, ds.num_classes).eval()
    roles = {"teacher": (teacher, t_stage), "scratch": (scratch, s_stage), "distilled": (student, s_stage)}
    try:  # the Feature maps page's own functions, when they exist
        from . import features as feat_mod
    except ImportError:
        feat_mod = None

    def image_of(idx):
        x1 = ds.x_test[idx : idx + 1]
        return x1, np.clip(viz.to_display(ds.denormalise(x1)[0].numpy()), 0.0, 1.0)

    def grid_figure(model, layer, role, x1):
        """One feature-map figure: one image through a frozen model, its 16 strongest channels."""
        feat = feat_mod.extract(model, x1, [layer])[layer][0]
        grid, chans, cols = feat_mod.channel_grid(feat, k=16)
        ids = feat_mod.tile_channels(chans, feat.shape[1], feat.shape[2], cols)
        return feat, viz.feature_grid(grid, f"{role} · {layer}", role, channel_ids=ids, showscale=True)

    def feature_map(idx):
        x1, _ = image_of(idx)
        _, fig = grid_figure(teacher, t_stage, "teacher", x1)
        return len(fig.to_json())

    def feature_maps_page(idx):
        """What pages/feature_maps.py redraws on a slider move: per role a channel grid, an
        attention overlay and the prediction."""
        x1, image = image_of(idx)
        figs = []
        for role, (model, layer) in roles.items():
            feat, fig = grid_figure(model, layer, role, x1)
            figs.append(fig)
            a = feat_mod.attention_overlay(feat, tuple(image.shape[:2]), 2)
            figs.append(viz.overlay_figure(image, a["overlay"].numpy(), f"{role} · {layer}", role, opacity=0.6))
            feat_mod.extract(model, x1, [])["logits"]
        return sum(len(f.to_json()) for f in figs)

    def feature_map_fallback(idx):
        x1, _ = image_of(idx)
        with torch.no_grad(), models.FeatureTaps(teacher, [t_stage]) as tt:
            teacher(x1)
        f = tt[t_stage][0]
        grid = torch.cat(list(f[:16].abs()), dim=1).numpy()
        return len(viz.heatmap(grid, list(range(grid.shape[1])), list(range(grid.shape[0])), text_fmt=None).to_json())

    images = list(range(10))
    try:
        if feat_mod is None:
            raise ImportError("kd_core.features is absent")
        out["feature_map"] = _time_ms(feature_map, images, s.redraw_repeats) | {
            "what": f"one channel-grid figure: a test image through the frozen teacher ({t_stage}), its 16 "
            "strongest channels (features.extract/channel_grid, viz.feature_grid), serialised"
        }
        out["feature_maps_page"] = _time_ms(feature_maps_page, images, s.redraw_repeats) | {
            "what": "everything the Feature maps page redraws on a slider move: teacher, scratch and distilled "
            "student each give a channel grid, an attention overlay and a prediction (6 figures)"
        }
    except Exception as e:  # the page's API moved on: time the equivalent computation
        out["feature_map"] = _time_ms(feature_map_fallback, images, s.redraw_repeats) | {
            "what": f"equivalent computation (kd_core.features unusable: {type(e).__name__}: {e}): a test image "
            f"through the teacher, 16 channels of {t_stage} as one heatmap"
        }

    N = 64

    def relations(offset):
        xb = ds.x_test[offset : offset + N]
        with (
            torch.no_grad(),
            models.FeatureTaps(teacher, ["embed"]) as tt,
            models.FeatureTaps(student, ["embed"]) as ss,
        ):
            teacher(xb)
            student(xb)
        figs = []
        for name, e in (("teacher", tt["embed"]), ("student", ss["embed"])):
            figs.append(
                viz.heatmap(
                    losses.normalised_distances(e).numpy(),
                    list(range(N)),
                    list(range(N)),
                    title=f"{name}: normalised distances",
                    text_fmt=None,
                )
            )
        return sum(len(fig.to_json()) for fig in figs)

    out["relations_n64"] = _time_ms(relations, [0, 64, 128], s.redraw_repeats) | {
        "what": "a relations figure at N = 64: 64 test images through the frozen teacher and student (embed "
        "taps), RKD's normalised distance matrices (losses.normalised_distances), two 64x64 heatmaps "
        "side by side, serialised",
        "module": (
            "kd_core.relations present but not used (API unknown to the bench)"
            if _optional("relations")
            else "kd_core.relations absent: the equivalent computation from kd_core.losses"
        ),
    }
    for _k, v in out.items():
        v["target_ms"] = REDRAW_TARGET_MS
        v["met"] = bool(v["median_ms"] < REDRAW_TARGET_MS)
    return out


def _optional(name: str):
    import importlib.util

    return importlib.util.find_spec(f"kd_core.{name}") is not None


APPTEST_CHILD = r"""
import json, statistics, sys, time
import torch
from streamlit.runtime.scriptrunner import script_runner
from streamlit.runtime.scriptrunner.script_cache import ScriptCache
from streamlit.testing.v1 import app_test, local_script_runner
from streamlit.testing.v1 import AppTest
from kd_core import bench

# AppTest compiles the page scripts anew on every run; a server keeps one bytecode cache
shared = ScriptCache()
app_test.ScriptCache = local_script_runner.ScriptCache = lambda: shared
# the server's time: the script run that builds and sends the new figures
script_s = []
real = script_runner.ScriptRunner._run_script
def timed(self, *a, **k):
    t0 = time.perf_counter()
    try:
        return real(self, *a, **k)
    finally:
        script_s.append(time.perf_counter() - t0)
script_runner.ScriptRunner._run_script = timed

at = AppTest.from_file(sys.argv[1], default_timeout=600)
at.run()
at.switch_page("pages/soft_targets.py").run()  # whichever page is the default
assert not at.exception, at.exception
temps = [1.0, 2.0, 4.0, 10.0, 20.0, 0.5]
at.select_slider(key="st_T").set_value(3.0).run()  # warm-up
script_s.clear()
wall = []
steps = [0]
from torch.optim.optimizer import register_optimizer_step_post_hook
h = register_optimizer_step_post_hook(lambda *a: steps.__setitem__(0, steps[0] + 1))
with bench._ForwardCounter() as fc:
    for r in range(int(sys.argv[2])):
        for T in temps:
            t0 = time.perf_counter()
            at.select_slider(key="st_T").set_value(T).run()
            wall.append(time.perf_counter() - t0)
            assert not at.exception, at.exception
h.remove()
print(json.dumps({"median_ms": 1000 * statistics.median(script_s), "max_ms": 1000 * max(script_s),
                  "apptest_wall_median_ms": 1000 * statistics.median(wall), "reruns": len(wall),
                  "samples_forwarded": fc.samples, "optimizer_steps": steps[0]}))
"""


def soft_targets_apptest(repeats: int) -> dict:
    """Server time of a whole Soft-targets script rerun after a slider move (Streamlit's
    AppTest, in a child process: the engine never imports streamlit). Needs the app's teacher."""
    proc = subprocess.run(
        [sys.executable, "-c", APPTEST_CHILD, str(ROOT / "app.py"), str(repeats)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=_child_env(),
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["what"] = (
        "a whole rerun of the Soft targets page after a move of the temperature slider, driven by "
        "AppTest: the server-side script run (ScriptRunner._run_script) that rebuilds and sends every "
        "element; AppTest's own polling excluded (apptest_wall_median_ms includes it)"
    )
    out["target_ms"] = REDRAW_TARGET_MS
    out["met"] = bool(out["median_ms"] < REDRAW_TARGET_MS)
    return out


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# ---------------------------------------------------------------- memory


def _peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident memory (VmHWM) of a process, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    if pid == "self":
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return float("nan")


def _rss_mb(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid or os.getpid()).memory_info().rss / 2**20


def lab_run_child(epochs: int, subset: int | None) -> dict:
    """(In a child process.) One Lab run with the Lab's defaults through the JobManager."""
    from .jobs import JobManager

    train.set_threads()
    cfg = Config(epochs=epochs, train_subset=subset)
    rc = cfg.resolved()
    ds = data_mod.load(rc.dataset, train_subset=rc.train_subset)
    device = models.pick_device()
    teacher = random_teacher(rc.dataset, rc.teacher, ds.in_shape, ds.num_classes, device)
    before = _rss_mb()
    with registered_teacher(teacher, train.teacher_key(rc.dataset, rc.teacher, rc.teacher_epochs, 0, rc.train_subset)):
        job = JobManager(max_running=1).submit(cfg, owner="bench")
        while not job.done:
            time.sleep(0.1)
    return {
        "status": job.status,
        "rss_before_run_mb": before,
        "rss_after_run_mb": _rss_mb(),
        "peak_rss_mb": _peak_rss_mb(),
    }


def lab_run_memory(s: Settings) -> dict:
    code = (
        "import json; from kd_core import bench; "
        f"print(json.dumps(bench.lab_run_child({s.live_epochs}, {s.live_subset!r})))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600, env=_child_env()
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the Lab-run child failed: {proc.stderr.strip()[-500:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["config"] = f"Lab defaults (kd, mnist-mini, scratch baseline), {s.live_epochs} epoch(s)" + (
        f", train_subset={s.live_subset}" if s.live_subset else ""
    )
    return out


def app_memory(sessions: int = 10) -> dict:
    """Resident memory of a real ``streamlit run app.py`` server with ``sessions`` idle
    browser sessions (headless Chromium pages that loaded the default page)."""
    import socket
    import urllib.request

    chromium = os.environ.get("KD_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        return {"skipped": f"no Chromium at {chromium}"}
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    logfile = open(os.devnull, "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env=_child_env(),
        stdout=logfile,
        stderr=subprocess.STDOUT,
    )
    out: dict = {"sessions": sessions}
    idle = "[data-testid='stApp'][data-test-script-state='notRunning']"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    return {"skipped": "the app did not start"}
                time.sleep(0.5)
        time.sleep(1)
        out["rss_no_session_mb"] = _rss_mb(proc.pid)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            contexts = []
            for k in range(sessions):
                ctx = browser.new_context(viewport={"width": 1400, "height": 900})
                page = ctx.new_page()
                t0 = time.perf_counter()
                page.goto(url)
                page.wait_for_selector("[data-testid='stApp']", timeout=300_000)
                page.wait_for_timeout(500)
                page.wait_for_selector(idle, timeout=300_000)
                if k == 0:
                    out["first_page_load_s"] = time.perf_counter() - t0
                    time.sleep(1)
                    out["rss_one_session_mb"] = _rss_mb(proc.pid)
                contexts.append(ctx)
            time.sleep(5)  # idle
            out["rss_idle_sessions_mb"] = _rss_mb(proc.pid)
            out["peak_rss_mb"] = _peak_rss_mb(proc.pid)
            for ctx in contexts:
                ctx.close()
            browser.close()
        out["per_extra_session_mb"] = (out["rss_idle_sessions_mb"] - out["rss_one_session_mb"]) / max(sessions - 1, 1)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        logfile.close()
    return out


# ---------------------------------------------------------------- profile (for PERFORMANCE.md)


def profile_step(
    method: str = "kd",
    dataset: str = "mnist-mini",
    steps: int = 120,
    conventional: bool = False,
    threads: int | None = None,
    top: int = 15,
) -> str:
    """cProfile of ``steps`` training steps of the engine (or of the conventional loop), top
    functions by own time. ``python -c "from kd_core import bench; print(bench.profile_step())"``"""
    import cProfile
    import io
    import pstats

    train.set_threads()
    if threads:
        torch.set_num_threads(threads)
    device = models.pick_device()
    ds = data_mod.load(dataset)
    base = Config(dataset=dataset).resolved()
    teacher = random_teacher(dataset, base.teacher, ds.in_shape, ds.num_classes, device)
    if conventional:
        st = ConventionalStepper(base, teacher.model, ds.x_train, ds.y_train, ds.in_shape, ds.num_classes, device)
    else:
        st = EngineStepper(_bench_config(dataset, method, 50), teacher, device)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    st.run(steps)
    prof.disable()
    wall = time.perf_counter() - t0
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    what = "conventional loop" if conventional else f"engine, method {method}"
    return (
        f"{what} on {dataset}, {steps} steps, {torch.get_num_threads()} thread(s): "
        f"{1000 * wall / steps:.2f} ms/step under the profiler\n" + buf.getvalue()
    )


# ---------------------------------------------------------------- the report


def _fmt_ratio(r: dict) -> str:
    return f"{r['ratio']:.2f} ({r['ratio_q1']:.2f}-{r['ratio_q3']:.2f})"


def _table(rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _yes(met) -> str:
    return "—" if met is None else ("yes" if met else "NO")


def report(res: dict) -> str:
    env = res["environment"]
    lines = [
        f"KD Playground benchmark ({res['mode']} mode, {res['rounds']} round(s), {res['seconds']:.0f} s)",
        f"  torch {env['torch']}, {env['torch_threads']} thread(s) (KD_PLAYGROUND_THREADS={env['KD_PLAYGROUND_THREADS']}), "
        f"device {env['device']}",
        f"  CPU: {env['cpu']}, {env['usable_cpus']} usable core(s) of {env['cpu_count']}, {env['memory_gb']} GB; "
        f"python {env['python']}; {env['platform']}",
        f"  load average at start {env['load_average_start']}, at end {env.get('load_average_end')}; git {env['git']}",
        "",
    ]
    for _key, suite in res["training"].items():
        lines.append(
            f"== {suite['dataset']}: teacher {suite['teacher']} -> student {suite['student']}, batch "
            f"{suite['batch_size']}, {suite['transfer_set']} images, {suite['steps_per_measurement']} steps "
            f"per measurement"
        )
        rows = [
            (
                "variant",
                "family",
                "teacher feats",
                "samples/s",
                "ms/step",
                "x floor (quartiles)",
                "target",
                "met",
                "setup s",
            )
        ]
        f = suite["floor"]
        rows.append(
            (
                "floor: student alone, minimal loop",
                "",
                "",
                f"{f['samples_per_s']:.0f}",
                f"{f['step_ms']:.2f}",
                "1.00",
                "",
                "",
                "",
            )
        )
        for name, r in list(suite["methods"].items()) + list(suite["per_step"].items()):
            rows.append(
                (
                    name,
                    r["family"],
                    r.get("teacher_features") or "",
                    f"{r['samples_per_s']:.0f}",
                    f"{r['step_ms']:.2f}",
                    _fmt_ratio(r),
                    f"<= {r['target']}" if r.get("target") else "",
                    _yes(r.get("met")),
                    f"{r.get('setup_s', 0):.2f}",
                )
            )
        if "conventional" in suite:
            c = suite["conventional"]
            rows.append(
                (
                    "conventional KD (DataLoader + teacher)",
                    "logits",
                    "per step",
                    f"{c['samples_per_s']:.0f}",
                    f"{c['step_ms']:.2f}",
                    _fmt_ratio(c),
                    "",
                    "",
                    "",
                )
            )
        lines.append(_table(rows))
        if "conventional" in suite:
            c = suite["conventional"]
            lines.append(
                f"  engine KD is {c['engine_kd_speedup']:.2f}x faster than the conventional loop "
                f"(quartiles {c['speedup_q1']:.2f}-{c['speedup_q3']:.2f}, "
                f"range {c['speedup_min']:.2f}-{c['speedup_max']:.2f})"
            )
        if suite.get("teacher_forward_ms"):
            lines.append(
                f"  one teacher forward pass ({suite['teacher']}, batch {suite['batch_size']}): "
                f"{suite['teacher_forward_ms']:.1f} ms"
            )
        if suite["errors"]:
            for k, v in suite["errors"].items():
                lines.append(f"  {k}: could not run: {v}")
        lines.append("")
    for t in res.get("threads") or []:
        lines.append(
            f"== threads on {t['dataset']} (ms per step, {t['steps']} steps): "
            f"kd {t['threads_1']['kd']:.2f} at 1 thread vs {t['threads_2']['kd']:.2f} at 2 "
            f"({t['kd_2_over_1']:.2f}x); floor {t['threads_1']['floor']:.2f} vs {t['threads_2']['floor']:.2f} "
            f"({t['floor_2_over_1']:.2f}x); load average then {t['load_average']}"
        )
    if res.get("softmax_micro"):
        m = res["softmax_micro"]
        lines.append(f"== softmax of 64x10: {m['threads_1_us']:.1f} µs at 1 thread, {m['threads_2_us']:.1f} µs at 2")
    if res.get("threads") or res.get("softmax_micro"):
        lines.append("")
    live = res["live_app"]
    lines.append(
        f"== live app: {live['config']['epochs']}-epoch Lab run (defaults) in the JobManager's worker, polled "
        f"and redrawn, vs headless Trainer.run()"
    )
    rows = [
        (
            "variant",
            "steps/s",
            "cost",
            "wall s",
            "cost (wall)",
            "samples/s in steps",
            "cost (in steps)",
            "render ms (median/max)",
        )
    ]
    h = live["headless"]
    rows.append(
        ("headless", f"{h['steps_per_s']:.1f}", "", f"{h['wall_s']:.2f}", "", f"{h['samples_per_s']:.0f}", "", "")
    )
    for k, v in live.items():
        if k.startswith("poll_"):
            label = f"job, poll every {v['interval_s']:g} s" + (
                f", GIL switch interval {1000 * v['switch_interval_s']:g} ms" if "switch" in k else ""
            )
            rows.append(
                (
                    label,
                    f"{v['steps_per_s']:.1f}",
                    f"{100 * v['cost']:+.1f}%",
                    f"{v['wall_s']:.2f}",
                    f"{100 * v['cost_wall']:+.1f}%",
                    f"{v['samples_per_s']:.0f}",
                    f"{100 * v['cost_throughput']:+.1f}%",
                    f"{v['render_ms_median']:.1f}/{v['render_ms_max']:.1f}",
                )
            )
    lines.append(_table(rows))
    lines.append(
        f"  cost: training steps/s after epoch 1 (evaluations included) with the page's 1 s polling vs headless: "
        f"{100 * live['cost']:.1f}% (target <= {100 * LIVE_COST_TARGET:.0f}%): {_yes(live['met'])}"
    )
    lines.append("")
    rd = res["redraw"]
    lines.append("== redraws (server time)")
    rows = [("redraw", "median ms", "max ms", "samples through a model per redraw", "< 100 ms")]
    for k, v in rd.items():
        if "median_ms" in v:
            fwd = v.get("samples_forwarded_per_call", v.get("samples_forwarded", 0) / max(v.get("reruns", 1), 1))
            rows.append((k, f"{v['median_ms']:.1f}", f"{v['max_ms']:.1f}", f"{fwd:g}", _yes(v.get("met"))))
        elif "error" in v:
            rows.append((k, "error", " ".join(v["error"]), "", ""))
    lines.append(_table(rows))
    lines.append("")
    mem = res["memory"]
    lr = mem["lab_run"]
    lines.append(
        f"== memory: a Lab run ({lr['config']}): peak RSS {lr['peak_rss_mb']:.0f} MiB "
        f"(before the run {lr['rss_before_run_mb']:.0f} MiB)"
    )
    app = mem.get("app")
    if app and "skipped" not in app:
        lines.append(
            f"   the app (streamlit run app.py): {app['rss_no_session_mb']:.0f} MiB with no session, "
            f"{app['rss_one_session_mb']:.0f} with one, {app['rss_idle_sessions_mb']:.0f} with {app['sessions']} "
            f"idle sessions ({app['per_extra_session_mb']:.1f} MiB per extra session); peak {app['peak_rss_mb']:.0f} MiB"
        )
    elif app:
        lines.append(f"   the app with ten idle sessions: skipped ({app['skipped']})")
    lines.append("")
    lines.append("== targets")
    rows = [("target", "measured", "met")]
    for t in res["targets"]:
        rows.append((t["target"], t["measured"], _yes(t["met"])))
    lines.append(_table(rows))
    return "\n".join(lines)


def _targets(res: dict) -> list[dict]:
    out = []
    for suite in res["training"].values():
        for fam, limit in (("logits", 1.15), ("feature/relational/contrastive", 1.6)):
            fams = fam.split("/")
            rows = {k: v for k, v in suite["methods"].items() if v["family"] in fams}
            if rows:
                worst = max(rows, key=lambda k: rows[k]["ratio"])
                out.append(
                    {
                        "target": f"{suite['dataset']}: {fam} methods <= {limit}x floor",
                        "measured": f"worst {worst} {rows[worst]['ratio']:.2f}x",
                        "met": all(v["met"] for v in rows.values()),
                    }
                )
    mini = res["training"].get("mnist-mini", {})
    if "conventional" in mini:
        c = mini["conventional"]
        out.append(
            {
                "target": f"mnist-mini: >= {SPEEDUP_TARGET:g}x faster than the conventional loop",
                "measured": f"{c['engine_kd_speedup']:.2f}x",
                "met": bool(c["engine_kd_speedup"] >= SPEEDUP_TARGET),
            }
        )
    live = res["live_app"]
    out.append(
        {
            "target": "live app costs <= 10% of headless throughput",
            "measured": f"{100 * live['cost']:.1f}%",
            "met": live["met"],
        }
    )
    for k, v in res["redraw"].items():
        if "median_ms" in v:
            out.append(
                {"target": f"redraw {k} < 100 ms", "measured": f"{v['median_ms']:.1f} ms (median)", "met": v["met"]}
            )
    st = res["redraw"].get("soft_target_slider_app")
    if st and "samples_forwarded" in st:
        out.append(
            {
                "target": "no slider redraw retrains or re-runs a model over the dataset",
                "measured": f"{st['samples_forwarded']} samples forwarded, {st['optimizer_steps']} optimiser steps "
                f"in {st['reruns']} reruns",
                "met": st["samples_forwarded"] == 0 and st["optimizer_steps"] == 0,
            }
        )
    return out


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
        train.get_teacher("mnist-mini")
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
    res["targets"] = _targets(res)
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

"""Engine throughput: every method of the registry through the real ``Trainer`` against
the floor (the student alone, minimal loop) and the conventional loop (a DataLoader and a
teacher forward pass per step); torch threads; where a step's time goes (profile)."""

from __future__ import annotations

import math
import os
import time

import torch
import torch.nn.functional as F

from kd_core import data as data_mod
from kd_core import losses, methods, models, teachers, train
from kd_core.config import Config
from kd_core.errors import ConfigError

from .common import RATIO_TARGETS, log, median, quartiles, random_teacher, sync

# ---------------------------------------------------------------- steppers: run n steps, return seconds


class EngineStepper:
    """The real ``Trainer.events()`` advanced n steps at a time. Only the calls that return a
    step are timed; the end-of-epoch evaluation (and snapshot) is timed apart."""

    def __init__(
        self, cfg: Config, teacher: teachers.Teacher, device, ds=None, budget: int | None = None, warmup: int = 2
    ):
        self.trainer = train.Trainer(cfg, teacher=teacher, device=device, feature_cache_bytes=budget, dataset=ds)
        self.device = device
        self.gen = self.trainer.events()
        t0 = time.perf_counter()
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
        sync(self.device)
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
        sync(self.device)
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
        sync(self.device)
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

    floor_med = median(floor_times)
    out_rows = {}
    for key, row in variants.items():
        ts = times[key]
        ratios = [t / f for t, f in ts]
        t_med = median([t for t, _ in ts])
        row = dict(row)
        row.update(
            {
                "samples_per_s": n * samples_per_step / t_med,
                "step_ms": 1000 * t_med / n,
                "epoch_s": steps_per_epoch * t_med / n,
                "ratio": median(ratios),
                "ratio_q1": quartiles(ratios)[0],
                "ratio_q3": quartiles(ratios)[1],
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
            }
        )
        st = steppers[key]
        if isinstance(st, EngineStepper) and st.eval_s:
            row["eval_s"] = median(st.eval_s)
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
        conv["engine_kd_speedup"] = median(speedups)
        conv["speedup_min"], conv["speedup_max"] = min(speedups), max(speedups)
        conv["speedup_q1"], conv["speedup_q3"] = quartiles(speedups)
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
            sync(device)
            times.append(time.perf_counter() - t0)
    return 1000 * median(times)


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
        out[f"threads_{th}"] = {k: 1000 * median(v) / n for k, v in res[th].items()}  # ms per step
    out["kd_2_over_1"] = median([b / a for a, b in zip(res[1]["kd"], res[2]["kd"])])
    out["floor_2_over_1"] = median([b / a for a, b in zip(res[1]["floor"], res[2]["floor"])])
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
            out[f"threads_{th}_us"] = 1e6 * median(times)
    finally:
        torch.set_num_threads(keep)
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

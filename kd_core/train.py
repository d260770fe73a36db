"""Training: students (a stream of events) against a teacher from the store (kd_core/teachers.py).

A student run is a generator of plain-dict events that a UI or a CLI consumes::

    {"kind": "start", ...}                      what will run
    {"kind": "step", "step", "epoch", "losses", "baseline_loss", ...}
    {"kind": "epoch", "epoch", "student_acc", "baseline_acc", "agreement", ...}
    {"kind": "end", "status": "finished" | "stopped" | "diverged", "message", "result"}

``Trainer.stop()`` (from any thread) ends the run at the next step; what was done is
kept and evaluated. Data lives in tensors on the device; batches are index slices, not a
DataLoader, and the frozen teacher's outputs are computed once per dataset.
"""

from __future__ import annotations

import copy
import threading
import time
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import data as data_mod
from . import losses, methods, metrics, models, teachers
from .config import Config
from .errors import ConfigError

FEATURE_CACHE_BYTES = 512 * 2**20  # teacher features are cached when they fit this budget

# the teacher store lives in kd_core/teachers.py; these names stay importable from here
Teacher = teachers.Teacher
TEACHER_LR, TEACHER_BATCH = teachers.TEACHER_LR, teachers.TEACHER_BATCH
teacher_key = teachers.key
train_teacher = teachers.train_teacher
get_teacher = teachers.get
set_threads = teachers.set_threads
epoch_batches = teachers.epoch_batches


# ---------------------------------------------------------------- layer pairs


def default_pair(
    method: methods.Method, teacher: nn.Module, student: nn.Module, in_shape, strict: bool = True
) -> tuple[str, str]:
    """The layer pair ``method`` uses when none is named: the last spatial taps of both
    models for a spatial method (or one that prefers them), else both embeddings; a method
    that takes any layer falls back to the embeddings when a model has no spatial map.
    ``strict=False``: a spatial method falls back too (a UI's suggestion; ``resolve_pairs``
    then says why it does not suit). Raises ConfigError when no pair can be found."""
    kind = method.tap_kind if method.tap_kind != "any" else method.prefer
    try:
        return models.default_pair(teacher, student, in_shape, kind)
    except ConfigError:
        if strict and method.tap_kind == "spatial":
            raise
        return models.default_pair(teacher, student, in_shape, "vector")


def resolve_pairs(
    method: methods.Method, teacher: nn.Module, student: nn.Module, in_shape, pairs
) -> list[tuple[str, str, tuple, tuple]]:
    """The (teacher_layer, student_layer, teacher_shape, student_shape) pairs a method uses,
    checked before training: names must exist and shapes must suit the method."""
    if not method.needs_features:
        return []
    if not pairs:
        pairs = [default_pair(method, teacher, student, in_shape)]
    t_shapes = models.module_shapes(teacher, in_shape)
    s_shapes = models.module_shapes(student, in_shape)
    out = []
    for t_name, s_name in pairs:
        for role, name, shapes, model in (
            ("teacher", t_name, t_shapes, teacher),
            ("student", s_name, s_shapes, student),
        ):
            if name not in shapes:
                hint = ", ".join(getattr(model, "tap_names", list(shapes)[:8]))
                raise ConfigError(f"the {role} has no layer '{name}'; try one of: {hint}")
        ts, ss = tuple(t_shapes[t_name]), tuple(s_shapes[s_name])
        if method.tap_kind == "spatial" and (len(ts) != 3 or len(ss) != 3):
            bad = f"teacher '{t_name}' gives {ts}" if len(ts) != 3 else f"student '{s_name}' gives {ss}"
            raise ConfigError(
                f"{method.name} needs spatial feature maps (C, H, W) on both sides, but {bad}; pick stage layers"
            )
        if method.regresses and len(ts) != len(ss):
            raise ConfigError(
                f"{method.title.split()[0]} cannot regress a {'spatial map' if len(ss) == 3 else 'vector'} "
                f"(student '{s_name}' {ss}) onto a {'spatial map' if len(ts) == 3 else 'vector'} "
                f"(teacher '{t_name}' {ts}); pair two stages or two vector layers"
            )
        out.append((t_name, s_name, ts, ss))
    return out


# ---------------------------------------------------------------- students

# The frozen teacher's logits (and cached features) on a transfer set, per teacher model and
# transfer set: a leaderboard or a class of students runs many students against one teacher,
# and on the full Fashion-MNIST one pass of the teacher costs as much as a student's epoch.
# Weak keys: the entries go with the teacher model. Treat the tensors as read-only.
TEACHER_OUTPUTS_PER_MODEL = 4
_outputs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_outputs_lock = threading.Lock()


def teacher_outputs(model: nn.Module, x: Tensor, names: list[str], what: tuple) -> tuple[Tensor, list[Tensor] | None]:
    """``(logits, features at names or None)`` of the frozen ``model`` on ``x`` (in chunks,
    no grad), remembered under ``what`` (which data ``x`` is) for this model."""
    key = (*what, tuple(names), len(x))
    with _outputs_lock:
        per_model = _outputs.get(model)
        hit = per_model.get(key) if per_model is not None else None
    if hit is not None:
        return hit
    with torch.no_grad():
        logits, feats = [], [[] for _ in names]
        for i in range(0, len(x), 1024):
            lo, fs = forward_taps(model, x[i : i + 1024], names)
            logits.append(lo)
            for j, f in enumerate(fs):
                feats[j].append(f)
        out = (torch.cat(logits), [torch.cat(f) for f in feats] if names else None)
    with _outputs_lock:
        per_model = _outputs.setdefault(model, {})
        per_model[key] = out
        while len(per_model) > TEACHER_OUTPUTS_PER_MODEL:
            per_model.pop(next(iter(per_model)))
    return out


def labelled_mask(y: Tensor, fraction: float, gen: torch.Generator) -> Tensor:
    """A stratified random subset of ``fraction`` of each class (at least one per class)."""
    mask = torch.zeros(len(y), dtype=torch.bool)
    if fraction <= 0.0:  # no label at all (label-free methods, alpha = 1)
        return mask
    if fraction >= 1.0:
        return mask.fill_(True)
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().flatten()
        k = max(1, round(fraction * len(idx)))
        mask[idx[torch.randperm(len(idx), generator=gen)[:k]]] = True
    return mask


def masked_ce(logits: Tensor, y: Tensor, labelled: Tensor) -> Tensor:
    """Cross-entropy over the labelled samples of the batch only (0 when there are none)."""
    if labelled.all():
        return F.cross_entropy(logits, y)
    if not labelled.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labelled], y[labelled])


class TransferSet:
    """What a student run trains on, on the device: the training images less an omitted
    class (``x``, ``y``, their dataset ``index``), which of them are ``labelled`` (a
    stratified ``labeled_fraction``), the test set, and the epochs' batches. One generator,
    seeded by the config's seed, draws the labelled mask and then every epoch's order."""

    def __init__(self, config: Config, ds: data_mod.Dataset, device):
        check_batch_fits(config, ds)
        keep = torch.arange(len(ds.y_train))
        if config.omit_class is not None:
            keep = keep[ds.y_train != config.omit_class]
        self.gen = torch.Generator().manual_seed(config.seed)
        y = ds.y_train[keep]
        self.labelled = labelled_mask(y, config.labeled_fraction, self.gen).to(device)
        self.x = ds.x_train[keep].to(device)
        self.y = y.to(device)
        self.index = keep.to(device)
        self.x_test, self.y_test = ds.x_test.to(device), ds.y_test
        self.batch_size, self.epochs, self.device = config.batch_size, config.epochs, device

    def __len__(self) -> int:
        return len(self.x)

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self) // self.batch_size)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def batches(self):
        """One epoch's index batches, on the device."""
        for idx in epoch_batches(len(self), self.batch_size, self.gen):
            yield idx.to(self.device)


def adam_cosine(params, lr: float, total_steps: int):
    """The students' optimiser: Adam with a cosine schedule over the run. ``foreach``: one
    multi-tensor update instead of a Python loop over the parameters (the default on CUDA,
    not on the CPU); the same numbers, ~1% faster per step on the CPU."""
    opt = torch.optim.Adam(params, lr=lr, foreach=True)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)


def divergence(named_losses: dict, step: int, epoch: int, lr: float) -> str | None:
    """None while every loss (``{who: loss}``) is finite; else the message that ends the run
    as diverged, naming whose loss broke first."""
    for who, loss in named_losses.items():
        if loss is not None and not torch.isfinite(loss):
            what = "NaN" if torch.isnan(loss) else "infinite"
            return (
                f"the {who}'s loss became {what} at step {step + 1} (epoch {epoch}); "
                f"lower the learning rate (now {lr:g})"
            )
    return None


def model_summary(model: nn.Module, ts: TransferSet, ds: data_mod.Dataset, teacher_logits: Tensor | None) -> dict:
    """A trained model's block of a run's result: accuracy, per-class accuracy, agreement
    with the teacher's test logits (if any), calibration, size and latency."""
    out = metrics.summary(metrics.predict_logits(model, ts.x_test), ts.y_test, teacher_logits, ds.num_classes)
    out.update(models.profile(model, ds.in_shape))
    return out


def result_head(config: Config, status: str, message: str, steps: int, total_steps: int, seconds: float, device, ds):
    """The fields every run's result starts with."""
    return {
        "config": config.to_dict(),
        "status": status,
        "message": message,
        "steps": steps,
        "total_steps": total_steps,
        "wall_seconds": seconds,
        "device": str(device),
        "pairs": [],
        "classes": list(ds.classes),
        "data": ds.describe(),
    }


def forward_taps(model: nn.Module, x: Tensor, names: list[str]) -> tuple[Tensor, list[Tensor]]:
    """``(logits, [output of each named layer])`` of one forward pass of ``model`` on ``x``."""
    if not names:
        return model(x), []
    with models.FeatureTaps(model, names) as taps:
        logits = model(x)
        feats = [taps[n] for n in names]
    return logits, feats


class Trainer:
    """One distillation run: a student (and a scratch baseline) against a cached teacher."""

    def __init__(
        self,
        config: Config,
        teacher: Teacher | None = None,
        device=None,
        teacher_progress=None,
        feature_cache_bytes: int | None = None,
        dataset: data_mod.Dataset | None = None,
    ):
        """``feature_cache_bytes``: the teacher's features on the transfer set are computed
        once and kept when they fit this many bytes (default ``FEATURE_CACHE_BYTES``), else
        recomputed at every step. ``dataset``: the data to train on, already loaded (default:
        ``data.load(config.dataset, train_subset=config.train_subset)``)."""
        self.feature_cache_bytes = FEATURE_CACHE_BYTES if feature_cache_bytes is None else feature_cache_bytes
        self.config = config.resolved().validate()
        cfg = self.config
        self.method = cfg.method_obj
        self.params = cfg.method_params()
        self.device = device or models.pick_device()
        if self.method.pipeline is not None:
            raise ConfigError(
                f"method '{self.method.name}' chains several runs or trains without a teacher; "
                "run it with train.distil() or train.method_events()"
            )
        self.ds = dataset if dataset is not None else data_mod.load(cfg.dataset, train_subset=cfg.train_subset)
        if teacher is None and self.method.make_teacher is not None:  # e.g. an ensemble of teachers
            teacher = self.method.make_teacher(cfg, self.device, teacher_progress)
        self.teacher = teacher or get_teacher(
            cfg.dataset,
            cfg.teacher,
            cfg.teacher_epochs,
            train_subset=cfg.train_subset,
            progress=teacher_progress,
            device=self.device,
        )
        torch.manual_seed(cfg.seed)
        self.student = models.build(cfg.student, self.ds.in_shape, self.ds.num_classes).to(self.device)
        self.baseline = copy.deepcopy(self.student) if cfg.baseline else None
        self.pairs = resolve_pairs(self.method, self.teacher.model, self.student, self.ds.in_shape, cfg.parsed_pairs())
        self.modules = None
        if self.method.make_modules is not None:
            torch.manual_seed(cfg.seed + 1)
            self.modules = self.method.make_modules([(p[2], p[3]) for p in self.pairs], self.params).to(self.device)
        self._stop = threading.Event()
        self.history: list[dict] = []  # one entry per epoch
        self.steps: list[dict] = []  # one entry per step
        self.result: dict | None = None
        self.status = "created"
        self._snapshot_lock = threading.Lock()
        self._snapshot: dict | None = None

    # ---------------------------------------------------------- models for the pages
    def snapshot(self) -> dict | None:
        """Frozen copies (eval mode, CPU) of the models as they were at the last epoch end or
        at the end of the run: {"epoch", "student", "baseline", "modules", "teacher"}.
        Safe to use from any thread while training goes on: pages draw feature maps from these,
        never from the models being trained."""
        with self._snapshot_lock:
            return self._snapshot

    def take_snapshot(self, epoch: int) -> None:
        def frozen(m):
            if m is None:
                return None
            c = copy.deepcopy(m).cpu().eval()
            for p in c.parameters():
                p.requires_grad_(False)
            return c

        snap = {
            "epoch": epoch,
            "student": frozen(self.student),
            "baseline": frozen(self.baseline),
            "modules": frozen(self.modules),
            "teacher": self.teacher.model,
            "pairs": [(p[0], p[1]) for p in self.pairs],
        }
        with self._snapshot_lock:
            self._snapshot = snap

    # ---------------------------------------------------------- control
    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    # ---------------------------------------------------------- data prep
    def prepare(self):
        self.transfer = ts = TransferSet(self.config, self.ds, self.device)
        self.labelled, self.x, self.y, self.index, self.gen = ts.labelled, ts.x, ts.y, ts.index, ts.gen
        t_names = [p[0] for p in self.pairs]
        # the frozen teacher's outputs on the transfer set, computed once (and shared by the
        # runs of this process with the same teacher and transfer set: see teacher_outputs)
        cfg, dev = self.config, self.device
        feats_bytes = sum(len(self.x) * 4 * _numel(p[2]) for p in self.pairs)
        self.cache_feats = feats_bytes <= self.feature_cache_bytes
        names = t_names if self.cache_feats else []
        what = (cfg.dataset, self.ds.fingerprint, cfg.train_subset, cfg.omit_class, str(dev))
        self.t_logits, self.t_feats = teacher_outputs(self.teacher.model, self.x, names, ("train", *what))
        self.x_test = ts.x_test
        self.t_test_logits = teacher_outputs(self.teacher.model, self.x_test, [], ("test", *what))[0].float().cpu()

    # ---------------------------------------------------------- the loop
    def events(self):
        """Run, yielding events. Safe to abandon midway (the run is simply not continued)."""
        cfg = self.config
        self.status = "running"
        set_threads()
        t_start = time.perf_counter()
        self.prepare()
        ts = self.transfer
        n, steps_per_epoch, total_steps = len(ts), ts.steps_per_epoch, ts.total_steps
        params = list(self.student.parameters()) + (list(self.modules.parameters()) if self.modules else [])
        opt, sched = adam_cosine(params, cfg.lr, total_steps)
        if self.baseline is not None:
            b_opt, b_sched = adam_cosine(self.baseline.parameters(), cfg.lr, total_steps)
        s_names = [p[1] for p in self.pairs]
        t_names = [p[0] for p in self.pairs]
        yield {
            "kind": "start",
            "total_steps": total_steps,
            "epochs": cfg.epochs,
            "transfer_set": n,
            "labelled": int(self.labelled.sum()),
            "teacher_acc": metrics.accuracy(self.t_test_logits, self.ds.y_test),
            "pairs": [(p[0], p[1]) for p in self.pairs],
            "config": cfg.to_dict(),
        }
        step, status, message = 0, "finished", ""
        self.train_seconds = 0.0
        epoch = 0
        for epoch in range(1, cfg.epochs + 1):
            self.student.train()
            if self.modules is not None:
                self.modules.train()
            if self.baseline is not None:
                self.baseline.train()
            for b, idx in enumerate(ts.batches()):
                if self._stop.is_set():
                    status, message = "stopped", f"stopped by the user at step {step} of {total_steps}"
                    break
                t0 = time.perf_counter()
                xb, yb, lab = self.x[idx], self.y[idx], self.labelled[idx]
                t_logits = self.t_logits[idx]
                if not t_names:
                    t_feats = []
                elif self.t_feats is not None:
                    t_feats = [f[idx] for f in self.t_feats]
                else:
                    with torch.no_grad():
                        _, t_feats = forward_taps(self.teacher.model, xb, t_names)
                s_logits, s_feats = forward_taps(self.student, xb, s_names)
                tracked: dict = {}
                terms = self.loss_terms(
                    s_logits, t_logits, yb, lab, s_feats, t_feats, idx, epoch - 1 + b / steps_per_epoch, tracked
                )
                loss = sum(terms.values())
                b_loss = None
                if self.baseline is not None:
                    b_loss = masked_ce(self.baseline(xb), yb, lab)
                broke = divergence({"student": loss, "scratch baseline": b_loss}, step, epoch, cfg.lr)
                if broke:
                    status, message = "diverged", broke
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if b_loss is not None:
                    b_opt.zero_grad(set_to_none=True)
                    b_loss.backward()
                    b_opt.step()
                    b_sched.step()
                step += 1
                self.train_seconds += time.perf_counter() - t0
                rec = {
                    "step": step,
                    "epoch": epoch,
                    "losses": {k: v.item() for k, v in terms.items()},
                    "loss": loss.item(),
                    "baseline_loss": None if b_loss is None else b_loss.item(),
                }
                if tracked:  # e.g. CTKD's learned temperature, as it was for this step's loss
                    rec["tracked"] = {k: float(v) for k, v in tracked.items()}
                self.steps.append(rec)
                yield {"kind": "step", "total_steps": total_steps, "elapsed": time.perf_counter() - t_start, **rec}
            if status != "finished":
                break
            ev = self.evaluate(epoch)
            self.history.append(ev)
            self.take_snapshot(epoch)
            yield {"kind": "epoch", "elapsed": time.perf_counter() - t_start, **ev}
        if status == "stopped" and step > 0 and (not self.history or self.history[-1]["step"] != step):
            ev = self.evaluate(epoch, partial=True)
            self.history.append(ev)
            self.take_snapshot(epoch)
            yield {"kind": "epoch", "elapsed": time.perf_counter() - t_start, **ev}
        self.status = status
        self.result = self.summary(status, message, step, total_steps, time.perf_counter() - t_start)
        yield {"kind": "end", "status": status, "message": message, "result": self.result}

    def run(self, on_event=None) -> dict:
        """Run to the end; returns the summary."""
        for ev in self.events():
            if on_event is not None:
                on_event(ev)
        return self.result

    def loss_terms(self, s_logits, t_logits, y, lab, s_feats, t_feats, idx, progress, report=None) -> dict:
        """The weighted loss terms of one step; scalars the method reports besides its
        losses (CTKD's learned T) go into ``report``."""
        cfg, m = self.config, self.method
        ce = masked_ce(s_logits, y, lab)
        ctx = None
        if m.name != "none":
            # unlabelled samples take the teacher's prediction where a method needs "the" class (DKD)
            target = torch.where(lab, y, t_logits.argmax(1))
            ctx = methods.StepContext(
                s_logits,
                t_logits,
                target,
                lab,
                s_feats,
                t_feats,
                cfg.temperature,
                self.params,
                self.modules,
                progress,
                self.index[idx],
            )
        terms = {}
        if m.uses_alpha:
            if cfg.alpha < 1:
                terms["ce"] = (1 - cfg.alpha) * ce
            if cfg.alpha > 0:
                kd = m.kd_term(ctx) if m.kd_term is not None else losses.kd_loss(s_logits, t_logits, cfg.temperature)
                terms["kd"] = cfg.alpha * kd
        else:
            terms["ce"] = ce
        if ctx is not None:
            terms.update(m.terms(ctx))
            if report is not None:
                report.update(ctx.report)
        if not terms:
            terms["ce"] = ce
        return terms

    # ---------------------------------------------------------- evaluation
    def evaluate(self, epoch: int, partial: bool = False) -> dict:
        s = metrics.predict_logits(self.student, self.x_test)
        y = self.ds.y_test
        ev = {
            "epoch": epoch,
            "step": len(self.steps),
            "partial": partial,
            "student_acc": metrics.accuracy(s, y),
            "student_agreement": metrics.agreement(s, self.t_test_logits),
            "teacher_acc": metrics.accuracy(self.t_test_logits, y),
        }
        ev["agreement"] = ev["student_agreement"]  # short alias
        if self.config.omit_class is not None:
            c = self.config.omit_class
            ev["student_omitted_acc"] = metrics.per_class_accuracy(s, y, self.ds.num_classes)[c]
        if self.baseline is not None:
            b = metrics.predict_logits(self.baseline, self.x_test)
            ev["baseline_acc"] = metrics.accuracy(b, y)
            ev["baseline_agreement"] = metrics.agreement(b, self.t_test_logits)
            if self.config.omit_class is not None:
                ev["baseline_omitted_acc"] = metrics.per_class_accuracy(b, y, self.ds.num_classes)[
                    self.config.omit_class
                ]
        return ev

    def summary(self, status: str, message: str, steps: int, total_steps: int, seconds: float) -> dict:
        ds, y, k = self.ds, self.ds.y_test, self.ds.num_classes
        samples = steps * self.config.batch_size
        t_prof = self.teacher.profile(ds.in_shape)

        def block(model, loss_key):
            out = model_summary(model, self.transfer, ds, self.t_test_logits)
            out["compression"] = t_prof["params"] / max(out["params"], 1)
            out["speedup"] = t_prof["latency_ms"] / max(out["latency_ms"], 1e-9)
            out["train_seconds"] = self.train_seconds
            out["samples_per_second"] = samples / self.train_seconds if self.train_seconds > 0 else 0.0
            out["history"] = [
                {"epoch": h["epoch"], "test_accuracy": h[f"{loss_key}_acc"], "agreement": h[f"{loss_key}_agreement"]}
                for h in self.history
                if f"{loss_key}_acc" in h
            ]
            return out

        result = result_head(self.config, status, message, steps, total_steps, seconds, self.device, ds)
        result["pairs"] = [(p[0], p[1]) for p in self.pairs]
        result |= {
            "teacher": {
                "arch": self.teacher.arch,
                "source": self.teacher.source,
                "test_accuracy": metrics.accuracy(self.t_test_logits, y),
                "per_class_accuracy": metrics.per_class_accuracy(self.t_test_logits, y, k),
                "ece": metrics.ece(self.t_test_logits, y),
                **t_prof,
            },
            "student": block(self.student, "student") | {"arch": self.config.student},
            "step_losses": self.steps,
            "epochs": self.history,
        }
        tracked = [r["tracked"] for r in self.steps if "tracked" in r]
        if tracked:  # the values of the last step (CTKD: the final learned T)
            result["tracked"] = dict(tracked[-1])
            if "T" in result["tracked"]:
                result["learned_temperature"] = result["tracked"]["T"]
        if self.baseline is not None:
            result["baseline"] = block(self.baseline, "baseline") | {"arch": self.config.student}
        if self.teacher.members:
            result["teachers"] = [dict(m) for m in self.teacher.members]
            accs = [m["test_accuracy"] for m in self.teacher.members]
            result["ensemble"] = {
                **(self.teacher.info or {}),
                "test_accuracy": result["teacher"]["test_accuracy"],
                "mean_member_accuracy": sum(accs) / len(accs),
                "best_member_accuracy": max(accs),
            }
        return result


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def check_batch_fits(config: Config, ds) -> None:
    """Refuse a batch larger than the student's transfer set (the training images, less an
    omitted class): it would silently train one short step per epoch."""
    y = ds.y_train
    n = len(y) if config.omit_class is None else int((y != config.omit_class).sum())
    if config.batch_size > n:
        where = f"the {n:,} training images of {config.dataset}" + (
            f" without class {config.omit_class}" if config.omit_class is not None else ""
        )
        raise ConfigError(f"batch_size {config.batch_size} is larger than {where}; choose at most {n}")


class ChainedRun:
    """A method that chains runs or trains without a teacher (born-again, TA, DML:
    kd_core/beyond.py; the data-free and label-free ones: kd_core/datafree.py) as one run,
    like a Trainer: ``events()`` are its pipeline's (the inner runs' tagged with their
    ``"stage"``), ending with ``{"kind": "end", "result": ...}``. ``stop()``: a pipeline that
    stops itself (it has ``stop()``) ends at its next step and keeps what was done; any other
    ends at its next event, as "stopped" without a result."""

    def __init__(self, config: Config, teacher_progress=None):
        self.config = config.resolved().validate()
        self.result: dict | None = None
        self._stop = threading.Event()
        self.pipeline = self.config.method_obj.pipeline(self.config, teacher_progress=teacher_progress)
        self.stoppable = hasattr(self.pipeline, "stop")

    @property
    def trainer(self):
        """The inner run that holds the trained models (a pipeline that stops itself), or None."""
        return self.pipeline if self.stoppable else None

    def stop(self) -> None:
        self._stop.set()
        if self.stoppable:
            self.pipeline.stop()

    def events(self):
        for ev in self.pipeline:
            if self._stop.is_set() and not self.stoppable:
                self.pipeline.close()
                yield {"kind": "end", "status": "stopped", "message": "stopped", "result": None}
                return
            if ev["kind"] == "end":
                self.result = ev["result"]
            yield ev


def make_run(config: Config, teacher_progress=None, teacher: Teacher | None = None):
    """The run of any method, an object with ``events()`` and ``stop()``: a ``Trainer``, or
    a ``ChainedRun`` for the methods that chain runs or train without a teacher (their own
    teachers: ``teacher`` then does not apply)."""
    cfg = config.resolved().validate()
    if cfg.method_obj.pipeline is not None:
        return ChainedRun(cfg, teacher_progress)
    return Trainer(cfg, teacher=teacher, teacher_progress=teacher_progress)


def method_events(config: Config, teacher_progress=None):
    """Events of any method's run (``make_run``)."""
    return make_run(config, teacher_progress).events()


def distil(config: Config, on_event=None, teacher: Teacher | None = None) -> dict:
    """Convenience: make the run (``make_run``) and run it to the end; returns the summary
    dict. Methods that chain runs (born-again, TA) or train without a teacher (DML) run their
    pipeline instead (``teacher`` then does not apply)."""
    run = make_run(config, teacher=teacher)
    for ev in run.events():
        if on_event is not None:
            on_event(ev)
    return run.result

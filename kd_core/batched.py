"""Many students at once: K students of one architecture trained as one set of batched
operations, each with its own parameters, optimiser state, hyper-parameters, seed, data
order and labelled mask.

A tiny network leaves a CPU core mostly idle on per-operation overhead. Here the K
members' parameters (and BatchNorm buffers) are stacked along a new leading dimension and
one forward pass runs ``torch.func.vmap`` over ``torch.func.functional_call``: a convolution
over K weight sets becomes one grouped convolution, a linear layer one batched matmul, and
one Adam update covers every member. BatchNorm stays exact: each member's running
statistics are its own slice of the stacked buffers, updated in place under ``vmap``, so a
member in eval mode is identical to a model trained alone.

Each member is a :class:`kd_core.train.Trainer` (its config, seed, transfer set, labelled
mask, batch order, method modules — a FitNets regressor, CRD's memory banks — and loss
terms); a run's scratch baseline is one more member. Only the students' forward and
backward passes and their optimiser step are shared; every loss is the member's own
``Trainer.loss_terms``, so member k's result equals a separate ``Trainer`` run with the same
config to float tolerance (tests/test_batched.py checks it per method family). The frozen
teacher's outputs are computed once and shared (``train.teacher_outputs``).

``BatchedRun(configs).events()`` yields the events of kd_core/train.py, each tagged with
its ``"member"`` (the config's index), and ends with one ``"end"`` event per config and a
final ``{"kind": "end", "results": [...]}``; a single config yields exactly a Trainer's events
(the Lab's distilled + scratch pair). ``group_size`` chooses how many members train at once
from a memory budget (``KD_PLAYGROUND_BATCH_MEMORY``, bytes; default 1 GiB).
"""

from __future__ import annotations

import copy
import os
import threading
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from . import data as data_mod
from . import metrics, models, teachers, train
from .config import Config
from .errors import ConfigError

BATCH_MEMORY = 2**30  # bytes for one group's training state (override: KD_PLAYGROUND_BATCH_MEMORY)
MAX_GROUP = 64  # members per group, whatever the memory allows

# what members of one group must share: the architecture, the data and the number of steps
SHARED = ("dataset", "train_subset", "student", "teacher", "teacher_epochs", "epochs", "batch_size", "omit_class")


def why_not(configs: list[Config]) -> str | None:
    """None when these configs can train as one batch; else why not, in a phrase."""
    if not configs:
        return "no config"
    cfgs = [c.resolved() for c in configs]
    for c in cfgs:
        if c.method_obj.pipeline is not None:
            return f"method '{c.method}' chains runs or trains without a teacher"
    first = cfgs[0]
    for c in cfgs[1:]:
        for k in SHARED:
            if getattr(c, k) != getattr(first, k):
                return f"the runs differ in {k} ({getattr(first, k)!r} vs {getattr(c, k)!r})"
    return None


def group_key(config: Config) -> tuple | None:
    """Configs with equal keys can train together; None for a method that cannot batch."""
    c = config.resolved()
    if c.method_obj.pipeline is not None:
        return None
    return tuple(getattr(c, k) for k in SHARED)


def memory_budget() -> int:
    """Bytes one group may use for its members' training state (KD_PLAYGROUND_BATCH_MEMORY)."""
    raw = os.environ.get("KD_PLAYGROUND_BATCH_MEMORY", "").strip()
    try:
        return max(1, int(float(raw))) if raw else BATCH_MEMORY
    except ValueError:
        raise ConfigError(f"KD_PLAYGROUND_BATCH_MEMORY must be a number of bytes, got {raw!r}") from None


def member_bytes(student: str, in_shape, num_classes: int, batch_size: int) -> int:
    """An estimate of one member's training memory: parameters, gradients and Adam's two
    moments (4 copies), plus every module output of a batch three times (the output kept
    for the backward pass, its gradient, and the copies vmap makes between layers; a batch
    of 32 mnist-mini CNN students measured 20 MiB each, this says 23)."""
    model = models.build(student, in_shape, num_classes)
    params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    sizes: list[int] = []

    def record(_m, _i, out):
        if isinstance(out, Tensor):
            sizes.append(out[0].numel())

    hooks = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model.eval()
        model(torch.zeros(1, *in_shape))
    for h in hooks:
        h.remove()
    acts = sum(sizes) * batch_size
    return 4 * (4 * params + 3 * acts)


def group_size(config: Config, ds: data_mod.Dataset | None = None, budget: int | None = None) -> int:
    """How many members like ``config`` fit the memory budget (at least 1, at most MAX_GROUP)."""
    c = config.resolved()
    if ds is None:
        ds = data_mod.load(c.dataset, train_subset=c.train_subset)
    per = member_bytes(c.student, ds.in_shape, ds.num_classes, c.batch_size)
    return int(max(1, min(MAX_GROUP, (budget or memory_budget()) // max(per, 1))))


CPU_MIN_MEMBERS = 4  # on a CPU a batch of MLP students pays off from this many (PERFORMANCE.md)


def faster_together(config: Config, k: int, device=None) -> tuple[bool, str]:
    """Whether ``k`` students like ``config``'s train faster as one batch than one by one
    (or one process per run), and why — what PERFORMANCE.md measured: on a GPU a batch
    runs its students in the kernels of one; on a CPU a batch of small MLPs (the digits
    preset) is faster from about ``CPU_MIN_MEMBERS`` students on (2-5x for 8-32), but
    convolutions over K weight sets become grouped convolutions that a CPU runs no faster
    than K separate ones (a batch of the mnist-mini CNN students is slower per step)."""
    device = torch.device(device) if device is not None else models.pick_device()
    if k < 2:
        return False, "a single student"
    if device.type == "cuda":
        return True, f"on a GPU a batch runs its {k} students in the kernels of one"
    c = config.resolved()
    if not c.student.startswith("mlp"):
        return False, (
            f"on a CPU a batch of {c.student} students (convolutions) is no faster than one by one; "
            "one process per run uses the cores better"
        )
    if k < CPU_MIN_MEMBERS:
        return False, f"on a CPU a batch of {k} {c.student} students is no faster than one by one"
    return True, f"on a CPU a batch of {k} {c.student} students is several times faster than one by one"


# ---------------------------------------------------------------- the stacked students


class Stack:
    """K models of one architecture as stacked parameters and buffers: one call runs them
    all (``forward``), each on its own batch; ``write(k, model)`` copies member k back into
    a model."""

    def __init__(self, members: list[nn.Module], tap_names: list[str], in_shape: tuple):
        self.params, self.buffers = stack_module_state(members)
        self.in_shape = tuple(in_shape)
        for p in self.params.values():  # stack_module_state returns leaves that need grad
            p.requires_grad_(True)
        self.base = copy.deepcopy(members[0]).to("meta")
        self.names = list(tap_names)
        self.size = len(members)

    def _one(self, params, buffers, x):
        if not self.names:
            return functional_call(self.base, (params, buffers), (x,)), []
        with models.FeatureTaps(self.base, self.names) as taps:
            logits = functional_call(self.base, (params, buffers), (x,))
            return logits, [taps.outputs[n] for n in self.names]

    def forward(self, x: Tensor, train_mode: bool = True) -> tuple[Tensor, list[Tensor]]:
        """``x``: (K, B, ...) one batch per member, or (B, ...) shared by all (in_dims None).
        Returns the logits (K, B, classes) and the tapped features, each (K, B, ...)."""
        self.base.train(train_mode)
        in_x = 0 if x.dim() == len(self.in_shape) + 2 else None
        return vmap(self._one, in_dims=(0, 0, in_x))(self.params, self.buffers, x)

    def write(self, k: int, model: nn.Module) -> None:
        with torch.no_grad():
            for name, t in model.named_parameters():
                t.copy_(self.params[name][k])
            for name, t in model.named_buffers():
                t.copy_(self.buffers[name][k])


class StackedAdam:
    """Adam over stacked parameters with a learning rate per member: the update of
    ``torch.optim.Adam`` (the multi-tensor form), member by member the same numbers."""

    def __init__(self, params: list[Tensor], lrs: Tensor, betas=(0.9, 0.999), eps=1e-8):
        self.params = params
        self.lrs = lrs  # (K,), changed by the caller (schedules, members that ended: 0)
        self.beta1, self.beta2, self.eps = betas[0], betas[1], eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        torch._foreach_lerp_(self.m, grads, 1 - b1)
        torch._foreach_mul_(self.v, b2)
        torch._foreach_addcmul_(self.v, grads, grads, 1 - b2)
        bc1 = 1 - b1**self.t
        bc2_sqrt = (1 - b2**self.t) ** 0.5
        denom = torch._foreach_sqrt(self.v)
        torch._foreach_div_(denom, bc2_sqrt)
        torch._foreach_add_(denom, self.eps)
        ratio = torch._foreach_div(self.m, denom)
        step = self.lrs / bc1
        for p, r in zip(self.params, ratio):
            p.sub_(r * step.view(-1, *([1] * (p.dim() - 1))))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def _schedule(lr: float, total_steps: int) -> list[float]:
    """The learning rate of each step of ``train.adam_cosine`` (its own scheduler, stepped)."""
    dummy = torch.zeros(1, requires_grad=True)
    opt, sched = train.adam_cosine([dummy], lr, max(total_steps, 1))
    out = []
    for _ in range(total_steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()  # no gradient: changes nothing, but keeps the scheduler's order check quiet
        sched.step()
    return out


class Together:
    """Models of one architecture trained as one: ``forward`` runs them all (each on its
    own batch, or all on one), ``step(i)`` updates each with Adam at step ``i`` of its own
    learning-rate schedule (``train.adam_cosine``'s: ``lrs`` per model over
    ``total_steps``), ``write_back(k)`` copies model k's trained weights and BatchNorm
    statistics back into it (to evaluate, snapshot or save it)."""

    def __init__(self, nets: list[nn.Module], lrs: list[float], total_steps: int, in_shape, tap_names=()):
        self.nets = nets
        self.stack = Stack(nets, list(tap_names), in_shape)
        self.schedules = [_schedule(lr, total_steps) for lr in lrs]
        first = [sch[0] if sch else 0.0 for sch in self.schedules]
        self.device = models.device_of(nets[0])
        self.opt = StackedAdam(list(self.stack.params.values()), torch.tensor(first, device=self.device))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        return self.stack.forward(x)

    def zero_grad(self) -> None:
        self.opt.zero_grad()

    def step(self, i: int, active: list[bool] | None = None) -> None:
        """Adam step ``i`` for every model (``active[k]`` False: model k stays as it is)."""
        self.opt.lrs = torch.tensor(
            [sch[i] if active is None or active[k] else 0.0 for k, sch in enumerate(self.schedules)],
            device=self.device,
        )
        self.opt.step()

    def write_back(self, k: int) -> None:
        self.stack.write(k, self.nets[k])


@dataclass
class _Member:
    trainer_index: int
    role: str  # "student" or "baseline"
    model: nn.Module


# ---------------------------------------------------------------- the run


class BatchedRun:
    """Train the students of ``configs`` (one architecture, one dataset, one number of
    steps: :func:`why_not`) together. ``trainers[i]`` holds config i's models, history and
    result, as if it had run alone."""

    def __init__(
        self,
        configs: list[Config],
        teacher: teachers.Teacher | None = None,
        device=None,
        dataset: data_mod.Dataset | None = None,
        teacher_progress=None,
    ):
        reason = why_not(configs)
        if reason is not None:
            raise ConfigError(f"these runs cannot train as one batch: {reason}")
        first = configs[0].resolved().validate()
        self.device = device or models.pick_device()
        ds = dataset if dataset is not None else data_mod.load(first.dataset, train_subset=first.train_subset)
        self.trainers: list[train.Trainer] = []
        for cfg in configs:
            tr = train.Trainer(cfg, teacher=teacher, device=self.device, teacher_progress=teacher_progress, dataset=ds)
            if teacher is None and tr.method.make_teacher is None:
                teacher = tr.teacher  # one teacher for all (a method's own teachers, e.g. an ensemble, stay its own)
            self.trainers.append(tr)
        self.members: list[_Member] = []
        for i, tr in enumerate(self.trainers):
            self.members.append(_Member(i, "student", tr.student))
            if tr.baseline is not None:
                self.members.append(_Member(i, "baseline", tr.baseline))
        self._stop = threading.Event()
        self.results: list[dict | None] = [None] * len(self.trainers)

    @property
    def trainer(self):
        """The one Trainer when a single config runs (the Lab's pair), else None."""
        return self.trainers[0] if len(self.trainers) == 1 else None

    @property
    def teacher(self):
        """The teacher of the first run (every run of a batch shares it, unless its method
        brings its own)."""
        return self.trainers[0].teacher

    @property
    def result(self):
        return self.results[0] if len(self.trainers) == 1 else self.results

    def stop(self) -> None:
        self._stop.set()
        for tr in self.trainers:
            tr.stop()

    # ---------------------------------------------------------- the loop
    def events(self):
        single = len(self.trainers) == 1
        trs = self.trainers
        train.set_threads()
        t_start = time.perf_counter()
        for tr in trs:
            tr.status = "running"
            tr.prepare()
            tr.train_seconds = 0.0
        ts0 = trs[0].transfer
        steps_per_epoch, total_steps = ts0.steps_per_epoch, ts0.total_steps
        names = list(dict.fromkeys(p[1] for tr in trs for p in tr.pairs))
        group = Together(
            [m.model for m in self.members],
            [trs[m.trainer_index].config.lr for m in self.members],
            total_steps,
            tuple(ts0.x.shape[1:]),
            names,
        )
        self._group = group
        member_of = {(m.trainer_index, m.role): k for k, m in enumerate(self.members)}
        mod_opts = [
            train.adam_cosine(tr.modules.parameters(), tr.config.lr, total_steps) if tr.modules is not None else None
            for tr in trs
        ]
        for i, tr in enumerate(trs):
            yield self._tag(
                {
                    "kind": "start",
                    "total_steps": total_steps,
                    "epochs": tr.config.epochs,
                    "transfer_set": len(tr.transfer),
                    "labelled": int(tr.labelled.sum()),
                    "teacher_acc": metrics.accuracy(tr.t_test_logits, tr.ds.y_test),
                    "pairs": [(p[0], p[1]) for p in tr.pairs],
                    "config": tr.config.to_dict(),
                    "members": len(self.members),
                },
                i,
                single,
            )
        live = [True] * len(trs)  # still training
        outcome = [("finished", "")] * len(trs)
        step, epoch = 0, 0
        for epoch in range(1, trs[0].config.epochs + 1):
            for tr in trs:
                tr.student.train()
                if tr.modules is not None:
                    tr.modules.train()
            batch_iters = [tr.transfer.batches() for tr in trs]
            for b in range(steps_per_epoch):
                if self._stop.is_set():
                    for i in range(len(trs)):
                        if live[i]:
                            outcome[i] = ("stopped", f"stopped by the user at step {step} of {total_steps}")
                    break
                t0 = time.perf_counter()
                idxs = [next(it) for it in batch_iters]
                xs = torch.stack([trs[m.trainer_index].x[idxs[m.trainer_index]] for m in self.members])
                logits, feats = group.forward(xs)
                total = None
                recs = {}
                for i, tr in enumerate(trs):
                    if not live[i]:
                        continue
                    idx = idxs[i]
                    yb, lab = tr.y[idx], tr.labelled[idx]
                    k = member_of[(i, "student")]
                    s_feats = [feats[names.index(p[1])][k] for p in tr.pairs]
                    t_logits = tr.t_logits[idx]
                    if not tr.pairs:
                        t_feats = []
                    elif tr.t_feats is not None:
                        t_feats = [f[idx] for f in tr.t_feats]
                    else:
                        with torch.no_grad():
                            _, t_feats = train.forward_taps(tr.teacher.model, tr.x[idx], [p[0] for p in tr.pairs])
                    tracked: dict = {}
                    terms = tr.loss_terms(
                        logits[k], t_logits, yb, lab, s_feats, t_feats, idx, epoch - 1 + b / steps_per_epoch, tracked
                    )
                    loss = sum(terms.values())
                    b_loss = None
                    if (i, "baseline") in member_of:
                        b_loss = train.masked_ce(logits[member_of[(i, "baseline")]], yb, lab)
                    broke = train.divergence({"student": loss, "scratch baseline": b_loss}, step, epoch, tr.config.lr)
                    if broke:
                        live[i] = False
                        outcome[i] = ("diverged", broke)
                        self._write_back(i, member_of)  # kept as it is now; its slice trains no more
                        continue
                    total = loss if total is None else total + loss
                    if b_loss is not None:
                        total = total + b_loss
                    recs[i] = (terms, loss, b_loss, tracked)
                if total is None:  # every member has ended
                    break
                group.zero_grad()
                for mo in mod_opts:
                    if mo is not None:
                        mo[0].zero_grad(set_to_none=True)
                total.backward()
                group.step(step, [live[m.trainer_index] for m in self.members])
                for i, mo in enumerate(mod_opts):
                    if mo is not None and live[i]:
                        mo[0].step()
                        mo[1].step()
                step += 1
                dt = time.perf_counter() - t0
                for i, (terms, loss, b_loss, tracked) in recs.items():
                    tr = trs[i]
                    tr.train_seconds += dt
                    rec = {
                        "step": step,
                        "epoch": epoch,
                        "losses": {n: v.item() for n, v in terms.items()},
                        "loss": loss.item(),
                        "baseline_loss": None if b_loss is None else b_loss.item(),
                    }
                    if tracked:
                        rec["tracked"] = {n: float(v) for n, v in tracked.items()}
                    tr.steps.append(rec)
                    yield self._tag(
                        {"kind": "step", "total_steps": total_steps, "elapsed": time.perf_counter() - t_start, **rec},
                        i,
                        single,
                    )
            stopped = self._stop.is_set()
            if not any(live):
                break
            if stopped:
                break
            for i, tr in enumerate(trs):
                if live[i]:
                    self._write_back(i, member_of)
                    ev = tr.evaluate(epoch)
                    tr.history.append(ev)
                    tr.take_snapshot(epoch)
                    yield self._tag({"kind": "epoch", "elapsed": time.perf_counter() - t_start, **ev}, i, single)
        for i, tr in enumerate(trs):
            if live[i]:
                self._write_back(i, member_of)
            status, message = outcome[i]
            if status == "stopped" and step > 0 and (not tr.history or tr.history[-1]["step"] != len(tr.steps)):
                ev = tr.evaluate(epoch, partial=True)
                tr.history.append(ev)
                tr.take_snapshot(epoch)
                yield self._tag({"kind": "epoch", "elapsed": time.perf_counter() - t_start, **ev}, i, single)
            tr.status = status
            tr.result = tr.summary(status, message, len(tr.steps), total_steps, time.perf_counter() - t_start)
            tr.result["batched"] = {"members": len(self.members), "runs": len(trs)}
            self.results[i] = tr.result
            yield self._tag({"kind": "end", "status": status, "message": message, "result": tr.result}, i, single)
        if not single:
            yield {"kind": "end", "status": "finished", "message": "", "results": list(self.results), "result": None}

    def run(self, on_event=None) -> list[dict]:
        for ev in self.events():
            if on_event is not None:
                on_event(ev)
        return list(self.results)

    # ---------------------------------------------------------- helpers
    @staticmethod
    def _tag(ev: dict, i: int, single: bool) -> dict:
        if not single:
            ev["member"] = i
        return ev

    def _write_back(self, i: int, member_of: dict) -> None:
        self._group.write_back(member_of[(i, "student")])
        if (i, "baseline") in member_of:
            self._group.write_back(member_of[(i, "baseline")])


def make_run(config: Config, teacher_progress=None, teacher: teachers.Teacher | None = None):
    """The run of any method (``train.make_run``), except that a student with a scratch
    baseline (the Lab's distilled + scratch pair) trains as a batch of two where that is
    faster (``faster_together``: on a GPU): the same events, the same numbers."""
    cfg = config.resolved().validate()
    if cfg.method_obj.pipeline is None and cfg.baseline and faster_together(cfg, 2)[0]:
        return BatchedRun([cfg], teacher=teacher, teacher_progress=teacher_progress)
    return train.make_run(cfg, teacher_progress=teacher_progress, teacher=teacher)


def distil_many(configs: list[Config], teacher: teachers.Teacher | None = None, on_event=None) -> list[dict]:
    """Train ``configs`` as batched groups where they can (same architecture and data),
    each other config on its own; returns their results in order."""
    results: list[dict | None] = [None] * len(configs)
    groups: dict = {}
    for i, c in enumerate(configs):
        groups.setdefault(group_key(c) or ("alone", i), []).append(i)
    for key, idx in groups.items():
        if key[0] == "alone":
            results[idx[0]] = train.distil(configs[idx[0]], on_event=on_event, teacher=teacher)
            continue
        size = group_size(configs[idx[0]])
        for lo in range(0, len(idx), size):
            part = idx[lo : lo + size]
            run = BatchedRun([configs[i] for i in part], teacher=teacher)
            for r, i in zip(run.run(on_event), part):
                results[i] = r
    return results

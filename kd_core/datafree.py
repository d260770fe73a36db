"""No labels, no data: data-free and label-free distillation.

Data-free (the student never sees a real training image):

- ``deepinversion`` (Yin et al. 2020, *Dreaming to Distill*): optimise a batch of noise
  images so that the frozen teacher assigns them requested classes, while the mean and
  variance of every BatchNorm layer's input match that layer's running statistics
  (:func:`bn_statistics_loss`), with small image priors (total variation, L2). The student
  is then distilled on those images only (KD at T, no labels).
- ``dfad`` (Fang et al. 2019, *Data-Free Adversarial Distillation*; Micaelli & Storkey 2019,
  *Zero-shot Knowledge Transfer*): a small generator makes images on which student and
  teacher disagree most; the student learns to agree on them. Optionally the generator also
  pays the BatchNorm-statistics term.

Label-free (real images, no label at all):

- ``seed`` (Fang et al. 2021, *SEED*; Abbasi Koohpayegani et al. 2020, *CompRess*): the
  student matches the teacher's similarity distribution of each image over a queue of other
  images' teacher embeddings, at a temperature; soft targets (KD at alpha = 1) beside it.
  Representations are judged as self-supervised work does: k-NN accuracy and a linear probe
  on the embedding (:func:`knn_accuracy`, :func:`linear_probe_accuracy`), beside the
  teacher's and a randomly initialised student's.

Each method is a pipeline of events like ``Trainer.events()`` (start, step, epoch, end),
tagged with a ``"stage"``; stopping keeps what was done.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import data as data_mod
from . import losses, methods, metrics, models, train
from .config import Config

# ---------------------------------------------------------------- losses


def bn_statistics_loss(inputs: list[Tensor], means: list[Tensor], variances: list[Tensor]) -> Tensor:
    """DeepInversion's feature-distribution regulariser (Yin et al. 2020, eq. 4)::

        R_BN(x) = sum_l || mu_l(x) - E[mu_l] ||_2 + || sigma_l^2(x) - E[sigma_l^2] ||_2

    ``inputs[l]`` is the input of BatchNorm layer l for the batch x, (B, C, H, W) or (B, C);
    mu_l and sigma_l^2 are its per-channel mean and (biased) variance over the batch and the
    spatial positions; ``means`` / ``variances`` are the layer's running statistics."""
    total = inputs[0].new_zeros(())
    for a, mu, var in zip(inputs, means, variances):
        dims = [0] + list(range(2, a.dim()))
        total = (
            total
            + torch.linalg.vector_norm(a.mean(dims) - mu)
            + torch.linalg.vector_norm(a.var(dims, unbiased=False) - var)
        )
    return total


def tv_loss(x: Tensor) -> Tensor:
    """Total variation prior: the mean absolute difference of horizontally and vertically
    neighbouring pixels (anisotropic, L1), which favours smooth images."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def seed_loss(student_emb: Tensor, teacher_emb: Tensor, queue: Tensor, tau_s: float, tau_t: float) -> Tensor:
    """SEED (Fang et al. 2021): over the anchors D = [queue; z_T(x_i)] (the teacher's
    L2-normalised embeddings of other images, then the image's own), the teacher's similarity
    distribution p_T(j|i) = softmax_j(z_T(x_i) . d_j / tau_t) is the target of the student's
    p_S(j|i) = softmax_j(z_S(x_i) . d_j / tau_s)::

        L = -1/B sum_i sum_j p_T(j|i) log p_S(j|i)

    ``student_emb`` (B, D) is the student's embedding projected to the teacher's dimension;
    both embeddings are L2-normalised here; ``queue`` (K, D) is already normalised."""
    s = F.normalize(student_emb, dim=1)
    t = F.normalize(teacher_emb, dim=1)
    # column j < K: queue entry j; last column: the image's own teacher embedding
    logits_s = torch.cat([s @ queue.T, (s * t).sum(1, keepdim=True)], 1)
    logits_t = torch.cat([t @ queue.T, (t * t).sum(1, keepdim=True)], 1)
    p_t = F.softmax(logits_t / tau_t, dim=1)
    return -(p_t * F.log_softmax(logits_s / tau_s, dim=1)).sum(1).mean()


# ---------------------------------------------------------------- BatchNorm statistics


class BNStatistics:
    """Forward hooks on every BatchNorm layer of a (frozen, eval-mode) teacher: after a forward
    pass, ``loss()`` is :func:`bn_statistics_loss` of that pass's layer inputs against the
    layers' running statistics. ``with BNStatistics(teacher) as bn: teacher(x); bn.loss()``."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.inputs: list[Tensor] = []
        self._handles = []

    def __enter__(self) -> BNStatistics:
        for layer in self.layers:
            self._handles.append(layer.register_forward_hook(self._hook))
        return self

    def _hook(self, module, inputs, output):
        self.inputs.append(inputs[0])

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def loss(self) -> Tensor:
        if not self.layers:
            raise ValueError("the teacher has no BatchNorm layer")
        inputs, self.inputs = self.inputs, []
        return bn_statistics_loss(inputs, [m.running_mean for m in self.layers], [m.running_var for m in self.layers])


# ---------------------------------------------------------------- model inversion


def invert(
    teacher: nn.Module,
    targets: Tensor,
    in_shape: tuple,
    steps: int,
    bn_weight: float,
    tv_weight: float,
    l2_weight: float,
    lr: float,
    jitter: int = 2,
    seed: int = 0,
):
    """DeepInversion of one batch: start from Gaussian noise x (in the dataset's normalised
    space) and minimise, with Adam, ::

        CE(teacher(jitter(x)), targets) + bn_weight R_BN + tv_weight R_TV(x) + l2_weight mean(x^2)

    (jitter: a random shift of up to ``jitter`` pixels at each step, as in the paper).
    The pixels' learning rate follows a cosine from ``lr`` to 0.
    Yields one dict per step: ``step``, the terms ``ce``, ``bn``, ``tv``, ``l2`` (unweighted),
    ``confidence`` (the teacher's mean probability of the requested class), ``per_class``
    (the same per requested class, NaN for classes not requested) and ``images`` (the current
    batch, detached). The teacher must be frozen and in eval mode."""
    device = targets.device
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((len(targets), *in_shape), generator=gen).to(device).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr, betas=(0.5, 0.9))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    num_classes = None
    with BNStatistics(teacher) as bn:
        for step in range(1, steps + 1):
            xi = x
            if jitter > 0:
                dx, dy = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
                xi = torch.roll(x, shifts=(dx, dy), dims=(-1, -2))
            z = teacher(xi)
            num_classes = num_classes or z.shape[1]
            ce = F.cross_entropy(z, targets)
            r_bn = bn.loss() if bn.layers else z.new_zeros(())
            r_tv = tv_loss(x)
            r_l2 = x.pow(2).mean()
            loss = ce + bn_weight * r_bn + tv_weight * r_tv + l2_weight * r_l2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                p = F.softmax(z, 1).gather(1, targets[:, None])[:, 0]
                counts = torch.zeros(num_classes, device=device).index_add_(0, targets, torch.ones_like(p))
                sums = torch.zeros(num_classes, device=device).index_add_(0, targets, p)
                per_class = torch.where(counts > 0, sums / counts.clamp_min(1), torch.nan)
            yield {
                "step": step,
                "ce": ce.item(),
                "bn": r_bn.item(),
                "tv": r_tv.item(),
                "l2": r_l2.item(),
                "confidence": p.mean().item(),
                "per_class": per_class.tolist(),
                "images": x.detach(),
            }


# ---------------------------------------------------------------- shared pieces


class Run:
    """The events of a data-free or label-free run, with ``stop()``: the job manager (or any
    thread) asks the run to end at its next step; what was done is kept and evaluated, and
    the last event is still ``{"kind": "end", "status": "stopped", "result": ...}``.
    ``models`` holds the trained networks (frozen CPU copies) once the run has ended:
    "student", and for ``seed`` also "random" (the student before training)."""

    def __init__(self, events_fn, config: Config, teacher_progress=None):
        self._stop = threading.Event()
        self.models: dict[str, nn.Module] = {}
        self._events = events_fn(config, teacher_progress, self)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        return next(self._events)

    def close(self) -> None:
        self._events.close()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()


def background(ds) -> float:
    """The value of a black pixel in the dataset's normalised space (first channel)."""
    return -ds.mean[0] / ds.std[0]


def augment(x: Tensor, fill: float, gen: torch.Generator) -> Tensor:
    """A random small affine warp of each image (rotation up to 15 degrees, scale 0.9-1.1,
    shift up to 3 pixels on a 28-pixel image), the uncovered border filled with ``fill``. The
    teacher labels the warped images afresh, so any warp is still a valid transfer input."""
    b = len(x)
    r = torch.rand(b, 4, generator=gen).to(x.device)
    angle = (r[:, 0] - 0.5) * (2 * torch.pi / 12)
    scale = 1 + (r[:, 1] - 0.5) * 0.2
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = scale * torch.cos(angle)
    theta[:, 0, 1] = -scale * torch.sin(angle)
    theta[:, 1, 0] = scale * torch.sin(angle)
    theta[:, 1, 1] = scale * torch.cos(angle)
    theta[:, :, 2] = (r[:, 2:] - 0.5) * 0.22
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - fill, grid, align_corners=False, padding_mode="zeros") + fill


def image_grid(images: Tensor, labels: Tensor, ds, num_classes: int, rows: int = 2) -> np.ndarray:
    """Display pixels (uint8, (rows*H, C*W) greyscale or (rows*H, C*W, 3) colour): column c
    holds the first ``rows`` images labelled c (black where there are fewer)."""
    c, h, w = images.shape[1:]
    out = torch.zeros(rows * h, num_classes * w, c)
    pix = ds.denormalise(images.detach().float().cpu())
    labels = labels.cpu()
    for k in range(num_classes):
        idx = (labels == k).nonzero().flatten()[:rows]
        for r, i in enumerate(idx.tolist()):
            out[r * h : (r + 1) * h, k * w : (k + 1) * w] = pix[i].permute(1, 2, 0)
    arr = (out.numpy() * 255).round().astype(np.uint8)
    return arr[..., 0] if c == 1 else arr


def _frozen(model: nn.Module) -> nn.Module:
    m = copy.deepcopy(model).cpu().eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _teacher(cfg: Config, teacher_progress):
    return train.get_teacher(
        cfg.dataset, cfg.teacher, cfg.teacher_epochs, train_subset=cfg.train_subset, progress=teacher_progress
    )


def _start(config: Config, teacher_progress) -> tuple:
    """What every run here begins with: the resolved, validated config, its method's
    parameters, the device (torch's threads set), the start time and the teacher."""
    cfg = config.resolved().validate()
    device = models.pick_device()
    train.set_threads()
    t_start = time.perf_counter()
    return cfg, cfg.method_params(), device, t_start, _teacher(cfg, teacher_progress)


def _block(model: nn.Module, x_test: Tensor, y_test: Tensor, t_logits: Tensor | None, ds, arch: str) -> dict:
    out = metrics.summary(metrics.predict_logits(model, x_test), y_test, t_logits, ds.num_classes)
    out.update(models.profile(model, tuple(x_test.shape[1:])))
    out["arch"] = arch
    return out


def _comparison(cfg: Config, teacher, stop: threading.Event, steps: list):
    """The same student distilled on the real training images (KD at the config's T,
    alpha 0.9, every label) beside the same student trained from scratch on those labels,
    as one ordinary Trainer run; its events are tagged ``stage = "real data"``."""
    real = replace(cfg, method="kd", alpha=0.9, labeled_fraction=1.0, params={}, pairs=[], baseline=True, assistant="")
    tr = train.Trainer(real, teacher=teacher)
    for ev in tr.events():
        if stop.is_set():
            tr.stop()
        ev = {**ev, "stage": "real data"}
        if ev["kind"] == "end":
            ev["kind"] = "stage_end"
        elif ev["kind"] == "step":
            steps.append(
                {k: ev[k] for k in ("step", "epoch", "losses", "loss", "baseline_loss")} | {"stage": "real data"}
            )
        yield ev
    return tr.result


# ---------------------------------------------------------------- DeepInversion


def _test_set(cfg: Config, device, t_model: nn.Module):
    """The real *test* images (for evaluation only), the dataset's facts and the teacher's
    logits on those images. The data-free runs never read ``ds.x_train`` / ``ds.y_train``."""
    ds = data_mod.load(cfg.dataset, train_subset=cfg.train_subset)
    x_test = ds.x_test.to(device)
    return ds, x_test, ds.y_test, metrics.predict_logits(t_model, x_test)


def _eval_every(total: int, points: int) -> set[int]:
    points = max(1, min(points, total))
    return {round(total * (k + 1) / points) for k in range(points)}


def deepinversion_events(config: Config, teacher_progress=None) -> Run:
    """DeepInversion then KD on the synthetic images only (see :func:`_deepinversion`)."""
    return Run(_deepinversion, config, teacher_progress)


def _deepinversion(config: Config, teacher_progress, run: Run):
    """DeepInversion then KD on the synthetic images only.

    Stage "synthesis": ``images`` images are optimised in batches of ``synth_batch`` for
    ``synth_steps`` Adam steps each (:func:`invert`), classes balanced. While a batch forms,
    the student already takes a KD step on it at every step from a quarter of the way on
    (the teacher's logits of that step come for free). Stage "distillation": ``distil_steps``
    more KD steps at T on augmented synthetic images, relabelled by the teacher, evaluated on
    the real test set ``epochs`` times. Stage "real data" (with ``baseline``): the same
    student distilled on the real training images, and trained from scratch on them.

    Events: "start"; "step" (``stage`` synthesis: ``losses`` ce / bn / tv / l2, unweighted; stage
    distillation: ``losses`` kd); "epoch" (stage synthesis, every few steps: ``confidence``,
    ``per_class``, ``bn``, and ``grid``, the images so far; stage distillation: ``student_acc``
    on the real test set); the comparison's own events; "end" with the result."""
    stop = run._stop
    cfg, p, device, t_start, teacher = _start(config, teacher_progress)
    t_model = teacher.model
    ds, x_test, y_test, t_test_logits = _test_set(cfg, device, t_model)
    in_shape, C = tuple(x_test.shape[1:]), ds.num_classes
    torch.manual_seed(cfg.seed)
    student = models.build(cfg.student, in_shape, C).to(device)
    n_images, batch = int(p["images"]), int(p["synth_batch"])
    n_batches = -(-n_images // batch)
    synth_steps, distil_steps = int(p["synth_steps"]), int(p["distil_steps"])
    total_synth = n_batches * synth_steps
    warm = synth_steps // 4
    online_steps = n_batches * (synth_steps - warm)
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr, foreach=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, online_steps + distil_steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    fill = background(ds)
    T = cfg.temperature
    yield {
        "kind": "start",
        "stage": "synthesis",
        "stages": ["synthesis", "distillation"] + (["real data"] if cfg.baseline else []),
        "total_steps": total_synth,
        "images": n_images,
        "batches": n_batches,
        "teacher_acc": teacher.test_accuracy,
        "config": cfg.to_dict(),
    }
    status, message = "finished", ""
    step_log, history, synth_log = [], [], []
    made_x, made_y = [], []
    synth_seconds = 0.0
    step = 0
    every = max(1, synth_steps // 20)
    for b in range(n_batches):
        if stop.is_set():
            break
        size = min(batch, n_images - b * batch)
        perm = torch.randperm(size, generator=gen)
        targets = (perm % C).to(device)
        t0 = time.perf_counter()
        last = None
        for rec in invert(
            t_model,
            targets,
            in_shape,
            synth_steps,
            p["bn_weight"],
            p["tv_weight"],
            p["l2_weight"],
            p["synth_lr"],
            jitter=in_shape[-1] // 14,  # 2 pixels on 28x28 and 32x32, none on 8x8
            seed=cfg.seed * 1000 + b,
        ):
            last = rec
            step += 1
            x_now = rec["images"]
            if rec["step"] > warm:  # the student learns from the images as they form
                student.train()
                with torch.no_grad():
                    t_logits = t_model(x_now)
                s_loss = losses.kd_loss(student(x_now), t_logits, T)
                opt.zero_grad(set_to_none=True)
                s_loss.backward()
                opt.step()
                sched.step()
            terms = {k: rec[k] for k in ("ce", "bn", "tv", "l2")}
            entry = {
                "step": step,
                "epoch": b + 1,
                "losses": terms,
                "loss": rec["ce"]
                + p["bn_weight"] * rec["bn"]
                + p["tv_weight"] * rec["tv"]
                + p["l2_weight"] * rec["l2"],
                "baseline_loss": None,
                "stage": "synthesis",
            }
            step_log.append(entry)
            yield {"kind": "step", "total_steps": total_synth, "elapsed": time.perf_counter() - t_start, **entry}
            if rec["step"] % every == 0 or rec["step"] == synth_steps or stop.is_set():
                snap = {
                    "stage": "synthesis",
                    "step": step,
                    "batch": b + 1,
                    "batch_step": rec["step"],
                    "confidence": rec["confidence"],
                    "per_class": rec["per_class"],
                    "bn": rec["bn"],
                    "ce": rec["ce"],
                }
                synth_log.append(snap)
                yield {"kind": "epoch", **snap, "grid": image_grid(x_now, targets, ds, C)}
            if stop.is_set():
                break
        synth_seconds += time.perf_counter() - t0
        if last is not None:
            made_x.append(last["images"].detach())
            made_y.append(targets)
    if stop.is_set():
        status, message = "stopped", f"stopped by the user during synthesis (batch {len(made_x)} of {n_batches})"
    yield {"kind": "stage_end", "stage": "synthesis"}
    x_syn = torch.cat(made_x) if made_x else torch.empty(0, *in_shape, device=device)
    y_req = torch.cat(made_y) if made_y else torch.empty(0, dtype=torch.long, device=device)
    # stage 2: distillation on the synthetic images only
    t_distil = time.perf_counter()
    if len(x_syn) and status == "finished":
        with torch.no_grad():
            syn_logits = metrics.predict_logits(t_model, x_syn)
        evals = _eval_every(distil_steps, cfg.epochs)
        yield {"kind": "start", "stage": "distillation", "total_steps": distil_steps, "transfer_set": len(x_syn)}
        bs = min(cfg.batch_size, len(x_syn))
        for k in range(1, distil_steps + 1):
            if stop.is_set():
                status, message = "stopped", f"stopped by the user at distillation step {k - 1} of {distil_steps}"
                break
            student.train()
            idx = torch.randint(len(x_syn), (bs,), generator=gen).to(device)
            xb = augment(x_syn[idx], fill, gen)
            with torch.no_grad():
                t_logits = t_model(xb)
            loss = losses.kd_loss(student(xb), t_logits, T)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            entry = {"step": k, "epoch": len(history) + 1, "losses": {"kd": loss.item()}, "loss": loss.item()}
            entry |= {"baseline_loss": None, "stage": "distillation"}
            step_log.append(entry)
            yield {"kind": "step", "total_steps": distil_steps, "elapsed": time.perf_counter() - t_start, **entry}
            if k in evals:
                ev = _student_eval(student, x_test, y_test, t_test_logits, len(history) + 1, k)
                history.append(ev)
                yield {"kind": "epoch", "stage": "distillation", "elapsed": time.perf_counter() - t_start, **ev}
        yield {"kind": "stage_end", "stage": "distillation"}
    else:
        syn_logits = None
    distil_seconds = time.perf_counter() - t_distil
    if not history or history[-1]["step"] != (step_log[-1]["step"] if step_log else 0):
        ev = _student_eval(student, x_test, y_test, t_test_logits, len(history) + 1, len(step_log), partial=True)
        history.append(ev)
        yield {"kind": "epoch", "stage": "distillation", "elapsed": time.perf_counter() - t_start, **ev}
    student.eval()
    result = _datafree_result(cfg, teacher, ds, student, x_test, y_test, t_test_logits, history, step_log)
    result.update(
        status=status,
        message=message,
        synthesis={
            "images": len(x_syn),
            "batches": len(made_x),
            "steps_per_batch": synth_steps,
            "seconds": synth_seconds,
            "bn_weight": p["bn_weight"],
            "final_bn": synth_log[-1]["bn"] if synth_log else None,
            "final_confidence": synth_log[-1]["confidence"] if synth_log else None,
            "teacher_agrees_with_requested_class": (
                float((syn_logits.argmax(1).cpu() == y_req.cpu()).float().mean()) if syn_logits is not None else None
            ),
            "log": synth_log,
        },
        synthesis_seconds=synth_seconds,
        distillation_seconds=distil_seconds,
        sample_grid=image_grid(x_syn, y_req, ds, C, rows=4).tolist() if len(x_syn) else [],
    )
    run.models["student"] = _frozen(student)
    if cfg.baseline and status == "finished":
        real = yield from _comparison(cfg, teacher, stop, step_log)
        if real is not None:
            result["real_kd"] = real["student"]
            result["baseline"] = real["baseline"]
            if real["status"] != "finished":
                result["status"], result["message"] = real["status"], real["message"]
    result["wall_seconds"] = time.perf_counter() - t_start
    result["report"] = _datafree_report(result)
    yield {"kind": "end", "status": result["status"], "message": result["message"], "result": result}


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _datafree_report(r: dict) -> list[str]:
    syn = r["synthesis"]
    lines = [
        f"transfer set: synthetic ({syn['images']} images, {syn['batches']} batches x {syn['steps_per_batch']} steps); "
        f"real training images seen by the student: {r['real_training_images_seen']}",
        f"synthesis {syn['seconds']:.1f} s, distillation {r['distillation_seconds']:.1f} s, "
        f"total {r['wall_seconds']:.1f} s; teacher confidence on its dreams {_pct(syn['final_confidence'])}",
        f"data-free student: {_pct(r['student']['test_accuracy'])} on the real test set",
    ]
    if "real_kd" in r:
        lines.append(f"same student distilled on real images: {_pct(r['real_kd']['test_accuracy'])}")
    if "baseline" in r:
        lines.append(f"same student from scratch on real labels: {_pct(r['baseline']['test_accuracy'])}")
    return lines


def _student_eval(student, x_test, y_test, t_test_logits, epoch: int, step: int, partial: bool = False) -> dict:
    s = metrics.predict_logits(student, x_test)
    acc = metrics.accuracy(s, y_test)
    agree = metrics.agreement(s, t_test_logits)
    return {
        "epoch": epoch,
        "step": step,
        "partial": partial,
        "student_acc": acc,
        "student_agreement": agree,
        "agreement": agree,
        "teacher_acc": metrics.accuracy(t_test_logits, y_test),
    }


def _datafree_result(cfg, teacher, ds, student, x_test, y_test, t_test_logits, history, step_log) -> dict:
    k = ds.num_classes
    t_block = metrics.summary(t_test_logits, y_test, None, k) | teacher.profile(tuple(x_test.shape[1:]))
    s_block = _block(student, x_test, y_test, t_test_logits, ds, cfg.student)
    s_block["history"] = [
        {"epoch": h["epoch"], "test_accuracy": h["student_acc"], "agreement": h["agreement"]} for h in history
    ]
    return {
        "config": cfg.to_dict(),
        "device": str(x_test.device),
        "classes": list(ds.classes),
        "pairs": [],
        "transfer_set": "synthetic",
        "real_training_images_seen": 0,
        "labels_used": 0,
        "teacher": {"arch": teacher.arch, **t_block},
        "student": s_block,
        "test_accuracy": s_block["test_accuracy"],
        "steps": len(step_log),
        "total_steps": len(step_log),
        "step_losses": step_log,
        "epochs": history,
    }


# ---------------------------------------------------------------- label-free: SEED


@torch.no_grad()
def embeddings(model: nn.Module, x: Tensor, layer: str = "embed", batch_size: int = 1024) -> Tensor:
    """The output of ``layer`` (the penultimate vector by default) for every image, flattened,
    in eval mode, on the CPU."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    with models.FeatureTaps(model, [layer]) as taps:
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size].to(device))
            out.append(taps[layer].flatten(1).float().cpu())
    model.train(was)
    return torch.cat(out)


def knn_accuracy(train_emb, train_y, test_emb, test_y, k: int = 20, tau: float = 0.07) -> float:
    """Weighted k-NN accuracy of an embedding (Wu et al. 2018, the usual self-supervised
    protocol): each test image takes the k training images of highest cosine similarity s,
    which vote for their labels with weight exp(s / tau). Labels are used only here, to judge."""
    tr = F.normalize(torch.as_tensor(train_emb, dtype=torch.float32), dim=1)
    te = F.normalize(torch.as_tensor(test_emb, dtype=torch.float32), dim=1)
    ytr, yte = torch.as_tensor(train_y).long(), torch.as_tensor(test_y).long()
    k = min(k, len(tr))
    classes = int(max(ytr.max(), yte.max())) + 1
    correct = 0
    for i in range(0, len(te), 512):
        sim, idx = (te[i : i + 512] @ tr.T).topk(k, dim=1)
        votes = torch.zeros(len(sim), classes).scatter_add_(1, ytr[idx], (sim / tau).exp())
        correct += int((votes.argmax(1) == yte[i : i + 512]).sum())
    return correct / max(1, len(te))


def linear_probe_accuracy(train_emb, train_y, test_emb, test_y, seed: int = 0) -> float:
    """Linear-probe accuracy: a multinomial logistic regression (scikit-learn) on the frozen,
    standardised embeddings of the training images, scored on the test images."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr, xte = np.asarray(train_emb, dtype=np.float64), np.asarray(test_emb, dtype=np.float64)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=1.0, random_state=seed))
    probe.fit(xtr, np.asarray(train_y))
    return float(probe.score(xte, np.asarray(test_y)))


def representation_scores(model: nn.Module, ds, x_train: Tensor, y_train, x_test: Tensor, y_test) -> dict:
    """k-NN and linear-probe accuracy of ``model``'s embedding (labels used only to judge)."""
    tr, te = embeddings(model, x_train), embeddings(model, x_test)
    return {
        "knn_accuracy": knn_accuracy(tr, y_train, te, y_test),
        "linear_probe_accuracy": linear_probe_accuracy(tr, y_train, te, y_test),
        "embed_dim": int(tr.shape[1]),
    }


def embedding_2d(model: nn.Module, x: Tensor, seed: int = 0) -> list[list[float]]:
    """The embeddings of ``x`` projected on their first two principal components."""
    from sklearn.decomposition import PCA

    e = embeddings(model, x).numpy()
    return PCA(2, random_state=seed).fit_transform(e).tolist()


def seed_events(config: Config, teacher_progress=None) -> Run:
    """Label-free distillation with SEED's objective (see :func:`_seed`)."""
    return Run(_seed, config, teacher_progress)


def _seed(config: Config, teacher_progress, run: Run):
    """SEED on the real training images, no label needed: at each step the student's
    embedding (projected by a linear head to the teacher's dimension) matches the teacher's
    similarity distribution over a FIFO queue of ``queue`` teacher embeddings of earlier
    images (:func:`seed_loss`), plus soft targets::

        L = beta * L_SEED + alpha * T^2 KL(p_T || p_S) + (1 - alpha) * CE(y, p_S)

    alpha = 1 with ``labeled_fraction`` = 0 uses no label at all. After each epoch the
    student's test accuracy and the k-NN accuracy of its embedding; at the end the k-NN and
    linear-probe accuracies of the teacher, the student and the student before training
    (random initialisation), and their test embeddings in 2-D."""
    stop = run._stop
    cfg, p, device, t_start, teacher = _start(config, teacher_progress)
    t_model = teacher.model
    ds = data_mod.load(cfg.dataset, train_subset=cfg.train_subset)
    train.check_batch_fits(cfg, ds)
    x, y_eval = ds.x_train.to(device), ds.y_train  # y_eval: only to judge embeddings (k-NN, probe)
    x_test, y_test = ds.x_test.to(device), ds.y_test
    gen = torch.Generator().manual_seed(cfg.seed)
    labelled = train.labelled_mask(ds.y_train, cfg.labeled_fraction, gen).to(device)
    y_lab = ds.y_train.to(device)
    torch.manual_seed(cfg.seed)
    student = models.build(cfg.student, ds.in_shape, ds.num_classes).to(device)
    random_student = _frozen(student)
    t_dim = models.module_shapes(t_model, ds.in_shape, ["embed"])["embed"][0]
    s_dim = models.module_shapes(student, ds.in_shape, ["embed"])["embed"][0]
    head = nn.Linear(s_dim, t_dim).to(device)
    K = min(int(p["queue"]), len(x) - 1)
    with torch.no_grad():
        first = torch.randperm(len(x), generator=gen)[:K].to(device)
        queue = F.normalize(embeddings(t_model, x[first]).to(device), dim=1)
    ptr = 0
    n = len(x)
    steps_per_epoch = -(-n // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.Adam(list(student.parameters()) + list(head.parameters()), lr=cfg.lr, foreach=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    t_test_logits = metrics.predict_logits(t_model, x_test)
    t_train_emb = embeddings(t_model, x)
    t_test_emb = embeddings(t_model, x_test)
    yield {
        "kind": "start",
        "stage": "distillation",
        "stages": ["distillation", "evaluation"],
        "total_steps": total,
        "epochs": cfg.epochs,
        "transfer_set": n,
        "labelled": int(labelled.sum()),
        "teacher_acc": teacher.test_accuracy,
        "config": cfg.to_dict(),
    }
    alpha, T, beta = cfg.alpha, cfg.temperature, p["beta"]
    history, step_log, step, status, message = [], [], 0, "finished", ""
    for epoch in range(1, cfg.epochs + 1):
        student.train()
        for idx in train.epoch_batches(n, cfg.batch_size, gen):
            if stop.is_set():
                status, message = "stopped", f"stopped by the user at step {step} of {total}"
                break
            idx = idx.to(device)
            xb = x[idx]
            with torch.no_grad(), models.FeatureTaps(t_model, ["embed"]) as tt:
                t_logits = t_model(xb)
                t_emb = tt["embed"].flatten(1)
            with models.FeatureTaps(student, ["embed"]) as st:
                s_logits = student(xb)
                s_emb = st["embed"].flatten(1)
            terms = {"seed": beta * seed_loss(head(s_emb), t_emb, queue, p["tau_s"], p["tau_t"])}
            if alpha > 0:
                terms["kd"] = alpha * losses.kd_loss(s_logits, t_logits, T)
            if alpha < 1:
                terms["ce"] = (1 - alpha) * train.masked_ce(s_logits, y_lab[idx], labelled[idx])
            loss = sum(terms.values())
            if not torch.isfinite(loss):
                status = "diverged"
                message = (
                    f"the loss became NaN or infinite at step {step + 1}; lower the learning rate (now {cfg.lr:g})"
                )
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():  # enqueue this batch's teacher embeddings, dropping the oldest
                new = F.normalize(t_emb, dim=1)[:K]
                pos = (torch.arange(len(new), device=device) + ptr) % K
                queue[pos] = new
                ptr = int((ptr + len(new)) % K)
            step += 1
            rec = {
                "step": step,
                "epoch": epoch,
                "losses": {k: v.item() for k, v in terms.items()},
                "loss": loss.item(),
                "baseline_loss": None,
            }
            step_log.append(rec)
            yield {
                "kind": "step",
                "stage": "distillation",
                "total_steps": total,
                "elapsed": time.perf_counter() - t_start,
                **rec,
            }
        if status == "diverged" or (status == "stopped" and (step == 0 or (history and history[-1]["step"] == step))):
            break
        ev = _student_eval(student, x_test, y_test, t_test_logits, epoch, step, partial=status != "finished")
        ev["student_knn"] = knn_accuracy(embeddings(student, x), y_eval, embeddings(student, x_test), y_test)
        history.append(ev)
        yield {"kind": "epoch", "stage": "distillation", "elapsed": time.perf_counter() - t_start, **ev}
        if status != "finished":
            break
    yield {"kind": "stage_end", "stage": "distillation"}
    student.eval()
    yield {"kind": "start", "stage": "evaluation"}
    scores = {
        "teacher": {
            "knn_accuracy": knn_accuracy(t_train_emb, y_eval, t_test_emb, y_test),
            "linear_probe_accuracy": linear_probe_accuracy(t_train_emb, y_eval, t_test_emb, y_test, cfg.seed),
            "embed_dim": int(t_train_emb.shape[1]),
        },
        "student": representation_scores(student, ds, x, y_eval, x_test, y_test),
        "random": representation_scores(random_student, ds, x.cpu(), y_eval, x_test.cpu(), y_test),
    }
    pick = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(cfg.seed))[:500]
    x_pick = x_test[pick.to(device)]
    result = _datafree_result(cfg, teacher, ds, student, x_test, y_test, t_test_logits, history, step_log)
    for key in ("transfer_set", "real_training_images_seen"):
        result.pop(key)
    result.update(
        status=status,
        message=message,
        transfer_set="real images, unlabelled" if cfg.labeled_fraction == 0 or alpha == 1 else "real images",
        labels_used=int(labelled.sum()) if alpha < 1 else 0,
        knn_accuracy=scores["student"]["knn_accuracy"],
        linear_probe_accuracy=scores["student"]["linear_probe_accuracy"],
        representation=scores,
        embedding_2d={
            "index": pick.tolist(),
            "labels": y_test[pick].tolist(),
            "random": embedding_2d(random_student, x_pick.cpu(), cfg.seed),
            "student": embedding_2d(student, x_pick, cfg.seed),
            "teacher": embedding_2d(t_model, x_pick, cfg.seed),
        },
        random_student={
            "arch": cfg.student,
            **_block(random_student, x_test.cpu(), y_test, t_test_logits, ds, cfg.student),
        },
        wall_seconds=time.perf_counter() - t_start,
    )
    result["report"] = [
        f"labels used in training: {result['labels_used']} (labelled fraction {cfg.labeled_fraction:g}, alpha {alpha:g})",
        "embedding     k-NN acc  linear probe",
    ] + [
        f"{name:13s} {_pct(scores[key]['knn_accuracy']):9s} {_pct(scores[key]['linear_probe_accuracy'])}"
        for name, key in (("teacher", "teacher"), ("student", "student"), ("random init", "random"))
    ]
    run.models.update(student=_frozen(student), random=random_student)
    yield {"kind": "end", "status": status, "message": message, "result": result}


# ---------------------------------------------------------------- DFAD / ZSKT


class Generator(nn.Module):
    """A small DCGAN-style generator: z -> (C, H, W) images in the dataset's normalised space
    (a sigmoid gives pixels in [0, 1], then the dataset's mean and std are applied)."""

    def __init__(self, z_dim: int, in_shape: tuple, mean, std, width: int = 64):
        super().__init__()
        c, h, w = in_shape
        self.h0, self.w0, self.z_dim = -(-h // 4), -(-w // 4), z_dim
        self.out_hw = (h, w)
        self.fc = nn.Linear(z_dim, 2 * width * self.h0 * self.w0)
        self.net = nn.Sequential(
            nn.BatchNorm2d(2 * width),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, 2 * width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, c, 3, 1, 1),
        )
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, z: Tensor) -> Tensor:
        h = self.net(self.fc(z).view(len(z), -1, self.h0, self.w0))
        h = h[..., : self.out_hw[0], : self.out_hw[1]]
        return (torch.sigmoid(h) - self.mean) / self.std


def dfad_events(config: Config, teacher_progress=None) -> Run:
    """Adversarial data-free distillation (see :func:`_dfad`)."""
    return Run(_dfad, config, teacher_progress)


def _dfad(config: Config, teacher_progress, run: Run):
    """DFAD (Fang et al. 2019) / ZSKT (Micaelli & Storkey 2019): a generator G and the student
    play a game on generated images only. Each of ``iterations`` rounds: one generator step
    that *maximises* the student's KD loss at T against the teacher on G(z) (ZSKT's
    adversarial KL; DFAD uses the L1 of the logits), minus ``bn_weight`` times the teacher's
    BatchNorm-statistics loss on G(z) when that weight is > 0 (DeepInversion's term keeps the
    images near the teacher's training distribution); then ``student_steps`` student steps
    *minimising* KD at T on fresh G(z). Evaluated on the real test set ``epochs`` times; the
    stage "real data" compares as in DeepInversion."""
    stop = run._stop
    cfg, p, device, t_start, teacher = _start(config, teacher_progress)
    t_model = teacher.model
    ds, x_test, y_test, t_test_logits = _test_set(cfg, device, t_model)
    in_shape, C = tuple(x_test.shape[1:]), ds.num_classes
    torch.manual_seed(cfg.seed)
    student = models.build(cfg.student, in_shape, C).to(device)
    z_dim = 64
    gen_net = Generator(z_dim, in_shape, ds.mean, ds.std).to(device)
    iters, k_s = int(p["iterations"]), int(p["student_steps"])
    bs, T, bn_w = cfg.batch_size, cfg.temperature, p["bn_weight"]
    opt_s = torch.optim.Adam(student.parameters(), lr=cfg.lr, foreach=True)
    opt_g = torch.optim.Adam(gen_net.parameters(), lr=p["g_lr"], betas=(0.5, 0.999))
    sched_s = torch.optim.lr_scheduler.CosineAnnealingLR(opt_s, T_max=max(1, iters * k_s))
    gen = torch.Generator().manual_seed(cfg.seed)
    evals = _eval_every(iters, cfg.epochs)
    every = max(1, iters // 40)

    def noise():
        return torch.randn(bs, z_dim, generator=gen).to(device)

    yield {
        "kind": "start",
        "stage": "adversarial",
        "stages": ["adversarial"] + (["real data"] if cfg.baseline else []),
        "total_steps": iters,
        "teacher_acc": teacher.test_accuracy,
        "config": cfg.to_dict(),
    }
    history, step_log, log, status, message = [], [], [], "finished", ""
    images_seen = 0
    with BNStatistics(t_model) as bn:
        for it in range(1, iters + 1):
            if stop.is_set():
                status, message = "stopped", f"stopped by the user at round {it - 1} of {iters}"
                break
            # generator: make images on which the student disagrees with the teacher
            gen_net.train()
            student.eval()  # the student's BatchNorm must not learn the generator's step
            xg = gen_net(noise())
            t_logits = t_model(xg)
            r_bn = bn.loss() if bn_w > 0 else xg.new_zeros(())
            bn.inputs = []
            disagreement = losses.kd_loss(student(xg), t_logits, T)
            g_loss = -disagreement + bn_w * r_bn
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            # student: agree with the teacher on fresh generated images
            student.train()
            gen_net.eval()
            for _ in range(k_s):
                with torch.no_grad():
                    xs = gen_net(noise())
                    ts = t_model(xs)
                bn.inputs = []
                s_loss = losses.kd_loss(student(xs), ts, T)
                opt_s.zero_grad(set_to_none=True)
                s_loss.backward()
                opt_s.step()
                sched_s.step()
                images_seen += len(xs)
            terms = {"kd": s_loss.item(), "disagreement": disagreement.item(), "bn": r_bn.item()}
            rec = {"step": it, "epoch": len(history) + 1, "losses": terms, "loss": s_loss.item()}
            rec |= {"baseline_loss": None, "stage": "adversarial"}
            step_log.append(rec)
            yield {"kind": "step", "total_steps": iters, "elapsed": time.perf_counter() - t_start, **rec}
            if it % every == 0 or it == iters:
                with torch.no_grad():
                    pt = F.softmax(ts, 1)
                    pred = pt.argmax(1)
                snap = {
                    "stage": "adversarial",
                    "step": it,
                    "confidence": pt.max(1).values.mean().item(),
                    "class_share": torch.bincount(pred.cpu(), minlength=C).div(len(pred)).tolist(),
                    "bn": r_bn.item(),
                }
                log.append(snap)
                yield {"kind": "epoch", **snap, "grid": image_grid(xs, pred, ds, C)}
            if it in evals:
                ev = _student_eval(student, x_test, y_test, t_test_logits, len(history) + 1, it)
                history.append(ev)
                yield {"kind": "epoch", "stage": "adversarial", "elapsed": time.perf_counter() - t_start, **ev}
    if not history or history[-1]["step"] != len(step_log):
        ev = _student_eval(student, x_test, y_test, t_test_logits, len(history) + 1, len(step_log), partial=True)
        history.append(ev)
        yield {"kind": "epoch", "stage": "adversarial", "elapsed": time.perf_counter() - t_start, **ev}
    yield {"kind": "stage_end", "stage": "adversarial"}
    adv_seconds = time.perf_counter() - t_start
    student.eval()
    result = _datafree_result(cfg, teacher, ds, student, x_test, y_test, t_test_logits, history, step_log)
    with torch.no_grad():
        gen_net.eval()
        xs = gen_net(torch.randn(200, z_dim, generator=gen).to(device))
        pred = t_model(xs).argmax(1)
    result.update(
        status=status,
        message=message,
        synthesis={
            "images": images_seen,
            "batches": len(step_log),
            "steps_per_batch": 1,
            "seconds": adv_seconds,
            "bn_weight": bn_w,
            "final_bn": log[-1]["bn"] if log else None,
            "final_confidence": log[-1]["confidence"] if log else None,
            "class_share": log[-1]["class_share"] if log else None,
            "log": log,
        },
        synthesis_seconds=adv_seconds,
        distillation_seconds=0.0,
        sample_grid=image_grid(xs, pred, ds, C, rows=4).tolist(),
    )
    run.models.update(student=_frozen(student), generator=_frozen(gen_net))
    if cfg.baseline and status == "finished":
        real = yield from _comparison(cfg, teacher, stop, step_log)
        if real is not None:
            result["real_kd"] = real["student"]
            result["baseline"] = real["baseline"]
            if real["status"] != "finished":
                result["status"], result["message"] = real["status"], real["message"]
    result["wall_seconds"] = time.perf_counter() - t_start
    result["report"] = _datafree_report(result)
    result["report"][0] = (
        f"transfer set: synthetic ({images_seen} generated images over {len(step_log)} rounds, generated and "
        f"learnt together); real training images seen by the student: 0"
    )
    yield {"kind": "end", "status": result["status"], "message": result["message"], "result": result}


# ---------------------------------------------------------------- the registry
# These methods register themselves in kd_core.methods (beside the methods beyond one
# teacher); importing kd_core imports this module.

methods.register_beyond(
    methods.Method(
        name="deepinversion",
        title="Data-free: DeepInversion (Yin et al. 2020)",
        family="data-free",
        paper="Yin, Molchanov, Alvarez, Li, Mallya, Hoiem, Jha & Kautz 2020, Dreaming to Distill: Data-free Knowledge "
        "Transfer via DeepInversion (CVPR)",
        summary="The teacher dreams its training set: noise images are optimised until the teacher assigns them the "
        "requested classes while every BatchNorm layer sees the mean and variance it saw in training; the student is "
        "then distilled on those images only (KD at T, no labels, no real training image).",
        formula=r"\begin{aligned}\hat x = \arg\min_x\ & \mathrm{CE}(y^*, p_T(x)) \\ & + <bn_weight>\sum_l \big(\|\mu_l(x)"
        r" - \hat\mu_l\|_2 + \|\sigma^2_l(x) - \hat\sigma^2_l\|_2\big) \\ & + <tv_weight>\,\mathrm{TV}(x) + <l2_weight>"
        r"\,\overline{x^2} \\ \mathcal{L}_S = \ & <T>^2\,\mathrm{KL}\!\left(p_T^{(<T>)}(\hat x) \,\|\, "
        r"p_S^{(<T>)}(\hat x)\right)\end{aligned}",
        params=(
            methods.Param(
                "images", 1024, 16, 20000, "Synthetic images to make (classes balanced).", "N", log=True, integer=True
            ),
            methods.Param(
                "synth_batch",
                256,
                8,
                2048,
                "Images optimised together (BatchNorm statistics are batch statistics).",
                "B",
                log=True,
                integer=True,
            ),
            methods.Param(
                "synth_steps",
                100,
                1,
                5000,
                "Adam steps per batch of images (the paper: 2,000 on ImageNet; a "
                "small digit teacher is fooled much sooner).",
                "S",
                log=True,
                integer=True,
            ),
            methods.Param(
                "bn_weight",
                1.0,
                0.0,
                100.0,
                "Weight of the BatchNorm-statistics term. At 0 the images are "
                "adversarial noise that the teacher still labels confidently.",
                r"\lambda_{BN}",
            ),
            methods.Param(
                "tv_weight", 1.0, 0.0, 100.0, "Weight of the total-variation prior (smooth images).", r"\lambda_{TV}"
            ),
            methods.Param(
                "l2_weight", 0.001, 0.0, 10.0, "Weight of the L2 prior on the (normalised) pixels.", r"\lambda_{2}"
            ),
            methods.Param(
                "synth_lr",
                0.2,
                0.001,
                1.0,
                "Adam learning rate of the pixels, decayed to 0 by a cosine (the paper: 0.05-0.25).",
                r"\eta_x",
                log=True,
            ),
            methods.Param(
                "distil_steps",
                1000,
                0,
                100000,
                "KD steps on augmented synthetic images after synthesis (the student also learns during synthesis).",
                "K",
                log=True,
                integer=True,
            ),
        ),
        uses_alpha=False,
        uses_labels=False,
        pipeline=deepinversion_events,
    )
)


methods.register_beyond(
    methods.Method(
        name="dfad",
        title="Data-free: adversarial generator (DFAD, Fang et al. 2019; ZSKT)",
        family="data-free",
        paper="Fang, Song, Wang, Shen, Wang & Song 2019, Data-Free Adversarial Distillation (arXiv 1912.11006); "
        "Micaelli & Storkey 2019, Zero-shot Knowledge Transfer via Adversarial Belief Matching (NeurIPS)",
        summary="A small generator makes the images on which student and teacher disagree most; the student learns to "
        "agree with the teacher on them. No real image and no label; optionally the generator also pays "
        "DeepInversion's BatchNorm-statistics term.",
        formula=r"\max_G \min_S\ \mathbb{E}_z\, <T>^2\,\mathrm{KL}\!\left(p_T^{(<T>)}(G(z)) \,\|\, "
        r"p_S^{(<T>)}(G(z))\right) - <bn_weight>\,R_{BN}(G(z))",
        params=(
            methods.Param(
                "iterations",
                400,
                1,
                100000,
                "Rounds of the game: one generator step, then the student's steps.",
                "I",
                log=True,
                integer=True,
            ),
            methods.Param(
                "student_steps", 5, 1, 50, "Student steps per generator step; 5 as in DFAD.", "k", integer=True
            ),
            methods.Param(
                "g_lr", 0.001, 0.00001, 0.1, "Generator learning rate (Adam); 1e-3 as in DFAD.", r"\eta_G", log=True
            ),
            methods.Param(
                "bn_weight",
                0.0,
                0.0,
                100.0,
                "Weight of the teacher's BatchNorm-statistics term on the generated images (0: pure DFAD / ZSKT).",
                r"\lambda_{BN}",
            ),
        ),
        uses_alpha=False,
        uses_labels=False,
        pipeline=dfad_events,
    )
)
methods.register_beyond(
    methods.Method(
        name="seed",
        title="Label-free: SEED similarity distillation (Fang et al. 2021)",
        family="label-free",
        paper="Fang, Wang, Wang, Zhang, Yang & Liu 2021, SEED: Self-supervised Distillation for Visual Representation "
        "(ICLR); Abbasi Koohpayegani, Tejankar & Pirsiavash 2020, CompRess (NeurIPS)",
        summary="No label needed: the student's embedding of each image must rank a queue of other images' teacher "
        "embeddings the way the teacher does (a softmax of similarities at a temperature), with soft targets beside "
        "it. Run with alpha = 1 and labelled fraction 0 for no label at all; judged by k-NN and linear-probe accuracy.",
        formula=r"\begin{aligned}\mathcal{L} = \ & <beta>\cdot\Big(-\sum_j p_T(j|x)\log p_S(j|x)\Big) \\ & + <alpha>\cdot "
        r"<T>^2\,\mathrm{KL}\!\left(p_T^{(<T>)} \,\|\, p_S^{(<T>)}\right) + <1-alpha>\,\mathrm{CE}(y, p_S) \\ "
        r"p(j|x) = \ & \mathrm{softmax}_j\!\left(z(x)\cdot d_j / \tau\right)\end{aligned}",
        params=(
            methods.Param("beta", 1.0, 0.0, 100.0, "Weight of the SEED term.", r"\beta"),
            methods.Param(
                "queue",
                1024,
                16,
                65536,
                "Teacher embeddings of earlier images kept as anchors (SEED: 65,536 on "
                "ImageNet; 1,024 for a few thousand images). Capped at the training images minus one.",
                "K",
                log=True,
                integer=True,
            ),
            methods.Param(
                "tau_s", 0.07, 0.001, 1.0, "Student temperature; 0.07 as in SEED's code.", r"\tau_S", log=True
            ),
            methods.Param(
                "tau_t",
                0.01,
                0.0001,
                1.0,
                "Teacher temperature, sharper than the student's (SEED ablates 0.01-0.07; its code defaults to 1e-4).",
                r"\tau_T",
                log=True,
            ),
        ),
        pipeline=seed_events,
    )
)

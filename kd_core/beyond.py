"""Beyond one teacher: an ensemble of teachers, chains of runs and teacher-free learning.

- ``ensemble`` (Hinton et al. 2015; You et al. 2017): K teachers, each trained once and
  cached like the single teacher (``teachers.get`` keyed by architecture and seed),
  wrapped as one frozen teacher whose soft targets are the blend of theirs
  (:func:`kd_core.losses.ensemble_soft_targets`). It runs through the ordinary ``Trainer``.
- ``born-again`` (Furlanello et al. 2018): generation 1, with the teacher's architecture,
  learns from the teacher; generation g+1 learns from generation g.
- ``ta`` (Mirzadeh et al. 2020): teacher -> assistant -> student, beside teacher -> student.
- ``dml`` (Zhang et al. 2018): K students trained together from scratch, each mimicking the
  others (:func:`kd_core.losses.mutual_learning_loss`).

The chained methods are ordinary ``Trainer`` runs put one after the other; their pipelines
yield the inner runs' events tagged with ``"stage"`` (an inner run's end becomes
``"stage_end"``) and finish with one ``{"kind": "end", "result": ...}`` like a Trainer.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace

import torch
from torch import Tensor, nn

from . import batched, losses, methods, metrics, models, paths, teachers, train
from . import data as data_mod
from .config import Config
from .errors import ConfigError

SECOND_TEACHER = {"cifar10": "resnet14"}  # the ensemble's second architecture (archs = 2)
SECOND_TEACHER_DEFAULT = "mlp-256-128"
ASSISTANT = {"cifar10": "resnet14"}  # the TA's default architecture, between teacher and student
ASSISTANT_DEFAULT = "cnn-16-32"
WEIGHTINGS = ("mean", "confidence")


# ---------------------------------------------------------------- ensemble


def member_specs(config: Config) -> list[tuple[str, int]]:
    """(architecture, seed) of each teacher of an ensemble run: teacher k has architecture
    k mod A and seed k div A, so teacher 0 is the ordinary cached teacher."""
    cfg = config.resolved()
    p = cfg.method_params()
    archs = [cfg.teacher]
    if int(p["archs"]) == 2:
        archs.append(SECOND_TEACHER.get(cfg.dataset, SECOND_TEACHER_DEFAULT))
    return [(archs[k % len(archs)], k // len(archs)) for k in range(int(p["teachers"]))]


class EnsembleTeacher(nn.Module):
    """K frozen teachers seen as one: ``forward`` returns ``T * log(p_bar)`` where ``p_bar`` is
    the blend of their softened probabilities at T, so that the ordinary KD loss at the same T,
    ``T^2 KL(softmax(forward/T) || p_S)``, is exactly ``T^2 KL(p_bar || p_S)``."""

    def __init__(self, members: list[nn.Module], temperature: float, weighting: str):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.temperature = float(temperature)
        self.weighting = weighting

    def member_logits(self, x: Tensor) -> Tensor:
        """(K, B, C): every teacher's logits."""
        return torch.stack([m(x) for m in self.members])

    def soft_targets(self, x: Tensor, temperature: float | None = None) -> Tensor:
        T = self.temperature if temperature is None else temperature
        return losses.ensemble_soft_targets(self.member_logits(x), T, self.weighting)

    def forward(self, x: Tensor) -> Tensor:
        return self.temperature * torch.log(self.soft_targets(x).clamp_min(1e-30))


def _members(cfg: Config, device=None, progress=None) -> list:
    return [
        teachers.get(
            cfg.dataset,
            arch,
            cfg.teacher_epochs,
            seed=seed,
            train_subset=cfg.train_subset,
            progress=progress,
            device=device,
        )
        for arch, seed in member_specs(cfg)
    ]


def prepare_ensemble(config: Config, progress=None) -> None:
    """Train (or load) every teacher of the ensemble once, e.g. before a sweep's workers start."""
    _members(config.resolved(), progress=progress)


_ensembles: dict = {}  # (key, device) -> Teacher: a page asking image after image builds it once


def ensemble_teacher(config: Config, device=None, progress=None):
    """The ensemble as a ``teachers.Teacher``: its members' facts in ``.members`` (arch, seed,
    test accuracy), the blend's in ``.info``. Members come from ``teachers.get``'s cache."""
    cfg = config.resolved().validate()
    weighting = WEIGHTINGS[int(cfg.method_params()["weighting"])]
    device = device or models.pick_device()
    members = _members(cfg, device, progress)
    key = paths.key_of({"ensemble": [t.key for t in members], "T": cfg.temperature, "weighting": weighting})
    if (key, str(device)) not in _ensembles:
        _ensembles[(key, str(device))] = _build_ensemble(cfg, members, weighting, device, key)
    return _ensembles[(key, str(device))]


def _build_ensemble(cfg: Config, members: list, weighting: str, device, key: str):
    model = EnsembleTeacher([t.model for t in members], cfg.temperature, weighting).to(device).eval()
    ds = data_mod.load(cfg.dataset, train_subset=cfg.train_subset)
    with torch.no_grad():
        z = torch.cat(
            [model.member_logits(ds.x_test[i : i + 1024].to(device)) for i in range(0, len(ds.x_test), 1024)], 1
        )
    y = ds.y_test.to(z.device)
    acc_T = metrics.accuracy(losses.ensemble_soft_targets(z, cfg.temperature, weighting), y)
    acc_1 = metrics.accuracy(losses.ensemble_soft_targets(z, 1.0, weighting), y)
    specs = member_specs(cfg)
    info = [
        {"arch": t.arch, "seed": seed, "test_accuracy": t.test_accuracy, "key": t.key, "from_cache": t.from_cache}
        for t, (_, seed) in zip(members, specs)
    ]
    arch = " + ".join(f"{t.arch}/s{seed}" for t, (_, seed) in zip(members, specs))
    return teachers.Teacher(
        model,
        arch,
        cfg.dataset,
        acc_T,
        key,
        cfg.teacher_epochs,
        sum(t.train_seconds for t in members),
        all(t.from_cache for t in members),
        members=info,
        info={"weighting": weighting, "temperature": cfg.temperature, "test_accuracy_at_T1": acc_1, "k": len(members)},
    )


def image_soft_targets(config: Config, index: int, split: str = "test", temperature: float | None = None) -> dict:
    """For image ``index`` of ``split`` ("train" or "test"): each teacher's soft targets at T,
    their weights and the blend the student learns from (for a page to draw).
    Returns {"index", "label", "temperature", "weighting", "members": [{"arch", "seed",
    "test_accuracy", "probs", "weight"}], "blend"}; probabilities are lists of floats."""
    cfg = replace(config, method="ensemble").resolved().validate()
    T = cfg.temperature if temperature is None else float(temperature)
    teacher = ensemble_teacher(cfg)
    ds = data_mod.load(cfg.dataset, train_subset=cfg.train_subset)
    x, y = (ds.x_test, ds.y_test) if split == "test" else (ds.x_train, ds.y_train) if split == "train" else (None, None)
    if x is None:
        raise ConfigError(f"split must be 'train' or 'test', got '{split}'")
    if not 0 <= int(index) < len(x):
        raise ConfigError(f"image index must be in [0, {len(x) - 1}], got {index}")
    model = teacher.model
    dev = next(model.parameters()).device
    with torch.no_grad():
        z = model.member_logits(x[int(index) : int(index) + 1].to(dev))  # (K, 1, C)
        w = losses.ensemble_weights(z, model.weighting)[:, 0]
        probs = losses.softmax_t(z[:, 0], T)
        blend = losses.ensemble_soft_targets(z, T, model.weighting)[0]
    return {
        "index": int(index),
        "label": int(y[int(index)]),
        "temperature": T,
        "weighting": model.weighting,
        "members": [
            {**{k: m[k] for k in ("arch", "seed", "test_accuracy")}, "probs": probs[i].tolist(), "weight": float(w[i])}
            for i, m in enumerate(teacher.members)
        ],
        "blend": blend.tolist(),
    }


# ---------------------------------------------------------------- chains of runs


def _frozen_teacher(trainer, arch: str, key: str):
    """A finished run's student, frozen, as the teacher of the next run."""
    model = copy.deepcopy(trainer.student).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    r = trainer.result
    return teachers.Teacher(
        model,
        arch,
        trainer.config.dataset,
        r["student"]["test_accuracy"],
        key,
        trainer.config.epochs,
        trainer.train_seconds,
        False,
    )


def _stage(trainer, stage: str, extra: dict, steps: list):
    """Yield a Trainer's events tagged with its stage; collect its steps."""
    for ev in trainer.events():
        ev = {**ev, "stage": stage, **extra}
        if ev["kind"] == "end":
            ev["kind"] = "stage_end"
        elif ev["kind"] == "step":
            steps.append({k: ev[k] for k in ("step", "epoch", "losses", "loss", "baseline_loss")} | {"stage": stage})
        yield ev


def _kd_config(cfg: Config, student: str, baseline: bool, seed: int | None = None) -> Config:
    return replace(
        cfg,
        method="kd",
        student=student,
        params={},
        pairs=[],
        baseline=baseline,
        assistant="",
        seed=cfg.seed if seed is None else seed,
    )


def _base_teacher(cfg: Config, teacher_progress):
    return teachers.get(
        cfg.dataset, cfg.teacher, cfg.teacher_epochs, train_subset=cfg.train_subset, progress=teacher_progress
    )


def born_again_events(config: Config, teacher_progress=None):
    """Born-again networks (Furlanello et al. 2018): G generations with the teacher's
    architecture, each distilled (KD at the config's T and alpha) from the one before,
    generation 1 from the teacher. The result is the last generation's run, plus
    ``"generations"``: [{"generation", "arch", "test_accuracy", "agreement"}], generation 0
    being the teacher; the scratch baseline (if any) is the teacher's architecture trained
    from scratch with the same labels, beside generation 1."""
    cfg = config.resolved().validate()
    G = int(cfg.method_params()["generations"])
    t0 = time.perf_counter()
    teacher = _base_teacher(cfg, teacher_progress)
    gens = [
        {
            "generation": 0,
            "role": "teacher",
            "arch": teacher.arch,
            "test_accuracy": teacher.test_accuracy,
            "agreement": None,
        }
    ]
    yield {
        "kind": "start",
        "stages": [f"generation {g}" for g in range(1, G + 1)],
        "generations": G,
        "epochs": cfg.epochs,
        "teacher_acc": teacher.test_accuracy,
        "config": cfg.to_dict(),
    }
    steps, first, result, prev = [], None, None, teacher
    for g in range(1, G + 1):
        tr = train.Trainer(_kd_config(cfg, cfg.teacher, cfg.baseline and g == 1, cfg.seed + g - 1), teacher=prev)
        yield from _stage(tr, f"generation {g}", {"generation": g}, steps)
        result = tr.result
        first = first or result
        gens.append(
            {
                "generation": g,
                "role": "student",
                "arch": cfg.teacher,
                "test_accuracy": result["student"]["test_accuracy"],
                "agreement": result["student"]["agreement"],
                "status": result["status"],
            }
        )
        if result["status"] != "finished":
            break
        prev = _frozen_teacher(tr, cfg.teacher, f"{teacher.key}-born-again-{cfg.seed}-g{g}")
    result = dict(result)
    result.update(
        config=cfg.to_dict(),
        teacher=first["teacher"],
        generations=gens,
        step_losses=steps,
        wall_seconds=time.perf_counter() - t0,
    )
    if "baseline" in first:
        result["baseline"] = first["baseline"]
    yield {"kind": "end", "status": result["status"], "message": result["message"], "result": result}


def ta_events(config: Config, teacher_progress=None):
    """Teacher-assistant KD (Mirzadeh et al. 2020): teacher -> assistant (``config.assistant``,
    default an intermediate CNN) -> student, then teacher -> student directly, all with the
    config's KD settings. The result is the student-via-assistant run, with ``"assistant"``
    (its block), ``"direct"`` (the directly distilled student) and ``"chain"`` (one row per
    model); the student's ``agreement`` is with the teacher, as for the other methods."""
    cfg = config.resolved().validate()
    assistant = cfg.assistant or ASSISTANT.get(cfg.dataset, ASSISTANT_DEFAULT)
    t0 = time.perf_counter()
    teacher = _base_teacher(cfg, teacher_progress)
    yield {
        "kind": "start",
        "stages": ["assistant", "student via assistant", "student direct"],
        "assistant": assistant,
        "epochs": cfg.epochs,
        "teacher_acc": teacher.test_accuracy,
        "config": cfg.to_dict(),
    }
    steps = []
    tr_a = train.Trainer(_kd_config(cfg, assistant, False), teacher=teacher)
    yield from _stage(tr_a, "assistant", {}, steps)
    ra = tr_a.result
    runs = {"assistant": ra}
    if ra["status"] == "finished":
        ta = _frozen_teacher(tr_a, assistant, f"{teacher.key}-ta-{assistant}-{cfg.seed}")
        tr_s = train.Trainer(_kd_config(cfg, cfg.student, False), teacher=ta)
        yield from _stage(tr_s, "student via assistant", {}, steps)
        runs["via"] = tr_s.result
        if tr_s.result["status"] == "finished":
            tr_d = train.Trainer(_kd_config(cfg, cfg.student, cfg.baseline), teacher=teacher)
            yield from _stage(tr_d, "student direct", {}, steps)
            runs["direct"] = tr_d.result
    last = runs.get("direct") or runs.get("via") or ra
    result = dict(runs.get("via") or ra)
    result.update(
        config=cfg.to_dict(),
        teacher=ra["teacher"],
        assistant=ra["student"] | {"arch": assistant},
        step_losses=steps,
        wall_seconds=time.perf_counter() - t0,
        status=last["status"],
        message=last["message"],
    )
    chain = [
        {"role": "teacher", "arch": teacher.arch, "test_accuracy": teacher.test_accuracy},
        {"role": "assistant", "arch": assistant, "test_accuracy": ra["student"]["test_accuracy"]},
    ]
    if "via" in runs:
        s = dict(runs["via"]["student"])
        tr_s.student.eval()
        s_logits = metrics.predict_logits(tr_s.student, tr_s.x_test)
        s["agreement_with_assistant"] = s.get("agreement")
        s["agreement"] = metrics.agreement(s_logits, tr_a.t_test_logits)
        result["student"] = s
        chain.append({"role": "student via assistant", "arch": cfg.student, "test_accuracy": s["test_accuracy"]})
    if "direct" in runs:
        result["direct"] = runs["direct"]["student"]
        chain.append(
            {"role": "student direct", "arch": cfg.student, "test_accuracy": result["direct"]["test_accuracy"]}
        )
        if "baseline" in runs["direct"]:
            result["baseline"] = runs["direct"]["baseline"]
    result["chain"] = chain
    yield {"kind": "end", "status": result["status"], "message": result["message"], "result": result}


# ---------------------------------------------------------------- deep mutual learning


def dml_events(config: Config, teacher_progress=None, together: bool | None = None):
    """Deep mutual learning (Zhang et al. 2018): K students of the student architecture
    (initialised with seeds seed, seed+1, ...) trained together from scratch; at each step
    every student takes :func:`losses.mutual_learning_loss` against the others' detached
    predictions on the same batch, and all are updated at once (the paper updates them in
    turn within a step; with detached peers this is the common simultaneous variant).
    With ``baseline`` the first student's twin (same initialisation) trains alone on CE:
    DML against independent training. No teacher: the result's ``"teacher"`` is None.

    ``together``: the students (and the baseline) train as one batch of students
    (kd_core/batched.py), the same numbers to float tolerance; default: where that is
    faster (``batched.faster_together``: a GPU, or four or more MLP students).

    Events: "start"; "step" with one loss per student; "epoch" with ``student_accs`` (one
    per student, for live curves), ``student_acc`` (the first) and ``baseline_acc``; "end"."""
    cfg = config.resolved().validate()
    p = cfg.method_params()
    K, beta = int(p["students"]), float(p["beta"])
    device = models.pick_device()
    train.set_threads()
    t_start = time.perf_counter()
    ds = data_mod.load(cfg.dataset, train_subset=cfg.train_subset)
    students = []
    for k in range(K):
        torch.manual_seed(cfg.seed + k)
        students.append(models.build(cfg.student, ds.in_shape, ds.num_classes).to(device))
    baseline = copy.deepcopy(students[0]) if cfg.baseline else None
    ts = train.TransferSet(cfg, ds, device)
    total = ts.total_steps
    nets = students + ([baseline] if baseline is not None else [])
    if together is None:
        together = batched.faster_together(cfg, len(nets), device)[0]
    if together:  # one forward pass, one Adam step for every network
        group = batched.Together(nets, [cfg.lr] * len(nets), total, ds.in_shape)
    else:
        optimisers = [train.adam_cosine(m.parameters(), cfg.lr, total) for m in nets]
    yield {
        "kind": "start",
        "total_steps": total,
        "epochs": cfg.epochs,
        "transfer_set": len(ts),
        "students": K,
        "labelled": int(ts.labelled.sum()),
        "teacher_acc": None,
        "config": cfg.to_dict(),
    }
    history, step_log, step, status, message, train_s = [], [], 0, "finished", "", 0.0
    for epoch in range(1, cfg.epochs + 1):
        for m in nets:
            m.train()
        for idx in ts.batches():
            t0 = time.perf_counter()
            xb, yb, lab = ts.x[idx], ts.y[idx], ts.labelled[idx]
            if together:
                stacked = group.forward(xb)[0]  # (networks, B, classes), all on this batch
                logits, b_logits = list(stacked[:K]), (stacked[K] if baseline is not None else None)
            else:
                logits = [m(xb) for m in students]
                b_logits = baseline(xb) if baseline is not None else None
            terms = [
                losses.mutual_learning_loss(z, [o.detach() for j, o in enumerate(logits) if j != k], yb, lab, beta)
                for k, z in enumerate(logits)
            ]
            b_loss = train.masked_ce(b_logits, yb, lab) if baseline is not None else None
            named = {f"student {k + 1}": t for k, t in enumerate(terms)} | {"scratch baseline": b_loss}
            broke = train.divergence(named, step, epoch, cfg.lr)
            if broke:
                status, message = "diverged", broke
                break
            all_terms = terms + ([b_loss] if b_loss is not None else [])
            if together:
                group.zero_grad()
                sum(all_terms).backward()  # peers are detached: each loss reaches only its own network
                group.step(step)
            else:
                for o, _ in optimisers:
                    o.zero_grad(set_to_none=True)
                sum(all_terms).backward()
                for o, s in optimisers:
                    o.step()
                    s.step()
            step += 1
            train_s += time.perf_counter() - t0
            rec = {
                "step": step,
                "epoch": epoch,
                "losses": {f"student{k + 1}": t.item() for k, t in enumerate(terms)},
                "loss": sum(t.item() for t in terms),
                "baseline_loss": None if b_loss is None else b_loss.item(),
            }
            step_log.append(rec)
            yield {"kind": "step", "total_steps": total, "elapsed": time.perf_counter() - t_start, **rec}
        if together:  # the trained weights back into the networks, to evaluate them
            for k in range(len(nets)):
                group.write_back(k)
        if status != "finished":
            break
        accs = [metrics.accuracy(metrics.predict_logits(m, ts.x_test), ts.y_test) for m in students]
        ev = {
            "epoch": epoch,
            "step": step,
            "partial": False,
            "student_accs": accs,
            "student_acc": accs[0],
            "teacher_acc": None,
        }
        if baseline is not None:
            ev["baseline_acc"] = metrics.accuracy(metrics.predict_logits(baseline, ts.x_test), ts.y_test)
        history.append(ev)
        yield {"kind": "epoch", "elapsed": time.perf_counter() - t_start, **ev}

    def block(model, hist):
        out = train.model_summary(model, ts, ds, None)
        out.update(arch=cfg.student, train_seconds=train_s, history=hist)
        return out

    blocks = [
        block(m, [{"epoch": h["epoch"], "test_accuracy": h["student_accs"][k]} for h in history])
        for k, m in enumerate(students)
    ]
    result = train.result_head(cfg, status, message, step, total, time.perf_counter() - t_start, device, ds)
    result |= {
        "teacher": None,
        "student": blocks[0],
        "students": blocks,
        "step_losses": step_log,
        "epochs": history,
    }
    if baseline is not None:
        result["baseline"] = block(
            baseline, [{"epoch": h["epoch"], "test_accuracy": h["baseline_acc"]} for h in history]
        )
    yield {"kind": "end", "status": status, "message": message, "result": result}


# ---------------------------------------------------------------- the registry
# Kept apart from methods.METHODS (the single-teacher, per-step methods that the Lab and the
# bench run through Trainer): several teachers, chains of runs and teacher-free mutual
# learning. ``methods.get`` and ``methods.all_methods`` see both; importing kd_core
# registers them.

methods.register_beyond(
    methods.Method(
        name="ensemble",
        short="Ensemble KD",
        title="Multi-teacher ensemble KD (Hinton et al. 2015; You et al. 2017)",
        family="multi-teacher",
        paper="Hinton, Vinyals & Dean 2015 (distilling an ensemble); You, Xu, Xu & Tao 2017, Learning from Multiple "
        "Teacher Networks (KDD)",
        summary="K teachers (seeds and/or architectures), each trained once and cached, are blended into one set of soft "
        "targets: their softened probabilities averaged, or weighted per image by each teacher's confidence "
        "(a softmax over the teachers of their negative entropy at T = 1).",
        formula=r"\mathcal{L} = <1-alpha>\,\mathrm{CE}(y, p_S) + <alpha>\cdot <T>^2\,\mathrm{KL}\!\left(\textstyle\sum_{k=1}^{<teachers>}"
        r" w_k\, p_{T_k}^{(<T>)} \,\|\, p_S^{(<T>)}\right)",
        params=(
            methods.Param(
                "teachers",
                3,
                1,
                6,
                "Number of teachers K. Teacher k has architecture k mod A (see archs) and seed "
                "k div A; teacher 0 is the ordinary cached teacher.",
                "K",
                integer=True,
            ),
            methods.Param(
                "archs",
                1,
                1,
                2,
                "1: K seeds of the teacher architecture; 2: alternate it with a second architecture "
                "(an MLP, or resnet14 on CIFAR-10) for more diverse teachers.",
                "A",
                integer=True,
            ),
            methods.Param(
                "weighting",
                0,
                0,
                1,
                "0: average the teachers' softened probabilities (w_k = 1/K); 1: weight them per "
                "image by confidence, w_k(x) = softmax_k(-H(p_k(x))) with p_k at T = 1.",
                "w",
                integer=True,
            ),
        ),
        make_teacher=ensemble_teacher,
        prepare=prepare_ensemble,
    )
)
methods.register_beyond(
    methods.Method(
        name="born-again",
        short="Born-again (teacher-sized, last gen.)",
        title="Born-again networks (Furlanello et al. 2018)",
        family="chain",
        paper="Furlanello, Lipton, Tschannen, Itti & Anandkumar 2018, Born-Again Neural Networks (ICML)",
        summary="Self-distillation over generations: generation 1 has the teacher's own architecture and learns from "
        "the teacher; generation k+1 learns from generation k. The result reports the accuracy of every "
        "generation (the student is the last one, so it is as large as the teacher).",
        formula=r"\mathcal{L}_{g} = <1-alpha>\,\mathrm{CE}(y, p_{g}) + <alpha>\cdot <T>^2\,\mathrm{KL}\!\left(p_{g-1}^{(<T>)}"
        r" \,\|\, p_{g}^{(<T>)}\right),\quad g = 1..<generations>,\ p_0 = p_T",
        params=(
            methods.Param(
                "generations",
                3,
                1,
                5,
                "Generations of students, each with the teacher's architecture.",
                "G",
                integer=True,
            ),
        ),
        pipeline=born_again_events,
    )
)
methods.register_beyond(
    methods.Method(
        name="ta",
        short="TA KD",
        title="Teacher-assistant KD (Mirzadeh et al. 2020)",
        family="chain",
        paper="Mirzadeh, Farajtabar, Li, Levine, Matsukawa & Ghasemzadeh 2020, Improved Knowledge Distillation via "
        "Teacher Assistant (AAAI)",
        summary="Bridge the size gap: the teacher distils an assistant of intermediate size (--assistant), which distils "
        "the student. The same result holds the direct teacher -> student run for comparison.",
        formula=r"\mathcal{L} = <1-alpha>\,\mathrm{CE}(y, p_S) + <alpha>\cdot <T>^2\,\mathrm{KL}\!\left(p_{A}^{(<T>)}"
        r" \,\|\, p_S^{(<T>)}\right),\quad p_A \leftarrow \mathrm{KD}(p_T)",
        pipeline=ta_events,
    )
)
methods.register_beyond(
    methods.Method(
        name="dml",
        short="DML (student 1)",
        title="Deep mutual learning (Zhang et al. 2018)",
        family="online",
        paper="Zhang, Xiang, Hospedales & Lu 2018, Deep Mutual Learning (CVPR)",
        summary="No pre-trained teacher: K students learn together from scratch, each on its labels plus a KL term "
        "towards the others' current (detached) predictions at T = 1.",
        formula=r"\mathcal{L}_k = \mathrm{CE}(y, p_k) + \frac{<beta>}{K-1}\sum_{l \ne k}\mathrm{KL}(p_l \,\|\, p_k),"
        r"\quad k = 1..<students>",
        params=(
            methods.Param(
                "students",
                2,
                2,
                4,
                "Students trained together (all with the student architecture, different "
                "initialisations); the first is reported as the student.",
                "K",
                integer=True,
            ),
            methods.Param("beta", 1.0, 0.0, 10.0, "Weight of the mimicry (KL) term; 1 in the paper.", r"\lambda"),
        ),
        uses_alpha=False,
        uses_temperature=False,
        pipeline=dml_events,
    )
)

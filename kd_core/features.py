"""What feature distillation transfers, as numbers a page can draw: feature maps as channel
grids, the FitNets regressor's per-position error, attention maps to overlay on an image,
and how similar a student's layers are to the teacher's over a batch (linear CKA, cosine
of attention maps). Pure functions on models and tensors; no UI code.

Also: saving a distilled student together with its extra trainable modules (FitNets
regressors, projection heads), and loading both back, without pickle.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import losses, methods, models, paths

# ---------------------------------------------------------------- extracting features


@torch.no_grad()
def extract(model: nn.Module, x: Tensor, names: list[str], batch_size: int = 512) -> dict[str, Tensor]:
    """The outputs of the named modules of ``model`` on ``x`` (eval mode, no gradients), on
    the CPU, plus the logits under ``"logits"``. The model's mode is restored afterwards."""
    was = model.training
    model.eval()
    dev = models.device_of(model)
    out: dict[str, list[Tensor]] = {n: [] for n in list(names) + ["logits"]}
    try:
        for i in range(0, len(x), batch_size):
            with models.FeatureTaps(model, names, detach=True) as taps:
                logits = model(x[i : i + batch_size].to(dev))
                for n in names:
                    out[n].append(taps[n].float().cpu())
            out["logits"].append(logits.float().cpu())
    finally:
        model.train(was)
    return {n: torch.cat(v) for n, v in out.items()}


def top_channels(feat: Tensor, k: int) -> list[int]:
    """Indices of the ``k`` channels of a (C, H, W) map with the largest mean |activation|,
    strongest first."""
    energy = feat.abs().flatten(1).mean(1)
    return torch.argsort(energy, descending=True, stable=True)[: min(k, len(energy))].tolist()


def channel_grid(
    feat: Tensor,
    channels: list[int] | None = None,
    k: int = 16,
    gap: int = 1,
    scale: float | None = None,
    signed: bool = False,
) -> tuple[np.ndarray, list[int], int]:
    """Tile channels of one (C, H, W) feature map into a near-square grid for display.

    Returns (grid, channels, columns): ``grid`` is (rows*(H+gap)-gap, cols*(W+gap)-gap) with
    NaN in the gaps and empty tiles; values are |activation| divided by ``scale`` (default:
    the largest shown value), so one layer's channels share one scale and a dead channel
    looks dark; ``signed`` keeps the sign (values over ``scale``, e.g. a regressed map shown
    on its target's scale). ``channels`` defaults to the ``k`` strongest (:func:`top_channels`).
    """
    if feat.dim() != 3:
        raise ValueError(f"channel_grid needs one (C, H, W) map, got shape {tuple(feat.shape)}")
    if channels is None:
        channels = top_channels(feat, k)
    tiles = feat[channels].double()
    tiles = (tiles if signed else tiles.abs()).numpy()
    n, h, w = tiles.shape
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    top = scale if scale is not None else (float(np.abs(tiles).max()) if n else 1.0)
    top = top if top > 0 else 1.0
    grid = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tiles[i] / top
    return grid, list(channels), cols


def vector_grid(vec: Tensor, scale: float | None = None) -> np.ndarray:
    """A (D,) feature vector folded into a near-square (rows, cols) array for display, NaN
    padded; |values| over ``scale`` (default: the largest)."""
    v = vec.flatten().abs().double().numpy()
    cols = max(1, math.ceil(math.sqrt(len(v))))
    rows = max(1, math.ceil(len(v) / cols))
    out = np.full(rows * cols, np.nan)
    top = scale if scale is not None else (float(v.max()) if len(v) else 1.0)
    out[: len(v)] = v / (top if top > 0 else 1.0)
    return out.reshape(rows, cols)


# ---------------------------------------------------------------- FitNets


pooled_pair = losses.pooled_pair  # spatial maps pooled to the smaller, as the methods do


@torch.no_grad()
def regress(modules: nn.Module, index: int, student_feat: Tensor, teacher_feat: Tensor) -> tuple[Tensor, Tensor]:
    """FitNets: the student's hint through regressor ``index``, and the teacher's target,
    pooled to a common size: exactly the two tensors ``hint_loss`` compares in training."""
    was = modules.training
    modules.eval()
    try:
        r = modules(index, student_feat)
    finally:
        modules.train(was)
    return pooled_pair(r, teacher_feat)


def fitnets_error_map(regressed: Tensor, teacher: Tensor) -> Tensor:
    r"""Per-position squared error of the regressed hint against the teacher's target,
    averaged over channels: :math:`E_{hw} = \frac{1}{C}\sum_c (r(F_S)_{chw} - F_{T,chw})^2`.

    (B, C, H, W) -> (B, H, W); for vectors (B, D) -> (B, D). Its mean over batch and
    positions is ``hint_loss(regressed, teacher)``."""
    if regressed.shape != teacher.shape:
        raise ValueError(
            f"regressed and teacher features differ in shape: {tuple(regressed.shape)} vs {tuple(teacher.shape)}"
        )
    sq = (regressed - teacher).pow(2)
    return sq.mean(dim=1) if sq.dim() == 4 else sq


# ---------------------------------------------------------------- attention


def attention_maps(feat: Tensor, p: float = 2) -> Tensor:
    """``losses.attention_map`` kept 2-D: (B, C, H, W) -> (B, H, W), each map of unit L2 norm."""
    b, _, h, w = feat.shape
    return losses.attention_map(feat, p).view(b, h, w)


def upsample(m: Tensor, size: tuple[int, int]) -> Tensor:
    """(H, W) or (B, H, W) maps resized bilinearly to ``size``."""
    x = m.unsqueeze(1) if m.dim() == 3 else m[None, None]
    up = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)
    return up[:, 0] if m.dim() == 3 else up[0, 0]


def attention_overlay(feat: Tensor, image_size: tuple[int, int], p: float = 2) -> dict:
    """One sample's attention map, ready to lay over its input image.

    ``feat`` is (C, H, W) or (1, C, H, W). Returns ``{"map": (h, w) unit-norm map as in the
    loss, "overlay": (H_img, W_img) the map upsampled bilinearly and scaled to [0, 1]}``."""
    if feat.dim() == 3:
        feat = feat.unsqueeze(0)
    if feat.dim() != 4 or len(feat) != 1:
        raise ValueError(f"attention_overlay needs one (C, H, W) feature map, got shape {tuple(feat.shape)}")
    q = attention_maps(feat, p)[0]
    up = upsample(q, tuple(image_size)).clamp_min(0)
    top = float(up.max())
    return {"map": q, "overlay": up / top if top > 0 else up}


def attention_cosine(student_feat: Tensor, teacher_feat: Tensor, p: float = 2) -> float:
    """Mean over the batch of cos(Q_S, Q_T) of the attention maps, the larger map pooled to
    the smaller (1 = the student looks exactly where the teacher does)."""
    s, t = pooled_pair(student_feat, teacher_feat)
    qs, qt = losses.attention_map(s, p), losses.attention_map(t, p)
    return float((qs * qt).sum(1).mean())


# ---------------------------------------------------------------- similarity


def linear_cka(x: Tensor, y: Tensor) -> float:
    r"""Linear centred kernel alignment (Kornblith, Norouzi, Lee & Hinton 2019, eq. 5)
    between two representations of the same n samples, x (n, p) and y (n, q):

    .. math:: \mathrm{CKA}(X, Y) = \frac{\|Y^\top X\|_F^2}{\|X^\top X\|_F\,\|Y^\top Y\|_F}

    with centred columns, computed through the n x n Gram matrices (the same number,
    cheaper when p or q is large). 1 for representations equal up to an orthogonal
    transform and isotropic scaling; invariant to neither general linear maps nor
    per-feature scaling. Extra dimensions (C, H, W) are flattened."""
    x = x.flatten(1).double()
    y = y.flatten(1).double()
    if len(x) != len(y):
        raise ValueError(f"CKA needs the same samples on both sides, got {len(x)} and {len(y)}")
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    k, l = x @ x.t(), y @ y.t()
    hsic = (k * l).sum()
    norm = k.norm() * l.norm()
    return float(hsic / norm) if norm > 0 else float("nan")


def aligned_pairs(teacher: nn.Module, student: nn.Module, in_shape) -> list[tuple[str, str]]:
    """Layer pairs at the same relative depth: each spatial stage of the model with fewer
    stages against the teacher/student stage at the same fraction of depth, then the
    embeddings and the logits (where both models have them)."""

    def taps(model):
        names = getattr(model, "tap_names", None) or [n for n, _ in model.named_children()]
        shapes = models.module_shapes(model, in_shape, names)
        return [n for n in names if n in shapes and len(shapes[n]) == 3], [
            n for n in names if n in shapes and len(shapes[n]) == 1
        ]

    t_sp, t_vec = taps(teacher)
    s_sp, s_vec = taps(student)
    out: list[tuple[str, str]] = []
    if t_sp and s_sp:
        n = min(len(t_sp), len(s_sp))
        for i in range(n):
            frac = (i + 1) / n
            ti = max(0, round(frac * len(t_sp)) - 1)
            si = max(0, round(frac * len(s_sp)) - 1)
            out.append((t_sp[ti], s_sp[si]))
    if t_vec and s_vec:
        out.append((t_vec[-1], s_vec[-1]))
    t_mods, s_mods = dict(teacher.named_modules()), dict(student.named_modules())
    if "fc" in t_mods and "fc" in s_mods:
        out.append(("fc", "fc"))
    seen, unique = set(), []
    for pair in out:
        if pair not in seen:
            seen.add(pair)
            unique.append(pair)
    return unique


@torch.no_grad()
def similarity_to_teacher(
    teacher_feats: dict[str, Tensor],
    student_feats: dict[str, dict[str, Tensor]],
    pairs: list[tuple[str, str]],
    p: float = 2,
) -> list[dict]:
    """Per layer pair, how close each student's representation is to the teacher's on the
    same images: ``[{"pair": (t, s), "spatial": bool, "cka": {student: value},
    "attention": {student: value} (spatial pairs only, else {})}]``.

    ``teacher_feats[t]`` and ``student_feats[name][s]`` are batches of the same inputs
    (see :func:`extract`)."""
    rows = []
    for t_name, s_name in pairs:
        t = teacher_feats[t_name]
        spatial = t.dim() == 4 and all(f[s_name].dim() == 4 for f in student_feats.values())
        row = {"pair": (t_name, s_name), "spatial": spatial, "cka": {}, "attention": {}}
        for who, feats in student_feats.items():
            s = feats[s_name]
            row["cka"][who] = linear_cka(s, t)
            if spatial:
                row["attention"][who] = attention_cosine(s, t, p)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- saving


def save_student(
    path,
    student: nn.Module,
    modules: nn.Module | None = None,
    config: dict | None = None,
    pairs: list | None = None,
    in_shape=None,
    num_classes: int | None = None,
) -> None:
    """The student and its extra trainable modules (FitNets regressors, projection heads)
    in one safetensors file (no pickle), with what rebuilding them needs as metadata:
    the run's config, the layer pairs with their shapes, the input shape and the classes.
    ``pairs`` are ``(teacher_layer, student_layer, teacher_shape, student_shape)`` as in
    ``Trainer.pairs``."""
    from safetensors.torch import save

    tensors = models.state_tensors(student)
    if modules is not None:
        tensors.update(models.state_tensors(modules, "extra."))
    meta = {
        "format": "kd-playground-student/1",
        "config": json.dumps(config or {}),
        "pairs": json.dumps([[p[0], p[1], list(p[2]), list(p[3])] for p in (pairs or [])]),
        "in_shape": json.dumps(list(in_shape) if in_shape is not None else None),
        "num_classes": json.dumps(num_classes),
        "arch": str(getattr(student, "arch", (config or {}).get("student", ""))),
        "has_extra": json.dumps(modules is not None),
    }
    paths.atomic_write_bytes(path, save(tensors, metadata=meta))


def save_trainer_student(path, trainer) -> None:
    """``save_student`` for a finished (or stopped) ``Trainer``: its distilled student with
    the regressors it was trained with."""
    save_student(
        path,
        trainer.student,
        trainer.modules,
        trainer.config.to_dict(),
        trainer.pairs,
        trainer.ds.in_shape,
        trainer.ds.num_classes,
    )


def load_student(path) -> tuple[nn.Module, nn.Module | None, dict]:
    """(student, modules or None, metadata) from a file written by :func:`save_student`;
    both modules in eval mode, rebuilt from the metadata and loaded without pickle."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        raw = fh.metadata() or {}
    meta = {
        "config": json.loads(raw.get("config", "{}")),
        "pairs": [(a, b, tuple(ts), tuple(ss)) for a, b, ts, ss in json.loads(raw.get("pairs", "[]"))],
        "in_shape": tuple(json.loads(raw.get("in_shape", "null")) or ()),
        "num_classes": json.loads(raw.get("num_classes", "null")),
        "arch": raw.get("arch", ""),
    }
    if not meta["in_shape"] or not meta["num_classes"] or not meta["arch"]:
        raise ValueError(f"{path} lacks the metadata needed to rebuild the student (written by save_student?)")
    student = models.build(meta["arch"], meta["in_shape"], meta["num_classes"])
    modules = None
    if json.loads(raw.get("has_extra", "false")):
        method = methods.get(meta["config"].get("method", "fitnets"))
        params = method.resolve_params(meta["config"].get("params"))
        modules = method.make_modules([(p[2], p[3]) for p in meta["pairs"]], params)
    models.load_weights(student, path, extra=modules)
    student.eval()
    if modules is not None:
        modules.eval()
    return student, modules, meta


def tile_channels(channels: list[int], h: int, w: int, cols: int, gap: int = 1) -> np.ndarray:
    """The channel number of every cell of a :func:`channel_grid` (NaN in gaps), for hover text."""
    rows = max(1, math.ceil(len(channels) / cols))
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan)
    for i, c in enumerate(channels):
        r, k = divmod(i, cols)
        out[r * (h + gap) : r * (h + gap) + h, k * (w + gap) : k * (w + gap) + w] = c
    return out

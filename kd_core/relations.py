"""What relational and contrastive distillation transfer, as numbers the Relations and
Contrastive pages draw. Pure functions on models, tensors and arrays; no UI code.

Relational methods (RKD, SP, PKT) do not copy the teacher's features: they copy the
*structure* of a batch — how far apart the samples are (RKD distance), the angles they
form (RKD angle), their similarity Gram matrix (SP), their neighbour probabilities (PKT).
Each network's matrices are computed in its own feature space, so teacher and student
need not have the same width. Contrastive methods (in-batch InfoNCE, CRD) need a shared
space: the run's projection heads, or a linear map fitted from a student's features to
the teacher's (:func:`fit_linear_map`), the same for any student.

A page extracts features once per model for a fixed pool of test images
(:func:`pool_indices`, :func:`flat_features`) and then only slices: a batch of N images
sorted by class (:func:`class_sorted_batch`), the matrices of that batch, the losses, the
2-D maps (:func:`embed_2d`, PCA or t-SNE on at most ``TSNE_MAX`` points).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import features, losses

POOL_SIZE = 1000  # test images whose features a page computes once per model
TSNE_MAX = 1000
MATRICES = {
    "distance": "RKD distance ψ_D: ‖e_i − e_j‖ / mean distance",
    "angle": "RKD angle ψ_A: cos of the angle at the anchor between i and k",
    "sp": "SP Gram matrix: row-normalised e eᵀ",
    "pkt": "PKT probabilities p(j | i) under a cosine kernel",
}
LOSSES = {"rkd_distance": "RKD distance", "rkd_angle": "RKD angle", "sp": "SP", "pkt": "PKT"}


# ---------------------------------------------------------------- choosing images


def pool_indices(n_test: int, size: int = POOL_SIZE, seed: int = 0) -> np.ndarray:
    """A fixed random subset of ``size`` test positions (all when fewer), ascending."""
    if n_test <= size:
        return np.arange(n_test)
    return np.sort(np.random.default_rng(seed).permutation(n_test)[:size])


def class_sorted_batch(y, n: int, seed: int = 0) -> np.ndarray:
    """Positions of ``n`` samples of ``y`` with the classes as balanced as the data allow,
    sorted by class (then by position), so class blocks show in the matrices. The same
    ``seed`` gives the same samples, and a larger ``n`` keeps the smaller one's samples."""
    y = np.asarray(y)
    n = int(min(max(n, 0), len(y)))
    rng = np.random.default_rng(seed)
    queues = {int(c): list(rng.permutation(np.flatnonzero(y == c))) for c in np.unique(y)}
    picked: list[int] = []
    while len(picked) < n:
        for c in sorted(queues):
            if queues[c] and len(picked) < n:
                picked.append(int(queues[c].pop(0)))
    picked = np.array(picked, dtype=int)
    return picked[np.lexsort((picked, y[picked]))] if n else picked


# ---------------------------------------------------------------- features


def flat_features(model: nn.Module, x: Tensor, layer: str) -> Tensor:
    """The named layer's output on ``x`` (eval mode, CPU), one flattened row per sample."""
    return features.extract(model, x, [layer])[layer].flatten(1)


def project(modules: nn.Module | None, student_emb: Tensor, teacher_emb: Tensor) -> tuple[Tensor, Tensor] | None:
    """A run's projection heads applied to (student, teacher) features: ``Projections``
    (in-batch contrastive) or CRD's embed heads; None when the run has no heads."""
    if modules is None:
        return None
    with torch.no_grad():
        if hasattr(modules, "project"):  # CRD
            return modules.project(student_emb, teacher_emb)
        if hasattr(modules, "student") and hasattr(modules, "teacher"):  # methods.Projections
            return modules(student_emb, teacher_emb)
    return None


# ---------------------------------------------------------------- relational matrices


def anchor_angles(emb: Tensor, anchor: int) -> Tensor:
    """RKD's angle potentials for one anchor j: (B, B) with [i, k] = cos of the angle at
    e_j between e_i and e_k, i.e. ``losses.angle_potentials(emb)[anchor]`` without the
    B^3 tensor."""
    emb = emb.flatten(1)
    e = F.normalize(emb - emb[anchor], p=2, dim=1)  # unit(e_i - e_j); the anchor's own row is 0
    return e @ e.t()


def relation_matrices(emb: Tensor, anchor: int = 0) -> dict[str, np.ndarray]:
    """The four relational matrices of a batch (see ``MATRICES``), as float arrays."""
    emb = emb.flatten(1).float()
    with torch.no_grad():
        out = {
            "distance": losses.normalised_distances(emb),
            "angle": anchor_angles(emb, anchor),
            "sp": losses.similarity_matrix(emb),
            "pkt": losses.pkt_probabilities(emb),
        }
    return {k: v.numpy().astype(np.float64) for k, v in out.items()}


def relational_losses(student_emb: Tensor, teacher_emb: Tensor) -> dict[str, float]:
    """The unweighted relational losses between a student's and the teacher's batch."""
    s, t = student_emb.flatten(1).float(), teacher_emb.flatten(1).float()
    with torch.no_grad():
        return {
            "rkd_distance": float(losses.rkd_distance_loss(s, t)),
            "rkd_angle": float(losses.rkd_angle_loss(s, t)),
            "sp": float(losses.sp_loss(s, t)),
            "pkt": float(losses.pkt_loss(s, t)),
        }


def matrix_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two matrices of the same shape."""
    return float(np.abs(np.asarray(a) - np.asarray(b)).mean())


# ---------------------------------------------------------------- 2-D maps


def embed_2d(emb, how: str = "pca", seed: int = 0) -> np.ndarray:
    """(n, 2) coordinates of the rows of ``emb``: PCA, or t-SNE (on at most ``TSNE_MAX``
    rows, after PCA to 50 dimensions when wider). Raises ValueError for other methods."""
    x = np.asarray(emb, dtype=np.float64).reshape(len(emb), -1)
    if how == "pca":
        from sklearn.decomposition import PCA

        if len(x) < 2:
            return np.zeros((len(x), 2))
        out = PCA(n_components=min(2, x.shape[1]), random_state=seed).fit_transform(x)
        return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    if how == "tsne":
        if len(x) > TSNE_MAX:
            raise ValueError(f"t-SNE is run on at most {TSNE_MAX} points here, got {len(x)}")
        if len(x) < 4:
            raise ValueError("t-SNE needs at least 4 points")
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        # one thread: sklearn's OpenMP pool fighting torch's for two cores is 10-20x slower
        with threadpool_limits(1):
            if x.shape[1] > 50:
                x = PCA(n_components=50, random_state=seed).fit_transform(x)
            perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
            return TSNE(
                n_components=2, init="pca", learning_rate="auto", perplexity=perplexity, random_state=seed, n_jobs=1
            ).fit_transform(x)
    raise ValueError(f"unknown 2-D map '{how}'; use 'pca' or 'tsne'")


def align_to(reference: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points`` (n, 2) rotated or reflected (orthogonal Procrustes) and scaled onto
    ``reference`` (n, 2), so two maps of the same samples are drawn the same way round.
    Distances within ``points`` only change by one common scale factor."""
    ref, pts = np.asarray(reference, dtype=np.float64), np.asarray(points, dtype=np.float64)
    rc, pc = ref - ref.mean(0), pts - pts.mean(0)
    u, _, vt = np.linalg.svd(pc.T @ rc)
    r = u @ vt
    out = pc @ r
    scale = np.sqrt((rc**2).sum() / max((out**2).sum(), 1e-12))
    return out * scale + ref.mean(0)


# ---------------------------------------------------------------- contrastive


def fit_linear_map(src: Tensor, dst: Tensor, ridge: float = 1e-2) -> Tensor:
    """Ridge least squares W (D_src + 1, D_dst) with [src, 1] @ W ≈ dst: a student's
    features mapped into the teacher's space, fitted the same way for any student."""
    a = torch.cat([src.double().flatten(1), torch.ones(len(src), 1, dtype=torch.float64)], dim=1)
    b = dst.double().flatten(1)
    lam = ridge * float(a.pow(2).sum()) / a.shape[1]  # relative to the features' scale
    gram = a.t() @ a + lam * torch.eye(a.shape[1], dtype=torch.float64)
    return torch.linalg.solve(gram, a.t() @ b)


def apply_map(w: Tensor, x: Tensor) -> Tensor:
    x = x.double().flatten(1)
    return (torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1) @ w).float()


def similarity(student_emb: Tensor, teacher_emb: Tensor) -> np.ndarray:
    """cos(s_i, t_j) for all pairs (B, B): positives on the diagonal."""
    with torch.no_grad():
        return losses.contrastive_logits(student_emb.float(), teacher_emb.float(), 1.0).numpy().astype(np.float64)


def row_softmax(sim: np.ndarray, tau: float) -> np.ndarray:
    """softmax_j(sim[i, j] / tau) per row: where anchor i puts its probability."""
    z = np.asarray(sim, dtype=np.float64) / tau
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def per_sample_info_nce(sim: np.ndarray, tau: float) -> np.ndarray:
    """-log softmax(sim / tau)[i, i] per anchor; its mean is ``losses.info_nce_loss``."""
    z = np.asarray(sim, dtype=np.float64) / tau
    m = z.max(axis=1, keepdims=True)
    log_norm = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return log_norm - np.diag(z)


def retrieval_accuracy(student_emb, teacher_emb) -> float:
    """How often a student embedding's nearest teacher embedding (cosine) is its own
    sample's: the fraction of rows whose largest similarity is on the diagonal."""
    sim = similarity(torch.as_tensor(student_emb), torch.as_tensor(teacher_emb))
    return float((sim.argmax(axis=1) == np.arange(len(sim))).mean()) if len(sim) else float("nan")

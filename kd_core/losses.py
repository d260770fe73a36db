"""Distillation losses as pure functions: tensors in, a batch-averaged scalar out.

Each docstring gives the formula and the paper. The teacher's tensors are treated as
targets: callers pass them detached (or computed under ``torch.no_grad``); the losses
never back-propagate into them on purpose, but they do not detach for you either, so
that online methods (mutual learning) can use them symmetrically.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def softmax_t(logits: Tensor, temperature: float) -> Tensor:
    """softmax(z / T), stable for any T > 0 (also T < 1)."""
    return F.softmax(logits / temperature, dim=-1)


def log_softmax_t(logits: Tensor, temperature: float) -> Tensor:
    return F.log_softmax(logits / temperature, dim=-1)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    r"""Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network".

    .. math:: T^2 \, \mathrm{KL}\big(\mathrm{softmax}(t/T) \,\|\, \mathrm{softmax}(s/T)\big)

    averaged over the batch. The factor T^2 keeps the gradient's scale independent of T
    (the soft-target gradients shrink as 1/T^2).
    """
    log_p_s = log_softmax_t(student_logits, temperature)
    log_p_t = log_softmax_t(teacher_logits, temperature)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


def dkd_parts(
    student_logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    r"""The two parts of decoupled KD (Zhao et al. 2022): (TCKD, NCKD), each times T^2.

    TCKD is the KL between the binary distributions [p_gt, 1 - p_gt] of teacher and
    student; NCKD is the KL between their distributions over the non-target classes only
    (softmax renormalised without the true class).

    Both binary log-probabilities are computed in log space,
    :math:`\log p_{gt} = z_{gt}/T - \mathrm{lse}(z/T)` and
    :math:`\log(1 - p_{gt}) = \mathrm{lse}_{c \ne gt}(z_c/T) - \mathrm{lse}(z/T)`, so TCKD and
    its gradient stay exact when p_gt or 1 - p_gt underflows (logits in the thousands).
    """
    T = temperature
    gt = F.one_hot(target, student_logits.shape[-1]).bool()
    log_b_s = _binary_log_probs(student_logits / T, gt)
    log_b_t = _binary_log_probs(teacher_logits / T, gt)
    tckd = F.kl_div(log_b_s, log_b_t, reduction="batchmean", log_target=True) * T**2
    # non-target distribution: drop the true class by giving it a very negative logit
    # (as the authors' code does; exact while the logits / T span less than 1000)
    mask = gt.to(student_logits.dtype) * 1000.0
    log_q_s = F.log_softmax(student_logits / T - mask, dim=-1)
    log_q_t = F.log_softmax(teacher_logits / T - mask, dim=-1)
    nckd = F.kl_div(log_q_s, log_q_t, reduction="batchmean", log_target=True) * T**2
    return tckd, nckd


def _binary_log_probs(scaled_logits: Tensor, gt: Tensor) -> Tensor:
    """(B, 2): log p_gt and log(1 - p_gt) of softmax(scaled_logits), without leaving log space."""
    lse = torch.logsumexp(scaled_logits, dim=-1)
    log_gt = (scaled_logits * gt).sum(-1) - lse
    log_rest = torch.logsumexp(scaled_logits.masked_fill(gt, float("-inf")), dim=-1) - lse
    return torch.stack([log_gt, log_rest], dim=-1)


def dkd_loss(
    student_logits: Tensor, teacher_logits: Tensor, target: Tensor, alpha: float, beta: float, temperature: float
) -> Tensor:
    r"""Decoupled knowledge distillation (Zhao et al. 2022, CVPR):

    .. math:: \alpha \,\mathrm{TCKD} + \beta \,\mathrm{NCKD}

    Classic KD equals TCKD + (1 - p^T_{gt}) NCKD; DKD frees NCKD from that coupling.
    """
    tckd, nckd = dkd_parts(student_logits, teacher_logits, target, temperature)
    return alpha * tckd + beta * nckd


# ---------------------------------------------------------------- methods of 2022-2024


def pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``: (B,).
    ``eps`` keeps a constant row finite, as in DIST's reference code."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)


def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float,
    inter_weight: float = 1.0,
    intra_weight: float = 1.0,
) -> Tensor:
    r"""DIST (Huang, You, Wang, Qian & Xu 2022, "Knowledge Distillation from A Stronger
    Teacher", NeurIPS): match *relations* of the probabilities, not their values.

    With :math:`P = \mathrm{softmax}(Z/T)` for both networks (B x C) and
    :math:`\rho` the Pearson correlation,

    .. math:: T^2\Big(w_{inter}\big(1 - \tfrac{1}{B}\sum_i \rho(P^S_{i,:}, P^T_{i,:})\big)
              + w_{intra}\big(1 - \tfrac{1}{C}\sum_c \rho(P^S_{:,c}, P^T_{:,c})\big)\Big)

    inter-class: each image's ranking of the classes; intra-class: each class's ranking of
    the images of the batch. A correlation ignores shift and scale, so the student need not
    reproduce a stronger teacher's exact probabilities.
    """
    p_s = softmax_t(student_logits, temperature)
    p_t = softmax_t(teacher_logits, temperature)
    inter = 1 - pearson_rows(p_s, p_t).mean()
    intra = 1 - pearson_rows(p_s.t(), p_t.t()).mean()
    return temperature**2 * (inter_weight * inter + intra_weight * intra)


def zscore(logits: Tensor) -> Tensor:
    r"""Logit standardisation (Sun, Ren, Li, Wang & Cao 2024, CVPR):
    :math:`\mathcal{Z}(z) = (z - \bar z) / (\sigma(z) + 10^{-7})` per sample, with the
    Bessel-corrected standard deviation (``torch.std``'s default), as the authors' code."""
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (std + 1e-7)


def ls_kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    r"""KD on standardised logits (Sun et al. 2024, "Logit Standardization in Knowledge
    Distillation", CVPR):

    .. math:: T^2\,\mathrm{KL}\big(\mathrm{softmax}(\mathcal{Z}(t)/T) \,\|\, \mathrm{softmax}(\mathcal{Z}(s)/T)\big)

    with :func:`zscore`. The student matches the teacher's logit *relations*, not their
    scale: shifting or scaling a network's logits leaves its term unchanged.
    """
    return kd_loss(zscore(student_logits), zscore(teacher_logits), temperature)


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = lam
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lam * grad, None


def reverse_gradient(x: Tensor, lam: float) -> Tensor:
    """Gradient reversal (Ganin & Lempitsky 2015): the identity forward; backward, the
    gradient times ``-lam``. CTKD puts it before its temperature so that the temperature
    *ascends* the loss the student descends."""
    return _ReverseGrad.apply(x, float(lam))


def cosine_curriculum(epoch: float, epochs: float, high: float = 1.0, low: float = 0.0) -> float:
    r"""CTKD's curriculum for the reversal weight (Li et al. 2023):
    :math:`\lambda(e) = low + (high - low)\,\tfrac{1}{2}\big(1 - \cos(\pi \min(e, E)/E)\big)`,
    rising from ``low`` at e = 0 to ``high`` at e = E and staying there (E = ``epochs``)."""
    if epochs <= 0:
        return high
    e = min(max(epoch, 0.0), epochs)
    return low + (high - low) * 0.5 * (1 - math.cos(math.pi * e / epochs))


def hint_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    r"""FitNets (Romero et al. 2015): mean squared error between the regressed student
    hint and the teacher's guided layer, :math:`\frac{1}{n}\|u_h - r(v_g)\|^2`.
    The regressor r is applied by the caller."""
    if student_feat.shape != teacher_feat.shape:
        raise ValueError(
            f"hint_loss needs equal shapes, got {tuple(student_feat.shape)} and {tuple(teacher_feat.shape)}"
        )
    return F.mse_loss(student_feat, teacher_feat)


def _pool_to(feat: Tensor, size: tuple[int, int]) -> Tensor:
    if feat.shape[-2:] == size:
        return feat
    return F.adaptive_avg_pool2d(feat, size)


def pooled_pair(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Spatial maps of different sizes average-pooled to the smaller; anything else as is."""
    if s.dim() == 4 and s.shape[-2:] != t.shape[-2:]:
        size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
        s, t = F.adaptive_avg_pool2d(s, size), F.adaptive_avg_pool2d(t, size)
    return s, t


def attention_map(feat: Tensor, p: float = 2) -> Tensor:
    r"""Zagoruyko & Komodakis 2017: the spatial attention map of a (B, C, H, W) feature,
    :math:`Q = \mathrm{vec}(\frac{1}{C}\sum_c |A_c|^p)` L2-normalised per sample; (B, H*W)."""
    if feat.dim() != 4:
        raise ValueError(f"attention maps need a (B, C, H, W) feature map, got shape {tuple(feat.shape)}")
    q = feat.abs().pow(p).mean(dim=1).flatten(1)
    return F.normalize(q, dim=1)


def attention_loss(student_feat: Tensor, teacher_feat: Tensor, p: float = 2) -> Tensor:
    r"""Attention transfer: :math:`\mathrm{mean}\,(Q_S - Q_T)^2` over batch and positions.
    Maps of different sizes are compared after average-pooling the larger to the smaller."""
    hs, ws = student_feat.shape[-2:]
    ht, wt = teacher_feat.shape[-2:]
    size = (min(hs, ht), min(ws, wt))
    q_s = attention_map(_pool_to(student_feat, size), p)
    q_t = attention_map(_pool_to(teacher_feat, size), p)
    return (q_s - q_t).pow(2).mean()


def pairwise_distances(emb: Tensor, eps: float = 1e-12) -> Tensor:
    """Euclidean distance matrix (B, B) with an exact zero diagonal."""
    emb = emb.flatten(1)
    sq = emb.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * emb @ emb.t()).clamp_min(eps)
    d = d2.sqrt()
    return d * (1 - torch.eye(len(emb), device=emb.device, dtype=emb.dtype))


def normalised_distances(emb: Tensor) -> Tensor:
    """Pairwise distances divided by their mean over distinct pairs (RKD's psi_D)."""
    d = pairwise_distances(emb)
    n = len(d)
    mu = d.sum() / max(n * (n - 1), 1)
    return d / mu.clamp_min(1e-12)


def rkd_distance_loss(student_emb: Tensor, teacher_emb: Tensor) -> Tensor:
    r"""RKD distance-wise loss (Park et al. 2019): Huber (smooth L1) between the
    normalised pairwise distances :math:`\psi_D(t_i, t_j) = \|t_i - t_j\| / \mu`."""
    return F.smooth_l1_loss(normalised_distances(student_emb), normalised_distances(teacher_emb))


def angle_potentials(emb: Tensor) -> Tensor:
    """cos of the angle at j between i and k for all triplets: (B, B, B) indexed [j, i, k]."""
    emb = emb.flatten(1)
    e = F.normalize(emb.unsqueeze(0) - emb.unsqueeze(1), p=2, dim=2)  # e[j, i] = unit(t_i - t_j)
    return torch.bmm(e, e.transpose(1, 2))


def rkd_angle_loss(student_emb: Tensor, teacher_emb: Tensor) -> Tensor:
    r"""RKD angle-wise loss (Park et al. 2019): Huber between
    :math:`\psi_A(t_i,t_j,t_k) = \cos\angle t_i t_j t_k` over all triplets."""
    return F.smooth_l1_loss(angle_potentials(student_emb), angle_potentials(teacher_emb))


def similarity_matrix(feat: Tensor) -> Tensor:
    """SP's row-normalised Gram matrix G = normalize(Q Q^T) of the flattened features."""
    q = feat.flatten(1)
    return F.normalize(q @ q.t(), p=2, dim=1)


def sp_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    r"""Similarity-preserving KD (Tung & Mori 2019): :math:`\frac{1}{b^2}\|G_T - G_S\|_F^2`."""
    b = student_feat.shape[0]
    diff = similarity_matrix(teacher_feat) - similarity_matrix(student_feat)
    return diff.pow(2).sum() / (b * b)


def pkt_probabilities(emb: Tensor, eps: float = 1e-7) -> Tensor:
    """PKT's conditional probabilities p_{i|j}: cosine kernel rescaled to [0, 1], rows summing to 1."""
    emb = F.normalize(emb.flatten(1), p=2, dim=1)
    sim = (emb @ emb.t() + 1.0) / 2.0
    return sim / sim.sum(dim=1, keepdim=True).clamp_min(eps)


def pkt_loss(student_emb: Tensor, teacher_emb: Tensor, eps: float = 1e-7) -> Tensor:
    r"""Probabilistic knowledge transfer (Passalis & Tefas 2018): the KL divergence between
    the teacher's and student's cosine-kernel conditional probabilities,
    :math:`\mathrm{mean}_{i,j}\; p^T_{i|j} \log\frac{p^T_{i|j}}{p^S_{i|j}}` (mean over the
    B x B entries, as in the authors' reference code)."""
    p_s = pkt_probabilities(student_emb, eps)
    p_t = pkt_probabilities(teacher_emb, eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


def contrastive_logits(student_emb: Tensor, teacher_emb: Tensor, tau: float) -> Tensor:
    """cos(s_i, t_j) / tau for all pairs: (B, B), positives on the diagonal."""
    s = F.normalize(student_emb.flatten(1), dim=1)
    t = F.normalize(teacher_emb.flatten(1), dim=1)
    return s @ t.t() / tau


def info_nce_loss(student_emb: Tensor, teacher_emb: Tensor, tau: float) -> Tensor:
    r"""In-batch contrastive distillation (InfoNCE, van den Oord et al. 2018 as used by
    CRD-style methods): student sample i must pick teacher sample i among the batch,
    :math:`-\frac{1}{B}\sum_i \log \frac{\exp(s_i\cdot t_i/\tau)}{\sum_j \exp(s_i\cdot t_j/\tau)}`."""
    logits = contrastive_logits(student_emb, teacher_emb, tau)
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


# ---------------------------------------------------------------- beyond one teacher


def ensemble_weights(teacher_logits: Tensor, weighting: str = "mean") -> Tensor:
    r"""Per-sample weights (K, B) of K teachers, summing to 1 over the teachers.

    ``"mean"``: :math:`w_k = 1/K` (Hinton et al. 2015 distil an ensemble through its
    averaged predictions). ``"confidence"``: a softmax over the teachers of their negative
    entropy at T = 1, :math:`w_k(x) = e^{-H(p_k(x))} / \sum_j e^{-H(p_j(x))}` with
    :math:`p_k = \mathrm{softmax}(z_k)`: on each image, the surer teacher counts more.
    (You et al. 2017, "Learning from Multiple Teacher Networks" (KDD), average the teachers'
    soft targets; per-sample confidence weights follow the later multi-teacher work.)
    """
    K = teacher_logits.shape[0]
    if weighting == "mean":
        return torch.full(teacher_logits.shape[:2], 1.0 / K, dtype=teacher_logits.dtype, device=teacher_logits.device)
    if weighting == "confidence":
        log_p = F.log_softmax(teacher_logits, dim=-1)
        entropy = -(log_p.exp() * log_p).sum(-1)  # (K, B)
        return F.softmax(-entropy, dim=0)
    raise ValueError(f"weighting must be 'mean' or 'confidence', got {weighting!r}")


def ensemble_soft_targets(teacher_logits: Tensor, temperature: float, weighting: str = "mean") -> Tensor:
    r"""The blended soft targets (B, C) of K teachers whose logits are stacked as (K, B, C):

    .. math:: \bar p^{(T)}(x) = \sum_{k=1}^{K} w_k(x)\,\mathrm{softmax}(z_k(x)/T)

    with the weights of :func:`ensemble_weights` (Hinton et al. 2015; You et al. 2017).
    Probabilities are blended, not logits: the result is a proper distribution.
    """
    w = ensemble_weights(teacher_logits, weighting)
    return (w.unsqueeze(-1) * softmax_t(teacher_logits, temperature)).sum(0)


def ensemble_kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, weighting: str = "mean"
) -> Tensor:
    r"""Multi-teacher KD: :math:`T^2\,\mathrm{KL}(\bar p^{(T)} \,\|\, \mathrm{softmax}(s/T))`, batch-averaged,
    with :math:`\bar p^{(T)}` from :func:`ensemble_soft_targets` (``teacher_logits``: (K, B, C))."""
    p = ensemble_soft_targets(teacher_logits, temperature, weighting)
    log_p_s = log_softmax_t(student_logits, temperature)
    kl = (p * (torch.log(p.clamp_min(1e-30)) - log_p_s)).sum(-1).mean()
    return kl * temperature**2


def mutual_learning_loss(
    student_logits: Tensor,
    peer_logits: list[Tensor],
    target: Tensor,
    labelled: Tensor | None = None,
    weight: float = 1.0,
) -> Tensor:
    r"""Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu 2018, CVPR), for student k:

    .. math:: \mathcal{L}_k = \mathrm{CE}(y, p_k) + \frac{\lambda}{K-1}\sum_{l \ne k} \mathrm{KL}(p_l \,\|\, p_k)

    with :math:`p = \mathrm{softmax}(z)` (T = 1, as in the paper) and :math:`\lambda` = ``weight``
    (1 in the paper). CE covers the ``labelled`` samples only (all when None); the KL, all of
    them. Pass the peers' logits detached: each student mimics the others, not the reverse.
    """
    if labelled is None or labelled.all():
        ce = F.cross_entropy(student_logits, target)
    elif labelled.any():
        ce = F.cross_entropy(student_logits[labelled], target[labelled])
    else:
        ce = student_logits.sum() * 0.0
    if not peer_logits:
        return ce
    log_p = F.log_softmax(student_logits, dim=-1)
    kl = sum(F.kl_div(log_p, F.log_softmax(z, dim=-1), reduction="batchmean", log_target=True) for z in peer_logits)
    return ce + weight * kl / len(peer_logits)

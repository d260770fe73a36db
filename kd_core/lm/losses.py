"""Distillation losses for language models, per next-token distribution.

Each takes logits of shape ``(..., V)`` (e.g. ``(B, L, V)``: every position of every
sequence) and returns a scalar: the divergence averaged over all positions. ``T`` is the
softmax temperature, applied to both models; the KL losses carry Hinton's ``T^2``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _flat(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1])


def forward_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Token-level KD (Hinton et al. 2015; the soft-target loss of DistilBERT, Sanh et al. 2019):
    ``T^2 * KL(p_T || p_S)`` with ``p = softmax(z / T)``, averaged over positions.
    Mode-covering: the student is punished wherever the teacher has mass and it has none."""
    T = float(temperature)
    log_p_s = F.log_softmax(_flat(student_logits) / T, dim=-1)
    log_p_t = F.log_softmax(_flat(teacher_logits) / T, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    return T * T * kl.mean()


def reverse_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Reverse KL (MiniLLM, Gu et al. 2024): ``T^2 * KL(p_S || p_T)``, averaged over positions.
    Mode-seeking: the student is punished for mass where the teacher has little, not for
    missing some of the teacher's modes."""
    T = float(temperature)
    log_p_s = F.log_softmax(_flat(student_logits) / T, dim=-1)
    log_p_t = F.log_softmax(_flat(teacher_logits) / T, dim=-1)
    kl = (log_p_s.exp() * (log_p_s - log_p_t)).sum(-1)
    return T * T * kl.mean()


def generalized_jsd(
    student_logits: Tensor, teacher_logits: Tensor, beta: float = 0.5, temperature: float = 1.0
) -> Tensor:
    """Generalised Jensen–Shannon divergence (GKD, Agarwal et al. 2024), with
    ``M = beta * p_T + (1 - beta) * p_S``::

        JSD(beta) = beta * KL(p_T || M) + (1 - beta) * KL(p_S || M)

    averaged over positions (times ``T^2``). It vanishes as beta -> 0 or 1; divided by beta
    (by 1 - beta) it tends to the forward (reverse) KL, so, as in GKD, ``beta = 0`` *is* the
    forward KL and ``beta = 1`` the reverse KL."""
    beta = float(beta)
    if beta <= 0.0:
        return forward_kl(student_logits, teacher_logits, temperature)
    if beta >= 1.0:
        return reverse_kl(student_logits, teacher_logits, temperature)
    T = float(temperature)
    log_p_s = F.log_softmax(_flat(student_logits) / T, dim=-1)
    log_p_t = F.log_softmax(_flat(teacher_logits) / T, dim=-1)
    log_m = torch.logsumexp(torch.stack([log_p_t + math.log(beta), log_p_s + math.log(1.0 - beta)]), dim=0)
    kl_t = (log_p_t.exp() * (log_p_t - log_m)).sum(-1)
    kl_s = (log_p_s.exp() * (log_p_s - log_m)).sum(-1)
    return T * T * (beta * kl_t + (1.0 - beta) * kl_s).mean()


def topk_targets(teacher_logits: Tensor, k: int, temperature: float = 1.0) -> Tensor:
    """The teacher's softened distribution with only its ``k`` largest probabilities kept and
    renormalised to sum to 1 (how offline logit caches of large models are stored)."""
    p = F.softmax(teacher_logits / float(temperature), dim=-1)
    k = max(1, min(int(k), p.shape[-1]))
    top, idx = p.topk(k, dim=-1)
    q = torch.zeros_like(p).scatter_(-1, idx, top)
    return q / q.sum(-1, keepdim=True)


def topk_kl(student_logits: Tensor, teacher_logits: Tensor, k: int, temperature: float = 1.0) -> Tensor:
    """``T^2 * KL(q_k || p_S)`` where ``q_k`` is the top-k renormalised teacher distribution."""
    T = float(temperature)
    q = _flat(topk_targets(teacher_logits, k, T))
    log_p_s = F.log_softmax(_flat(student_logits) / T, dim=-1)
    log_q = torch.where(q > 0, q, torch.ones_like(q)).log()
    return T * T * (q * (log_q - log_p_s)).sum(-1).mean()


def topk_mass_lost(teacher_logits: Tensor, k: int, temperature: float = 1.0) -> float:
    """Mean teacher probability outside the top k (what a top-k cache throws away)."""
    p = F.softmax(teacher_logits / float(temperature), dim=-1)
    k = max(1, min(int(k), p.shape[-1]))
    return float((1.0 - p.topk(k, dim=-1).values.sum(-1)).mean())


def hidden_mse(projected_student_hidden: Tensor, teacher_hidden: Tensor) -> Tensor:
    """TinyBERT-style hidden-state matching (Jiao et al. 2020): mean squared error between the
    student's hidden states, mapped to the teacher's width by a learned projection, and the
    teacher's."""
    return F.mse_loss(projected_student_hidden, teacher_hidden)


def entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy in nats of softmax(z / T), one per position."""
    log_p = F.log_softmax(logits / float(temperature), dim=-1)
    return -(log_p.exp() * log_p).sum(-1)

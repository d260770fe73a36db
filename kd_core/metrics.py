"""Metrics on logits: accuracy, per-class accuracy, agreement and KL with the teacher,
expected calibration error, confusion matrix. Tensors in, Python numbers/lists out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@torch.no_grad()
def predict_logits(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """Logits of ``model`` on ``x`` in eval mode (the mode is restored afterwards), on CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def accuracy(logits: Tensor, y: Tensor) -> float:
    return (logits.argmax(1) == y).float().mean().item() if len(y) else float("nan")


def per_class_accuracy(logits: Tensor, y: Tensor, num_classes: int) -> list[float]:
    pred = logits.argmax(1)
    out = []
    for c in range(num_classes):
        m = y == c
        out.append((pred[m] == c).float().mean().item() if m.any() else float("nan"))
    return out


def agreement(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Fraction of samples where the student's top-1 class equals the teacher's."""
    return (student_logits.argmax(1) == teacher_logits.argmax(1)).float().mean().item()


def kl_to_teacher(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> float:
    """Mean KL(p_T || p_S) at temperature T (without the T^2 factor)."""
    return F.kl_div(
        F.log_softmax(student_logits / temperature, 1),
        F.log_softmax(teacher_logits / temperature, 1),
        reduction="batchmean",
        log_target=True,
    ).item()


def ece(logits: Tensor, y: Tensor, bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017): sum over confidence bins of
    |accuracy - confidence| weighted by the bin's share of samples."""
    prob = F.softmax(logits.float(), 1)
    conf, pred = prob.max(1)
    correct = (pred == y).float()
    edges = torch.linspace(0, 1, bins + 1)
    total = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.float().mean() * (correct[m].mean() - conf[m].mean()).abs()
    return total.item()


def confusion(logits: Tensor, y: Tensor, num_classes: int) -> list[list[int]]:
    """Counts, rows = true class, columns = predicted class."""
    idx = y * num_classes + logits.argmax(1)
    return torch.bincount(idx, minlength=num_classes**2).view(num_classes, num_classes).tolist()


def summary(logits: Tensor, y: Tensor, teacher_logits: Tensor | None, num_classes: int) -> dict:
    """Every metric the results table shows, for one model on one split."""
    out = {
        "test_accuracy": accuracy(logits, y),
        "per_class_accuracy": per_class_accuracy(logits, y, num_classes),
        "ece": ece(logits, y),
        "confusion": confusion(logits, y, num_classes),
    }
    if teacher_logits is not None:
        out["agreement"] = agreement(logits, teacher_logits)
        out["kl_to_teacher"] = kl_to_teacher(logits, teacher_logits)
    return out

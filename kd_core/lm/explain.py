"""What the Language models page draws, computed without any UI: next-character
distributions for a prompt, and the forward-vs-reverse-KL picture (a unimodal model fitted
to a two-mode teacher under each divergence)."""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def next_char_logits(model, corpus, prompt: str) -> np.ndarray:
    """The model's logits for the character after ``prompt`` (its last block_size characters)."""
    ids = corpus.encode(prompt or "\n")[-model.block_size :].unsqueeze(0)
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    logits = model(ids.to(dev))[0, -1].float().cpu().numpy()
    model.train(was)
    return logits


def softmax(logits: np.ndarray, T: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / T
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def entropy_nats(p: np.ndarray) -> float:
    p = np.asarray(p, dtype=np.float64)
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def bimodal(n: int = 40, separation: float = 16.0, weight: float = 0.5, width: float = 2.5) -> np.ndarray:
    """A teacher distribution over ``n`` outcomes with two bumps ``separation`` apart; the
    right one carries ``weight`` of the mass."""
    x = np.arange(n, dtype=np.float64)
    c1, c2 = (n - 1) / 2 - separation / 2, (n - 1) / 2 + separation / 2
    p = (1 - weight) * np.exp(-0.5 * ((x - c1) / width) ** 2) + weight * np.exp(-0.5 * ((x - c2) / width) ** 2)
    p += 1e-6
    return p / p.sum()


def unimodal(n: int, mean, std) -> np.ndarray:
    """Probabilities of a discretised Gaussian over ``n`` outcomes (the 'small student', which
    can only make one bump); ``mean`` and ``std`` broadcast (a grid gives a grid)."""
    x = np.arange(n, dtype=np.float64)
    z = -0.5 * ((x - np.asarray(mean, dtype=np.float64)[..., None]) / np.asarray(std, dtype=np.float64)[..., None]) ** 2
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(-1, keepdims=True)


def kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) in nats along the last axis (0 log 0 = 0)."""
    p, q = np.broadcast_arrays(np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(np.maximum(q, 1e-300))), 0.0)
    return terms.sum(-1)


def fit_unimodal(teacher: np.ndarray, divergence: str) -> dict:
    """Fit the one-bump student to ``teacher`` by minimising ``forward`` KL(p_T || p_S) or
    ``reverse`` KL(p_S || p_T) over a fine grid of its mean and width (the exact best fit,
    computed in milliseconds). Forward KL covers both modes with one wide bump; reverse KL
    picks one mode and ignores the other. Also returns, for each mean, the best loss over
    widths (``landscape``): reverse KL has a valley at each mode."""
    n = len(teacher)
    means = np.arange(0.0, n - 1 + 1e-9, 0.25)
    stds = np.geomspace(0.5, 2.0 * n, 90)
    M, S = np.meshgrid(means, stds, indexing="ij")
    q = unimodal(n, M, S)  # (means, stds, n)
    if divergence == "forward":
        loss = kl(teacher, q)
    elif divergence == "reverse":
        loss = kl(q, teacher)
    else:
        raise ValueError(f"divergence must be 'forward' or 'reverse', got {divergence!r}")
    i, j = np.unravel_index(np.argmin(loss), loss.shape)
    p = q[i, j]
    return {
        "probs": p,
        "mean": float(means[i]),
        "std": float(stds[j]),
        "loss": float(loss[i, j]),
        "entropy": entropy_nats(p),
        "landscape": {"means": means, "loss": loss.min(axis=1)},
    }

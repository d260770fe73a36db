"""Softened probabilities in numpy, for what pages and notebooks compute on cached logits
(the training code uses the torch versions in ``kd_core.losses``)."""

from __future__ import annotations

import numpy as np


def log_softmax(z, T: float = 1.0) -> np.ndarray:
    """log softmax(z / T) along the last axis, stable for any T > 0 (T < 1 included)."""
    s = np.asarray(z, dtype=np.float64) / T
    s = s - s.max(axis=-1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


def softmax(z, T: float = 1.0) -> np.ndarray:
    """softmax(z / T) along the last axis."""
    return np.exp(log_softmax(z, T))


def entropy_bits(p) -> np.ndarray:
    """The entropy of probability rows in bits (0 log 0 = 0)."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=-1)

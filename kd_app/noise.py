"""Say when a comparison shown on a page is within seed noise (``kd_core.presets.within_noise``:
``|Δmean| < 2 · pooled std`` over seeds), with the seed std shown, or that one seed gives
no noise estimate at all. Used by the Compare & sweep and Beyond pages."""

from __future__ import annotations

import math

import streamlit as st

from kd_core import presets

from .i18n import t


def sweep_notice(rows: list[dict], best: dict | None, where=None) -> None:
    """Under a T × alpha sweep: how many cells are within seed noise of the best one, and
    whether the best beats the scratch student beyond noise."""
    where = where if where is not None else st
    if best is None:
        return
    if best["n"] < 2 or math.isnan(best["acc_std"]):
        where.warning(t("noise.sweep_one_seed"), icon="🎲")
        return
    ties = []
    for r in rows:
        if r is best or r["reference"] or not r["n"] or math.isnan(r["acc_mean"]):
            continue
        if r.get("method", best.get("method")) != best.get("method"):
            continue
        _, noise = presets.within_noise(best["acc_mean"] - r["acc_mean"], best["acc_std"], r["acc_std"])
        if noise:
            ties.append(r)
    if ties:
        where.warning(
            t("noise.sweep_ties", n=len(ties), total=len(ties) + 1, std=100 * best["acc_std"], seeds=best["n"]),
            icon="🎲",
        )
    ref = next((r for r in rows if r["reference"] and r["n"] and not math.isnan(r["acc_mean"])), None)
    if ref is not None:
        delta = best["acc_mean"] - ref["acc_mean"]
        pooled, noise = presets.within_noise(delta, best["acc_std"], ref["acc_std"])
        if noise:
            where.warning(t("noise.sweep_vs_scratch", delta=100 * delta, std=100 * pooled), icon="🎲")


def spread_notice(label_a: str, accs_a: list[float], label_b: str, acc_b: float, where=None) -> None:
    """``accs_a``: several runs of the same network with different seeds (e.g. DML's
    students); their spread is the seed noise a difference from ``acc_b`` must beat."""
    where = where if where is not None else st
    if len(accs_a) < 2:
        return
    import statistics

    mean, std = statistics.fmean(accs_a), statistics.stdev(accs_a)
    delta = mean - acc_b
    if abs(delta) < 2 * std:
        where.warning(
            t("noise.spread", a=label_a, b=label_b, delta=100 * delta, std=100 * std, n=len(accs_a)), icon="🎲"
        )
    else:
        where.info(t("noise.spread_beyond", a=label_a, b=label_b, delta=100 * delta, std=100 * std, n=len(accs_a)))


def one_seed_notice(where=None) -> None:
    """A single run compared with another: no seed std, so no claim."""
    (where if where is not None else st).warning(t("noise.one_seed"), icon="🎲")


def failed_run(result: dict, status: str, where=None) -> bool:
    """Warn (and return True) when a run's comparison means nothing: it diverged, or the
    distilled or the scratch student ended at chance level (e.g. a learning rate of 0.1).
    Chance level: below 1.5 × 1/classes."""
    where = where if where is not None else st
    chance = 1.0 / max(1, len(result.get("classes") or []) or 10)
    roles = [("student", t("roles.distilled")), ("baseline", t("roles.scratch"))]
    low = [name for role, name in roles if role in result and result[role]["test_accuracy"] < 1.5 * chance]
    lr = result.get("config", {}).get("lr")
    if status == "diverged":
        where.warning(t("noise.diverged", lr=lr), icon="⚠️")
        return True
    if low:
        where.warning(t("noise.chance", who=", ".join(low), chance=100 * chance, lr=lr), icon="⚠️")
        return True
    return False

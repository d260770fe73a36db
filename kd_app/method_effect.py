"""The Lab's "method's own effect" comparison: the method alone (alpha = 0), KD alone, both,
and the student from scratch, each over several seeds, trained as background jobs through
the one job manager and drawn together — bars of mean ± std and a plain verdict per pair,
with an explicit notice where a difference is within seed noise (``kd_core.presets``).

``section(config)`` draws it; the Lab page only calls it."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from kd_core import methods, presets
from kd_core.config import Config
from kd_core.errors import KDError

from . import i18n, links, state
from .i18n import t

MAX_SEEDS = 3
RUN = "kd_fx_run"  # session_state: {"method", "jobs": [(preset, seed, job_id)], "config"}


def _method_title(name: str) -> str:
    key = "methods." + name
    return t(key) if key in i18n.catalogue(i18n.DEFAULT) else methods.get(name).title


def preset_labels(method: str) -> dict[str, str]:
    """Short preset names (the method's short name, e.g. "rkd", not its long title)."""
    meth = methods.get(method)
    m = getattr(meth, "short", "") or meth.name
    return {
        "scratch": t("effect.preset.scratch"),
        "kd": t("effect.preset.kd"),
        "method": t("effect.preset.method", method=m),
        "method+kd": t("effect.preset.method_kd", method=m),
    }


def _jobs(run: dict) -> list[tuple[str, int, object]]:
    out = []
    for preset, seed, job_id in run["jobs"]:
        job = state.find_job(job_id)
        if job is not None:
            out.append((preset, seed, job))
    return out


def _results(jobs) -> list[dict]:
    """Ended runs as summary rows: finished ones with their accuracy, diverged or failed
    ones as None (counted as failed); stopped or running ones are left out."""
    rows = []
    for preset, seed, job in jobs:
        if job.status == "finished" and job.result:
            rows.append({"preset": preset, "seed": seed, "acc": job.result["student"]["test_accuracy"]})
        elif job.status in ("diverged", "error"):
            rows.append({"preset": preset, "seed": seed, "acc": None})
    return rows


def start(base: Config, seeds: int, epochs: int) -> None:
    """Submit every (preset, seed) run as a background job (callback of the Start button)."""
    from dataclasses import replace

    stop()
    mgr, owner = state.job_manager(), state.session_id()
    jobs: list = []
    try:
        cfgs = presets.configs(replace(base, epochs=int(epochs)), seeds=range(int(seeds)))
        for preset, seed, cfg in cfgs:
            jobs.append((preset, seed, mgr.submit(cfg, owner=owner).id))
    except KDError as e:  # e.g. the server's per-session job limit: none of it runs
        for _, _, job_id in jobs:
            job = mgr.get(job_id)
            if job is not None:
                job.stop()
        st.session_state["kd_fx_error"] = str(e)
        return
    st.session_state[RUN] = {"method": base.method, "jobs": jobs, "epochs": int(epochs), "seeds": int(seeds)}


def stop() -> None:
    run = st.session_state.get(RUN)
    if run:
        for _, _, job in _jobs(run):
            if not job.done:
                job.stop()


def _verdict_lines(summary: presets.Summary, labels: dict) -> None:
    for c in summary.comparisons:
        what = dict(
            a=labels[c.a],
            b=labels[c.b],
            delta=100 * c.delta,
            std=100 * c.pooled_std if not math.isnan(c.pooled_std) else float("nan"),
        )
        if c.verdict == "noise":
            st.warning(t("effect.verdict.noise", **what), icon="🎲")
        elif c.verdict == "unknown":
            st.info(t("effect.verdict.unknown", **what))
        else:
            st.success(t(f"effect.verdict.{c.verdict}", **what))


def draw(run: dict) -> None:
    """Progress, the bar chart, the table and the verdicts of this session's comparison."""
    jobs = _jobs(run)
    if not jobs:
        return
    done = sum(j.done for _, _, j in jobs)
    if done < len(jobs):
        st.progress(done / len(jobs), text=t("effect.progress", done=done, total=len(jobs)))
    rows = _results(jobs)
    if not rows:
        return
    summary = presets.summarise(run["method"], rows)
    labels = preset_labels(run["method"])
    fig = presets.figure(
        summary,
        labels,
        t("effect.chart_title", seeds=run["seeds"], epochs=run["epochs"]),
        xtitle=t("effect.axis"),
    )
    st.plotly_chart(fig, key="lab_fx_chart", width="stretch")
    col = {k: t(f"effect.col.{k}") for k in ("preset", "runs", "mean", "std", "failed")}
    table = pd.DataFrame(
        [
            {
                col["preset"]: labels[r["preset"]],
                col["runs"]: r["n"],
                col["mean"]: "—" if math.isnan(r["mean"]) else f"{100 * r['mean']:.1f}%",
                col["std"]: "—" if math.isnan(r["std"]) else f"{100 * r['std']:.1f}",
                col["failed"]: r["failed"],
            }
            for r in summary.rows()
        ]
    )
    st.dataframe(table, hide_index=True, width="stretch", key="lab_fx_table")
    if any(r["failed"] for r in summary.rows()):
        st.warning(t("effect.failed_runs"))
    _verdict_lines(summary, labels)
    if done == len(jobs) and summary.all_within_noise:
        st.warning(t("effect.all_noise"), icon="🎲")


def section(base: Config) -> None:
    """The comparison section under the Lab's results (nothing for methods it cannot split)."""
    try:
        presets.presets_for(base.method)
    except KDError:
        return
    st.divider()
    st.subheader(t("effect.header"))
    st.caption(t("effect.intro"))
    run = st.session_state.get(RUN)
    jobs = _jobs(run) if run else []
    busy = any(not j.done for _, _, j in jobs)
    # kept across a visit to another page (Streamlit drops the state of widgets it did not draw)
    links.bring_back([links.kept("lab_fx_seeds", 3), links.kept("lab_fx_epochs", max(int(base.epochs), 5))])
    c1, c2 = st.columns(2)
    # at most 3 seeds: 4 presets x 3 = 12 jobs stay under the server's per-session job limit (16)
    seeds = c1.number_input(
        t("effect.seeds"), 1, MAX_SEEDS, key="lab_fx_seeds", disabled=busy, help=t("effect.seeds_help")
    )
    epochs = c2.number_input(
        t("effect.epochs"), 1, 50, key="lab_fx_epochs", disabled=busy, help=t("effect.epochs_help")
    )
    n = len(presets.presets_for(base.method)) * int(seeds)
    c3, c4 = st.columns(2)
    c3.button(
        t("effect.start", runs=n),
        key="lab_fx_start",
        disabled=busy,
        on_click=start,
        args=(base, int(seeds), int(epochs)),
        help=t("effect.start_help"),
        width="stretch",
    )
    c4.button(t("effect.stop"), key="lab_fx_stop", disabled=not busy, on_click=stop, width="stretch")
    if int(seeds) < 2:
        st.caption(t("effect.one_seed"))
    if "kd_fx_error" in st.session_state:
        st.error(t("lab.kd_error", error=st.session_state.pop("kd_fx_error")))
    if not run:
        return
    if run["method"] != base.method:
        st.caption(t("effect.other_method", method=_method_title(run["method"])))
    if busy:

        @st.fragment(run_every=1.5)
        def live() -> None:
            draw(run)
            if all(j.done for _, _, j in _jobs(run)):
                st.rerun()  # once: the buttons re-enable

        live()
    else:
        draw(run)

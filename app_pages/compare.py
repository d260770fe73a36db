"""Compare & sweep: the saved runs side by side, T x alpha sweeps filling in live, and the
latest leaderboard.

Every run finished or stopped in the Lab is saved (``kd_core.runs``); here they can be
renamed, deleted, exported and reopened in the other pages. A sweep runs in a background
thread (``kd_core.sweep.SweepJob``, which never touches Streamlit), its cells all together as
one batch of students (every cell reports each epoch: the whole landscape forms at once) or
cell by cell on local worker processes; a fragment polls it every second and redraws the
heatmaps. In presentation mode (``?present=1``) the three tabs are one screen each
(``chrome.Screens``, ``&step=2``: the sweep). Every text comes from the catalogues
(``kd_app/locales/<lang>/compare.json``).
"""

from __future__ import annotations

import math
import os
import re
import time

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from kd_app import chrome, datasets, i18n, links, noise, state
from kd_app.i18n import t
from kd_core import batched, data, methods, runs, sweep, viz
from kd_core.config import Config
from kd_core.errors import KDError

PALETTE = [viz.STUDENT, "#009E73", "#CC79A7", "#E69F00", "#56B4E9", viz.TEACHER, "#000000"]
TEMPERATURES = [0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0]
ALPHAS = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0]
FRACTIONS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
DIFF = "background-color: #FFF1B8; font-weight: 600"
BEST = "background-color: #D6F5E3; font-weight: 700"
# the rows of the side-by-side tables: internal key -> catalogue key of its label
SETTING_ROWS = {
    k: f"compare.side.rows.{k}"
    for k in (
        "dataset",
        "teacher",
        "student",
        "method",
        "temperature",
        "alpha",
        "method_params",
        "pairs",
        "epochs",
        "lr",
        "batch",
        "fraction",
        "omitted",
        "subset",
        "seed",
        "status",
    )
}
RESULT_ROWS = {
    k: f"compare.side.metrics.{k}"
    for k in (
        "student_acc",
        "scratch_acc",
        "gain",
        "agreement",
        "ece",
        "params",
        "flops",
        "latency",
        "teacher_acc",
        "time",
    )
}
OVERVIEW_COLS = {
    k: f"compare.overview.{k}"
    for k in (
        "name",
        "saved",
        "dataset",
        "method",
        "T",
        "alpha",
        "epochs",
        "labels",
        "student_acc",
        "scratch_acc",
        "agreement",
        "status",
    )
}
BOARD_NAMES = {"none": "compare.board.scratch_name", "contrastive": "compare.board.contrastive_name"}


# ------------------------------------------------------------------ widget state
def when(ts: float) -> str:
    return time.strftime(t("compare.when"), time.localtime(ts))


def pct(v, digits: int = 1) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.{digits}f}%"


def plural(unit: str, n: int) -> str:
    """``n`` with its unit (``seed``, ``epoch``, ``worker``, ``saved``), singular or plural."""
    return t(f"compare.units.{unit}_{'one' if n == 1 else 'many'}", n=n)


def status_text(status: str) -> str:
    """A run's status (finished, stopped, diverged) in the session's language."""
    key = f"status.{status}"
    return t(key) if key in i18n.catalogue(i18n.DEFAULT) else status


def dataset_title(name: str) -> str:
    key = f"datasets.{name}"
    return t(key) if key in i18n.catalogue(i18n.DEFAULT) else data.DATASETS[name].title


def method_title(name: str) -> str:
    key = f"methods.{name}"
    return t(key) if key in i18n.catalogue(i18n.DEFAULT) else methods.METHODS[name].title


def run_labels(all_runs: list[runs.Run]) -> dict[str, str]:
    """The runs' option labels, made during the script run (Streamlit and AppTest may call a
    format_func again outside it, where t() would be English)."""
    return {r.id: f"{r.name} ({when(r.created)})" for r in all_runs}


def localise_heatmap(fig: go.Figure, metric: str) -> go.Figure:
    """viz.heatmap_figure's texts in the session's language: axis titles (via the
    catalogues' figure sections), the colour bar, the hover text and the partial-seed notes."""
    if i18n.lang() == i18n.DEFAULT:
        return fig
    i18n.localise_figure(fig)
    name = t("compare.sweep.metric_acc" if metric == "acc" else "compare.sweep.metric_agree")
    data_trace = fig.data[-1]
    data_trace.colorbar.title.text = f"{name} %"
    data_trace.hovertemplate = f"T=%{{y}}, alpha=%{{x}}: {name} %{{z:.2f}}%<extra></extra>"
    seeds = re.compile(r"\((\d+)/(\d+) seeds\)")
    if data_trace.text is not None:
        data_trace.text = [
            [seeds.sub(lambda m: t("compare.sweep.cell_seeds", n=m.group(1), total=m.group(2)), c) for c in row]
            for row in data_trace.text
        ]
    return fig


TAB_TITLES = ["compare.tabs.runs", "compare.tabs.sweep", "compare.tabs.board"]
screens = chrome.Screens("compare", [t(key) for key in TAB_TITLES])
if screens.shows(1):  # in presentation mode the title belongs to the first screen
    st.title("📊 " + t("compare.title"))
    st.caption(t("compare.intro"))


# ================================================================== saved runs
def _rename(run_id: str) -> None:
    try:
        runs.rename(
            run_id, st.session_state.get(f"cmp_name_{run_id}", ""), by=state.session_id(), lecturer=state.is_lecturer()
        )
        st.session_state.cmp_flash = ("success", t("compare.manage.renamed"))
    except KDError as e:
        st.session_state.cmp_flash = ("error", str(e))


def _delete(run_id: str, name: str) -> None:
    try:
        runs.delete(run_id, by=state.session_id(), lecturer=state.is_lecturer())
        st.session_state.cmp_flash = ("success", t("compare.manage.deleted", name=name))
        st.session_state.cmp_confirm_delete = False
    except KDError as e:
        st.session_state.cmp_flash = ("error", str(e))


def _copy(run_id: str) -> None:
    try:
        copied = runs.copy(run_id, owner=state.session_id())
        st.session_state.cmp_flash = ("success", t("compare.manage.copied", name=copied.name))
        st.session_state.cmp_manage = copied.id
    except KDError as e:
        st.session_state.cmp_flash = ("error", str(e))


def _clear_class() -> None:
    try:
        n = runs.clear(lecturer=state.is_lecturer())
        st.session_state.cmp_flash = ("success", t("compare.manage.cleared", n=n))
        st.session_state.cmp_confirm_clear = False
    except KDError as e:
        st.session_state.cmp_flash = ("error", str(e))


def _reload(run_id: str) -> None:
    st.session_state.cmp_reload = run_id  # done in the page body (it may show a progress bar)


def runs_overview(all_runs: list[runs.Run]) -> None:
    col = {k: t(v) for k, v in OVERVIEW_COLS.items()}
    rows = []
    for r in all_runs:
        c, s = r.config, r.result.get("student", {})
        b = r.result.get("baseline") or {}
        rows.append(
            {
                col["name"]: r.name,
                col["saved"]: when(r.created),
                col["dataset"]: c.dataset,
                col["method"]: c.method,
                col["T"]: c.temperature if c.method_obj.uses_temperature else None,
                col["alpha"]: c.alpha if c.method_obj.uses_alpha else None,
                col["epochs"]: c.epochs,
                col["labels"]: c.labeled_fraction,
                col["student_acc"]: s.get("test_accuracy"),
                col["scratch_acc"]: b.get("test_accuracy"),
                col["agreement"]: s.get("agreement"),
                col["status"]: status_text(r.status),
            }
        )
    df = pd.DataFrame(rows)
    st.dataframe(
        df,
        hide_index=True,
        width="stretch",
        key="cmp_overview",
        column_config={
            col["T"]: st.column_config.NumberColumn(format="%g"),
            col["alpha"]: st.column_config.NumberColumn(format="%g"),
            col["labels"]: st.column_config.NumberColumn(format="percent"),
            col["student_acc"]: st.column_config.NumberColumn(format="percent"),
            col["scratch_acc"]: st.column_config.NumberColumn(format="percent"),
            col["agreement"]: st.column_config.NumberColumn(format="percent"),
        },
    )


def manage(all_runs: list[runs.Run], by_id: dict) -> None:
    ids = [r.id for r in all_runs]
    if st.session_state.get("cmp_manage") not in ids:
        st.session_state.cmp_manage = ids[0]
    labels = run_labels(all_runs)
    rid = st.selectbox(
        t("compare.manage.run"), ids, key="cmp_manage", format_func=labels.get, help=t("compare.manage.run_help")
    )
    run = by_id[rid]
    mine = runs.may_change(run, state.session_id(), state.is_lecturer())
    if not mine:  # someone else's run: read-only here, a copy is yours
        r1, r2 = st.columns([3, 1], vertical_alignment="center")
        r1.info(t("compare.manage.read_only"))
        r2.button(t("compare.manage.copy"), key="cmp_copy", on_click=_copy, args=(rid,), width="stretch")
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    c1.text_input(
        t("compare.manage.name"),
        value=run.name,
        key=f"cmp_name_{rid}",
        max_chars=runs.MAX_NAME,
        help=t("compare.manage.name_help"),
        disabled=not mine,
    )
    c2.button(
        t("compare.manage.rename"), key="cmp_rename", on_click=_rename, args=(rid,), width="stretch", disabled=not mine
    )
    lab = state.current_run()
    lab_busy = lab is not None and not lab.done
    d1, d2, d3, d4 = st.columns(4)
    d1.download_button(
        t("compare.manage.dl_metrics"),
        runs.export_csv(run, "metrics"),
        runs.export_name(run, "-metrics.csv"),
        mime="text/csv",
        key="cmp_dl_metrics",
        width="stretch",
        help=t("compare.manage.dl_metrics_help"),
    )
    d2.download_button(
        t("compare.manage.dl_history"),
        runs.export_csv(run, "history"),
        runs.export_name(run, "-history.csv"),
        mime="text/csv",
        key="cmp_dl_history",
        width="stretch",
        help=t("compare.manage.dl_history_help"),
    )
    d3.download_button(
        t("compare.manage.dl_json"),
        runs.export_json(run),
        runs.export_name(run, ".json"),
        mime="application/json",
        key="cmp_dl_json",
        width="stretch",
        help=t("compare.manage.dl_json_help"),
    )
    try:
        weights = run.weights_bytes("student")
        d4.download_button(
            t("compare.manage.dl_weights"),
            weights,
            runs.export_name(run, "-student.safetensors"),
            mime="application/octet-stream",
            key="cmp_dl_weights",
            width="stretch",
            help=t("compare.manage.dl_weights_help"),
        )
    except KDError as e:
        d4.warning(str(e))
    o1, o2, o3 = st.columns([1.3, 1, 1.2], vertical_alignment="center")
    o1.button(
        t("compare.manage.reload"),
        key="cmp_reload_btn",
        on_click=_reload,
        args=(rid,),
        disabled=lab_busy,
        width="stretch",
        help=t("compare.manage.reload_help_busy" if lab_busy else "compare.manage.reload_help"),
    )
    o2.checkbox(
        t("compare.manage.confirm"), key="cmp_confirm_delete", help=t("compare.manage.confirm_help"), disabled=not mine
    )
    o3.button(
        t("compare.manage.delete"),
        key="cmp_delete",
        on_click=_delete,
        args=(rid, run.name),
        disabled=not (mine and st.session_state.get("cmp_confirm_delete")),
        width="stretch",
    )
    if state.is_lecturer():  # after a lesson: the class's runs go, in one click
        st.divider()
        k1, k2 = st.columns([2, 1], vertical_alignment="center")
        k1.checkbox(t("compare.manage.confirm_clear", n=len(all_runs)), key="cmp_confirm_clear")
        k2.button(
            t("compare.manage.clear"),
            key="cmp_clear",
            on_click=_clear_class,
            disabled=not st.session_state.get("cmp_confirm_clear"),
            width="stretch",
        )


def label_of(run: runs.Run, i: int) -> str:
    return f"{i + 1}. {run.name}"


def side_by_side(sel: list[runs.Run]) -> None:
    labels = [label_of(r, i) for i, r in enumerate(sel)]
    row_label = {k: t(v) for k, v in {**SETTING_ROWS, **RESULT_ROWS}.items()}
    config_rows: dict[str, list] = {}
    for r in sel:
        c = r.config
        m = c.method_obj
        vals = {
            "dataset": c.dataset,
            "teacher": c.teacher,
            "student": c.student,
            "method": c.method,
            "temperature": f"{c.temperature:g}" if m.uses_temperature else "—",
            "alpha": f"{c.alpha:g}" if m.uses_alpha else "—",
            "method_params": ", ".join(f"{k}={v:g}" for k, v in c.method_params().items()) or "—",
            "pairs": ", ".join(f"{a}:{b}" for a, b in r.result.get("pairs", [])) or "—",
            "epochs": str(c.epochs),
            "lr": f"{c.lr:g}",
            "batch": str(c.batch_size),
            "fraction": f"{c.labeled_fraction:.0%}",
            "omitted": "—" if c.omit_class is None else str(c.omit_class),
            "subset": t("compare.side.all") if c.train_subset is None else str(c.train_subset),
            "seed": str(c.seed),
            "status": status_text(r.status),
        }
        for k, v in vals.items():
            config_rows.setdefault(row_label[k], []).append(v)
    differ = {k for k, v in config_rows.items() if len(set(v)) > 1}
    metric_rows: dict[str, list] = {}
    raw_acc = []
    for r in sel:
        s, b, te = r.result.get("student", {}), r.result.get("baseline"), r.result.get("teacher", {})
        raw_acc.append(s.get("test_accuracy", math.nan))
        gain = (s["test_accuracy"] - b["test_accuracy"]) if b else None
        vals = {
            "student_acc": pct(s.get("test_accuracy")),
            "scratch_acc": pct(b["test_accuracy"]) if b else "—",
            "gain": t("compare.side.points", gain=100 * gain) if gain is not None else "—",
            "agreement": pct(s.get("agreement")),
            "ece": f"{s['ece']:.3f}" if "ece" in s else "—",
            "params": f"{s['params']:,}" if "params" in s else "—",
            "flops": f"{s['flops'] / 1e6:.2f}" if "flops" in s else "—",
            "latency": f"{s['latency_ms']:.3f}" if "latency_ms" in s else "—",
            "teacher_acc": pct(te.get("test_accuracy")),
            "time": f"{s.get('train_seconds', 0):.1f}",
        }
        for k, v in vals.items():
            metric_rows.setdefault(row_label[k], []).append(v)
    settings = pd.DataFrame(config_rows, index=labels).T
    results = pd.DataFrame(metric_rows, index=labels).T
    best_i = max(range(len(sel)), key=lambda i: -1 if math.isnan(raw_acc[i]) else raw_acc[i])

    def paint(row: pd.Series):
        if row.name in differ:
            return [DIFF] * len(row)
        if row.name == row_label["student_acc"] and len(sel) > 1:
            return [BEST if i == best_i else "" for i in range(len(row))]
        return [""] * len(row)

    index_col = {"_index": st.column_config.TextColumn(width="medium")}
    left, right = st.columns(2)
    with left:
        st.markdown(t("compare.side.settings"))
        st.dataframe(
            settings.style.apply(paint, axis=1),
            width="stretch",
            height=35 * (len(settings) + 1) + 3,
            column_config=index_col,
            key="cmp_table",
        )
    with right:
        st.markdown(t("compare.side.results"))
        st.dataframe(
            results.style.apply(paint, axis=1),
            width="stretch",
            height=35 * (len(results) + 1) + 3,
            column_config=index_col,
            key="cmp_results",
        )
        note = (
            t("compare.side.differ", names=t("compare.side.list_sep").join(sorted(differ)))
            if differ
            else t("compare.side.same")
        )
        st.caption(t("compare.side.caption", note=note))


def overlays(sel: list[runs.Run]) -> None:
    acc, agree, loss = go.Figure(), go.Figure(), go.Figure()
    teachers = set()
    for i, r in enumerate(sel):
        col, name = PALETTE[i % len(PALETTE)], label_of(r, i)
        h = r.history
        x = [e["epoch"] + (0.0 if not e.get("partial") else 0.5) for e in h]
        acc.add_scatter(
            x=x,
            y=[e["student_acc"] for e in h],
            mode="lines+markers",
            name=name,
            line=dict(color=col, width=4),
            marker=dict(size=9),
            legendgroup=name,
        )
        if h and "baseline_acc" in h[0]:
            acc.add_scatter(
                x=x,
                y=[e["baseline_acc"] for e in h],
                mode="lines+markers",
                name=t("compare.charts.scratch_series", name=name),
                line=dict(color=col, width=2, dash="dot"),
                marker=dict(size=6),
                legendgroup=name,
            )
        agree.add_scatter(
            x=x,
            y=[e.get("student_agreement", e.get("agreement")) for e in h],
            mode="lines+markers",
            name=name,
            line=dict(color=col, width=4),
            marker=dict(size=9),
        )
        if r.steps:
            loss.add_scatter(
                x=[s["step"] for s in r.steps],
                y=viz.moving_average([s["loss"] for s in r.steps], 5),
                mode="lines",
                name=name,
                line=dict(color=col, width=3),
            )
        te = r.result.get("teacher", {})
        teachers.add((te.get("arch"), r.config.dataset, round(te.get("test_accuracy", 0), 6)))
    if len(teachers) == 1:
        arch, _, t_acc = next(iter(teachers))
        acc.add_hline(
            y=t_acc,
            line_color=viz.TEACHER,
            line_width=2,
            line_dash="dash",
            annotation_text=t("roles.teacher_line", acc=100 * t_acc),
            annotation_position="top left",
            annotation_font_color=viz.TEACHER,
        )
    for fig in (acc, agree):
        fig.update_xaxes(title=t("axes.epoch"), dtick=1)
        fig.update_yaxes(tickformat=".0%")
    acc.update_yaxes(title=t("axes.test_accuracy"))
    agree.update_yaxes(title=t("compare.charts.agree_axis"))
    loss.update_xaxes(title=t("compare.charts.step"))
    loss.update_yaxes(title=t("compare.charts.loss_axis"), type="log")
    c1, c2 = st.columns(2)
    c1.plotly_chart(viz.style(acc, t("compare.charts.acc_title")), key="cmp_acc_chart", width="stretch")
    c2.plotly_chart(viz.style(agree, t("compare.charts.agree_title")), key="cmp_agree_chart", width="stretch")
    c1.plotly_chart(viz.style(loss, t("compare.charts.loss_title")), key="cmp_loss_chart", width="stretch")
    with c2:
        per_class(sel)


def per_class(sel: list[runs.Run]) -> None:
    classes = sel[0].result.get("classes", [])
    same = [(i, r) for i, r in enumerate(sel) if r.result.get("classes") == classes]
    fig = go.Figure()
    for i, r in same:
        name = label_of(r, i)
        accs = r.result.get("student", {}).get("per_class_accuracy", [])
        fig.add_bar(
            x=list(classes),
            y=[0 if a is None or a != a else a for a in accs],
            name=name,
            marker_color=PALETTE[i % len(PALETTE)],
            hovertemplate=f"{t('axes.class')} %{{x}}: %{{y:.1%}}<extra>" + name + "</extra>",
        )
    fig.update_layout(barmode="group", bargap=0.15)
    fig.update_xaxes(title=t("axes.class"), type="category")
    fig.update_yaxes(title=t("compare.charts.per_class_axis"), tickformat=".0%", range=[0, 1.05])
    st.plotly_chart(viz.style(fig, t("compare.charts.per_class_title")), key="cmp_per_class", width="stretch")
    if len(same) < len(sel):
        st.caption(t("compare.charts.per_class_left_out"))


def saved_runs_tab() -> None:
    """The saved runs: the list, managing them, side by side, the curves overlaid."""
    flash = st.session_state.pop("cmp_flash", None)
    if flash:
        (st.success if flash[0] == "success" else st.error)(flash[1])
    pending = st.session_state.pop("cmp_reload", None)
    if pending:
        try:
            job = state.reload_run(pending)
            st.success(t("compare.runs.reopened", name=job.trainer.run.name))
            l1, l2, l3, l4 = st.columns(4)
            l1.page_link("app_pages/soft_targets.py", label=t("nav.soft-targets"), icon="🌡️")
            l2.page_link("app_pages/feature_maps.py", label=t("nav.feature-maps"), icon="🗺️")
            l3.page_link("app_pages/relations.py", label=t("nav.relations"), icon="🕸️")
            l4.page_link("app_pages/lab.py", label=t("nav.lab"), icon="🧪")
        except KDError as e:
            st.error(t("compare.runs.cannot_reopen", error=e))
    all_runs, notices = runs.list_runs()
    if any(r.owner for r in all_runs):  # a shared server: each student can narrow the list to their own runs
        if st.toggle(t("compare.runs.mine"), key="cmp_mine", help=t("compare.runs.mine_help")):
            all_runs = [r for r in all_runs if r.owner == state.session_id()]
    if notices:
        with st.expander(t("compare.runs.skipped", n=len(notices)), expanded=False):
            for n in notices:
                st.caption(n)
    if not all_runs:
        st.info(t("compare.runs.none", folder=runs.folder()))
        st.page_link("app_pages/lab.py", label=t("compare.runs.open_lab"), icon="🧪")
    else:
        by_id = {r.id: r for r in all_runs}
        st.subheader(plural("saved", len(all_runs)))
        runs_overview(all_runs)
        with st.expander(t("compare.runs.manage"), expanded=False):
            manage(all_runs, by_id)
        st.subheader(t("compare.runs.side"))
        chosen = [i for i in st.session_state.get("cmp_pick", []) if i in by_id]
        if "cmp_pick" not in st.session_state:
            chosen = [r.id for r in all_runs[:2]]
        st.session_state.cmp_pick = chosen
        pick_labels = run_labels(all_runs)
        pick = st.multiselect(
            t("compare.runs.pick"),
            list(by_id),
            key="cmp_pick",
            max_selections=len(PALETTE),
            format_func=pick_labels.get,
            help=t("compare.runs.pick_help"),
        )
        sel = [by_id[i] for i in pick]
        if not sel:
            st.info(t("compare.runs.pick_none"))
        else:
            side_by_side(sel)
            overlays(sel)


# ================================================================== sweep
SWEEP_METHODS = [n for n, m in methods.METHODS.items() if m.uses_temperature or m.uses_alpha]
# how the cells train -> the sweep's backend: one batch of students (all cells advance each
# epoch, the landscape forms at once) or one worker process per cell
TRAIN_MODES = {"together": "batched", "cells": "joblib"}
# the address bar holds the sweep's set-up: a shared link opens the same grid, ready to start
FIELDS = [
    links.choice("dataset", "cmp_sw_dataset", list(data.DATASETS), "mnist-mini"),
    links.choice("method", "cmp_sw_method", SWEEP_METHODS, "kd"),
    links.several("T", "cmp_sw_T", TEMPERATURES, [1.0, 2.0, 4.0, 8.0]),
    links.several("alpha", "cmp_sw_alpha", ALPHAS, [0.5, 0.9]),
    links.number("labels", "cmp_sw_fraction", 0.1, options=FRACTIONS),
    links.number("seeds", "cmp_sw_seeds", 2, 1, 5, integer=True),
    links.number("epochs", "cmp_sw_epochs", 2, 1, 20, integer=True),
    links.flag("scratch", "cmp_sw_scratch", True),
    links.choice("train", "cmp_sw_train", list(TRAIN_MODES), "together"),
    links.kept("cmp_sw_workers", os.cpu_count() or 1),
]
links.sync("compare", FIELDS)
if st.session_state.cmp_sw_dataset not in data.DATASETS:
    st.session_state.cmp_sw_dataset = "mnist-mini"


def sweep_job() -> sweep.SweepJob | None:
    return st.session_state.get("cmp_sweep_job")


def start_sweep(cfg: Config, temps, alphas, seeds: int, scratch: bool, workers: int, mode: str) -> None:
    try:
        sw = sweep.Sweep.grid(cfg, sorted(temps), sorted(alphas), seeds=range(seeds), scratch=scratch)
    except KDError as e:
        st.session_state.cmp_sw_error = str(e)
        return
    sid = state.session_id()
    backend = TRAIN_MODES.get(mode, "batched")
    job = sweep.SweepJob(
        sw,
        backend=backend,
        n_jobs=workers if backend == "joblib" else None,
        is_alive=lambda: state.session_alive(sid),
    )
    st.session_state.cmp_sweep_job = job.start()


def train_hint(cfg: Config, runs: int) -> str | None:
    """Which way trains this sweep's ``runs`` students faster on this machine (the engine's
    measured rule, ``batched.faster_together``), in the session's language."""
    try:
        faster, _why = batched.faster_together(cfg, max(runs, 1))
        student = cfg.resolved().student
    except (KDError, ValueError):
        return None
    return t("compare.sweep.train_hint_batch" if faster else "compare.sweep.train_hint_cells", student=student)


def progress_text(job: sweep.SweepJob, rows: list[dict]) -> str:
    """The progress bar's words: while a batch trains, how many cells advance together and at
    which epoch; else runs done (and on how many worker processes)."""
    res, total = job.result, job.sweep.total
    seconds = time.time() - job.started
    live = res.training()
    if live is not None:
        grid = [r for r in rows if not r["reference"]]
        training = [r for r in grid if r["live"]]
        still = [r for r in grid if r["n"] < r["seeds"]]
        students = plural("student", sum(r["live"] for r in rows))
        key = "progress_together_all" if training and len(training) == len(still) else "progress_together_some"
        return t(
            f"compare.sweep.{key}",
            n=len(training),
            cells=len(grid),
            students=students,
            epoch=live[0],
            epochs=live[1],
            done=res.done,
            total=total,
            seconds=seconds,
        )
    if job.backend == "batched":
        return t("compare.sweep.progress_batch_starting", done=res.done, total=total, seconds=seconds)
    return t(
        "compare.sweep.progress" if res.done else "compare.sweep.progress_starting",
        done=res.done,
        total=total,
        workers=plural("worker", job.n_jobs or 1),
        seconds=seconds,
    )


def draw_sweep(job: sweep.SweepJob) -> None:
    sw, res = job.sweep, job.result
    done, total = res.done, sw.total
    rows = res.rows()
    if job.status == "queued":
        st.info(t("compare.sweep.queued"))
    elif job.status == "teacher":
        te = job.teacher_epoch
        st.progress(
            te[0] / te[1] if te else 0.0,
            text=t("compare.sweep.teacher_epoch", epoch=te[0], total=te[1]) if te else t("compare.sweep.teacher_prep"),
        )
    elif job.status == "running":  # a batch in training counts by its share of epochs done
        st.progress(min(1.0, max(0.0, res.progress() / total)), text=progress_text(job, rows))
    elif job.status == "finished":
        st.success(t("compare.sweep.finished", total=total, seconds=job.ended - job.started))
    elif job.status == "stopped":
        said = (
            t("compare.sweep.stopped_msg", done=done, total=total, message=job.message)
            if job.message
            else t("compare.sweep.stopped", done=done, total=total)
        )
        partway = sum(r["status"] == "stopped" for r in list(res.items))  # a batch stopped mid-training
        st.warning(said + (" " + t("compare.sweep.stopped_partway", n=partway) if partway else ""))
    else:
        st.error(t("compare.sweep.failed", message=job.message))
    best = res.best(rows=rows)
    b = sw.base
    epoch_word = t("compare.sweep.epoch_word")
    for m in sw.axis("method"):
        for frac in sw.axis("labeled_fraction"):
            where = t("compare.sweep.where", method=m, frac=frac)
            c1, c2 = st.columns(2)
            acc_fig = viz.heatmap_figure(
                res, m, frac, "acc", t("compare.sweep.acc_title", where=where), best, epoch_word=epoch_word
            )
            agree_fig = viz.heatmap_figure(
                res, m, frac, "agree", t("compare.sweep.agree_title", where=where), best, epoch_word=epoch_word
            )
            c1.plotly_chart(localise_heatmap(acc_fig, "acc"), key=f"cmp_hm_acc_{m}_{frac}", width="stretch")
            c2.plotly_chart(localise_heatmap(agree_fig, "agree"), key=f"cmp_hm_agree_{m}_{frac}", width="stretch")
    lines = []
    if best is not None:
        lines.append(
            t(
                "compare.sweep.best",
                T=best["temperature"],
                alpha=best["alpha"],
                acc=sweep.fmt_pm(best["acc_mean"], best["acc_std"]),
                seeds=plural("seed", best["n"]),
            )
        )
    ref = next((r for r in rows if r["reference"] and r["n"]), None)
    if ref is not None:
        lines.append(t("compare.sweep.scratch", acc=sweep.fmt_pm(ref["acc_mean"], ref["acc_std"])))
    t_acc = res.teacher_acc()
    if t_acc is not None:
        lines.append(t("compare.sweep.teacher", arch=b.teacher, acc=pct(t_acc)))
    if lines:
        st.markdown(" ".join(lines))
    if res.done == sw.total:  # said once every cell is in: is the best cell more than seed noise?
        noise.sweep_notice(rows, best)
    st.caption(
        t(
            "compare.sweep.caption",
            seeds=plural("seed", len(sw.seeds)),
            student=b.student,
            teacher=b.teacher,
            dataset=b.dataset,
            epochs=plural("epoch", b.epochs),
        )
    )
    errs = res.errors()
    if errs:
        st.warning(t("compare.sweep.failed_runs", n=len(errs), message=errs[0]["message"]))


def sweep_tab() -> None:
    """A T x alpha sweep: its set-up (kept in the link), Start / Stop, the heatmaps filling in."""
    job = sweep_job()
    running = job is not None and not job.done
    st.markdown(t("compare.sweep.intro"))
    st.latex(
        r"\mathcal{L} = (1-\alpha)\,\mathrm{CE}(y, p_S) + \alpha\,T^2\,\mathrm{KL}\!\left(p_T^{(T)} \,\|\, p_S^{(T)}\right)"
    )
    with st.container(border=True):
        a1, a2, a3 = st.columns(3)
        ds_name = datasets.picker(
            t("compare.sweep.dataset"),
            "cmp_sw_dataset",
            where=a1,
            disabled=running,
            help=t("compare.sweep.dataset_help"),
        )
        ds_available = datasets.availability(ds_name).available
        if st.session_state.cmp_sw_method not in SWEEP_METHODS:
            st.session_state.cmp_sw_method = "kd"
        method_labels = {n: method_title(n) for n in SWEEP_METHODS}
        method_name = a2.selectbox(
            t("compare.sweep.method"),
            SWEEP_METHODS,
            key="cmp_sw_method",
            disabled=running,
            format_func=method_labels.get,
            help=t("compare.sweep.method_help"),
        )
        fraction = a3.select_slider(
            t("compare.sweep.fraction"),
            FRACTIONS,
            key="cmp_sw_fraction",
            disabled=running,
            format_func=lambda v: f"{v:.0%}",
            help=t("compare.sweep.fraction_help"),
        )
        b1, b2 = st.columns(2)
        temps = b1.multiselect(
            t("compare.sweep.temps"),
            TEMPERATURES,
            key="cmp_sw_T",
            disabled=running,
            format_func=lambda v: f"{v:g}",
            help=t("compare.sweep.temps_help"),
        )
        alphas = b2.multiselect(
            t("compare.sweep.alphas"),
            ALPHAS,
            key="cmp_sw_alpha",
            disabled=running,
            format_func=lambda v: f"{v:g}",
            help=t("compare.sweep.alphas_help"),
        )
        c1, c2, c3 = st.columns(3, vertical_alignment="bottom")
        seeds = c1.number_input(
            t("compare.sweep.seeds"), 1, 5, key="cmp_sw_seeds", disabled=running, help=t("compare.sweep.seeds_help")
        )
        epochs = c2.number_input(
            t("compare.sweep.epochs"), 1, 20, key="cmp_sw_epochs", disabled=running, help=t("compare.sweep.epochs_help")
        )
        scratch = c3.checkbox(
            t("compare.sweep.scratch_ref"),
            key="cmp_sw_scratch",
            disabled=running,
            help=t("compare.sweep.scratch_ref_help"),
        )
        if st.session_state.get("cmp_sw_train") not in TRAIN_MODES:
            st.session_state.cmp_sw_train = "together"
        train_labels = {m: t(f"compare.sweep.train_{m}") for m in TRAIN_MODES}
        d1, d2 = st.columns([2, 1], vertical_alignment="bottom")
        mode = d1.radio(
            t("compare.sweep.train"),
            list(TRAIN_MODES),
            key="cmp_sw_train",
            horizontal=True,
            disabled=running,
            format_func=train_labels.get,
            help=t("compare.sweep.train_help"),
        )
        workers = d2.number_input(  # only cell by cell has worker processes
            t("compare.sweep.workers"),
            1,
            max(1, os.cpu_count() or 1) * 2,
            key="cmp_sw_workers",
            disabled=running or mode != "cells",
            help=t("compare.sweep.workers_help"),
        )
        method = methods.get(method_name)
        if not method.uses_alpha:
            st.caption(t("compare.sweep.no_alpha", method=method_title(method_name)))
        if not method.uses_temperature:
            st.caption(t("compare.sweep.no_T", method=method_title(method_name)))
        n_runs = len(temps) * len(alphas) * seeds + (seeds if scratch else 0)
        problem = None
        if not temps or not alphas:
            problem = t("compare.sweep.problem")
        if not ds_available:  # the reason next to the disabled Start button
            problem = datasets.reason(datasets.availability(ds_name))
        cfg = Config(
            dataset=ds_name, method=method_name, labeled_fraction=float(fraction), epochs=int(epochs), baseline=False
        )
        hint = train_hint(cfg, n_runs)
        if hint:
            st.caption(hint)
        s1, s2, s3 = st.columns([1, 1, 3], vertical_alignment="center")
        # callbacks: the sweep starts (or stops) before the page is drawn again, so the buttons show it
        s1.button(
            t("compare.sweep.start"),
            type="primary",
            key="cmp_sw_start",
            disabled=running or problem is not None,
            width="stretch",
            help=t("compare.sweep.start_help"),
            on_click=start_sweep,
            args=(cfg, temps, alphas, int(seeds), bool(scratch), int(workers), mode),
        )
        s2.button(
            t("compare.sweep.stop"),
            key="cmp_sw_stop",
            disabled=not running,
            width="stretch",
            help=t("compare.sweep.stop_help"),
            on_click=lambda: job.stop(),
        )
        (s3.warning if not ds_available else s3.caption)(
            problem or t("compare.sweep.plan", runs=n_runs, epochs=plural("epoch", epochs), dataset=ds_name)
        )
        if "cmp_sw_error" in st.session_state:
            st.error(st.session_state.pop("cmp_sw_error"))

    job = sweep_job()
    if job is None:
        st.info(t("compare.sweep.press"))
    elif not job.done:

        @st.fragment(run_every=1.0)
        def live() -> None:
            j = sweep_job()
            if j is None:
                return
            draw_sweep(j)
            if j.done:
                st.rerun()  # once: the buttons re-enable and the download appears

        live()
    else:
        draw_sweep(job)
        if job.result.done:
            st.download_button(
                t("compare.sweep.download"),
                job.result.to_csv(),
                "kd-sweep.csv",
                mime="text/csv",
                key="cmp_sw_download",
                help=t("compare.sweep.download_help"),
            )


# ================================================================== leaderboard
def board_name(method: str, name: str) -> str:
    """A leaderboard row's name (written by the engine in English) in the session's language."""
    if method == "teacher":
        m = re.fullmatch(r"Teacher \((.*)\)", str(name))
        return t("compare.board.teacher_name", arch=m.group(1)) if m else name
    if method in BOARD_NAMES and name == sweep.leaderboard_name(method):
        return t(BOARD_NAMES[method])
    return name


def board_tab() -> None:
    """The latest leaderboard of every method on one teacher/student pair."""
    st.markdown(t("compare.board.intro"))
    files = sorted(sweep.leaderboard_dir().glob("*.csv"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not files:
        st.info(t("compare.board.none"))
    else:
        names = [p.stem for p in files]
        if st.session_state.get("cmp_board") not in names:
            st.session_state.cmp_board = names[0]
        which = st.selectbox(t("compare.board.dataset"), names, key="cmp_board", help=t("compare.board.dataset_help"))
        path = files[names.index(which)]
        try:
            df = pd.read_csv(path)
            need = {"name", "method", "acc_mean", "acc_std", "agree_mean", "agree_std", "n"}
            if not need <= set(df.columns):
                raise ValueError(t("compare.board.missing_columns", columns=sorted(need - set(df.columns))))
        except Exception as e:  # a damaged or foreign file: say so, never crash
            st.warning(t("compare.board.unreadable", path=path, kind=type(e).__name__, error=e))
        else:
            first = df.iloc[0]
            scratch_acc = df.loc[df["method"] == "none", "acc_mean"]
            scratch_acc = float(scratch_acc.iloc[0]) if len(scratch_acc) else math.nan

            def pm(m, s):
                return sweep.fmt_pm(float(m) if pd.notna(m) else math.nan, float(s) if pd.notna(s) else math.nan)

            col_method = t("compare.board.col_method")
            shown_names = [board_name(meth, name) for meth, name in zip(df["method"], df["name"])]
            table = pd.DataFrame(
                {
                    col_method: shown_names,
                    t("compare.board.col_acc"): [pm(m, s) for m, s in zip(df["acc_mean"], df["acc_std"])],
                    t("compare.board.col_delta"): [
                        ""
                        if meth in ("none", "teacher") or pd.isna(m) or math.isnan(scratch_acc)
                        else f"{100 * (m - scratch_acc):+.2f}"
                        for meth, m in zip(df["method"], df["acc_mean"])
                    ],
                    t("compare.board.col_agree"): [pm(m, s) for m, s in zip(df["agree_mean"], df["agree_std"])],
                    t("compare.board.col_seeds"): [
                        "" if meth == "teacher" or pd.isna(n) else str(int(n)) for meth, n in zip(df["method"], df["n"])
                    ],
                }
            )
            learned = df[~df["method"].isin(["teacher", "none"])]
            best_row = (
                learned.loc[learned["acc_mean"].idxmax()]
                if len(learned) and learned["acc_mean"].notna().any()
                else None
            )
            top = None if best_row is None else board_name(best_row["method"], best_row["name"])

            def paint_board(row: pd.Series):
                return [BEST if row[col_method] == top else ""] * len(row)

            st.dataframe(
                table.style.apply(paint_board, axis=1),
                hide_index=True,
                width="stretch",
                key="cmp_board_table",
                height=35 * (len(table) + 1) + 3,
            )
            meta = []
            for col in ("dataset", "teacher", "student", "epochs", "labeled_fraction", "seeds", "created"):
                if col in df.columns and pd.notna(first.get(col)):
                    value = first[col]
                    meta.append(
                        t(f"compare.board.meta.{col}", value=str(value).replace(";", ", ") if col == "seeds" else value)
                    )
            st.caption(t("compare.board.caption", meta=" · ".join(meta)))
            st.download_button(
                t("compare.board.download"), path.read_bytes(), path.name, mime="text/csv", key="cmp_board_dl"
            )


# ================================================================== the page
# three tabs; in presentation mode one screen each (``?present=1&step=2``: the sweep), and only
# the screen shown runs
TABS = [saved_runs_tab, sweep_tab, board_tab]  # in the order of TAB_TITLES
if screens.current is None:
    for tab, draw in zip(st.tabs([t(key) for key in TAB_TITLES]), TABS):
        with tab:
            draw()
else:
    screens.header()
    TABS[screens.current - 1]()
    screens.footer()
links.settle(FIELDS)

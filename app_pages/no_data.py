"""No labels, no data: data-free and label-free distillation.

1. Data-free: the teacher dreams its training set (DeepInversion, or an adversarial
   generator), live per class — a grid that starts as noise and turns into digits — with the
   BatchNorm-statistics loss and the teacher's confidence per step; then the student, which
   never saw a real training image, beside the same student distilled on real images and
   trained from scratch. A slider sets the weight of the BatchNorm-statistics term.
2. Label-free: SEED on unlabelled images; k-NN and linear-probe accuracy of the embeddings
   of the teacher, the student and a randomly initialised student; the student's embedding
   in 2-D before and after.

In presentation mode (``?present=1``) the two are one screen each (``chrome.Screens``,
``&step=2``); only the one shown runs. The engine is ``kd_core/datafree.py``; runs go
through the shared job manager. Every text comes from the catalogues (``no_data.*`` in
``kd_app/locales/<lang>/no_data.json``).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from kd_app import chrome, i18n, links, state
from kd_app.i18n import t
from kd_core import data, methods, viz
from kd_core.config import Config
from kd_core.errors import KDError

DATASETS = [d for d in data.DATASETS if d != "cifar10"]  # the default teachers with BatchNorm, on a CPU
DEFAULT_DATASET = "mnist-mini"
BN_WEIGHTS = [0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
TEMPERATURES = [1.0, 2.0, 4.0, 8.0]
# the classroom setting (about a minute on a laptop CPU) and the default setting (a few minutes)
SETTINGS = {
    "quick": {"deepinversion": dict(images=256, synth_steps=60, distil_steps=300), "dfad": dict(iterations=150)},
    "full": {"deepinversion": {}, "dfad": {}},
}
ROLE_COLOURS = {
    "teacher": "#1f77b4",
    "student": "#d62728",
    "real": "#2ca02c",
    "scratch": "#7f7f7f",
    "random": "#bbbbbb",
}


def pct(v) -> str:
    return "—" if v is None else f"{100 * float(v):.1f}%"


# presentation mode: one section per screen (?present=1&step=2), with Previous / Next
screens = chrome.Screens("no_data", [t("no_data.present.df"), t("no_data.present.lf")])
if screens.shows(1):
    st.title("🌙 " + t("no_data.title"))
    st.caption(t("no_data.intro"))

FIELDS = [
    links.choice("dataset", "nd_dataset", DATASETS, DEFAULT_DATASET),
    links.choice("method", "nd_method", ["deepinversion", "dfad"], "deepinversion"),
    links.number("bn", "nd_bn", 1.0, options=BN_WEIGHTS),
    links.choice("setting", "nd_setting", list(SETTINGS), "quick"),
    links.number("T", "nd_T", 4.0, options=TEMPERATURES),
    links.flag("compare", "nd_compare", True),
    links.number("lf_epochs", "nd_lf_epochs", 3, 1, 20, integer=True),
    links.number("lf_T", "nd_lf_T", 4.0, options=TEMPERATURES),
]
links.sync("no-data", FIELDS)
screens.header()
ds_name = st.selectbox(t("no_data.dataset"), DATASETS, key="nd_dataset", help=t("no_data.dataset_help"))
try:
    ds = state.dataset(ds_name)
except KDError as e:
    st.error(t("no_data.cannot_use", name=ds_name, error=e))
    st.stop()
classes = [str(c) for c in ds.classes]
manager = state.job_manager()


def current_job(slot: str):
    return manager.get(st.session_state.get(slot, -1), owner=state.session_id())


def submit(cfg: Config, slot: str) -> None:
    try:
        job = manager.submit(cfg, owner=state.session_id())
        st.session_state[slot] = job.id
    except KDError as e:
        st.error(t("no_data.bad", error=e))


def grid_image(grid: np.ndarray, width: int = 640) -> None:
    g = np.asarray(grid, dtype=np.uint8)
    f = max(1, 160 // max(1, g.shape[0]))
    st.image(np.repeat(np.repeat(g, f, axis=0), f, axis=1), width=width, output_format="PNG")
    st.caption(t("no_data.df.grid_caption", classes=" · ".join(classes)))


def synthesis_figure(steps: list[dict], snaps: list[dict]) -> go.Figure:
    """The BatchNorm-statistics loss per step and the teacher's confidence in the requested class."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    bn = [(s["step"], s["losses"]["bn"]) for s in steps if s.get("stage") in ("synthesis", "adversarial")]
    if bn:
        fig.add_scatter(
            x=[b[0] for b in bn],
            y=[b[1] for b in bn],
            mode="lines",
            name=t("no_data.df.bn_loss"),
            line=dict(color="#9467bd", width=2),
        )
    conf = [(s["step"], s["confidence"]) for s in snaps]
    if conf:
        fig.add_scatter(
            x=[c[0] for c in conf],
            y=[100 * c[1] for c in conf],
            mode="lines+markers",
            name=t("no_data.df.confidence"),
            line=dict(color="#d62728", width=3),
            secondary_y=True,
        )
    fig.update_xaxes(title_text=t("no_data.df.step"))
    fig.update_yaxes(title_text=t("no_data.df.bn_loss"), type="log", secondary_y=False)
    fig.update_yaxes(title_text=t("no_data.df.confidence") + " (%)", range=[0, 101], dtick=20, secondary_y=True)
    fig.update_layout(showlegend=False)  # the two axis titles name the two lines
    return viz.style(fig, t("no_data.df.synth_title"), height=330)


def bars(labels: list[str], values: list[float], colours: list[str], title: str) -> go.Figure:
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=[100 * v for v in values],
            marker_color=colours,
            text=[pct(v) for v in values],
            textposition="outside",
            hovertemplate="%{x}: %{y:.1f}%<extra></extra>",
        )
    )
    fig.update_yaxes(title_text=t("axes.test_accuracy") + " (%)", range=[0, 115])
    fig.update_xaxes(type="category")
    return viz.style(fig, title, height=340)


def progress_line(snap: dict, job) -> None:
    pos = manager.queue_position(job)
    if pos is not None:
        st.info(t("no_data.queued", pos=pos))
    elif snap["status"] == "teacher":
        st.info(t("no_data.teacher"))
    else:
        total = max(1, snap["total_steps"])
        stage = t(f"no_data.stage.{snap.get('stage') or 'synthesis'}".replace(" ", "_"))
        st.progress(
            min(1.0, snap["step"] / total), text=t("no_data.progress", stage=stage, step=snap["step"], total=total)
        )


# ------------------------------------------------------------------ what the runs show
def show_datafree() -> None:
    job = current_job("nd_df_job")
    if job is None:
        st.info(t("no_data.df.none"))
        return
    snap = job.snapshot()
    if not job.done:
        progress_line(snap, job)
    elif snap["status"] not in ("finished", "stopped"):
        st.error(t("no_data.failed", status=snap["status"], message=snap["message"]))
        return
    snaps = [e for e in snap["epochs"] if e.get("stage") in ("synthesis", "adversarial") and "grid" in e]
    evals = [e for e in snap["epochs"] if e.get("student_acc") is not None and e.get("stage") != "real data"]
    if snaps:
        c1, c2 = st.columns([1.25, 1], gap="medium")
        with c1:
            last = snaps[-1]
            key = "no_data.df.grid_now" if snap["config"].method == "deepinversion" else "no_data.df.grid_gan"
            st.markdown("**" + t(key, step=last.get("batch_step", last["step"]), conf=100 * last["confidence"]) + "**")
            grid_image(last["grid"])
        with c2:
            fig = synthesis_figure(snap["steps"], [s for s in snaps])
            st.plotly_chart(i18n.localise_figure(fig), key=f"nd_synth_{job.id}", width="stretch", theme=None)
    if evals:
        st.caption(t("no_data.df.student_now", acc=100 * evals[-1]["student_acc"], step=evals[-1]["step"]))
    r = snap["result"]
    if job.done and r is not None:
        st.success(t("no_data.done", status=t(f"no_data.status.{snap['status']}"), seconds=r.get("wall_seconds", 0)))
        labels, values, colours = (
            [t("no_data.roles.teacher")],
            [r["teacher"]["test_accuracy"]],
            [ROLE_COLOURS["teacher"]],
        )
        labels.append(t("no_data.roles.datafree"))
        values.append(r["student"]["test_accuracy"])
        colours.append(ROLE_COLOURS["student"])
        if "real_kd" in r:
            labels.append(t("no_data.roles.real_kd"))
            values.append(r["real_kd"]["test_accuracy"])
            colours.append(ROLE_COLOURS["real"])
        if "baseline" in r:
            labels.append(t("no_data.roles.scratch"))
            values.append(r["baseline"]["test_accuracy"])
            colours.append(ROLE_COLOURS["scratch"])
        c = st.columns(len(values))
        for col, lab, v in zip(c, labels, values):
            col.metric(lab, pct(v))
        fig = bars(labels, values, colours, t("no_data.df.result_title"))
        st.plotly_chart(i18n.localise_figure(fig), key=f"nd_df_result_{job.id}", width="stretch", theme=None)
        syn = r["synthesis"]
        st.caption(
            t(
                "no_data.df.facts",
                images=syn["images"],
                seen=r["real_training_images_seen"],
                synth=r["synthesis_seconds"],
                distil=r["distillation_seconds"],
            )
        )
        if r.get("sample_grid"):
            with st.expander(t("no_data.df.final_grid"), expanded=False):
                grid_image(np.asarray(r["sample_grid"], dtype=np.uint8))


def show_labelfree() -> None:
    job = current_job("nd_lf_job")
    if job is None:
        st.info(t("no_data.lf.none"))
        return
    snap = job.snapshot()
    if not job.done:
        progress_line(snap, job)
        evals = [e for e in snap["epochs"] if "student_knn" in e]
        if evals:
            st.caption(t("no_data.lf.knn_now", epoch=evals[-1]["epoch"], knn=100 * evals[-1]["student_knn"]))
        return
    if snap["status"] not in ("finished", "stopped") or snap["result"] is None:
        st.error(t("no_data.failed", status=snap["status"], message=snap["message"]))
        return
    r = snap["result"]
    st.success(t("no_data.done", status=t(f"no_data.status.{snap['status']}"), seconds=r.get("wall_seconds", 0)))
    rep = r["representation"]
    roles = [("teacher", "teacher"), ("student", "student"), ("random", "random")]
    fig = go.Figure()
    for metric, colour in (("knn_accuracy", "#1f77b4"), ("linear_probe_accuracy", "#ff7f0e")):
        fig.add_bar(
            x=[t(f"no_data.lf.role_{k}") for k, _ in roles],
            y=[100 * rep[k][metric] for k, _ in roles],
            name=t(f"no_data.lf.{metric}"),
            marker_color=colour,
            text=[pct(rep[k][metric]) for k, _ in roles],
            textposition="outside",
        )
    fig.update_yaxes(title_text=t("no_data.lf.accuracy") + " (%)", range=[0, 115])
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.2))
    c = st.columns(3)
    for col, (k, _) in zip(c, roles):
        col.metric(
            t(f"no_data.lf.role_{k}"),
            t("no_data.lf.knn_short", v=pct(rep[k]["knn_accuracy"])),
            t("no_data.lf.probe_short", v=pct(rep[k]["linear_probe_accuracy"])),
            delta_color="off",
        )
    st.plotly_chart(
        i18n.localise_figure(viz.style(fig, t("no_data.lf.scores_title"), height=360)),
        key=f"nd_lf_scores_{job.id}",
        width="stretch",
        theme=None,
    )
    st.caption(t("no_data.lf.labels_used", n=r["labels_used"]))
    emb = r["embedding_2d"]
    cols = st.columns(3)
    for col, (k, title) in zip(cols, [("random", "before"), ("student", "after"), ("teacher", "teacher")]):
        with col:
            f = viz.embedding_scatter(
                np.asarray(emb[k]), emb["labels"], classes, emb["index"], t(f"no_data.lf.emb_{title}"), height=380
            )
            st.plotly_chart(i18n.localise_figure(f), key=f"nd_emb_{k}_{job.id}", width="stretch", theme=None)


def live(show, slot: str, key: str) -> None:
    """Draw a job's part of the page; while it runs, redraw it every second."""
    job = current_job(slot)
    if job is None or job.done:
        show()
        return

    @st.fragment(run_every=1.0)
    def part() -> None:
        show()
        j = current_job(slot)
        if j is not None and j.done:
            st.rerun()  # once: the page settles with the results

    part()


# ------------------------------------------------------------------ 1. data-free
def data_free() -> None:
    """The teacher dreams its training set: the run's settings, its formula, then the run."""
    st.header(t("no_data.df.header"))
    left, right = st.columns([1, 2.2], gap="large")
    with left:
        method = st.radio(
            t("no_data.df.method"),
            ["deepinversion", "dfad"],
            key="nd_method",
            format_func=lambda m: t(f"no_data.df.method_{m}"),
            help=t("no_data.df.method_help"),
        )
        bn_w = st.select_slider(t("no_data.df.bn"), BN_WEIGHTS, key="nd_bn", help=t("no_data.df.bn_help"))
        setting = st.radio(
            t("no_data.df.setting"),
            list(SETTINGS),
            key="nd_setting",
            horizontal=True,
            format_func=lambda s: t(f"no_data.df.setting_{s}"),
            help=t("no_data.df.setting_help"),
        )
        T = st.select_slider(t("no_data.T"), TEMPERATURES, key="nd_T", help=t("no_data.T_help"))
        compare = st.checkbox(t("no_data.df.compare"), key="nd_compare", help=t("no_data.df.compare_help"))
        params = dict(SETTINGS[setting][method]) | {"bn_weight": float(bn_w)}
        df_cfg = Config(
            dataset=ds_name,
            method=method,
            temperature=float(T),
            params=params,
            epochs=5,
            baseline=bool(compare),
            labeled_fraction=0.0,
            alpha=1.0,
        )
        df_error = None
        try:
            df_cfg.resolved().validate()
        except KDError as e:
            df_error = e
            st.error(t("no_data.bad", error=e))
        df_job = current_job("nd_df_job")
        df_running = df_job is not None and not df_job.done
        b1, b2 = st.columns(2)
        if b1.button(
            t("no_data.start"), key="nd_df_start", type="primary", disabled=df_error is not None or df_running
        ):
            submit(df_cfg, "nd_df_job")
        df_job = current_job("nd_df_job")
        if df_job is not None and not df_job.done and b2.button(t("no_data.stop"), key="nd_df_stop"):
            df_job.stop()
    with right:
        m = methods.get(method)
        st.markdown(t(f"no_data.df.explain_{method}"))
        st.latex(m.formula_latex(float(T), None, m.resolve_params(params) if df_error is None else None))
        st.caption(t("no_data.df.guarantee"))
    live(show_datafree, "nd_df_job", "df")


# ------------------------------------------------------------------ 2. label-free
def label_free() -> None:
    """SEED on unlabelled images: the run's settings, its formula, then the scores and embeddings."""
    if screens.current is None:  # the whole page: a line between the two sections
        st.divider()
    st.header(t("no_data.lf.header"))
    lf_left, lf_right = st.columns([1, 2.2], gap="large")
    with lf_left:
        st.markdown(t("no_data.lf.explain"))
        lf_epochs = st.slider(t("no_data.lf.epochs"), 1, 20, key="nd_lf_epochs", help=t("no_data.lf.epochs_help"))
        lf_T = st.select_slider(t("no_data.T"), TEMPERATURES, key="nd_lf_T", help=t("no_data.T_help"))
        lf_cfg = Config(
            dataset=ds_name,
            method="seed",
            alpha=1.0,
            labeled_fraction=0.0,
            epochs=int(lf_epochs),
            temperature=float(lf_T),
        )
        lf_job = current_job("nd_lf_job")
        lf_running = lf_job is not None and not lf_job.done
        c1, c2 = st.columns(2)
        if c1.button(t("no_data.start"), key="nd_lf_start", type="primary", disabled=lf_running):
            submit(lf_cfg, "nd_lf_job")
        lf_job = current_job("nd_lf_job")
        if lf_job is not None and not lf_job.done and c2.button(t("no_data.stop"), key="nd_lf_stop"):
            lf_job.stop()
    with lf_right:
        seed_m = methods.get("seed")
        st.markdown(t("no_data.lf.explain_seed"))
        st.latex(seed_m.formula_latex(float(lf_T), 1.0, seed_m.resolve_params({})))
        st.caption(t("no_data.lf.protocol"))

    live(show_labelfree, "nd_lf_job", "lf")


for n, draw in enumerate((data_free, label_free), 1):
    if screens.shows(n):
        draw()
screens.footer()

links.settle(FIELDS)

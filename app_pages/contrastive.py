"""Contrastive: what contrastive distillation transfers.

Contrastive distillation (in-batch InfoNCE; CRD, Tian et al. 2020) trains the student so
that its embedding of an image picks out the teacher's embedding of the *same* image
among those of other images. For a batch of test images sorted by class this page shows
the student–teacher similarity matrix (positives on the diagonal), the softmax over each
row at a temperature tau (a slider: small tau sharpens it), the InfoNCE loss of each
anchor and the retrieval accuracy, for the scratch and the distilled student of this
session's Lab run.

Students and teacher are compared in one space: the run's projection heads (contrastive
and CRD runs), or a linear map from each student's features to the teacher's, fitted on
training images the same way for every student. Features are computed once per model
(and per Lab epoch) and kept in the session; the controls only slice and redraw.

Every text comes from the catalogues (``kd_app.i18n``: ``contrastive.*`` in
``kd_app/locales/<lang>/contrastive.json``); the engine's figure texts are relabelled on the page.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch
import torch.nn.functional as F

from kd_app import chrome, i18n, links, views
from kd_app.i18n import t
from kd_core import methods, relations, viz
from kd_core.errors import KDError

N_MIN, N_MAX, N_DEFAULT = 8, 128, 32
TAUS = [0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0]
FIT_IMAGES = 2000  # training images for the linear maps
SPACES = ("linear", "heads")
HEADS = ("contrastive", "crd")  # methods whose run trains projection heads  # labels: contrastive.spaces.*


def label_key(who: str) -> str:
    """The catalogue key of a series' label: 'scratch student', 'distilled student', 'teacher vs itself'."""
    return "contrastive.teacher_itself" if who == "teacher" else f"roles.{who}"


def _sample(name) -> str:
    return str(name).replace(" · class ", f" · {t('axes.class')} ")


def localise_matrix(fig):
    """viz.relation_heatmap's hover texts (row/col/value, 'class' in the sample names) in the
    session's language; English figures stay as the engine drew them."""
    if i18n.lang() == i18n.DEFAULT:
        return fig
    heat = fig.data[0]
    heat.x = [_sample(v) for v in heat.x]
    heat.y = [_sample(v) for v in heat.y]
    for axis in (fig.layout.xaxis, fig.layout.yaxis):
        if axis.tickvals is not None:
            axis.tickvals = [_sample(v) for v in axis.tickvals]
    heat.hovertemplate = (
        f"{t('contrastive.hover.row')} %{{y}}<br>{t('contrastive.hover.col')} %{{x}}<br>"
        f"{t('contrastive.hover.value')} %{{z:.4f}}<extra></extra>"
    )
    return fig


def localise_bars(fig, who: list[str], hover_word: str, value: str):
    """viz.anchor_bars / sample_bars, built with the English series names (which pick the role
    colours): the series, hover texts and the engine's axis titles in the session's language."""
    if i18n.lang() == i18n.DEFAULT:
        return fig
    for trace, w in zip(fig.data, who):
        trace.name = t(label_key(w))
        trace.customdata = [_sample(v) for v in trace.customdata]
        trace.hovertemplate = f"{t(hover_word)} %{{customdata}}<br>{value}<extra>{trace.name}</extra>"
    return i18n.localise_figure(fig)


# the address bar holds the view (dataset, batch, tau): a shared link shows the same matrices
OWN = [
    links.choice("n", "ct_n", list(range(N_MIN, N_MAX + 1, 4)), N_DEFAULT),
    links.number("batch", "ct_seed", 0, 0, 10_000, integer=True),
    links.number("tau", "ct_tau", 0.07, options=TAUS),
]
KEPT = {"ct_anchor": 0, "ct_space": "linear"}
QUICK = [
    views.Quick("ct_quick_train", "contrastive.quick_nce", "contrastive.quick_nce_help", "contrastive"),
    views.Quick("ct_quick_crd", "contrastive.quick_crd", "contrastive.quick_crd_help", "crd"),
]
PANEL = views.Panel(lambda m: m.name in HEADS, "contrastive.no_heads", QUICK, [1, 1, 1])
run, FIELDS, left, right = views.follow_page("contrastive", "contrastive", "🧲", "ct_dataset", OWN, KEPT, PANEL)
ds_name, ds, method = run.dataset, run.ds, run.method
if run.new_run:  # a new Lab run: follow its tau too, and its projection heads
    tau = run.config.method_params().get("tau") if run.config.method in methods.METHODS else None
    if tau is not None:
        st.session_state.ct_tau = min(TAUS, key=lambda v: abs(v - float(tau)))
    links.forget(["ct_space"])
method = run.method
has_heads = method is not None and method.name in HEADS


# ------------------------------------------------------------------ layers and images
t_arch, s_arch = run.architectures()
run_pairs = views.trained_pairs(run)
t_layer, s_layer = run_pairs[0] if has_heads and run_pairs else ("embed", "embed")

classes = [str(c) for c in ds.classes]
pool = relations.pool_indices(len(ds.y_test))
y_pool = np.asarray(ds.y_test.cpu().numpy())[pool]
fit_idx = relations.pool_indices(len(ds.y_train), FIT_IMAGES, seed=1)

with left:
    n = st.slider(t("contrastive.n"), N_MIN, min(N_MAX, len(pool)), step=4, key="ct_n", help=t("contrastive.n_help"))
    n = int(min(n, len(pool)))
    tau = float(st.select_slider(t("contrastive.tau"), TAUS, key="ct_tau", help=t("contrastive.tau_help")))
    anchor = views.anchor_picker("ct_anchor", "contrastive", n, "ct_new_batch", views.new_seed("ct_seed"))
    spaces = ["linear", "heads"] if has_heads else ["linear"]
    if st.session_state.get("ct_space") not in spaces:
        st.session_state.ct_space = spaces[0]
    space_labels = {s: t(f"contrastive.spaces.{s}") for s in SPACES}  # format_func may run outside the script
    space = st.radio(
        t("contrastive.space"),
        spaces,
        key="ct_space",
        format_func=space_labels.get,
        disabled=not run.matches,
        help=t("contrastive.space_help", fit=FIT_IMAGES),
    )

batch_pos = relations.class_sorted_batch(y_pool, n, seed=int(st.session_state.ct_seed))
batch_idx = pool[batch_pos]
batch_y = y_pool[batch_pos]

with left:
    i = int(batch_idx[anchor])
    views.anchor_image(ds, i, t("contrastive.anchor_text", pos=anchor, image=i, cls=classes[int(batch_y[anchor])]))
    st.caption(t("contrastive.layers", t_layer=t_layer, s_layer=s_layer))


# ------------------------------------------------------------------ embeddings, once per model
CACHE = views.SessionCache("ct_cache")


def prune_cache(job_id: int, epoch: int) -> None:
    """Forget older epochs and runs (the teacher's features stay)."""
    CACHE.prune(lambda k: k[2] == "teacher" or k[2:4] == (job_id, epoch))


def features_of(model_key: tuple, model, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(pool features, fit-set features) of a layer, cached per model and layer."""

    def compute():
        with st.spinner(t("contrastive.computing", layer=layer)):
            return (
                relations.flat_features(model, ds.x_test[pool], layer),
                relations.flat_features(model, ds.x_train[fit_idx], layer),
            )

    return CACHE.get(("feat", ds_name, *model_key, layer), compute)


def embeddings(snap: dict | None, teacher_m, teacher_key: str) -> dict[str, torch.Tensor]:
    """Unit-length embeddings of the pool in the shared space: "teacher" and, with a run,
    "scratch" (when trained) and "distilled"; cached per model and space."""
    t_pool, t_fit = features_of(("teacher", teacher_key, ""), teacher_m, t_layer)
    if snap is None:
        return {"teacher": F.normalize(t_pool, dim=1)}
    students = {"scratch": snap.get("baseline"), "distilled": snap["student"]}
    students = {who: m for who, m in students.items() if m is not None}
    keys = {who: (run.job.id, snap["epoch"], who) for who in students}
    prune_cache(run.job.id, snap["epoch"])
    feats = {who: features_of(keys[who], m, s_layer) for who, m in students.items()}

    def compute():
        out = {}
        if space == "heads" and snap.get("modules") is not None:
            # what the loss compared: g_S(distilled) against g_T(teacher); the scratch student
            # has no head, so it gets the least-squares linear map onto g_T
            d_pool, d_fit = feats["distilled"]
            out["distilled"], out["teacher"] = relations.project(snap["modules"], d_pool, t_pool)
            if "scratch" in feats:
                _, g_t_fit = relations.project(snap["modules"], d_fit, t_fit)
                w = relations.fit_linear_map(feats["scratch"][1], g_t_fit)
                out["scratch"] = F.normalize(relations.apply_map(w, feats["scratch"][0]), dim=1)
        else:
            out["teacher"] = F.normalize(t_pool, dim=1)
            for who, (s_pool, s_fit) in feats.items():
                w = relations.fit_linear_map(s_fit, t_fit)
                out[who] = F.normalize(relations.apply_map(w, s_pool), dim=1)
        return out

    return CACHE.get(("emb", ds_name, run.job.id, snap["epoch"], "all", space), compute)


# ------------------------------------------------------------------ drawing
def draw_all(snap: dict | None, teacher_m, teacher_key: str) -> None:
    emb = embeddings(snap, teacher_m, teacher_key)
    t_emb = emb["teacher"]
    who_list = [w for w in ("scratch", "distilled") if w in emb] or ["teacher"]
    sims = {w: relations.similarity(emb[w][batch_pos], t_emb[batch_pos]) for w in who_list}
    soft = {w: relations.row_softmax(sims[w], tau) for w in who_list}
    nce = {w: relations.per_sample_info_nce(sims[w], tau) for w in who_list}
    label = {w: t(label_key(w)) for w in who_list}
    label_en = {w: i18n.text(label_key(w), i18n.DEFAULT) for w in who_list}  # the series' names pick their colours

    views.students_after(run, snap, "contrastive.students_after", space=space_labels[space].lower())
    # ---------------------------------------------------------- numbers
    cols = st.columns([1] * len(who_list) + [1.4 if len(who_list) > 1 else 2.4], gap="medium")
    for i, w in enumerate(who_list):
        r_batch = relations.retrieval_accuracy(emb[w][batch_pos], t_emb[batch_pos])
        r_pool = relations.retrieval_accuracy(emb[w], t_emb)
        other = "scratch" if w == "distilled" and "scratch" in who_list else None
        with cols[i]:
            delta = None
            if other:
                delta = t(
                    "contrastive.vs_scratch", delta=100 * (r_pool - relations.retrieval_accuracy(emb[other], t_emb))
                )
            st.metric(
                t("contrastive.retrieval_pool", n=len(pool), who=label[w]),
                f"{100 * r_pool:.1f}%",
                delta=delta,
                help=t("contrastive.retrieval_pool_help", who=label[w], n=len(pool), chance=100 / len(pool)),
            )
            st.metric(
                t("contrastive.retrieval_batch", who=label[w]),
                f"{100 * r_batch:.1f}%",
                help=t("contrastive.retrieval_batch_help", n=n, chance=100 / n),
            )
            st.metric(
                t("contrastive.mean_nce", tau=tau, who=label[w]),
                f"{nce[w].mean():.3f}",
                help=t("contrastive.mean_nce_help", log_n=np.log(n)),
            )
    with cols[-1]:
        st.latex(r"\mathcal{L}_i = -\log \frac{e^{\cos(s_i, t_i)/\tau}}{\sum_{j=1}^{N} e^{\cos(s_i, t_j)/\tau}}")
        st.caption(t("contrastive.nce_caption"))

    # ---------------------------------------------------------- matrices
    def heatmap(matrix, title: str, who: str, key: str, zmin: float, bar: str) -> None:
        """A batch's matrix (rows: the student's anchors, columns: the teacher's), the anchor marked."""
        fig = viz.relation_heatmap(
            matrix, batch_y, classes, batch_idx, title, who, colorscale=viz.SEQUENTIAL, zmin=zmin, zmax=1.0,
            colorbar_title=bar, highlight=anchor,
        )  # fmt: skip
        st.plotly_chart(localise_matrix(fig), key=key, width="stretch", theme=None)

    st.subheader(t("contrastive.sim_header"))
    low = float(np.floor(min(m.min() for m in sims.values()) * 10) / 10)  # one colour scale for both, up to 1
    cols = chrome.columns("ct_sims", 2, min_rem=20, gap="medium")
    for col, w in zip(cols, who_list):
        with col:
            heatmap(sims[w], f"cos(s_i, t_j) · {label[w]}", w, f"ct_sim_{w}", low, "cos")
    if who_list == ["teacher"]:
        with cols[1]:
            heatmap(soft["teacher"], t("contrastive.softmax_at", tau=tau), "teacher", "ct_soft_teacher", 0.0, "p")
    st.caption(t("contrastive.sim_caption", low=low))
    if who_list != ["teacher"]:
        st.subheader(t("contrastive.soft_header", tau=tau))
        cols = chrome.columns("ct_softs", 2, min_rem=20, gap="medium")
        for col, w in zip(cols, who_list):
            with col:
                heatmap(soft[w], f"softmax · {label[w]}", w, f"ct_soft_{w}", 0.0, "p")

    # ---------------------------------------------------------- one anchor, and every anchor's loss
    cols = chrome.columns("ct_anchor", 2, min_rem=20, gap="medium")
    with cols[0]:
        fig = viz.anchor_bars(
            {label_en[w]: soft[w][anchor] for w in who_list},
            batch_y,
            classes,
            anchor,
            tau,
            batch_idx,
            title=t("contrastive.anchor_title", anchor=anchor, cls=classes[int(batch_y[anchor])]),
        )
        fig.layout.yaxis.title.text = t("contrastive.softmax_at", tau=tau)
        localise_bars(fig, who_list, "contrastive.hover.teacher", "p = %{y:.4f}")
        st.plotly_chart(fig, key="ct_anchor_bars", width="stretch", theme=None)
    with cols[1]:
        fig = viz.sample_bars(
            {label_en[w]: nce[w] for w in who_list},
            batch_y,
            classes,
            batch_idx,
            title=t("contrastive.nce_title", tau=tau),
            ytitle=t("contrastive.nce_axis"),
        )
        localise_bars(fig, who_list, "contrastive.hover.anchor", "%{y:.3f}")
        st.plotly_chart(fig, key="ct_nce", width="stretch", theme=None)
    st.caption(t("contrastive.tau_caption", log_n=np.log(n)))


# ------------------------------------------------------------------ run it
def draw(snap: dict | None, teacher_m, teacher) -> None:
    if snap is None and run.matches:
        st.info(t("contrastive.wait_first_epoch"))
    try:
        draw_all(snap, teacher_m, teacher.key if teacher is not None else "run")
    except (KDError, ValueError) as e:
        st.error(t("contrastive.cannot_draw", error=e))


views.follow(run, draw)
links.settle(FIELDS)

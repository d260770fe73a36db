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

from kd_app import chrome, datasets, i18n, links, state
from kd_app.i18n import t
from kd_core import data, methods, models, relations, train, viz
from kd_core.config import Config
from kd_core.errors import KDError

DEFAULT_DATASET = "mnist-mini"
QUICK_EPOCHS = 2
N_MIN, N_MAX, N_DEFAULT = 8, 128, 32
TAUS = [0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0]
FIT_IMAGES = 2000  # training images for the linear maps
SPACES = ("linear", "heads")  # labels: contrastive.spaces.*


def method_title(m) -> str:
    key = f"methods.{m.name}"
    return t(key) if key in i18n.catalogue(i18n.DEFAULT) else m.title


def status_text(status: str) -> str:
    key = f"contrastive.status.{status}"
    return t(key) if key in i18n.catalogue(i18n.DEFAULT) else status


def dataset_title(name: str) -> str:
    key = f"datasets.{name}"
    return t(key) if key in i18n.catalogue(i18n.DEFAULT) else data.DATASETS[name].title


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


# ------------------------------------------------------------------ widget state
def new_batch() -> None:
    st.session_state.ct_seed = int(np.random.default_rng().integers(1, 10_000))


st.title("🧲 " + t("contrastive.title"))
st.caption(t("contrastive.intro"))

job, run_cfg, running = state.lab_run()

# the address bar holds the view (dataset, batch, tau): a shared link shows the same matrices
FIELDS = [
    links.choice(
        "dataset", "ct_dataset", list(data.DATASETS), run_cfg.dataset if run_cfg is not None else DEFAULT_DATASET
    ),
    links.choice("n", "ct_n", list(range(N_MIN, N_MAX + 1, 4)), N_DEFAULT),
    links.number("batch", "ct_seed", 0, 0, 10_000, integer=True),
    links.number("tau", "ct_tau", 0.07, options=TAUS),
]
links.sync("contrastive", FIELDS)
state.keep("ct_dataset", run_cfg.dataset if run_cfg is not None else DEFAULT_DATASET)
state.keep("ct_n", N_DEFAULT)
state.keep("ct_anchor", 0)
state.keep("ct_seed", 0)
state.keep("ct_tau", 0.07)
if st.session_state.ct_dataset not in data.DATASETS:
    st.session_state.ct_dataset = DEFAULT_DATASET
if job is not None and st.session_state.get("_ct_seen_job") != job.id:  # a new Lab run: follow it once
    st.session_state._ct_seen_job = job.id
    st.session_state.ct_dataset = run_cfg.dataset
    tau = run_cfg.method_params().get("tau") if run_cfg.method in methods.METHODS else None
    if tau is not None:
        st.session_state.ct_tau = min(TAUS, key=lambda v: abs(v - float(tau)))
    st.session_state.pop("ct_space", None)
    st.session_state.pop("_keep_ct_space", None)

left, right = st.columns([1, 2.3], gap="large")
with left:
    choice = datasets.picker(t("contrastive.dataset"), "ct_dataset", help=t("contrastive.dataset_help"))
    ds_name = choice
    ds = datasets.load(choice)  # None after a notice saying why and where its files go
    if ds is None:
        ds_name = run_cfg.dataset if run_cfg is not None and run_cfg.dataset != choice else DEFAULT_DATASET
        st.caption(t("contrastive.showing_meanwhile", name=ds_name))
        ds = state.dataset(ds_name)

run_matches = run_cfg is not None and run_cfg.dataset == ds_name
method = methods.get(run_cfg.method) if run_matches else None
has_heads = method is not None and method.name in ("contrastive", "crd")

with right:
    if job is None:
        st.info(t("contrastive.no_run"))
    elif not run_matches:
        st.info(t("contrastive.other_dataset", id=job.id, dataset=run_cfg.dataset, current=ds_name))
    else:
        what = t(
            "contrastive.run_what",
            id=job.id,
            method=method_title(method),
            student=run_cfg.student,
            teacher=run_cfg.teacher,
        )
        if running:
            st.info(t("contrastive.run_live", what=what))
        elif job.status in ("finished", "stopped"):
            st.success(t("contrastive.run_done", what=what, status=status_text(job.status)))
        else:
            st.error(t("contrastive.run_failed", what=what, status=status_text(job.status), message=job.message))
        if not has_heads:
            st.caption(t("contrastive.no_heads", method=method_title(method)))
    b1, b2, b3 = st.columns([1, 1, 1])
    quick_nce = b1.button(
        t("contrastive.quick_nce", epochs=QUICK_EPOCHS),
        key="ct_quick_train",
        disabled=running,
        help=t("contrastive.quick_nce_help"),
    )
    quick_crd = b2.button(
        t("contrastive.quick_crd", epochs=QUICK_EPOCHS),
        key="ct_quick_crd",
        disabled=running,
        help=t("contrastive.quick_crd_help"),
    )
    b3.page_link("pages/lab.py", label=t("contrastive.lab_link"), icon="🧪", help=t("contrastive.lab_link_help"))
    if quick_nce or quick_crd:
        try:
            cfg = Config(
                dataset=ds_name,
                method="crd" if quick_crd else "contrastive",
                epochs=QUICK_EPOCHS,
                train_subset=state.QUICK_SUBSET.get(ds_name),
            )
            new = state.job_manager().submit(cfg, owner=state.session_id())
            st.session_state.kd_lab_job_id = new.id
            st.rerun()
        except KDError as e:
            st.error(t("contrastive.cannot_start", error=e))

# ------------------------------------------------------------------ layers and images
if run_matches:
    t_arch, s_arch = run_cfg.teacher, run_cfg.student
    pair = ("embed", "embed")
    if method.needs_features:
        try:
            p = train.resolve_pairs(
                method,
                models.build(t_arch, ds.in_shape, ds.num_classes),
                models.build(s_arch, ds.in_shape, ds.num_classes),
                ds.in_shape,
                run_cfg.parsed_pairs(),
            )
            pair = (p[0][0], p[0][1]) if has_heads else pair
        except KDError:
            pass
else:
    t_arch, s_arch, pair = models.preset(ds_name)[0], None, ("embed", "embed")
t_layer, s_layer = pair

classes = [str(c) for c in ds.classes]
pool = relations.pool_indices(len(ds.y_test))
y_pool = np.asarray(ds.y_test.cpu().numpy())[pool]
fit_idx = relations.pool_indices(len(ds.y_train), FIT_IMAGES, seed=1)

with left:
    n = st.slider(t("contrastive.n"), N_MIN, min(N_MAX, len(pool)), step=4, key="ct_n", help=t("contrastive.n_help"))
    n = int(min(n, len(pool)))
    tau = float(st.select_slider(t("contrastive.tau"), TAUS, key="ct_tau", help=t("contrastive.tau_help")))
    if st.session_state.ct_anchor >= n:
        st.session_state.ct_anchor = 0
    a1, a2 = st.columns([3, 1], vertical_alignment="bottom")
    anchor = int(
        a1.number_input(t("contrastive.anchor"), 0, n - 1, step=1, key="ct_anchor", help=t("contrastive.anchor_help"))
    )
    a2.button("🎲", key="ct_new_batch", on_click=new_batch, width="stretch", help=t("contrastive.new_batch_help"))
    spaces = ["linear", "heads"] if has_heads else ["linear"]
    if st.session_state.get("ct_space") not in spaces:
        st.session_state.ct_space = (
            st.session_state.get("_keep_ct_space") if st.session_state.get("_keep_ct_space") in spaces else spaces[0]
        )
    space_labels = {s: t(f"contrastive.spaces.{s}") for s in SPACES}  # format_func may run outside the script
    space = st.radio(
        t("contrastive.space"),
        spaces,
        key="ct_space",
        format_func=space_labels.get,
        disabled=not run_matches,
        help=t("contrastive.space_help", fit=FIT_IMAGES),
    )

batch_pos = relations.class_sorted_batch(y_pool, n, seed=int(st.session_state.ct_seed))
batch_idx = pool[batch_pos]
batch_y = y_pool[batch_pos]

with left:
    x_anchor = ds.x_test[int(batch_idx[anchor]) : int(batch_idx[anchor]) + 1]
    img = np.clip(viz.to_display(ds.denormalise(x_anchor)[0].cpu().numpy()), 0.0, 1.0)
    f = max(1, 112 // img.shape[0])
    c1, c2 = st.columns([1, 2], vertical_alignment="center")
    c1.image(np.repeat(np.repeat(img, f, axis=0), f, axis=1), output_format="PNG", width=112)
    c2.markdown(
        t("contrastive.anchor_text", pos=anchor, image=int(batch_idx[anchor]), cls=classes[int(batch_y[anchor])])
    )
    st.caption(t("contrastive.layers", t_layer=t_layer, s_layer=s_layer))


# ------------------------------------------------------------------ embeddings, once per model
def cached(key: tuple, compute):
    cache = st.session_state.setdefault("ct_cache", {})
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def prune_cache(job_id: int, epoch: int) -> None:
    """Forget older epochs and runs (the teacher's features stay)."""
    cache = st.session_state.get("ct_cache", {})
    for k in list(cache):
        if k[2] != "teacher" and k[2:4] != (job_id, epoch):
            del cache[k]


def features_of(model_key: tuple, model, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(pool features, fit-set features) of a layer, cached per model and layer."""

    def compute():
        with st.spinner(t("contrastive.computing", layer=layer)):
            return (
                relations.flat_features(model, ds.x_test[pool], layer),
                relations.flat_features(model, ds.x_train[fit_idx], layer),
            )

    return cached(("feat", ds_name, *model_key, layer), compute)


def embeddings(snap: dict | None, teacher_m, teacher_key: str) -> dict[str, torch.Tensor]:
    """Unit-length embeddings of the pool in the shared space: "teacher" and, with a run,
    "scratch" (when trained) and "distilled"; cached per model and space."""
    t_pool, t_fit = features_of(("teacher", teacher_key, ""), teacher_m, t_layer)
    if snap is None:
        return {"teacher": F.normalize(t_pool, dim=1)}
    students = {"scratch": snap.get("baseline"), "distilled": snap["student"]}
    students = {who: m for who, m in students.items() if m is not None}
    keys = {who: (job.id, snap["epoch"], who) for who in students}
    prune_cache(job.id, snap["epoch"])
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

    return cached(("emb", ds_name, job.id, snap["epoch"], "all", space), compute)


# ------------------------------------------------------------------ drawing
def draw(snap: dict | None, teacher_m, teacher_key: str) -> None:
    emb = embeddings(snap, teacher_m, teacher_key)
    t_emb = emb["teacher"]
    who_list = [w for w in ("scratch", "distilled") if w in emb] or ["teacher"]
    sims = {w: relations.similarity(emb[w][batch_pos], t_emb[batch_pos]) for w in who_list}
    soft = {w: relations.row_softmax(sims[w], tau) for w in who_list}
    nce = {w: relations.per_sample_info_nce(sims[w], tau) for w in who_list}
    label = {w: t(label_key(w)) for w in who_list}
    label_en = {w: i18n.text(label_key(w), i18n.DEFAULT) for w in who_list}  # the series' names pick their colours

    if snap is not None and run_matches:
        live = t("contrastive.live") if running else ""
        st.markdown(
            t(
                "contrastive.students_after",
                epoch=snap["epoch"],
                epochs=run_cfg.epochs,
                live=live,
                space=space_labels[space].lower(),
            )
        )
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
    st.subheader(t("contrastive.sim_header"))
    low = float(np.floor(min(m.min() for m in sims.values()) * 10) / 10)  # one colour scale for both, up to 1
    cols = st.columns(2, gap="medium")
    for col, w in zip(cols, who_list):
        with col:
            fig = viz.relation_heatmap(
                sims[w],
                batch_y,
                classes,
                batch_idx,
                f"cos(s_i, t_j) · {label[w]}",
                w if w != "teacher" else "teacher",
                colorscale=viz.SEQUENTIAL,
                zmin=low,
                zmax=1.0,
                colorbar_title="cos",
                highlight=anchor,
            )
            st.plotly_chart(localise_matrix(fig), key=f"ct_sim_{w}", width="stretch", theme=None)
    if who_list == ["teacher"]:
        with cols[1]:
            fig = viz.relation_heatmap(
                soft["teacher"],
                batch_y,
                classes,
                batch_idx,
                t("contrastive.softmax_at", tau=tau),
                "teacher",
                colorscale=viz.SEQUENTIAL,
                zmin=0.0,
                zmax=1.0,
                colorbar_title="p",
                highlight=anchor,
            )
            st.plotly_chart(localise_matrix(fig), key="ct_soft_teacher", width="stretch", theme=None)
    st.caption(t("contrastive.sim_caption", low=low))
    if who_list != ["teacher"]:
        st.subheader(t("contrastive.soft_header", tau=tau))
        cols = st.columns(2, gap="medium")
        for col, w in zip(cols, who_list):
            with col:
                fig = viz.relation_heatmap(
                    soft[w],
                    batch_y,
                    classes,
                    batch_idx,
                    f"softmax · {label[w]}",
                    w,
                    colorscale=viz.SEQUENTIAL,
                    zmin=0.0,
                    zmax=1.0,
                    colorbar_title="p",
                    highlight=anchor,
                )
                st.plotly_chart(localise_matrix(fig), key=f"ct_soft_{w}", width="stretch", theme=None)

    # ---------------------------------------------------------- one anchor, and every anchor's loss
    cols = st.columns(2, gap="medium")
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
def show() -> None:
    if running and run_matches:
        state.run_progress()
    snap, teacher_m, teacher = state.run_source(job, run_matches, ds_name)
    if teacher is not None:
        st.caption(chrome.teacher_caption(teacher))
    if teacher_m is None:  # the run is still preparing its teacher
        return
    if snap is None and run_matches:
        st.info(t("contrastive.wait_first_epoch"))
    try:
        draw(snap, teacher_m, teacher.key if teacher is not None else "run")
    except (KDError, ValueError) as e:
        st.error(t("contrastive.cannot_draw", error=e))


if running and run_matches:

    @st.fragment(run_every=2.0)
    def live() -> None:
        show()
        j = state.lab_job()
        if j is not None and j.done:
            st.rerun()

    live()
else:
    show()

state.remember("ct_dataset", "ct_n", "ct_anchor", "ct_seed", "ct_tau", "ct_space")

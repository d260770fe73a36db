"""Relations: what relational distillation transfers.

RKD, SP and PKT do not copy the teacher's features; they copy the *structure* of a batch:
its pairwise distances, the angles its samples form, its similarity (Gram) matrix, its
neighbour probabilities. For a batch of N test images sorted by class, this page shows
each matrix for the teacher, the scratch student and the distilled student of this
session's Lab run, the differences to the teacher and the value of each loss; below, a 2-D
map (PCA or t-SNE) of each network's features, coloured by class.

Features are computed once per model (and per Lab epoch) for a fixed pool of test images
and kept in the session; every control only slices and redraws. During a live Lab run the
figures follow the frozen per-epoch snapshots (``state.current_run_snapshot``).

Every text comes from the catalogues (``kd_app.i18n``: ``relations.*`` in
``kd_app/locales/<lang>/relations.json``); the engine's figure texts are relabelled on the page.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from kd_app import i18n, links, views
from kd_app.i18n import t
from kd_core import models, relations, viz
from kd_core.errors import KDError

N_MIN, N_MAX, N_DEFAULT = 8, 128, 40
ROLES = ("teacher", "scratch", "distilled")  # labels: relations.role.* (capitalised), roles.* (lower case)
KINDS = ("distance", "angle", "sp", "pkt")  # labels: relations.kinds.*, formulas: relations.explain.*
SYMBOL = {"distance": "ψ_D", "angle": "ψ_A", "sp": "G", "pkt": "p"}
MAPS = {"pca": "PCA", "tsne": "t-SNE"}  # method names, the same in every language


def role(who: str) -> str:
    """'Teacher', 'Scratch student', ... at the start of a label."""
    return t(f"relations.role.{who}")


def role_lower(who: str) -> str:
    """'teacher', 'scratch student', ... inside a sentence."""
    return t(f"roles.{who}")


def localise_matrix(fig):
    """viz.relation_heatmap's hover texts (row/col/value, 'class' in the sample names) in the
    session's language; English figures stay as the engine drew them."""
    if i18n.lang() == i18n.DEFAULT:
        return fig
    word = f" · {t('axes.class')} "
    heat = fig.data[0]
    heat.x = [str(v).replace(" · class ", word) for v in heat.x]
    heat.y = [str(v).replace(" · class ", word) for v in heat.y]
    for axis in (fig.layout.xaxis, fig.layout.yaxis):
        if axis.tickvals is not None:
            axis.tickvals = [str(v).replace(" · class ", word) for v in axis.tickvals]
    heat.hovertemplate = (
        f"{t('relations.hover.row')} %{{y}}<br>{t('relations.hover.col')} %{{x}}<br>"
        f"{t('relations.hover.value')} %{{z:.4f}}<extra></extra>"
    )
    return fig


def localise_scatter(fig):
    """viz.embedding_scatter's hover texts and legend title in the session's language."""
    if i18n.lang() == i18n.DEFAULT:
        return fig
    for trace in fig.data:
        trace.hovertemplate = (
            f"{t('relations.hover.test_image')} #%{{customdata}}<br>"
            f"{t('relations.hover.label')} {trace.name}<extra></extra>"
        )
    fig.update_layout(legend_title_text=t("axes.class") + " ")
    return fig


# the address bar holds the view (dataset, batch, relation, map): a shared link shows the same matrices
OWN = [
    links.choice("n", "rel_n", list(range(N_MIN, N_MAX + 1, 4)), N_DEFAULT),
    links.number("batch", "rel_seed", 0, 0, 10_000, integer=True),
    links.choice("relation", "rel_kind", list(KINDS), "distance"),
    links.choice("map", "rel_map", list(MAPS), "pca"),
]
KEPT = {"rel_anchor": 0, "rel_tl": None, "rel_sl": None}
QUICK = [views.Quick("rel_quick_train", "relations.quick", "relations.quick_help", "rkd")]
PANEL = views.Panel(lambda m: m.family == "relational", "relations.not_relational", QUICK, [1.3, 1])
run, FIELDS, left, right = views.follow_page("relations", "relations", "🕸️", "rel_dataset", OWN, KEPT, PANEL)
ds_name, ds, method = run.dataset, run.ds, run.method


# ------------------------------------------------------------------ layers
# Architectures come from the run's config (known before any weights exist), weights from
# the latest snapshot; without a run, the dataset's preset teacher alone.
t_arch, s_arch = run.architectures()
run_pairs = views.trained_pairs(run)
t_taps = list(models.build(t_arch, ds.in_shape, ds.num_classes).tap_names)
s_taps = list(models.build(s_arch, ds.in_shape, ds.num_classes).tap_names) if s_arch else []
default_pair = run_pairs[0] if run_pairs else ("embed", "embed")

# a new run, dataset or networks: the default layers
views.reset_on_change(
    "_rel_context", (ds_name, t_arch, s_arch, run.job.id if run.matches else None), ["rel_tl", "rel_sl"]
)
if st.session_state.get("rel_tl") not in t_taps:
    st.session_state.rel_tl = default_pair[0] if default_pair[0] in t_taps else t_taps[-1]
if st.session_state.get("rel_sl") not in s_taps:
    st.session_state.rel_sl = default_pair[1] if default_pair[1] in s_taps else (s_taps[-1] if s_taps else None)

classes = [str(c) for c in ds.classes]
pool = relations.pool_indices(len(ds.y_test))
y_pool = np.asarray(ds.y_test.cpu().numpy())[pool]

with left:
    n = st.slider(t("relations.n"), N_MIN, min(N_MAX, len(pool)), step=4, key="rel_n", help=t("relations.n_help"))
    n = int(min(n, len(pool)))
    anchor = views.anchor_picker("rel_anchor", "relations", n, "rel_new_batch", views.new_seed("rel_seed"))
    t_layer, s_layer = views.layer_pickers("relations", ("rel_tl", "rel_sl"), t_taps, s_taps)
    if run_pairs:
        st.caption(
            t("relations.run_trained", pairs=t("relations.list_sep").join(f"**{a} ↔ {b}**" for a, b in run_pairs))
        )

kind_labels = {k: t(f"relations.kinds.{k}") for k in KINDS}  # format_func may run outside the script
with right:
    kind = st.radio(
        t("relations.kind"),
        list(KINDS),
        key="rel_kind",
        format_func=kind_labels.get,
        horizontal=True,
        help=t("relations.kind_help"),
    )
    st.markdown(t(f"relations.explain.{kind}"))

batch_pos = relations.class_sorted_batch(y_pool, n, seed=int(st.session_state.rel_seed))
batch_idx = pool[batch_pos]  # test image numbers
batch_y = y_pool[batch_pos]

with left:
    i = int(batch_idx[anchor])
    views.anchor_image(ds, i, t("relations.anchor_text", pos=anchor, image=i, cls=classes[int(batch_y[anchor])]))


# ------------------------------------------------------------------ features, once per model
CACHE = views.SessionCache("rel_cache")


def pool_features(model_key: tuple, model, layer: str):
    """The layer's flattened output for the whole pool, cached in the session per model
    (a Lab epoch's snapshot, or the teacher) and layer."""

    def compute():
        with st.spinner(t("relations.computing", layer=layer, n=len(pool))):
            return relations.flat_features(model, ds.x_test[pool], layer)

    return CACHE.get(("feat", ds_name, *model_key, layer), compute)


def map_2d(model_key: tuple, feats, layer: str, how: str) -> np.ndarray:
    def compute():
        with st.spinner(t("relations.mapping", how=MAPS[how], n=len(feats))):
            return relations.embed_2d(feats.numpy(), how)

    return CACHE.get(("map", ds_name, *model_key, layer, how), compute)


def prune_cache(keep_keys: list[tuple]) -> None:
    """Forget the features of older epochs and runs (the teacher's stay)."""
    CACHE.prune(lambda k: k[2] == "teacher" or k[2:5] in keep_keys)


# ------------------------------------------------------------------ drawing
def shared_range(kind: str, mats: dict) -> dict:
    vals = np.concatenate([m.ravel() for m in mats.values()])
    if kind == "angle":
        return dict(colorscale=viz.DIVERGING, zmin=-1.0, zmax=1.0, zmid=0.0)
    if kind == "sp" and vals.min() < 0:
        top = float(np.abs(vals).max())
        return dict(colorscale=viz.DIVERGING, zmin=-top, zmax=top, zmid=0.0)
    return dict(colorscale=viz.SEQUENTIAL, zmin=0.0, zmax=float(np.percentile(vals, 99.5)) or 1.0)


def draw_matrices(snap: dict | None, teacher_m, teacher_key: str) -> None:
    students = views.students(snap)
    keys = {"teacher": ("teacher", teacher_key, "")}
    if snap is not None:
        keys.update({who: (run.job.id, snap["epoch"], who) for who in students})
        prune_cache([keys[w] for w in students])
    feats = {"teacher": pool_features(keys["teacher"], teacher_m, t_layer)}
    for who, m in students.items():
        feats[who] = pool_features(keys[who], m, s_layer)
    batch = {who: f[batch_pos] for who, f in feats.items()}
    mats = {who: relations.relation_matrices(e, anchor) for who, e in batch.items()}

    # ---------------------------------------------------------- the matrices
    st.subheader(t("relations.matrices_header", kind=kind_labels[kind], n=n))
    views.students_after(run, snap, "relations.students_after", t_layer=t_layer, s_layer=s_layer)
    rng = shared_range(kind, {w: m[kind] for w, m in mats.items()})
    cols = st.columns(3, gap="small")
    for col, who in zip(cols, ROLES):
        with col:
            if who in mats:
                lab = f"{role(who)} · {t_layer if who == 'teacher' else s_layer}"
                fig = viz.relation_heatmap(
                    mats[who][kind],
                    batch_y,
                    classes,
                    batch_idx,
                    lab,
                    who,
                    colorbar_title=SYMBOL[kind],
                    height=380,
                    highlight=anchor if kind == "angle" else None,
                    **rng,
                )
                st.plotly_chart(localise_matrix(fig), key=f"rel_mat_{who}", width="stretch", theme=None)
            elif snap is not None and who == "scratch":
                st.info(t("relations.no_scratch"))
            else:
                st.info(
                    t("relations.matrix_after_epoch", who=role_lower(who))
                    if run.matches
                    else t("relations.matrix_with_run", who=role_lower(who), dataset=ds_name)
                )

    if not students:
        return
    # ---------------------------------------------------------- differences and losses
    diffs = {who: mats[who][kind] - mats["teacher"][kind] for who in students}
    top = max(float(np.abs(d).max()) for d in diffs.values()) or 1.0
    gaps = {who: relations.matrix_gap(mats[who][kind], mats["teacher"][kind]) for who in students}
    cols = st.columns(3, gap="small")
    with cols[0]:
        st.markdown(t("relations.diff_text", symbol=SYMBOL[kind]))
        for who in students:
            delta = None
            if who == "distilled" and "scratch" in gaps:
                delta = t("relations.vs_scratch", delta=gaps["distilled"] - gaps["scratch"])
            st.metric(
                t("relations.mean_diff", who=role(who)),
                f"{gaps[who]:.4f}",
                delta=delta,
                delta_color="inverse",
                help=t("relations.mean_diff_help", n=n, symbol=SYMBOL[kind]),
            )
    for col, who in zip(cols[1:], ("scratch", "distilled")):
        with col:
            if who in diffs:
                fig = viz.relation_heatmap(
                    diffs[who],
                    batch_y,
                    classes,
                    batch_idx,
                    t("relations.diff_title", who=role(who)),
                    who,
                    colorscale="RdBu_r",
                    zmin=-top,
                    zmax=top,
                    zmid=0.0,
                    colorbar_title="Δ",
                    height=380,
                    highlight=anchor if kind == "angle" else None,
                )
                st.plotly_chart(localise_matrix(fig), key=f"rel_diff_{who}", width="stretch", theme=None)

    st.markdown(t("relations.losses_header", t_layer=t_layer, s_layer=s_layer))
    rows = {who: relations.relational_losses(batch[who], batch["teacher"]) for who in students}
    table = pd.DataFrame(
        {
            t("relations.col_loss"): [t(f"relations.losses.{k}") for k in relations.LOSSES],
            t("relations.col_what"): [t(f"relations.loss_help.{k}") for k in relations.LOSSES],
            **{role_lower(w): [rows[w][k] for k in relations.LOSSES] for w in students},
        }
    )
    if "scratch" in rows:
        table[t("relations.col_ratio")] = [
            rows["distilled"][k] / rows["scratch"][k] if rows["scratch"][k] else np.nan for k in relations.LOSSES
        ]
    st.dataframe(
        table,
        key="rel_losses",
        hide_index=True,
        width="stretch",
        column_config={c: st.column_config.NumberColumn(format="%.4g") for c in table.columns[2:]},
    )
    if method is not None and method.family == "relational":
        sep = t("relations.list_sep")
        st.caption(
            t(
                "relations.weights_caption",
                method=views.method_title(method),
                pairs=sep.join(f"{a} ↔ {b}" for a, b in run_pairs),
                weights=sep.join(f"{k} = {v:g}" for k, v in run.config.method_params().items()),
            )
        )


def draw_maps(snap: dict | None, teacher_m, teacher_key: str) -> None:
    st.subheader(t("relations.maps_header"))
    m1, m2 = st.columns([1, 3], vertical_alignment="center")
    how = m1.radio(
        t("relations.map"),
        list(MAPS),
        key="rel_map",
        format_func=MAPS.get,
        horizontal=True,
        help=t("relations.map_help"),
    )
    layers = t("relations.map_layers", t_layer=t_layer, s_layer=s_layer) if s_layer else t_layer
    m2.caption(t("relations.map_caption", n=len(pool), layers=layers))
    models_ = {"teacher": (("teacher", teacher_key, ""), teacher_m, t_layer)}
    if snap is not None:
        if snap.get("baseline") is not None:
            models_["scratch"] = ((run.job.id, snap["epoch"], "scratch"), snap["baseline"], s_layer)
        models_["distilled"] = ((run.job.id, snap["epoch"], "distilled"), snap["student"], s_layer)
    pts = {}
    for who, (key, model, layer) in models_.items():
        pts[who] = map_2d(key, pool_features(key, model, layer), layer, how)
    cache = CACHE.store
    cols = st.columns(3, gap="small")
    for col, who in zip(cols, ROLES):
        with col:
            if who not in pts:
                st.info(
                    t("relations.map_after_epoch", who=role_lower(who))
                    if run.matches
                    else t("relations.map_with_run", who=role_lower(who), dataset=ds_name)
                )
                continue
            # the figure only changes with the models, the layers and the map: built once, redrawn as is
            fig_key = ("fig", ds_name, *models_[who][0], models_[who][2], how, models_["teacher"][2], i18n.lang())
            if fig_key not in cache:
                p = pts[who] if who == "teacher" else relations.align_to(pts["teacher"], pts[who])
                cache[fig_key] = localise_scatter(
                    viz.embedding_scatter(p, y_pool, classes, pool, f"{role(who)} · {MAPS[how]}", who)
                )
            st.plotly_chart(cache[fig_key], key=f"rel_map_{who}", width="stretch", theme=None)


# ------------------------------------------------------------------ run it
def draw(snap: dict | None, teacher_m, teacher) -> None:
    key = teacher.key if teacher is not None else "run"
    try:
        draw_matrices(snap, teacher_m, key)
        draw_maps(snap, teacher_m, key)
    except (KDError, ValueError) as e:
        st.error(t("relations.cannot_draw", error=e))


views.follow(run, draw)
links.settle(FIELDS)

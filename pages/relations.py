"""Relations: what relational distillation transfers.

RKD, SP and PKT do not copy the teacher's features; they copy the *structure* of a batch:
its pairwise distances, the angles its samples form, its similarity (Gram) matrix, its
neighbour probabilities. For a batch of N test images sorted by class, this page shows
each matrix for the teacher, the scratch student and the distilled student of this
session's Lab run, the differences to the teacher and the value of each loss; below, a 2-D
map (PCA or t-SNE) of each network's features, coloured by class.

Features are computed once per model (and per Lab epoch) for a fixed pool of test images
and kept in the session; every control only slices and redraws. During a live Lab run the
figures follow the frozen per-epoch snapshots (``state.lab_snapshot``).

Every text comes from the catalogues (``kd_app.i18n``: ``relations.*`` in
``kd_app/locales/<lang>/relations.json``); the engine's figure texts are relabelled on the page.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from kd_app import chrome, datasets, i18n, links, state
from kd_app.i18n import t
from kd_core import data, methods, models, relations, train, viz
from kd_core.config import Config
from kd_core.errors import KDError

DEFAULT_DATASET = "mnist-mini"
QUICK_EPOCHS = 2
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


def method_title(m) -> str:
    key = f"methods.{m.name}"
    return t(key) if key in i18n.catalogue(i18n.DEFAULT) else m.title


def status_text(status: str) -> str:
    key = f"relations.status.{status}"
    return t(key) if key in i18n.catalogue(i18n.DEFAULT) else status


def dataset_title(name: str) -> str:
    key = f"datasets.{name}"
    return t(key) if key in i18n.catalogue(i18n.DEFAULT) else data.DATASETS[name].title


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


# ------------------------------------------------------------------ widget state
def new_batch() -> None:
    st.session_state.rel_seed = int(np.random.default_rng().integers(1, 10_000))


st.title("🕸️ " + t("relations.title"))
st.caption(t("relations.intro"))

job, run_cfg, running = state.lab_run()

# the address bar holds the view (dataset, batch, relation, map): a shared link shows the same matrices
FIELDS = [
    links.choice(
        "dataset", "rel_dataset", list(data.DATASETS), run_cfg.dataset if run_cfg is not None else DEFAULT_DATASET
    ),
    links.choice("n", "rel_n", list(range(N_MIN, N_MAX + 1, 4)), N_DEFAULT),
    links.number("batch", "rel_seed", 0, 0, 10_000, integer=True),
    links.choice("relation", "rel_kind", list(KINDS), "distance"),
    links.choice("map", "rel_map", list(MAPS), "pca"),
]
links.sync("relations", FIELDS)
state.keep("rel_dataset", run_cfg.dataset if run_cfg is not None else DEFAULT_DATASET)
state.keep("rel_n", N_DEFAULT)
state.keep("rel_anchor", 0)
state.keep("rel_seed", 0)
state.keep("rel_kind", "distance")
state.keep("rel_map", "pca")
if st.session_state.rel_dataset not in data.DATASETS:
    st.session_state.rel_dataset = DEFAULT_DATASET
if job is not None and st.session_state.get("_rel_seen_job") != job.id:  # a new Lab run: follow its dataset once
    st.session_state._rel_seen_job = job.id
    st.session_state.rel_dataset = run_cfg.dataset

left, right = st.columns([1, 2.3], gap="large")
with left:
    choice = datasets.picker(t("relations.dataset"), "rel_dataset", help=t("relations.dataset_help"))
    ds_name = choice
    ds = datasets.load(choice)  # None after a notice saying why and where its files go
    if ds is None:
        ds_name = run_cfg.dataset if run_cfg is not None and run_cfg.dataset != choice else DEFAULT_DATASET
        st.caption(t("relations.showing_meanwhile", name=ds_name))
        ds = state.dataset(ds_name)

run_matches = run_cfg is not None and run_cfg.dataset == ds_name
method = methods.get(run_cfg.method) if run_matches else None

# ------------------------------------------------------------------ the Lab run, or a quick one
with right:
    if job is None:
        st.info(t("relations.no_run"))
    elif not run_matches:
        st.info(t("relations.other_dataset", id=job.id, dataset=run_cfg.dataset, current=ds_name))
    else:
        what = t(
            "relations.run_what",
            id=job.id,
            method=method_title(method),
            student=run_cfg.student,
            teacher=run_cfg.teacher,
        )
        if running:
            st.info(t("relations.run_live", what=what))
        elif job.status in ("finished", "stopped"):
            st.success(t("relations.run_done", what=what, status=status_text(job.status)))
        else:
            st.error(t("relations.run_failed", what=what, status=status_text(job.status), message=job.message))
        if method.family != "relational":
            st.caption(t("relations.not_relational", method=method_title(method)))
    b1, b2 = st.columns([1.3, 1])
    quick = b1.button(
        t("relations.quick", epochs=QUICK_EPOCHS),
        key="rel_quick_train",
        disabled=running,
        help=t("relations.quick_help"),
    )
    b2.page_link("pages/lab.py", label=t("relations.lab_link"), icon="🧪", help=t("relations.lab_link_help"))
    if quick:
        try:
            cfg = Config(
                dataset=ds_name, method="rkd", epochs=QUICK_EPOCHS, train_subset=state.QUICK_SUBSET.get(ds_name)
            )
            new = state.job_manager().submit(cfg, owner=state.session_id())
            st.session_state.kd_lab_job_id = new.id
            st.rerun()
        except KDError as e:
            st.error(t("relations.cannot_start", error=e))

# ------------------------------------------------------------------ layers
# Architectures come from the run's config (known before any weights exist), weights from
# the latest snapshot; without a run, the dataset's preset teacher alone.
if run_matches:
    t_arch, s_arch = run_cfg.teacher, run_cfg.student
    run_pairs = []
    if method.needs_features:
        try:
            run_pairs = [
                (p[0], p[1])
                for p in train.resolve_pairs(
                    method,
                    models.build(t_arch, ds.in_shape, ds.num_classes),
                    models.build(s_arch, ds.in_shape, ds.num_classes),
                    ds.in_shape,
                    run_cfg.parsed_pairs(),
                )
            ]
        except KDError:  # the run itself failed on them and says so above
            run_pairs = []
else:
    t_arch, s_arch, run_pairs = models.preset(ds_name)[0], None, []
t_taps = list(models.build(t_arch, ds.in_shape, ds.num_classes).tap_names)
s_taps = list(models.build(s_arch, ds.in_shape, ds.num_classes).tap_names) if s_arch else []
default_pair = run_pairs[0] if run_pairs else ("embed", "embed")

context = (ds_name, t_arch, s_arch, job.id if run_matches else None)
if st.session_state.get("_rel_context") != context:  # a new run, dataset or networks: the default layers
    st.session_state._rel_context = context
    for k in ("rel_tl", "rel_sl", "_keep_rel_tl", "_keep_rel_sl"):
        st.session_state.pop(k, None)
state.keep("rel_tl", default_pair[0] if default_pair[0] in t_taps else t_taps[-1])
state.keep("rel_sl", default_pair[1] if default_pair[1] in s_taps else (s_taps[-1] if s_taps else None))

classes = [str(c) for c in ds.classes]
pool = relations.pool_indices(len(ds.y_test))
y_pool = np.asarray(ds.y_test.cpu().numpy())[pool]

with left:
    n = st.slider(t("relations.n"), N_MIN, min(N_MAX, len(pool)), step=4, key="rel_n", help=t("relations.n_help"))
    n = int(min(n, len(pool)))
    if st.session_state.rel_anchor >= n:
        st.session_state.rel_anchor = 0
    a1, a2 = st.columns([3, 1], vertical_alignment="bottom")
    anchor = int(
        a1.number_input(t("relations.anchor"), 0, n - 1, step=1, key="rel_anchor", help=t("relations.anchor_help"))
    )
    a2.button("🎲", key="rel_new_batch", on_click=new_batch, width="stretch", help=t("relations.new_batch_help"))
    p1, p2 = st.columns(2)
    t_layer = p1.selectbox(t("relations.teacher_layer"), t_taps, key="rel_tl", help=t("relations.teacher_layer_help"))
    if s_taps:
        s_layer = p2.selectbox(
            t("relations.student_layer"), s_taps, key="rel_sl", help=t("relations.student_layer_help")
        )
    else:
        s_layer = None
        p2.selectbox(
            t("relations.student_layer"),
            ["—"],
            key="rel_sl_none",
            disabled=True,
            help=t("relations.student_layer_none_help"),
        )
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
    x_anchor = ds.x_test[int(batch_idx[anchor]) : int(batch_idx[anchor]) + 1]
    img = np.clip(viz.to_display(ds.denormalise(x_anchor)[0].cpu().numpy()), 0.0, 1.0)
    f = max(1, 112 // img.shape[0])
    c1, c2 = st.columns([1, 2], vertical_alignment="center")
    c1.image(np.repeat(np.repeat(img, f, axis=0), f, axis=1), output_format="PNG", width=112)
    c2.markdown(t("relations.anchor_text", pos=anchor, image=int(batch_idx[anchor]), cls=classes[int(batch_y[anchor])]))


# ------------------------------------------------------------------ features, once per model
def pool_features(model_key: tuple, model, layer: str):
    """The layer's flattened output for the whole pool, cached in the session per model
    (a Lab epoch's snapshot, or the teacher) and layer."""
    cache = st.session_state.setdefault("rel_cache", {})
    key = ("feat", ds_name, *model_key, layer)
    if key not in cache:
        with st.spinner(t("relations.computing", layer=layer, n=len(pool))):
            cache[key] = relations.flat_features(model, ds.x_test[pool], layer)
    return cache[key]


def map_2d(model_key: tuple, feats, layer: str, how: str) -> np.ndarray:
    cache = st.session_state.setdefault("rel_cache", {})
    key = ("map", ds_name, *model_key, layer, how)
    if key not in cache:
        with st.spinner(t("relations.mapping", how=MAPS[how], n=len(feats))):
            cache[key] = relations.embed_2d(feats.numpy(), how)
    return cache[key]


def prune_cache(keep_keys: list[tuple]) -> None:
    """Forget the features of older epochs and runs (the teacher's stay)."""
    cache = st.session_state.get("rel_cache", {})
    for k in list(cache):
        if k[2] != "teacher" and k[2:5] not in keep_keys:
            del cache[k]


# ------------------------------------------------------------------ drawing
def shared_range(kind: str, mats: dict) -> dict:
    vals = np.concatenate([m.ravel() for m in mats.values()])
    if kind == "angle":
        return dict(colorscale=viz.DIVERGING, zmin=-1.0, zmax=1.0, zmid=0.0)
    if kind == "sp" and vals.min() < 0:
        top = float(np.abs(vals).max())
        return dict(colorscale=viz.DIVERGING, zmin=-top, zmax=top, zmid=0.0)
    return dict(colorscale=viz.SEQUENTIAL, zmin=0.0, zmax=float(np.percentile(vals, 99.5)) or 1.0)


def draw(snap: dict | None, teacher_m, teacher_key: str) -> None:
    students = {}
    if snap is not None:
        if snap.get("baseline") is not None:
            students["scratch"] = snap["baseline"]
        students["distilled"] = snap["student"]
    keys = {"teacher": ("teacher", teacher_key, "")}
    if snap is not None:
        keys.update({who: (job.id, snap["epoch"], who) for who in students})
        prune_cache([keys[w] for w in students])
    feats = {"teacher": pool_features(keys["teacher"], teacher_m, t_layer)}
    for who, m in students.items():
        feats[who] = pool_features(keys[who], m, s_layer)
    batch = {who: f[batch_pos] for who, f in feats.items()}
    mats = {who: relations.relation_matrices(e, anchor) for who, e in batch.items()}

    # ---------------------------------------------------------- the matrices
    st.subheader(t("relations.matrices_header", kind=kind_labels[kind], n=n))
    if snap is not None and run_matches:
        live = t("relations.live") if running else ""
        st.markdown(
            t(
                "relations.students_after",
                epoch=snap["epoch"],
                epochs=run_cfg.epochs,
                live=live,
                t_layer=t_layer,
                s_layer=s_layer,
            )
        )
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
                    if run_matches
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
                method=method_title(method),
                pairs=sep.join(f"{a} ↔ {b}" for a, b in run_pairs),
                weights=sep.join(f"{k} = {v:g}" for k, v in run_cfg.method_params().items()),
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
            models_["scratch"] = ((job.id, snap["epoch"], "scratch"), snap["baseline"], s_layer)
        models_["distilled"] = ((job.id, snap["epoch"], "distilled"), snap["student"], s_layer)
    pts = {}
    for who, (key, model, layer) in models_.items():
        pts[who] = map_2d(key, pool_features(key, model, layer), layer, how)
    cache = st.session_state.setdefault("rel_cache", {})
    cols = st.columns(3, gap="small")
    for col, who in zip(cols, ROLES):
        with col:
            if who not in pts:
                st.info(
                    t("relations.map_after_epoch", who=role_lower(who))
                    if run_matches
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
def show() -> None:
    if running and run_matches:
        state.run_progress()
    snap, teacher_m, teacher = state.run_source(job, run_matches, ds_name)
    if teacher is not None:
        st.caption(chrome.teacher_caption(teacher))
    if teacher_m is None:  # the run is still preparing its teacher
        return
    try:
        draw(snap, teacher_m, teacher.key if teacher is not None else "run")
        draw_maps(snap, teacher_m, teacher.key if teacher is not None else "run")
    except (KDError, ValueError) as e:
        st.error(t("relations.cannot_draw", error=e))


if running and run_matches:

    @st.fragment(run_every=2.0)
    def live() -> None:
        show()
        j = state.lab_job()
        if j is not None and j.done:
            st.rerun()  # once: the page settles with the final models

    live()
else:
    show()

state.remember("rel_dataset", "rel_n", "rel_anchor", "rel_seed", "rel_kind", "rel_map", "rel_tl", "rel_sl")

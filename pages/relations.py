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
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from kd_app import chrome, state
from kd_core import data, methods, models, relations, train, viz
from kd_core.config import TEACHER_EPOCHS, Config
from kd_core.errors import KDError

DEFAULT_DATASET = "mnist-mini"
QUICK_EPOCHS = 2
QUICK_SUBSET = {"cifar10": 5000}  # quick runs on CIFAR-10 use a training subset (CPU)
N_MIN, N_MAX, N_DEFAULT = 8, 128, 40
ROLES = {"teacher": "Teacher", "scratch": "Scratch student", "distilled": "Distilled student"}
KINDS = {"distance": "Distances (RKD)", "angle": "Angles (RKD)", "sp": "Gram matrix (SP)", "pkt": "Probabilities (PKT)"}
SYMBOL = {"distance": "ψ_D", "angle": "ψ_A", "sp": "G", "pkt": "p"}
EXPLAIN = {
    "distance": r"$\psi_D(i, j) = \|e_i - e_j\|_2 / \mu$, with $\mu$ the mean distance over the batch's pairs "
                r"(Park et al. 2019). Dividing by $\mu$ makes networks of any width and scale comparable: "
                "only *relative* distances are transferred. Dark blocks on the diagonal: images of one class lie "
                "close together.",
    "angle": r"$\psi_A(i, j, k) = \cos\angle e_i\, e_j\, e_k$: the angle at the anchor $e_j$ between the directions "
             r"to $e_i$ and to $e_k$ (Park et al. 2019). Row $i$, column $k$, for the anchor chosen on the left "
             "(outlined row: the anchor itself, 0 by definition). RKD matches these over all triplets of the batch.",
    "sp": r"$G = \mathrm{normalise}_{\text{rows}}(E E^\top)$, the batch's similarity matrix with each row scaled "
          r"to unit length (Tung & Mori 2019). SP's loss is $\|G_T - G_S\|_F^2 / b^2$.",
    "pkt": r"$p(j \mid i) = K(e_i, e_j) / \sum_k K(e_i, e_k)$ with the cosine kernel $K = (\cos + 1)/2$: how "
           r"likely image $i$ is to pick $j$ as its neighbour (Passalis & Tefas 2018). PKT's loss is the KL "
           "divergence between the teacher's and the student's probabilities.",
}
MAPS = {"pca": "PCA", "tsne": "t-SNE"}
LOSS_HELP = {"rkd_distance": "RKD distance-wise: Huber loss between the ψ_D matrices",
             "rkd_angle": "RKD angle-wise: Huber loss between the ψ_A potentials of all triplets",
             "sp": "SP: ‖G_T − G_S‖²_F / b²", "pkt": "PKT: KL between the neighbour probabilities"}


# ------------------------------------------------------------------ widget state
def keep(key: str, default) -> None:
    """Widgets keep their values across a visit to another page (see soft_targets)."""
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(f"_keep_{key}", default)


def remember(*keys: str) -> None:
    for key in keys:
        if key in st.session_state:
            st.session_state[f"_keep_{key}"] = st.session_state[key]


def new_batch() -> None:
    st.session_state.rel_seed = int(np.random.default_rng().integers(1, 10_000))


def teacher_for(ds_name: str) -> train.Teacher:
    """The preset teacher of a dataset (CIFAR-10: on a training subset), trained once with progress."""
    arch, subset = models.preset(ds_name)[0], QUICK_SUBSET.get(ds_name)
    if subset is None:
        return state.teacher(ds_name)
    epochs = TEACHER_EPOCHS.get(ds_name, 10)
    key = train.teacher_key(ds_name, arch, epochs, train_subset=subset)
    if key in train._teachers:
        return train._teachers[key]
    with st.status(f"Training the teacher {arch} on {subset:,} {ds_name} images (once; cached afterwards)…",
                   expanded=True) as box:
        bar = st.progress(0.0, text="starting")
        t = train.get_teacher(ds_name, arch, epochs, train_subset=subset,
                              progress=lambda e, n, acc: bar.progress(e / n, text=f"epoch {e}/{n}: {100 * acc:.1f}%"))
        box.update(label=f"Teacher {arch} ready: {100 * t.test_accuracy:.1f}% test accuracy", state="complete",
                   expanded=False)
    return t


# ------------------------------------------------------------------ header
st.title("🕸️ Relations")
st.caption("Relational distillation does not ask the student to reproduce the teacher's features — a smaller "
           "network could not — but the *relations between samples*: which images lie close together, the angles "
           "they form, who is whose neighbour. Compare these matrices for the teacher, a student trained from "
           "scratch and a distilled student on one batch of test images, sorted by class so the class blocks show.")

job = state.lab_job()
run_cfg: Config | None = None
if job is not None:
    trainer = job.trainer
    run_cfg = trainer.config if trainer is not None else job.config.resolved()
running = job is not None and not job.done

keep("rel_dataset", run_cfg.dataset if run_cfg is not None else DEFAULT_DATASET)
keep("rel_n", N_DEFAULT)
keep("rel_anchor", 0)
keep("rel_seed", 0)
keep("rel_kind", "distance")
keep("rel_map", "pca")
if st.session_state.rel_dataset not in data.DATASETS:
    st.session_state.rel_dataset = DEFAULT_DATASET
if job is not None and st.session_state.get("_rel_seen_job") != job.id:  # a new Lab run: follow its dataset once
    st.session_state._rel_seen_job = job.id
    st.session_state.rel_dataset = run_cfg.dataset

left, right = st.columns([1, 2.3], gap="large")
with left:
    choice = st.selectbox("Dataset", list(data.DATASETS), key="rel_dataset",
                          format_func=lambda n: f"{n} — {data.DATASETS[n].title}",
                          help="The test images to relate. Your Lab run's students appear when this is the "
                               "dataset it was trained on.")
    ds_name = choice
    try:
        ds = state.dataset(choice)
    except KDError as e:
        st.error(f"Cannot use **{choice}**: {e}")
        ds_name = run_cfg.dataset if run_cfg is not None and run_cfg.dataset != choice else DEFAULT_DATASET
        st.caption(f"Showing **{ds_name}** meanwhile; choose another dataset above.")
        ds = state.dataset(ds_name)

run_matches = run_cfg is not None and run_cfg.dataset == ds_name
method = methods.get(run_cfg.method) if run_matches else None

# ------------------------------------------------------------------ the Lab run, or a quick one
with right:
    if job is None:
        st.info("No Lab run in this session yet: below are the **teacher's** relations only. Train a student with "
                "a relational method (RKD, SP or PKT) in the Lab — or one quick run here — to compare.")
    elif not run_matches:
        st.info(f"Your Lab run #{job.id} was trained on **{run_cfg.dataset}**; choose that dataset to see its "
                f"students. Showing the {ds_name} teacher only.")
    else:
        what = f"Lab run #{job.id}: **{method.title}**, student **{run_cfg.student}** from teacher **{run_cfg.teacher}**"
        if running:
            st.info(what + " — training in the background; the figures below follow it live, epoch by epoch.")
        elif job.status in ("finished", "stopped"):
            st.success(what + f" — {job.status}.")
        else:
            st.error(what + f" — {job.status}: {job.message}")
        if method.family != "relational":
            st.caption(f"{method.title} does not train the relations directly: a fine control for the relational "
                       f"methods (logit KD still pulls them towards the teacher's).")
    b1, b2 = st.columns([1.3, 1])
    quick = b1.button(f"🚀 Train a quick RKD student ({QUICK_EPOCHS} epochs)", key="rel_quick_train", disabled=running,
                      help="Relational KD with the paper's weights (distance 25, angle 50) on the embeddings, with a "
                           "scratch student alongside; it runs in the background like a Lab run, and the Lab shows "
                           "it too.")
    b2.page_link("pages/lab.py", label="Open the Distillation lab", icon="🧪",
                 help="Choose the method (RKD, SP, PKT, …), the layers, T and alpha yourself.")
    if quick:
        try:
            cfg = Config(dataset=ds_name, method="rkd", epochs=QUICK_EPOCHS, train_subset=QUICK_SUBSET.get(ds_name))
            new = state.job_manager().submit(cfg, owner=state.session_id())
            st.session_state.kd_lab_job_id = new.id
            st.rerun()
        except KDError as e:
            st.error(f"Cannot start the run: {e}")

# ------------------------------------------------------------------ layers
# Architectures come from the run's config (known before any weights exist), weights from
# the latest snapshot; without a run, the dataset's preset teacher alone.
if run_matches:
    t_arch, s_arch = run_cfg.teacher, run_cfg.student
    run_pairs = []
    if method.needs_features:
        try:
            run_pairs = [(p[0], p[1]) for p in train.resolve_pairs(
                method, models.build(t_arch, ds.in_shape, ds.num_classes),
                models.build(s_arch, ds.in_shape, ds.num_classes), ds.in_shape, run_cfg.parsed_pairs())]
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
keep("rel_tl", default_pair[0] if default_pair[0] in t_taps else t_taps[-1])
keep("rel_sl", default_pair[1] if default_pair[1] in s_taps else (s_taps[-1] if s_taps else None))

classes = [str(c) for c in ds.classes]
pool = relations.pool_indices(len(ds.y_test))
y_pool = np.asarray(ds.y_test.cpu().numpy())[pool]

with left:
    n = st.slider("Batch size N", N_MIN, min(N_MAX, len(pool)), step=4, key="rel_n",
                  help="How many test images form the batch, balanced over the classes and sorted by class. "
                       "Relational losses are computed over such a batch in training (64 images there).")
    n = int(min(n, len(pool)))
    if st.session_state.rel_anchor >= n:
        st.session_state.rel_anchor = 0
    a1, a2 = st.columns([3, 1], vertical_alignment="bottom")
    anchor = int(a1.number_input("Anchor for the angles", 0, n - 1, step=1, key="rel_anchor",
                                 help="Batch position of the anchor j whose angles ψ_A(i, j, k) the Angles view "
                                      "shows; hover a matrix to see which image is where."))
    a2.button("🎲", key="rel_new_batch", on_click=new_batch, width="stretch",
              help="A new batch: another balanced draw of test images.")
    p1, p2 = st.columns(2)
    t_layer = p1.selectbox("Teacher layer", t_taps, key="rel_tl",
                           help="Whose output is the teacher's embedding e_i (flattened). The run's pair is the "
                                "default; 'embed' is the penultimate layer.")
    if s_taps:
        s_layer = p2.selectbox("Student layer", s_taps, key="rel_sl",
                               help="The students' layer compared with it; the method trained this pair.")
    else:
        s_layer = None
        p2.selectbox("Student layer", ["—"], key="rel_sl_none", disabled=True,
                     help="Appears once there is a Lab run on this dataset.")
    if run_pairs:
        st.caption("The run trained: " + ", ".join(f"**{a} ↔ {b}**" for a, b in run_pairs) + ".")

with right:
    kind = st.radio("Relation", list(KINDS), key="rel_kind", format_func=KINDS.get, horizontal=True,
                    help="Which relation of the batch to show: RKD's distances or angles, SP's Gram matrix or PKT's "
                         "neighbour probabilities.")
    st.markdown(EXPLAIN[kind])

batch_pos = relations.class_sorted_batch(y_pool, n, seed=int(st.session_state.rel_seed))
batch_idx = pool[batch_pos]  # test image numbers
batch_y = y_pool[batch_pos]

with left:
    x_anchor = ds.x_test[int(batch_idx[anchor]) : int(batch_idx[anchor]) + 1]
    img = np.clip(viz.to_display(ds.denormalise(x_anchor)[0].cpu().numpy()), 0.0, 1.0)
    f = max(1, 112 // img.shape[0])
    c1, c2 = st.columns([1, 2], vertical_alignment="center")
    c1.image(np.repeat(np.repeat(img, f, axis=0), f, axis=1), output_format="PNG", width=112)
    c2.markdown(f"Anchor: batch position **{anchor}**, test image **#{int(batch_idx[anchor])}**, "
                f"class **{classes[int(batch_y[anchor])]}**.")


# ------------------------------------------------------------------ features, once per model
def pool_features(model_key: tuple, model, layer: str):
    """The layer's flattened output for the whole pool, cached in the session per model
    (a Lab epoch's snapshot, or the teacher) and layer."""
    cache = st.session_state.setdefault("rel_cache", {})
    key = ("feat", ds_name, *model_key, layer)
    if key not in cache:
        with st.spinner(f"Computing {layer} features of {len(pool)} test images…"):
            cache[key] = relations.flat_features(model, ds.x_test[pool], layer)
    return cache[key]


def map_2d(model_key: tuple, feats, layer: str, how: str) -> np.ndarray:
    cache = st.session_state.setdefault("rel_cache", {})
    key = ("map", ds_name, *model_key, layer, how)
    if key not in cache:
        with st.spinner(f"{MAPS[how]} of {len(feats)} embeddings…"):
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
    st.subheader(f"{KINDS[kind]} of {n} test images")
    if snap is not None and run_matches:
        live = " (live: the run is still training)" if running else ""
        st.markdown(f"**Students after epoch {snap['epoch']} of {run_cfg.epochs}**{live}; "
                    f"teacher layer **{t_layer}**, student layer **{s_layer}**.")
    rng = shared_range(kind, {w: m[kind] for w, m in mats.items()})
    cols = st.columns(3, gap="small")
    for col, who in zip(cols, ("teacher", "scratch", "distilled")):
        with col:
            if who in mats:
                lab = f"{ROLES[who]} · {t_layer if who == 'teacher' else s_layer}"
                fig = viz.relation_heatmap(mats[who][kind], batch_y, classes, batch_idx, lab, who,
                                           colorbar_title=SYMBOL[kind], height=380,
                                           highlight=anchor if kind == "angle" else None, **rng)
                st.plotly_chart(fig, key=f"rel_mat_{who}", width="stretch", theme=None)
            elif snap is not None and who == "scratch":
                st.info("This run trained no scratch student (tick **Also train from scratch** in the Lab).")
            else:
                st.info(f"The {ROLES[who].lower()}'s matrix appears here "
                        + ("after the run's first epoch." if run_matches else f"with a Lab run on {ds_name}."))

    if not students:
        return
    # ---------------------------------------------------------- differences and losses
    diffs = {who: mats[who][kind] - mats["teacher"][kind] for who in students}
    top = max(float(np.abs(d).max()) for d in diffs.values()) or 1.0
    gaps = {who: relations.matrix_gap(mats[who][kind], mats["teacher"][kind]) for who in students}
    cols = st.columns(3, gap="small")
    with cols[0]:
        st.markdown(f"**Student − teacher** ({SYMBOL[kind]}): red where the student's relation is larger, blue "
                    "where smaller, white where it matches.")
        for who in students:
            delta = None
            if who == "distilled" and "scratch" in gaps:
                delta = f"{gaps['distilled'] - gaps['scratch']:+.4f} vs scratch"
            st.metric(f"{ROLES[who]}: mean |difference|", f"{gaps[who]:.4f}", delta=delta, delta_color="inverse",
                      help=f"Mean over the {n}×{n} cells of |{SYMBOL[kind]}(student) − {SYMBOL[kind]}(teacher)|; "
                           "0 = the same relations as the teacher.")
    for col, who in zip(cols[1:], ("scratch", "distilled")):
        with col:
            if who in diffs:
                fig = viz.relation_heatmap(diffs[who], batch_y, classes, batch_idx,
                                           f"{ROLES[who]} − teacher", who, colorscale="RdBu_r", zmin=-top, zmax=top,
                                           zmid=0.0, colorbar_title="Δ", height=380,
                                           highlight=anchor if kind == "angle" else None)
                st.plotly_chart(fig, key=f"rel_diff_{who}", width="stretch", theme=None)

    st.markdown(f"**The losses on this batch** (unweighted; teacher layer {t_layer}, student layer {s_layer})")
    rows = {who: relations.relational_losses(batch[who], batch["teacher"]) for who in students}
    table = pd.DataFrame({"loss": [relations.LOSSES[k] for k in relations.LOSSES],
                          "what": [LOSS_HELP[k] for k in relations.LOSSES],
                          **{ROLES[w].lower(): [rows[w][k] for k in relations.LOSSES] for w in students}})
    if "scratch" in rows:
        table["distilled / scratch"] = [rows["distilled"][k] / rows["scratch"][k] if rows["scratch"][k] else np.nan
                                        for k in relations.LOSSES]
    st.dataframe(table, key="rel_losses", hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.4g") for c in table.columns[2:]})
    if method is not None and method.family == "relational":
        st.caption(f"{method.title} trained on "
                   + ", ".join(f"{a} ↔ {b}" for a, b in run_pairs) + " with the weights "
                   + ", ".join(f"{k} = {v:g}" for k, v in run_cfg.method_params().items()) + ". A ratio below 1: "
                   "the distilled student's relations are closer to the teacher's than the scratch student's.")


def draw_maps(snap: dict | None, teacher_m, teacher_key: str) -> None:
    st.subheader("The embeddings in 2-D")
    m1, m2 = st.columns([1, 3], vertical_alignment="center")
    how = m1.radio("Map", list(MAPS), key="rel_map", format_func=MAPS.get, horizontal=True,
                   help="PCA: the two directions of largest variance (a linear view, instant). t-SNE: keeps "
                        "neighbourhoods (non-linear; a few seconds per network, then cached).")
    layers = f"{t_layer} for the teacher, {s_layer} for the students" if s_layer else t_layer
    m2.caption(f"{len(pool):,} test images, each network's features ({layers}), coloured by the true class. "
               "The students' maps are rotated and scaled onto the teacher's (orthogonal Procrustes), so all are "
               "drawn the same way round; hover a point for its image number and label.")
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
    for col, who in zip(cols, ("teacher", "scratch", "distilled")):
        with col:
            if who not in pts:
                st.info(f"The {ROLES[who].lower()}'s map appears here "
                        + ("after the run's first epoch." if run_matches else f"with a Lab run on {ds_name}."))
                continue
            # the figure only changes with the models, the layers and the map: built once, redrawn as is
            fig_key = ("fig", ds_name, *models_[who][0], models_[who][2], how, models_["teacher"][2])
            if fig_key not in cache:
                p = pts[who] if who == "teacher" else relations.align_to(pts["teacher"], pts[who])
                cache[fig_key] = viz.embedding_scatter(p, y_pool, classes, pool, f"{ROLES[who]} · {MAPS[how]}", who)
            st.plotly_chart(cache[fig_key], key=f"rel_map_{who}", width="stretch", theme=None)


# ------------------------------------------------------------------ run it
def current() -> tuple[dict | None, object | None, train.Teacher | None]:
    """(snapshot, teacher model, Teacher) to draw from: the Lab run's when it matches the dataset."""
    if run_matches:
        tr = job.trainer
        teacher = getattr(tr, "teacher", None) if tr is not None else None
        found = state.lab_snapshot()
        if found is not None:
            return found[0], found[0]["teacher"], teacher
        return None, (teacher.model if teacher is not None else None), teacher
    teacher = teacher_for(ds_name)
    return None, teacher.model, teacher


def run_progress() -> None:
    j = state.lab_job()
    if j is None or j.done:
        return
    snap = j.snapshot()
    if snap["status"] in ("queued", "teacher"):
        te = snap["teacher_epoch"]
        st.progress(te[0] / te[1] if te else 0.0,
                    text=f"The run is training its teacher (once, then cached): epoch {te[0]}/{te[1]}" if te
                    else "The run is starting…")
    else:
        total = snap["total_steps"] or 1
        st.progress(min(snap["step"] / total, 1.0), text=f"Training: step {snap['step']}/{total}, "
                    f"epoch {len(snap['epochs'])} of {run_cfg.epochs} done")


def show() -> None:
    if running and run_matches:
        run_progress()
    snap, teacher_m, teacher = current()
    if teacher is not None:
        st.caption(chrome.teacher_caption(teacher))
    if teacher_m is None:  # the run is still preparing its teacher
        return
    try:
        draw(snap, teacher_m, teacher.key if teacher is not None else "run")
        draw_maps(snap, teacher_m, teacher.key if teacher is not None else "run")
    except (KDError, ValueError) as e:
        st.error(f"Cannot draw the relations: {e}")


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

remember("rel_dataset", "rel_n", "rel_anchor", "rel_seed", "rel_kind", "rel_map", "rel_tl", "rel_sl")

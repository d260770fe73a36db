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
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch
import torch.nn.functional as F

from kd_app import chrome, state
from kd_core import data, methods, models, relations, train, viz
from kd_core.config import TEACHER_EPOCHS, Config
from kd_core.errors import KDError

DEFAULT_DATASET = "mnist-mini"
QUICK_EPOCHS = 2
QUICK_SUBSET = {"cifar10": 5000}
N_MIN, N_MAX, N_DEFAULT = 8, 128, 32
TAUS = [0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0]
FIT_IMAGES = 2000  # training images for the linear maps
ROLES = {"teacher": "Teacher", "scratch": "Scratch student", "distilled": "Distilled student"}
SPACES = {"linear": "A linear map into the teacher's features", "heads": "The run's projection heads"}


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
    st.session_state.ct_seed = int(np.random.default_rng().integers(1, 10_000))


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
st.title("🧲 Contrastive")
st.caption("Contrastive distillation turns distillation into a recognition game: the student's embedding of an "
           "image must pick out the teacher's embedding of the *same* image among the embeddings of other images "
           "(its negatives). The positives sit on the diagonal of the similarity matrix below; the temperature τ "
           "decides how sharply each row's softmax singles one out.")

job = state.lab_job()
run_cfg: Config | None = None
if job is not None:
    trainer = job.trainer
    run_cfg = trainer.config if trainer is not None else job.config.resolved()
running = job is not None and not job.done

keep("ct_dataset", run_cfg.dataset if run_cfg is not None else DEFAULT_DATASET)
keep("ct_n", N_DEFAULT)
keep("ct_anchor", 0)
keep("ct_seed", 0)
keep("ct_tau", 0.07)
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
    choice = st.selectbox("Dataset", list(data.DATASETS), key="ct_dataset",
                          format_func=lambda n: f"{n} — {data.DATASETS[n].title}",
                          help="The test images to embed. Your Lab run's students appear when this is the dataset "
                               "it was trained on.")
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
has_heads = method is not None and method.name in ("contrastive", "crd")

with right:
    if job is None:
        st.info("No Lab run in this session yet: below, the **teacher** is matched against itself — which shows "
                "what τ does. Train a contrastive or CRD student in the Lab — or one quick run here — to see a "
                "student try.")
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
        if not has_heads:
            st.caption(f"{method.title} trains no projection heads: both students are compared through a linear "
                       "map fitted onto the teacher's features — a control for the contrastive methods.")
    b1, b2, b3 = st.columns([1, 1, 1])
    quick_nce = b1.button(f"🚀 Quick contrastive ({QUICK_EPOCHS} epochs)", key="ct_quick_train",
                          disabled=running,
                          help="In-batch InfoNCE through projection heads (τ = 0.07, 128-d) on the embeddings, with a "
                               "scratch student alongside; it runs in the background like a Lab run, and the Lab "
                               "shows it too.")
    quick_crd = b2.button(f"🚀 Quick CRD ({QUICK_EPOCHS} epochs)", key="ct_quick_crd", disabled=running,
                          help="Contrastive representation distillation (Tian et al. 2020): negatives from a memory "
                               "bank of every training image, τ = 0.07, 128-d heads, with a scratch student alongside. "
                               "Its bank fills one row per image and epoch, so its heads need many epochs (the paper "
                               "trains 240).")
    b3.page_link("pages/lab.py", label="Open the Distillation lab", icon="🧪",
                 help="Choose in-batch contrastive or CRD, their τ and weights, T and alpha yourself.")
    if quick_nce or quick_crd:
        try:
            cfg = Config(dataset=ds_name, method="crd" if quick_crd else "contrastive", epochs=QUICK_EPOCHS,
                         train_subset=QUICK_SUBSET.get(ds_name))
            new = state.job_manager().submit(cfg, owner=state.session_id())
            st.session_state.kd_lab_job_id = new.id
            st.rerun()
        except KDError as e:
            st.error(f"Cannot start the run: {e}")

# ------------------------------------------------------------------ layers and images
if run_matches:
    t_arch, s_arch = run_cfg.teacher, run_cfg.student
    pair = ("embed", "embed")
    if method.needs_features:
        try:
            p = train.resolve_pairs(method, models.build(t_arch, ds.in_shape, ds.num_classes),
                                    models.build(s_arch, ds.in_shape, ds.num_classes), ds.in_shape,
                                    run_cfg.parsed_pairs())
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
    n = st.slider("Batch size N", N_MIN, min(N_MAX, len(pool)), step=4, key="ct_n",
                  help="How many test images form the batch (balanced over the classes, sorted by class): each "
                       "anchor has N − 1 negatives. Training used batches of 64.")
    n = int(min(n, len(pool)))
    tau = float(st.select_slider("Temperature τ", TAUS, key="ct_tau",
                                 help="softmax(cos(s_i, t_j) / τ) over the batch: a small τ makes each row pick one "
                                      "teacher embedding sharply (the hardest negatives matter most), a large τ "
                                      "spreads the probability. CRD and most contrastive work use 0.07."))
    if st.session_state.ct_anchor >= n:
        st.session_state.ct_anchor = 0
    a1, a2 = st.columns([3, 1], vertical_alignment="bottom")
    anchor = int(a1.number_input("Anchor i", 0, n - 1, step=1, key="ct_anchor",
                                 help="Batch position of the student embedding whose softmax over the teacher's "
                                      "embeddings is shown as bars (outlined row in the matrices)."))
    a2.button("🎲", key="ct_new_batch", on_click=new_batch, width="stretch",
              help="A new batch: another balanced draw of test images.")
    spaces = ["linear", "heads"] if has_heads else ["linear"]
    if st.session_state.get("ct_space") not in spaces:
        st.session_state.ct_space = st.session_state.get("_keep_ct_space") if \
            st.session_state.get("_keep_ct_space") in spaces else spaces[0]
    space = st.radio("Shared space", spaces, key="ct_space", format_func=SPACES.get,
                     disabled=not run_matches,
                     help="Student and teacher embeddings must live in one space to be compared. A linear map "
                          "works for any run and treats both students alike: each student's features are mapped "
                          f"onto the teacher's by least squares on {FIT_IMAGES:,} training images. The run's heads "
                          "g_S, g_T are what the contrastive loss itself compared (the scratch student has none: it "
                          "gets the least-squares map onto g_T).")

batch_pos = relations.class_sorted_batch(y_pool, n, seed=int(st.session_state.ct_seed))
batch_idx = pool[batch_pos]
batch_y = y_pool[batch_pos]

with left:
    x_anchor = ds.x_test[int(batch_idx[anchor]) : int(batch_idx[anchor]) + 1]
    img = np.clip(viz.to_display(ds.denormalise(x_anchor)[0].cpu().numpy()), 0.0, 1.0)
    f = max(1, 112 // img.shape[0])
    c1, c2 = st.columns([1, 2], vertical_alignment="center")
    c1.image(np.repeat(np.repeat(img, f, axis=0), f, axis=1), output_format="PNG", width=112)
    c2.markdown(f"Anchor: batch position **{anchor}**, test image **#{int(batch_idx[anchor])}**, "
                f"class **{classes[int(batch_y[anchor])]}**.")
    st.caption(f"Layers: teacher **{t_layer}**, students **{s_layer}**.")


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
        with st.spinner(f"Computing {layer} features…"):
            return (relations.flat_features(model, ds.x_test[pool], layer),
                    relations.flat_features(model, ds.x_train[fit_idx], layer))
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
    t = emb["teacher"]
    who_list = [w for w in ("scratch", "distilled") if w in emb] or ["teacher"]
    sims = {w: relations.similarity(emb[w][batch_pos], t[batch_pos]) for w in who_list}
    soft = {w: relations.row_softmax(sims[w], tau) for w in who_list}
    nce = {w: relations.per_sample_info_nce(sims[w], tau) for w in who_list}
    label = {w: ROLES[w].lower() if w != "teacher" else "teacher vs itself" for w in who_list}

    if snap is not None and run_matches:
        live = " (live: the run is still training)" if running else ""
        st.markdown(f"**Students after epoch {snap['epoch']} of {run_cfg.epochs}**{live}, compared in "
                    f"**{SPACES[space].lower()}**.")
    # ---------------------------------------------------------- numbers
    cols = st.columns([1] * len(who_list) + [1.4 if len(who_list) > 1 else 2.4], gap="medium")
    for i, w in enumerate(who_list):
        r_batch = relations.retrieval_accuracy(emb[w][batch_pos], t[batch_pos])
        r_pool = relations.retrieval_accuracy(emb[w], t)
        other = "scratch" if w == "distilled" and "scratch" in who_list else None
        with cols[i]:
            delta = None
            if other:
                delta = f"{100 * (r_pool - relations.retrieval_accuracy(emb[other], t)):+.1f} points vs scratch"
            st.metric(f"Retrieval, {len(pool):,} images · {label[w]}", f"{100 * r_pool:.1f}%", delta=delta,
                      help=f"How often the nearest teacher embedding (cosine) of a {label[w]} embedding is its own "
                           f"image's, among all {len(pool):,} pooled test images (chance: {100 / len(pool):.1f}%).")
            st.metric(f"Retrieval, this batch · {label[w]}", f"{100 * r_batch:.1f}%",
                      help=f"The same among the {n} images of the batch (chance: {100 / n:.1f}%).")
            st.metric(f"Mean InfoNCE at τ = {tau:g} · {label[w]}", f"{nce[w].mean():.3f}",
                      help=f"−mean log softmax(cos/τ) of the positives over this batch; log N = {np.log(n):.2f} "
                           "is a uniform guess, 0 a perfect one.")
    with cols[-1]:
        st.latex(r"\mathcal{L}_i = -\log \frac{e^{\cos(s_i, t_i)/\tau}}{\sum_{j=1}^{N} e^{\cos(s_i, t_j)/\tau}}")
        st.caption("InfoNCE for anchor i: the student's embedding s_i must single out the teacher's t_i among the "
                   "batch. CRD scores the same pairs against thousands of negatives from a memory bank.")

    # ---------------------------------------------------------- matrices
    st.subheader("Similarity: student embeddings (rows) against teacher embeddings (columns)")
    low = float(np.floor(min(m.min() for m in sims.values()) * 10) / 10)  # one colour scale for both, up to 1
    cols = st.columns(2, gap="medium")
    for col, w in zip(cols, who_list):
        with col:
            fig = viz.relation_heatmap(sims[w], batch_y, classes, batch_idx, f"cos(s_i, t_j) · {label[w]}",
                                       w if w != "teacher" else "teacher", colorscale=viz.SEQUENTIAL, zmin=low,
                                       zmax=1.0, colorbar_title="cos", highlight=anchor)
            st.plotly_chart(fig, key=f"ct_sim_{w}", width="stretch", theme=None)
    if who_list == ["teacher"]:
        with cols[1]:
            fig = viz.relation_heatmap(soft["teacher"], batch_y, classes, batch_idx, f"softmax at τ = {tau:g}",
                                       "teacher", colorscale=viz.SEQUENTIAL, zmin=0.0, zmax=1.0, colorbar_title="p",
                                       highlight=anchor)
            st.plotly_chart(fig, key="ct_soft_teacher", width="stretch", theme=None)
    st.caption(f"Cosine similarity, coloured from {low:g} (dark) to 1 (yellow). The diagonal holds the positives "
               "(the same image); the class blocks show that images of one class look alike to both networks — the "
               "hardest negatives sit inside the positive's block.")
    if who_list != ["teacher"]:
        st.subheader(f"Each row's softmax at τ = {tau:g}")
        cols = st.columns(2, gap="medium")
        for col, w in zip(cols, who_list):
            with col:
                fig = viz.relation_heatmap(soft[w], batch_y, classes, batch_idx, f"softmax · {label[w]}", w,
                                           colorscale=viz.SEQUENTIAL, zmin=0.0, zmax=1.0, colorbar_title="p",
                                           highlight=anchor)
                st.plotly_chart(fig, key=f"ct_soft_{w}", width="stretch", theme=None)

    # ---------------------------------------------------------- one anchor, and every anchor's loss
    cols = st.columns(2, gap="medium")
    with cols[0]:
        fig = viz.anchor_bars({label[w]: soft[w][anchor] for w in who_list}, batch_y, classes, anchor, tau, batch_idx,
                              title=f"Anchor {anchor} (class {classes[int(batch_y[anchor])]}): its softmax over the "
                                    f"batch")
        st.plotly_chart(fig, key="ct_anchor_bars", width="stretch", theme=None)
    with cols[1]:
        fig = viz.sample_bars({label[w]: nce[w] for w in who_list}, batch_y, classes, batch_idx,
                              title=f"InfoNCE of every anchor at τ = {tau:g}", ytitle="−log p(positive)")
        st.plotly_chart(fig, key="ct_nce", width="stretch", theme=None)
    st.caption(f"Lower τ: the softmax concentrates on the most similar teacher embedding — the positive when the "
               f"student has learnt to recognise it, else a look-alike from the same class. log N = {np.log(n):.2f} "
               "is the loss of a uniform guess.")


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
    if snap is None and run_matches:
        st.info("The students' embeddings appear after the run's first epoch; meanwhile, the teacher against itself.")
    try:
        draw(snap, teacher_m, teacher.key if teacher is not None else "run")
    except (KDError, ValueError) as e:
        st.error(f"Cannot draw the embeddings: {e}")


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

remember("ct_dataset", "ct_n", "ct_anchor", "ct_seed", "ct_tau", "ct_space")

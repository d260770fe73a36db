"""Feature maps: what feature distillation makes the student copy.

Pick a test image and a teacher/student layer pair and compare, side by side, the
teacher's feature maps with those of the scratch student and of the distilled student
from this session's Lab run; for FitNets, the regressed student features against the
teacher's target with a per-position error map; attention maps overlaid on the image;
and, over a batch of test images, how close each student's layers are to the teacher's
(linear CKA, cosine of attention maps). During a live Lab run the maps follow the frozen
per-epoch snapshots (``state.lab_snapshot``), never the models being trained.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from kd_app import chrome, state
from kd_core import data, features, losses, methods, models, train, viz
from kd_core.config import TEACHER_EPOCHS, Config
from kd_core.errors import KDError

DEFAULT_DATASET = "mnist-mini"
CHANNELS = [4, 9, 16, 25, 36, 64]
SIM_BATCH = 500  # test images for the layer-similarity figure
QUICK_EPOCHS = 2
QUICK_SUBSET = {"cifar10": 5000}  # quick runs on CIFAR-10 use a training subset (CPU)
IMG_PX = 240
ROLES = {"teacher": "Teacher", "scratch": "Scratch student", "distilled": "Distilled student"}
METRICS = {"cka": "linear CKA of the features", "attention": "cosine of the attention maps"}


# ------------------------------------------------------------------ widget state
def keep(key: str, default) -> None:
    """Widgets keep their values across a visit to another page (see soft_targets)."""
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(f"_keep_{key}", default)


def remember(*keys: str) -> None:
    for key in keys:
        if key in st.session_state:
            st.session_state[f"_keep_{key}"] = st.session_state[key]


def set_pair(t: str, s: str) -> None:
    st.session_state.fm_tl, st.session_state.fm_sl = t, s


def pick_random(n: int) -> None:
    st.session_state.fm_image = int(np.random.default_rng().integers(n))


def shape_text(shape) -> str:
    return "×".join(str(v) for v in shape)


def upscale(img: np.ndarray, px: int) -> np.ndarray:
    f = max(1, px // img.shape[0])
    return np.repeat(np.repeat(img, f, axis=0), f, axis=1)


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
st.title("🗺️ Feature maps")
st.caption("Logit distillation copies the teacher's answers; feature distillation copies how it *sees*. "
           "FitNets makes a middle layer of the student reproduce the teacher's (through a small trainable "
           "regressor); attention transfer makes it look at the same places. Compare the maps of the teacher, "
           "the student trained from scratch and the distilled student on one image, then over many.")

job = state.lab_job()
run_cfg: Config | None = None
if job is not None:
    trainer = job.trainer
    run_cfg = trainer.config if trainer is not None else job.config.resolved()
running = job is not None and not job.done

keep("fm_dataset", run_cfg.dataset if run_cfg is not None else DEFAULT_DATASET)
keep("fm_channels", 16)
keep("fm_opacity", 0.6)
keep("fm_metric", "cka")
keep("fm_all_layers", False)
keep("fm_image", 0)
if st.session_state.fm_dataset not in data.DATASETS:
    st.session_state.fm_dataset = DEFAULT_DATASET
# a new Lab run: follow its dataset (once) and its trained layer pair
if job is not None and st.session_state.get("_fm_seen_job") != job.id:
    st.session_state._fm_seen_job = job.id
    st.session_state.fm_dataset = run_cfg.dataset

left, right = st.columns([1, 2.3], gap="large")
with left:
    choice = st.selectbox("Dataset", list(data.DATASETS), key="fm_dataset",
                          format_func=lambda n: f"{n} — {data.DATASETS[n].title}",
                          help="The images to look at. The maps of your Lab run's students appear when this is "
                               "the dataset it was trained on.")
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
        st.info("No Lab run in this session yet: below are the **teacher's** maps only. Train a student with a "
                "feature method (FitNets or attention transfer) in the Lab — or one quick run here — to compare.")
    elif not run_matches:
        st.info(f"Your Lab run #{job.id} was trained on **{run_cfg.dataset}**; choose that dataset to see its "
                f"students. Showing the {ds_name} teacher only.")
    else:
        what = f"Lab run #{job.id}: **{method.title}**, student **{run_cfg.student}** from teacher **{run_cfg.teacher}**"
        if running:
            st.info(what + " — training in the background; the maps below follow it live, epoch by epoch.")
        elif job.status in ("finished", "stopped"):
            st.success(what + f" — {job.status}.")
        else:
            st.error(what + f" — {job.status}: {job.message}")
        if not method.needs_features:
            st.caption(f"{method.title} matches logits only: no layer was trained to copy the teacher, which makes "
                       f"it a fine control for the feature methods.")
    b1, b2 = st.columns([1.3, 1])
    quick = b1.button(f"🚀 Train a quick AT student ({QUICK_EPOCHS} epochs)", key="fm_quick_train", disabled=running,
                      help="Attention transfer with its defaults (beta = 1000, p = 2) on this dataset, with a scratch "
                           "student alongside; it runs in the background like a Lab run, and the Lab shows it too.")
    b2.page_link("pages/lab.py", label="Open the Distillation lab", icon="🧪",
                 help="Choose the method, layer pairs, T and alpha yourself.")
    if quick:
        try:
            cfg = Config(dataset=ds_name, method="at", epochs=QUICK_EPOCHS, train_subset=QUICK_SUBSET.get(ds_name))
            new = state.job_manager().submit(cfg, owner=state.session_id())
            st.session_state.kd_lab_job_id = new.id
            st.rerun()
        except KDError as e:
            st.error(f"Cannot start the run: {e}")

# ------------------------------------------------------------------ the models
# The architectures come from the run's config (known before any weights exist), so the
# pickers stay put while a run trains; the weights come from the latest snapshot.
if run_matches:
    t_arch, s_arch = run_cfg.teacher, run_cfg.student
    try:
        run_pairs = [(p[0], p[1]) for p in train.resolve_pairs(
            method, models.build(t_arch, ds.in_shape, ds.num_classes), models.build(s_arch, ds.in_shape, ds.num_classes),
            ds.in_shape, run_cfg.parsed_pairs())]
    except KDError:  # the run itself failed on them and says so above
        run_pairs = []
    att_p = float(run_cfg.method_params().get("p", 2.0)) if method.name == "at" else 2.0
else:
    t_arch, s_arch, run_pairs, att_p = models.preset(ds_name)[0], None, [], 2.0

t_shell = models.build(t_arch, ds.in_shape, ds.num_classes)
s_shell = models.build(s_arch, ds.in_shape, ds.num_classes) if s_arch else None
t_shapes = models.module_shapes(t_shell, ds.in_shape)
s_shapes = models.module_shapes(s_shell, ds.in_shape) if s_shell is not None else {}


def default_pair() -> tuple[str, str]:
    """The run's first trained pair, else the last spatial stage of each network (its
    embedding when a network has none)."""
    if run_pairs:
        return run_pairs[0]

    def last_stage(model, shapes):
        taps = list(getattr(model, "tap_names", shapes))
        spatial = [n for n in taps if len(shapes.get(n, ())) == 3]
        return spatial[-1] if spatial else taps[-1]

    return last_stage(t_shell, t_shapes), (last_stage(s_shell, s_shapes) if s_shell is not None else "")


# a new run, dataset or pair of networks starts from the default pair
context = (ds_name, t_arch, s_arch, job.id if run_matches else None)
if st.session_state.get("_fm_context") != context:
    st.session_state._fm_context = context
    for k in ("fm_tl", "fm_sl", "_keep_fm_tl", "_keep_fm_sl"):
        st.session_state.pop(k, None)
keep("fm_tl", None)
keep("fm_sl", None)

with right:
    every = st.session_state.fm_all_layers
    t_opts = list(t_shapes) if every else list(t_shell.tap_names)
    s_opts = (list(s_shapes) if every else list(s_shell.tap_names)) if s_shell is not None else []
    dt, dsl = default_pair()
    if st.session_state.get("fm_tl") not in t_opts:
        st.session_state.fm_tl = dt if dt in t_opts else t_opts[0]
    if s_opts and st.session_state.get("fm_sl") not in s_opts:
        st.session_state.fm_sl = dsl if dsl in s_opts else s_opts[-1]
    p1, p2 = st.columns(2)
    t_layer = p1.selectbox("Teacher layer", t_opts, key="fm_tl",
                           format_func=lambda n: f"{n}  ({shape_text(t_shapes[n])})",
                           help="Whose feature maps to show for the teacher (output shape: channels × height × width, "
                                "or a vector).")
    if s_opts:
        s_layer = p2.selectbox("Student layer", s_opts, key="fm_sl",
                               format_func=lambda n: f"{n}  ({shape_text(s_shapes[n])})",
                               help="The students' layer shown beside it; a feature method trained it to match the "
                                    "teacher layer of its pair.")
    else:
        s_layer = None
        p2.selectbox("Student layer", ["—"], key="fm_sl_none", disabled=True,
                     help="Appears once there is a Lab run on this dataset.")
    if run_pairs:
        cols = st.columns(len(run_pairs) + 1, vertical_alignment="center")
        cols[0].markdown("**Pairs the run trained:**")
        for i, (a, b) in enumerate(run_pairs):
            cols[i + 1].button(f"★ {a} ↔ {b}", key=f"fm_pair_{i}", on_click=set_pair, args=(a, b),
                               type="primary" if (t_layer, s_layer) == (a, b) else "secondary",
                               help=f"Show the pair {method.name} trained on: teacher {a}, student {b}.")
    c1, c2, c3 = st.columns([1.2, 1.2, 1])
    n_channels = c1.select_slider("Channels shown", CHANNELS, key="fm_channels",
                                  help="How many channels of each layer to tile, strongest first (largest mean "
                                       "activation on this image).")
    opacity = c2.slider("Attention overlay opacity", 0.0, 1.0, step=0.05, key="fm_opacity",
                        help="0: the image alone; 1: the attention map alone.")
    c3.toggle("Every named layer", key="fm_all_layers",
              help="Offer every module of both networks (e.g. stage2.0.conv1), not only the stage outputs.")

# ------------------------------------------------------------------ the image
classes = list(ds.classes)
n_test = len(ds.y_test)
if not 0 <= int(st.session_state.fm_image) < n_test:
    st.session_state.fm_image = 0
with left:
    i1, i2 = st.columns([2, 1], vertical_alignment="bottom")
    idx = int(i1.number_input("Test image #", 0, n_test - 1, key="fm_image", step=1,
                              help=f"Which of the {n_test:,} test images to look at."))
    i2.button("🎲", key="fm_random", on_click=pick_random, args=(n_test,), help="Pick a random test image.",
              width="stretch")
    x_one = ds.x_test[idx : idx + 1]
    image = np.clip(viz.to_display(ds.denormalise(x_one)[0].cpu().numpy()), 0.0, 1.0)
    st.image(upscale(image, IMG_PX), width="stretch", output_format="PNG")
    st.markdown(f"Test image #{idx}, true class **{classes[int(ds.y_test[idx])]}**.")


# ------------------------------------------------------------------ drawing
def layer_figure(feat: torch.Tensor, layer: str, role: str, key: str, k: int) -> None:
    title = f"{ROLES[role]} · {layer}"
    if feat.dim() == 3:
        grid, chans, cols = features.channel_grid(feat, k=k)
        ids = features.tile_channels(chans, feat.shape[1], feat.shape[2], cols)
        fig = viz.feature_grid(grid, title, role, channel_ids=ids, showscale=True)
    else:
        fig = viz.map_figure(features.vector_grid(feat), title, role, zmin=0.0, zmax=1.0, colorbar_title="|a|",
                             hover="|a| = %{z:.2f}", showscale=True)
    st.plotly_chart(fig, key=key, width="stretch", theme=None)
    what = f"{feat.shape[0]} channels of {feat.shape[1]}×{feat.shape[2]}" if feat.dim() == 3 else f"a vector of {feat.shape[0]}"
    st.caption(f"{what}; {min(k, feat.shape[0]) if feat.dim() == 3 else feat.shape[0]} shown.")


def predictions(models_by_role: dict) -> str:
    parts = []
    for role, m in models_by_role.items():
        logits = features.extract(m, x_one, [])["logits"][0]
        p = torch.softmax(logits, 0)
        c = int(p.argmax())
        parts.append(f"{ROLES[role].lower()} **{classes[c]}** ({100 * float(p[c]):.0f}%)")
    return "Predictions on this image: " + ", ".join(parts) + "."


def similarity_rows(job_id: int, epoch: int, teacher_m, students: dict, pairs: list[tuple[str, str]]) -> list[dict]:
    """Layer similarity over SIM_BATCH test images, cached per (job, epoch, pair)."""
    cache = st.session_state.setdefault("fm_sim_cache", {})
    for k in [k for k in cache if k[:2] != (job_id, epoch)]:
        del cache[k]  # an older epoch or run
    missing = [p for p in pairs if (job_id, epoch, *p) not in cache]
    if missing:
        x = ds.x_test[:SIM_BATCH]
        with st.spinner(f"Comparing layers over {len(x)} test images…"):
            tf = features.extract(teacher_m, x, sorted({p[0] for p in missing}))
            sf = {who: features.extract(m, x, sorted({p[1] for p in missing})) for who, m in students.items()}
            for row in features.similarity_to_teacher(tf, sf, missing, att_p):
                cache[(job_id, epoch, *row["pair"])] = row
    return [cache[(job_id, epoch, *p)] for p in pairs]


def draw(snap: dict | None, teacher_m) -> None:
    k = int(n_channels)
    students = {}
    if snap is not None:
        if snap.get("baseline") is not None:
            students["scratch"] = snap["baseline"]
        students["distilled"] = snap["student"]
    everyone = {"teacher": teacher_m, **students}

    t_feat = features.extract(teacher_m, x_one, [t_layer])[t_layer][0]
    s_feats = {who: features.extract(m, x_one, [s_layer])[s_layer][0] for who, m in students.items()}

    # ---------------------------------------------------------- feature maps
    st.subheader("Feature maps")
    if snap is not None and run_matches:
        live = " (live: the run is still training)" if running else ""
        st.markdown(f"**Students after epoch {snap['epoch']} of {run_cfg.epochs}**{live}. {predictions(everyone)}")
    else:
        st.markdown(predictions(everyone))
    cols = st.columns(3, gap="medium")
    with cols[0]:
        layer_figure(t_feat, t_layer, "teacher", "fm_grid_teacher", k)
    for col, who in zip(cols[1:], ("scratch", "distilled")):
        with col:
            if who in s_feats:
                layer_figure(s_feats[who], s_layer, who, f"fm_grid_{who}", k)
            elif snap is not None and who == "scratch":
                st.info("This run trained no scratch student (tick **Also train from scratch** in the Lab).")
            elif run_matches:
                st.info(f"The {ROLES[who].lower()}'s maps appear here after the run's first epoch.")
            else:
                st.info(f"The {ROLES[who].lower()}'s maps appear here after the first epoch of a Lab run on "
                        f"{ds_name}.")
    st.caption("Each tile is one channel: |activation| at every position, on one colour scale per layer (1 = the "
               "layer's strongest value shown). Channels are sorted strongest first, so tiles are *not* "
               "matched across networks — the students have fewer channels than the teacher. Look at where they "
               "light up.")

    # ---------------------------------------------------------- FitNets
    if method is not None and method.name == "fitnets" and snap is not None:
        st.subheader("FitNets: the regressed hint against the teacher's target")
        pair = (t_layer, s_layer)
        if pair not in run_pairs:
            st.info(f"The regressor exists only for the pairs the run trained on: "
                    f"{', '.join(f'{a} ↔ {b}' for a, b in run_pairs)}. Pick one with the ★ buttons above.")
        else:
            i = run_pairs.index(pair)
            with torch.no_grad():
                t_full = features.extract(teacher_m, x_one, [t_layer])[t_layer]
                s_full = features.extract(snap["student"], x_one, [s_layer])[s_layer]
                reg, tgt = features.regress(snap["modules"], i, s_full, t_full)
                err = features.fitnets_error_map(reg, tgt)[0]
            hint = float(losses.hint_loss(reg, tgt))
            beta = float(run_cfg.method_params()["beta"])
            f1, f2, f3 = st.columns(3, gap="medium")
            if tgt.dim() == 4:
                chans = features.top_channels(tgt[0], k)
                g_t, _, cols_n = features.channel_grid(tgt[0], channels=chans)
                top = float(tgt[0][chans].abs().max())
                g_r, _, _ = features.channel_grid(reg[0], channels=chans, scale=top, signed=True)
                ids = features.tile_channels(chans, tgt.shape[2], tgt.shape[3], cols_n)
                f1.plotly_chart(viz.feature_grid(g_t, f"Target: teacher · {t_layer}", "teacher", channel_ids=ids), key="fm_fit_target", width="stretch", theme=None)
                f2.plotly_chart(viz.feature_grid(g_r, f"r(student · {s_layer})", "distilled", channel_ids=ids, signed=True),
                                key="fm_fit_regressed", width="stretch", theme=None)
                err_map = err.numpy()
            else:
                f1.plotly_chart(viz.map_figure(features.vector_grid(tgt[0]), f"Target: teacher · {t_layer}", "teacher",
                                               zmax=1.0), key="fm_fit_target", width="stretch", theme=None)
                top = float(tgt[0].abs().max())
                f2.plotly_chart(viz.map_figure(features.vector_grid(reg[0], scale=top), f"r(student · {s_layer})",
                                               "distilled", zmax=1.0), key="fm_fit_regressed", width="stretch", theme=None)
                err_map = features.vector_grid(err, scale=1.0)
            f3.plotly_chart(viz.map_figure(err_map, "Squared error per position", None, colorscale="Reds", zmin=0.0,
                                           colorbar_title="error²", hover="error² = %{z:.4f}"),
                            key="fm_fit_error", width="stretch", theme=None)
            f3.metric("Hint loss on this image", f"{hint:.4f}",
                      help=f"Mean of the error map: the MSE between r(F_S) and F_T. In training it is weighted by "
                           f"beta = {beta:g}, giving {beta * hint:.3g} here.")
            st.caption("The regressor r (a 1×1 convolution with batch norm, trained with the student) maps the "
                       "student's channels onto the teacher's; the target's channels are shown in the same order "
                       "and on the same scale as their regressed copies. Red: where the student still misses.")
    elif snap is not None and method is not None:
        st.caption("Train a **FitNets** student in the Lab to see its regressed features against the teacher's "
                   "target here.")

    # ---------------------------------------------------------- attention
    st.subheader("Attention maps")
    spatial = t_feat.dim() == 3 and all(f.dim() == 3 for f in s_feats.values())
    student_has_maps = s_shell is None or any(len(v) == 3 for v in s_shapes.values())
    if t_feat.dim() == 3 and not student_has_maps:
        st.info(f"The student ({s_arch}) has no spatial feature maps, so it has no attention maps to compare: "
                f"attention transfer needs a CNN or ResNet student.")
    elif not spatial:
        bad = f"teacher '{t_layer}' gives a vector of {t_feat.shape[0]}" if t_feat.dim() != 3 else \
            f"student '{s_layer}' gives a vector of {next(f.shape[0] for f in s_feats.values() if f.dim() != 3)}"
        st.error(f"Attention maps need spatial feature maps (channels × height × width), but the {bad}. "
                 f"Pick a stage layer above.")
    else:
        size = tuple(image.shape[:2])
        t_att = features.attention_overlay(t_feat, size, att_p)
        cols = st.columns(3, gap="medium")
        with cols[0]:
            st.plotly_chart(viz.overlay_figure(image, t_att["overlay"].numpy(), f"Teacher · {t_layer}", "teacher",
                                               opacity=opacity), key="fm_att_teacher", width="stretch", theme=None)
            h, w = t_att["map"].shape
            st.caption(f"Map of {h}×{w}, shown at the image's size.")
        att_losses = {}
        for col, who in zip(cols[1:], ("scratch", "distilled")):
            with col:
                if who not in s_feats:
                    if not (snap is not None and who == "scratch"):
                        st.info(f"The {ROLES[who].lower()}'s attention appears here "
                                + ("after the run's first epoch." if run_matches else f"with a Lab run on {ds_name}."))
                    continue
                a = features.attention_overlay(s_feats[who], size, att_p)
                st.plotly_chart(viz.overlay_figure(image, a["overlay"].numpy(), f"{ROLES[who]} · {s_layer}", who,
                                                   opacity=opacity), key=f"fm_att_{who}", width="stretch", theme=None)
                att_losses[who] = float(losses.attention_loss(s_feats[who][None], t_feat[None], att_p))
                delta = None
                if who == "distilled" and "scratch" in att_losses:
                    delta = f"{att_losses['distilled'] - att_losses['scratch']:+.2e} vs scratch"
                st.metric(f"Attention loss vs the teacher ({who})", f"{att_losses[who]:.2e}", delta=delta,
                          delta_color="inverse",
                          help="mean (Q_S − Q_T)² over positions of the L2-normalised maps Q = mean_c |A_c|^p "
                               f"(p = {att_p:g}), the larger map pooled to the smaller; 0 = the same attention.")
        st.caption(f"Attention map Q = mean over channels of |activation|^{att_p:g} (Zagoruyko & Komodakis 2017): "
                   "bright = where the layer responds most. Attention transfer trains the student to make these "
                   "maps equal to the teacher's.")

    # ---------------------------------------------------------- layer similarity
    st.subheader("How close to the teacher, layer by layer")
    if snap is None or not run_matches:
        st.info(f"Needs a Lab run on {ds_name}" + (" and its first epoch" if run_matches else "") +
                f": then each student's layers are compared with the teacher's over {SIM_BATCH} test images.")
        return
    pairs = features.aligned_pairs(teacher_m, snap["student"], ds.in_shape)
    for extra in run_pairs + [(t_layer, s_layer)]:
        if extra not in pairs:
            pairs.append(extra)
    rows = similarity_rows(job.id, snap["epoch"], teacher_m, students, pairs)
    m1, m2 = st.columns([3, 1.1], gap="large")
    with m2:
        metric = st.radio("Similarity measure", list(METRICS), key="fm_metric", format_func=METRICS.get,
                          help="Linear CKA (Kornblith et al. 2019) compares the geometry of two layers' "
                               "representations of the same images (1 = equal up to rotation and scale). "
                               "The attention cosine compares where they look (spatial layers only).")
    shown = [r for r in rows if metric == "cka" or r["spatial"]]
    labels = [f"{a} ↔ {b}" for a, b in (r["pair"] for r in shown)]
    series = {f"{ROLES[who].lower()}": [r[metric].get(who) for r in shown] for who in students}
    fig = viz.similarity_bars(labels, series, f"Similarity to the teacher over {SIM_BATCH} test images "
                              f"({METRICS[metric]})", ytitle=METRICS[metric],
                              marked=[r["pair"] in run_pairs for r in shown])
    m1.plotly_chart(fig, key="fm_similarity", width="stretch", theme=None)
    with m2:
        if "scratch" in students and shown:
            gains = [(r[metric]["distilled"] - r[metric]["scratch"], r) for r in shown]
            closer = sum(g > 0 for g, _ in gains)
            st.markdown(f"The distilled student is closer to the teacher than the scratch one at **{closer} of "
                        f"{len(gains)}** layer pairs.")
            for a, b in run_pairs:
                r = next((r for r in shown if r["pair"] == (a, b)), None)
                if r is not None:
                    st.markdown(f"★ Trained pair **{a} ↔ {b}**: {r[metric]['distilled']:.3f} distilled vs "
                                f"{r[metric]['scratch']:.3f} scratch.")
        st.caption("★ marks the pairs the method trained; the other pairs sit at the same relative depth. "
                   "Logit distillation (KD) also pulls the later layers closer, without training them directly.")


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
    """Where the live run is: teacher training, or steps and the epoch the maps show."""
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
    draw(snap, teacher_m)


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

remember("fm_dataset", "fm_channels", "fm_opacity", "fm_metric", "fm_all_layers", "fm_image", "fm_tl", "fm_sl")

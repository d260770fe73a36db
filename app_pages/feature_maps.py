"""Feature maps: what feature distillation makes the student copy.

Pick a test image and a teacher/student layer pair and compare, side by side, the
teacher's feature maps with those of the scratch student and of the distilled student
from this session's Lab run; for FitNets, the regressed student features against the
teacher's target with a per-position error map; attention maps overlaid on the image;
and, over a batch of test images, how close each student's layers are to the teacher's
(linear CKA, cosine of attention maps). During a live Lab run the maps follow the frozen
per-epoch snapshots (``state.current_run_snapshot``), never the models being trained.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from kd_app import i18n, links, views
from kd_app.i18n import t
from kd_core import features, losses, models, viz

CHANNELS = [4, 9, 16, 25, 36, 64]
SIM_BATCH = 500  # test images for the layer-similarity figure
IMG_PX = 240
METRICS = ("cka", "attention")  # texts: feature_maps.metrics.*


# ------------------------------------------------------------------ widget state
def set_pair(tl: str, sl: str) -> None:
    st.session_state.fm_tl, st.session_state.fm_sl = tl, sl


def pick_random(n: int) -> None:
    st.session_state.fm_image = int(np.random.default_rng().integers(n))


def shape_text(shape) -> str:
    return "×".join(str(v) for v in shape)


def role_title(role: str) -> str:
    """A role as a title ("Teacher", "Scratch student"); ``t("roles." + role)`` is the same in a sentence."""
    return t(f"feature_maps.role_title.{role}")


def localise(fig):
    """The engine's English texts in a figure in the session's language: trace names, axis
    titles and annotations (``i18n.localise_figure``), plus the hover texts and colour-bar
    titles that the feature-map figures write."""
    if i18n.lang() == i18n.DEFAULT:
        return fig
    names = [getattr(tr, "name", None) for tr in fig.data]
    i18n.localise_figure(fig)
    attention = t("feature_maps.figure.attention")
    for tr, old in zip(fig.data, names):
        hover = getattr(tr, "hovertemplate", None)
        if isinstance(hover, str):
            hover = hover.replace("channel %{", t("feature_maps.hover.channel") + " %{")
            hover = hover.replace("row %{y}, col %{x}", t("feature_maps.hover.position", y="%{y}", x="%{x}"))
            if old and tr.name != old:
                hover = hover.replace(f"<extra>{old}</extra>", f"<extra>{tr.name}</extra>")
            tr.hovertemplate = hover
        bar = getattr(tr, "colorbar", None) if tr.type == "heatmap" else None
        if bar is not None and bar.title.text == "attention":
            bar.title.text = attention
    return fig


# the address bar holds the view's settings: a shared link shows the same maps
OWN = [
    links.choice("channels", "fm_channels", CHANNELS, 16),
    links.number("opacity", "fm_opacity", 0.6, 0.0, 1.0),
    links.choice("measure", "fm_metric", list(METRICS), "cka"),
    links.flag("all_layers", "fm_all_layers", False),
]
KEPT = {"fm_image": 0, "fm_tl": None, "fm_sl": None}
QUICK = [views.Quick("fm_quick_train", "feature_maps.quick", "feature_maps.quick_help", "at")]
PANEL = views.Panel(lambda m: m.needs_features, "feature_maps.logits_only", QUICK, [1.3, 1])
run, FIELDS, left, right = views.follow_page("feature-maps", "feature_maps", "🗺️", "fm_dataset", OWN, KEPT, PANEL)
ds_name, ds, method = run.dataset, run.ds, run.method


# ------------------------------------------------------------------ the models
t_arch, s_arch = run.architectures()
run_pairs = views.trained_pairs(run)
att_p = float(run.config.method_params().get("p", 2.0)) if method is not None and method.name == "at" else 2.0
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
views.reset_on_change("_fm_context", (ds_name, t_arch, s_arch, run.job.id if run.matches else None), ["fm_tl", "fm_sl"])


def layer_pickers() -> tuple[str, str | None]:
    """The teacher and student layers to show (the run's trained pairs as shortcuts)."""
    every = st.session_state.fm_all_layers
    t_opts = list(t_shapes) if every else list(t_shell.tap_names)
    s_opts = (list(s_shapes) if every else list(s_shell.tap_names)) if s_shell is not None else []
    dt, dsl = default_pair()
    if st.session_state.get("fm_tl") not in t_opts:
        st.session_state.fm_tl = dt if dt in t_opts else t_opts[0]
    if s_opts and st.session_state.get("fm_sl") not in s_opts:
        st.session_state.fm_sl = dsl if dsl in s_opts else s_opts[-1]
    t_layer, s_layer = views.layer_pickers("feature_maps", ("fm_tl", "fm_sl"), t_opts, s_opts, (t_shapes, s_shapes))
    if run_pairs:
        cols = st.columns(len(run_pairs) + 1, vertical_alignment="center")
        cols[0].markdown(t("feature_maps.trained_pairs"))
        for i, (a, b) in enumerate(run_pairs):
            cols[i + 1].button(
                f"★ {a} ↔ {b}",
                key=f"fm_pair_{i}",
                on_click=set_pair,
                args=(a, b),
                type="primary" if (t_layer, s_layer) == (a, b) else "secondary",
                help=t("feature_maps.pair_help", method=method.name, teacher=a, student=b),
            )
    return t_layer, s_layer


def view_controls() -> tuple[int, float]:
    """How many channels to show and the attention overlay's opacity (and "every layer")."""
    c1, c2 = st.columns(2)
    n_channels = c1.select_slider(
        t("feature_maps.channels"), CHANNELS, key="fm_channels", help=t("feature_maps.channels_help")
    )
    opacity = c2.slider(
        t("feature_maps.opacity"), 0.0, 1.0, step=0.05, key="fm_opacity", help=t("feature_maps.opacity_help")
    )
    # below the sliders, across the column: beside them its label was cut to "Ev…" at 1024 px
    st.toggle(t("feature_maps.all_layers"), key="fm_all_layers", help=t("feature_maps.all_layers_help"))
    return int(n_channels), opacity


with right:
    t_layer, s_layer = layer_pickers()
    n_channels, opacity = view_controls()

# ------------------------------------------------------------------ the image
classes = list(ds.classes)
n_test = len(ds.y_test)
if not 0 <= int(st.session_state.fm_image) < n_test:
    st.session_state.fm_image = 0
with left:
    idx = views.number_and_die(
        t("feature_maps.image"),
        n_test - 1,
        "fm_image",
        t("feature_maps.image_help", n=n_test),
        "fm_random",
        pick_random,
        t("feature_maps.random_help"),
        args=(n_test,),
    )
    x_one = ds.x_test[idx : idx + 1]
    image = views.test_image(ds, idx)
    st.image(views.upscale(image, IMG_PX), width="stretch", output_format="PNG")
    st.markdown(t("feature_maps.image_caption", i=idx, c=classes[int(ds.y_test[idx])]))


# ------------------------------------------------------------------ drawing
def layer_figure(feat: torch.Tensor, layer: str, role: str, key: str, k: int) -> None:
    title = f"{role_title(role)} · {layer}"
    if feat.dim() == 3:
        grid, chans, cols = features.channel_grid(feat, k=k)
        ids = features.tile_channels(chans, feat.shape[1], feat.shape[2], cols)
        fig = viz.feature_grid(grid, title, role, channel_ids=ids, showscale=True)
    else:
        fig = viz.map_figure(
            features.vector_grid(feat),
            title,
            role,
            zmin=0.0,
            zmax=1.0,
            colorbar_title="|a|",
            hover="|a| = %{z:.2f}",
            showscale=True,
        )
    st.plotly_chart(localise(fig), key=key, width="stretch", theme=None)
    if feat.dim() == 3:
        st.caption(
            t(
                "feature_maps.grid_caption_maps",
                n=feat.shape[0],
                h=feat.shape[1],
                w=feat.shape[2],
                shown=min(k, feat.shape[0]),
            )
        )
    else:
        st.caption(t("feature_maps.grid_caption_vector", n=feat.shape[0], shown=feat.shape[0]))


def predictions(models_by_role: dict) -> str:
    parts = []
    for role, m in models_by_role.items():
        logits = features.extract(m, x_one, [])["logits"][0]
        p = torch.softmax(logits, 0)
        c = int(p.argmax())
        parts.append(t("feature_maps.prediction", who=t("roles." + role), cls=classes[c], p=100 * float(p[c])))
    return t("feature_maps.predictions", parts=t("feature_maps.list_sep").join(parts))


def similarity_rows(job_id: int, epoch: int, teacher_m, students: dict, pairs: list[tuple[str, str]]) -> list[dict]:
    """Layer similarity over SIM_BATCH test images, cached per (job, epoch, pair)."""
    cache = st.session_state.setdefault("fm_sim_cache", {})
    for k in [k for k in cache if k[:2] != (job_id, epoch)]:
        del cache[k]  # an older epoch or run
    missing = [p for p in pairs if (job_id, epoch, *p) not in cache]
    if missing:
        x = ds.x_test[:SIM_BATCH]
        with st.spinner(t("feature_maps.comparing", n=len(x))):
            tf = features.extract(teacher_m, x, sorted({p[0] for p in missing}))
            sf = {who: features.extract(m, x, sorted({p[1] for p in missing})) for who, m in students.items()}
            for row in features.similarity_to_teacher(tf, sf, missing, att_p):
                cache[(job_id, epoch, *row["pair"])] = row
    return [cache[(job_id, epoch, *p)] for p in pairs]


def draw(snap: dict | None, teacher_m, teacher=None) -> None:
    """Every section, from the teacher and the students of ``snap`` (None: the teacher alone)."""
    students = views.students(snap)
    t_feat = features.extract(teacher_m, x_one, [t_layer])[t_layer][0]
    s_feats = {who: features.extract(m, x_one, [s_layer])[s_layer][0] for who, m in students.items()}
    draw_maps(snap, teacher_m, students, t_feat, s_feats)
    draw_fitnets(snap, teacher_m)
    draw_attention(snap, t_feat, s_feats)
    draw_similarity(snap, teacher_m, students)


def draw_maps(snap: dict | None, teacher_m, students: dict, t_feat, s_feats: dict) -> None:
    """The chosen layer's feature maps: teacher, scratch and distilled student side by side."""
    k = n_channels
    everyone = {"teacher": teacher_m, **students}
    st.subheader(t("feature_maps.feature_header"))
    if snap is not None and run.matches:
        views.students_after(run, snap, "feature_maps.students_after", predictions=predictions(everyone))
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
                st.info(t("feature_maps.no_scratch"))
            elif run.matches:
                st.info(t("feature_maps.maps_after_epoch", who=t("roles." + who)))
            else:
                st.info(t("feature_maps.maps_after_lab", who=t("roles." + who), dataset=ds_name))
    st.caption(t("feature_maps.grid_explain"))


def draw_fitnets(snap: dict | None, teacher_m) -> None:
    """FitNets: the regressed student features against the teacher's target, and the error map."""
    k = n_channels
    if method is not None and method.name == "fitnets" and snap is not None:
        st.subheader(t("feature_maps.fit_header"))
        pair = (t_layer, s_layer)
        if pair not in run_pairs:
            st.info(
                t(
                    "feature_maps.fit_pairs_only",
                    pairs=t("feature_maps.list_sep").join(f"{a} ↔ {b}" for a, b in run_pairs),
                )
            )
        else:
            i = run_pairs.index(pair)
            with torch.no_grad():
                t_full = features.extract(teacher_m, x_one, [t_layer])[t_layer]
                s_full = features.extract(snap["student"], x_one, [s_layer])[s_layer]
                reg, tgt = features.regress(snap["modules"], i, s_full, t_full)
                err = features.fitnets_error_map(reg, tgt)[0]
            hint = float(losses.hint_loss(reg, tgt))
            beta = float(run.config.method_params()["beta"])
            f1, f2, f3 = st.columns(3, gap="medium")
            if tgt.dim() == 4:
                chans = features.top_channels(tgt[0], k)
                g_t, _, cols_n = features.channel_grid(tgt[0], channels=chans)
                top = float(tgt[0][chans].abs().max())
                g_r, _, _ = features.channel_grid(reg[0], channels=chans, scale=top, signed=True)
                ids = features.tile_channels(chans, tgt.shape[2], tgt.shape[3], cols_n)
                f1.plotly_chart(
                    localise(
                        viz.feature_grid(
                            g_t, t("feature_maps.fit_target_title", layer=t_layer), "teacher", channel_ids=ids
                        )
                    ),
                    key="fm_fit_target",
                    width="stretch",
                    theme=None,
                )
                f2.plotly_chart(
                    localise(
                        viz.feature_grid(
                            g_r,
                            t("feature_maps.fit_regressed_title", layer=s_layer),
                            "distilled",
                            channel_ids=ids,
                            signed=True,
                        )
                    ),
                    key="fm_fit_regressed",
                    width="stretch",
                    theme=None,
                )
                err_map = err.numpy()
            else:
                f1.plotly_chart(
                    viz.map_figure(
                        features.vector_grid(tgt[0]),
                        t("feature_maps.fit_target_title", layer=t_layer),
                        "teacher",
                        zmax=1.0,
                    ),
                    key="fm_fit_target",
                    width="stretch",
                    theme=None,
                )
                top = float(tgt[0].abs().max())
                f2.plotly_chart(
                    viz.map_figure(
                        features.vector_grid(reg[0], scale=top),
                        t("feature_maps.fit_regressed_title", layer=s_layer),
                        "distilled",
                        zmax=1.0,
                    ),
                    key="fm_fit_regressed",
                    width="stretch",
                    theme=None,
                )
                err_map = features.vector_grid(err, scale=1.0)
            error_sq = t("feature_maps.error_sq")
            f3.plotly_chart(
                viz.map_figure(
                    err_map,
                    t("feature_maps.fit_error_title"),
                    None,
                    colorscale="Reds",
                    zmin=0.0,
                    colorbar_title=error_sq,
                    hover=error_sq + " = %{z:.4f}",
                ),
                key="fm_fit_error",
                width="stretch",
                theme=None,
            )
            f3.metric(
                t("feature_maps.hint_loss"),
                f"{hint:.4f}",
                help=t("feature_maps.hint_help", beta=beta, weighted=beta * hint),
            )
            st.caption(t("feature_maps.fit_caption"))
    elif snap is not None and method is not None:
        st.caption(t("feature_maps.fit_hint"))


def draw_attention(snap: dict | None, t_feat, s_feats: dict) -> None:
    """Attention maps overlaid on the image, and each student's attention loss."""
    st.subheader(t("feature_maps.att_header"))
    spatial = t_feat.dim() == 3 and all(f.dim() == 3 for f in s_feats.values())
    student_has_maps = s_shell is None or any(len(v) == 3 for v in s_shapes.values())
    if t_feat.dim() == 3 and not student_has_maps:
        st.info(t("feature_maps.no_student_maps", arch=s_arch))
    elif not spatial:
        bad = (
            t("feature_maps.bad_teacher", layer=t_layer, n=t_feat.shape[0])
            if t_feat.dim() != 3
            else t(
                "feature_maps.bad_student", layer=s_layer, n=next(f.shape[0] for f in s_feats.values() if f.dim() != 3)
            )
        )
        st.error(t("feature_maps.need_spatial", bad=bad))
    else:
        size = tuple(image.shape[:2])
        t_att = features.attention_overlay(t_feat, size, att_p)
        cols = st.columns(3, gap="medium")
        with cols[0]:
            st.plotly_chart(
                localise(
                    viz.overlay_figure(
                        image,
                        t_att["overlay"].numpy(),
                        f"{role_title('teacher')} · {t_layer}",
                        "teacher",
                        opacity=opacity,
                    )
                ),
                key="fm_att_teacher",
                width="stretch",
                theme=None,
            )
            h, w = t_att["map"].shape
            st.caption(t("feature_maps.att_map_caption", h=h, w=w))
        att_losses = {}
        for col, who in zip(cols[1:], ("scratch", "distilled")):
            with col:
                if who not in s_feats:
                    if not (snap is not None and who == "scratch"):
                        st.info(
                            t("feature_maps.att_after_epoch", who=t("roles." + who))
                            if run.matches
                            else t("feature_maps.att_with_lab", who=t("roles." + who), dataset=ds_name)
                        )
                    continue
                a = features.attention_overlay(s_feats[who], size, att_p)
                st.plotly_chart(
                    localise(
                        viz.overlay_figure(
                            image, a["overlay"].numpy(), f"{role_title(who)} · {s_layer}", who, opacity=opacity
                        )
                    ),
                    key=f"fm_att_{who}",
                    width="stretch",
                    theme=None,
                )
                att_losses[who] = float(losses.attention_loss(s_feats[who][None], t_feat[None], att_p))
                delta = None
                if who == "distilled" and "scratch" in att_losses:
                    delta = t("feature_maps.vs_scratch", delta=att_losses["distilled"] - att_losses["scratch"])
                st.metric(
                    t("feature_maps.att_loss." + who),
                    f"{att_losses[who]:.2e}",
                    delta=delta,
                    delta_color="inverse",
                    help=t("feature_maps.att_loss_help", p=att_p),
                )
        st.caption(t("feature_maps.att_caption", p=att_p))


def draw_similarity(snap: dict | None, teacher_m, students: dict) -> None:
    """How close each student's layers are to the teacher's over a batch (CKA, attention)."""
    st.subheader(t("feature_maps.sim_header"))
    if snap is None or not run.matches:
        st.info(
            t(
                "feature_maps.sim_needs_epoch" if run.matches else "feature_maps.sim_needs_run",
                dataset=ds_name,
                n=SIM_BATCH,
            )
        )
        return
    pairs = features.aligned_pairs(teacher_m, snap["student"], ds.in_shape)
    for extra in run_pairs + [(t_layer, s_layer)]:
        if extra not in pairs:
            pairs.append(extra)
    rows = similarity_rows(run.job.id, snap["epoch"], teacher_m, students, pairs)
    m1, m2 = st.columns([3, 1.1], gap="large")
    with m2:
        metric = st.radio(
            t("feature_maps.measure"),
            list(METRICS),
            key="fm_metric",
            format_func=lambda m, lang=i18n.lang(): i18n.text(f"feature_maps.metrics.{m}", lang),
            help=t("feature_maps.measure_help"),
        )
    metric_text = t(f"feature_maps.metrics.{metric}")
    shown = [r for r in rows if metric == "cka" or r["spatial"]]
    labels = [f"{a} ↔ {b}" for a, b in (r["pair"] for r in shown)]
    # the engine colours the bars by the English role names; localise() translates them after
    series = {i18n.text("roles." + who, i18n.DEFAULT): [r[metric].get(who) for r in shown] for who in students}
    fig = viz.similarity_bars(
        labels,
        series,
        t("feature_maps.sim_title", n=SIM_BATCH, metric=metric_text),
        ytitle=metric_text,
        marked=[r["pair"] in run_pairs for r in shown],
    )
    m1.plotly_chart(localise(fig), key="fm_similarity", width="stretch", theme=None)
    with m2:
        if "scratch" in students and shown:
            gains = [(r[metric]["distilled"] - r[metric]["scratch"], r) for r in shown]
            closer = sum(g > 0 for g, _ in gains)
            st.markdown(t("feature_maps.closer", closer=closer, total=len(gains)))
            for a, b in run_pairs:
                r = next((r for r in shown if r["pair"] == (a, b)), None)
                if r is not None:
                    st.markdown(
                        t("feature_maps.trained_pair", a=a, b=b, d=r[metric]["distilled"], s=r[metric]["scratch"])
                    )
        st.caption(t("feature_maps.sim_caption"))


# ------------------------------------------------------------------ run it
views.follow(run, draw)
links.settle(FIELDS)

"""Soft targets: what a teacher knows beyond the label.

Pick a test digit, raise the temperature, and watch the teacher's probabilities spread
onto the classes it thinks the digit resembles ("dark knowledge"). The teacher's test
logits are computed once per teacher (``state.test_logits``); every redraw is numpy on
those cached numbers only.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import streamlit as st
import torch

from kd_app import chrome, datasets, draw, i18n, links, state, views
from kd_app.i18n import t
from kd_core import data, images, losses, metrics, viz
from kd_core.errors import KDError
from kd_core.probs import entropy_bits, log_softmax, softmax

TEMPERATURES = [0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0]
T_GRID = np.geomspace(0.1, 20.0, 81)
TICKS_T = [0.1, 0.3, 1, 3, 10, 20]
DEFAULT_DATASET = "mnist-mini"
DEFAULT_T = 4.0
TEACHER_LIGHT = "#A6CEE8"  # the teacher's blue, lightened: its plain (T = 1) probabilities
ROLE_KEYS = {"distilled student": "roles.distilled", "scratch student": "roles.scratch"}  # the Lab's series
BIG_PX = 300  # the chosen image, on screen
THUMB_PX = 56  # gallery thumbnails
CANVAS_PX = 360  # the drawing canvas: big enough for a projector
SEEN_PX = 168  # "what the model sees", enlarged
OWN_SOURCES = ["draw", "upload"]


# ------------------------------------------------------------------ numpy on cached logits
def kl_at(teacher_z: np.ndarray, student_z: np.ndarray, T: float) -> np.ndarray:
    """KL(p_T || p_S) of softmax(z / T), in nats, along the last axis."""
    lt, ls = log_softmax(teacher_z, T), log_softmax(student_z, T)
    return (np.exp(lt) * (lt - ls)).sum(axis=-1)


def dark_knowledge(logits: np.ndarray, y: np.ndarray, num_classes: int, T: float) -> np.ndarray:
    """Row c: the teacher's softened probabilities at T averaged over the test images of class c."""
    p = softmax(logits, T)
    out = np.full((num_classes, num_classes), np.nan)
    for c in range(num_classes):
        m = y == c
        if m.any():
            out[c] = p[m].mean(axis=0)
    return out


def confused_pairs(matrix: np.ndarray, k: int = 3) -> list[tuple[int, int, float]]:
    """The k unordered class pairs (a, b) with the largest M[a, b] + M[b, a]."""
    m = np.nan_to_num(np.asarray(matrix, dtype=np.float64))
    n = len(m)
    scores = [(m[a, b] + m[b, a], a, b) for a in range(n) for b in range(a + 1, n)]
    scores.sort(key=lambda s: -s[0])
    return [(a, b, s) for s, a, b in scores[:k]]


@st.cache_resource(max_entries=16, show_spinner=False)
def gallery(teacher_key: str, dataset_name: str, _logits: np.ndarray, _y: np.ndarray, num_classes: int) -> dict:
    """Per class: a clear example (the teacher is surest of the true class) and an ambiguous one
    (the correctly classified image it is least sure of), as indices within the class."""
    p_true = softmax(_logits, 1.0)[np.arange(len(_y)), _y]
    correct = _logits.argmax(1) == _y
    out = {"clear": {}, "ambiguous": {}}
    for c in range(num_classes):
        idx = np.flatnonzero(_y == c)
        if not len(idx):
            continue
        out["clear"][c] = int(np.argmax(p_true[idx]))
        pool = np.flatnonzero(correct[idx]) if correct[idx].any() else np.arange(len(idx))
        out["ambiguous"][c] = int(pool[np.argmin(p_true[idx][pool])])
    return out


def dataset_label(language: str):
    """The dataset selector's option labels in ``language`` (fixed when the widget is drawn:
    Streamlit may call a format_func again outside the script run, where t() would be English)."""

    def label(name: str) -> str:
        key = "datasets." + name
        title = i18n.text(key, language) if key in i18n.catalogue(i18n.DEFAULT) else data.DATASETS[name].title
        return f"{name} — {title}"

    return label


def series_name(role_key: str, T: float) -> str:
    """A series' label: the role (``roles.teacher`` ...) at temperature T."""
    return t("soft_targets.series_at", who=t(role_key), T=T)


def relabel_bars(fig, names: list[str]):
    """Give viz.prob_bars' traces their labels in the session's language (built with the
    English role names, which pick the role colours), hover texts included, then translate
    the engine's axis titles."""
    for trace, name in zip(fig.data, names):
        trace.name = name
        trace.hovertemplate = f"{t('axes.class')} %{{x}}: %{{y:.4f}}<extra>{name}</extra>"
    return i18n.localise_figure(fig)


def legend_below(fig, height: int = 430):
    """Long series names go under the plot, where they cannot cover the title."""
    fig.update_layout(
        legend=dict(orientation="h", yanchor="top", y=-0.3, xanchor="center", x=0.5), height=height, margin=dict(b=120)
    )
    return fig


# ------------------------------------------------------------------ widget state
def pick(c: int, k: int) -> None:
    st.session_state.st_class, st.session_state.st_index = c, k


def pick_random(counts: list[int]) -> None:
    rng = np.random.default_rng()
    c = int(rng.choice([c for c, n in enumerate(counts) if n]))
    pick(c, int(rng.integers(counts[c])))


# ------------------------------------------------------------------ header
st.title("🌡️ " + t("soft_targets.title"))
st.caption(t("soft_targets.intro"))

# the address bar holds the dataset, T and the two switches: a lecturer can share this view
FIELDS = [
    links.choice("dataset", "st_dataset", list(data.DATASETS), DEFAULT_DATASET),
    links.number("T", "st_T", DEFAULT_T, options=TEMPERATURES).also("temperature"),
    links.flag("log", "st_log", False),
    links.flag("hide_diagonal", "st_hide_diag", False),
    links.flag("zscore", "st_zscore", False),
    # the image: its class and its number within the class (-1: the page's own first pick)
    links.number("class", "st_class", -1, 0, 999, integer=True),
    links.number("number", "st_index", -1, 0, 1_000_000, integer=True),
    links.kept("st_own_source", "draw"),
]
first_visit = not links.restored("soft-targets")
links.sync("soft-targets", FIELDS)
if st.session_state.st_dataset not in data.DATASETS:
    st.session_state.st_dataset = DEFAULT_DATASET

head_l, head_r = st.columns([1, 1.25], gap="large")
with head_l:
    choice = datasets.picker(t("soft_targets.dataset"), "st_dataset", help=t("soft_targets.dataset_help"))
    ds_name = choice
    ds = datasets.load(choice)  # None after a notice saying why and where its files go
    if ds is not None:
        st.session_state._st_good_dataset = choice
    else:
        ds_name = st.session_state.get("_st_good_dataset", DEFAULT_DATASET)
        if ds_name == choice:
            ds_name = DEFAULT_DATASET
        st.caption(t("soft_targets.showing_meanwhile", name=ds_name))
        ds = state.dataset(ds_name)
    try:
        teacher = state.teacher(ds_name)
    except KDError as e:
        st.error(t("soft_targets.no_teacher", error=e))
        st.stop()
    st.markdown(chrome.teacher_caption(teacher))
with head_r:
    st.latex(r"p_i \;=\; \frac{\exp(z_i / T)}{\sum_j \exp(z_j / T)}")
    st.caption(t("soft_targets.formula_caption"))

logits = state.test_logits(teacher.key, teacher.model, ds_name)  # (N, K), once per teacher
y = ds.y_test.cpu().numpy() if hasattr(ds.y_test, "cpu") else np.asarray(ds.y_test)
classes = [str(c) for c in ds.classes]
K = len(classes)
counts = [int((y == c).sum()) for c in range(K)]
best = gallery(teacher.key, ds_name, logits, y, K)


def image_of(i: int) -> np.ndarray:
    x = ds.denormalise(ds.x_test[i : i + 1])[0]
    img = viz.to_display(x.cpu().numpy() if hasattr(x, "cpu") else np.asarray(x))
    return np.clip(img, 0.0, 1.0)


def test_index(c: int, k: int) -> int:
    return int(np.flatnonzero(y == c)[k])


# ------------------------------------------------------------------ gallery
first_class = next((c for c in range(K) if c in best["ambiguous"]), 0)
picked = {"class": st.session_state.st_class, "number": st.session_state.st_index}
if st.session_state.st_class == -1:
    st.session_state.st_class = first_class
if st.session_state.st_class not in range(K) or not counts[st.session_state.st_class]:
    if first_visit:
        bad = t("links.out_of_range", low=0, high=K - 1)
        links.show([t("links.ignored", name="class", value=picked["class"], reason=bad)])
    st.session_state.st_class = next(c for c in range(K) if counts[c])
if st.session_state.st_index == -1:
    st.session_state.st_index = best["ambiguous"].get(st.session_state.st_class, 0)
if not 0 <= st.session_state.st_index < counts[st.session_state.st_class]:
    if first_visit:
        bad = t("links.out_of_range", low=0, high=counts[st.session_state.st_class] - 1)
        links.show([t("links.ignored", name="number", value=picked["number"], reason=bad)])
    st.session_state.st_index = 0
# in the link only when it is not the page's first pick
IMAGE_DEFAULTS = {"st_class": first_class, "st_index": best["ambiguous"].get(first_class, 0)}

with st.container(border=True):
    st.markdown(t("soft_targets.gallery"))
    for row in ("clear", "ambiguous"):
        cols = st.columns(K, gap="small")
        for c in range(K):
            if c not in best[row]:
                continue
            k = best[row][c]
            with cols[c]:
                st.image(views.upscale(image_of(test_index(c, k)), THUMB_PX), width=THUMB_PX, output_format="PNG")
                selected = st.session_state.st_class == c and st.session_state.st_index == k
                st.button(
                    classes[c],
                    key=f"st_pick_{row}_{c}",
                    on_click=pick,
                    args=(c, k),
                    type="primary" if selected else "secondary",
                    help=t(f"soft_targets.pick_help.{row}", c=classes[c]),
                )

# ------------------------------------------------------------------ image + probabilities
left, right = st.columns([1, 3.1], gap="large")
with left:
    # one above the other: side by side in this narrow column, "Example #" broke mid-word at 1024 px
    cls = st.number_input(
        t("soft_targets.true_class"), 0, K - 1, key="st_class", step=1, help=t("soft_targets.true_class_help")
    )
    idx_in_class = st.number_input(
        t("soft_targets.example"),
        0,
        counts[cls] - 1,
        key="st_index",
        step=1,
        help=t("soft_targets.example_help", n=counts[cls], last=counts[cls] - 1),
    )
    st.button(
        t("soft_targets.random"),
        key="st_random",
        on_click=pick_random,
        args=(counts,),
        help=t("soft_targets.random_help"),
        width="stretch",
    )
    i = test_index(int(cls), int(idx_in_class))
    z = logits[i]
    st.image(views.upscale(image_of(i), BIG_PX), width="stretch", output_format="PNG")
    p1 = softmax(z, 1.0)
    guess = int(np.argmax(z))
    verdict = "✅" if guess == cls else "❌"
    st.markdown("#### " + t("soft_targets.true_label", c=classes[cls]))
    st.markdown(t("soft_targets.top_guess", i=i, guess=classes[guess], verdict=verdict, p=100 * p1[guess]))

with right:
    s1, s2 = st.columns([2.6, 1.2], vertical_alignment="bottom")
    T = float(
        s1.select_slider(
            t("soft_targets.T"), TEMPERATURES, key="st_T", format_func=lambda v: f"{v:g}", help=t("soft_targets.T_help")
        )
    )
    log_scale = s2.toggle(t("soft_targets.log"), key="st_log", help=t("soft_targets.log_help"))
    standardise = s2.toggle(t("soft_targets.zscore"), key="st_zscore", help=t("soft_targets.zscore_help"))
    pT = softmax(z, T)
    bars = {"teacher at T = 1 (plain softmax)": p1, f"teacher at T = {T:g}": pT}
    bar_names = [t("soft_targets.series_t1"), series_name("roles.teacher", T)]
    if standardise:  # logit standardisation (LS-KD): the same T on z-scored logits
        zs = losses.zscore(torch.as_tensor(z, dtype=torch.float64)[None])[0].numpy()
        bars["teacher, standardised"] = softmax(zs, T)
        bar_names.append(t("soft_targets.series_z", T=T))
    fig = viz.prob_bars(bars, classes, title=t("soft_targets.probs_title"), highlight=int(cls), log=log_scale)
    relabel_bars(fig, bar_names)
    fig.data[0].marker.color = TEACHER_LIGHT
    if standardise:
        fig.data[2].marker.color = viz.EXTRA[0]
    legend_below(fig)
    if log_scale:
        low = math.floor(math.log10(max(float(min(p.min() for p in bars.values())), 1e-12)))
        fig.update_yaxes(range=[max(low, -12), 0.05])
    g1, g2 = chrome.columns("st_charts", [1.45, 1], min_rem=11, gap="medium")
    g1.plotly_chart(fig, key="st_chart_probs", width="stretch", theme=None)

    entropies = {"teacher": entropy_bits(softmax(z[None, :], T_GRID[:, None]))}
    efig = viz.entropy_curve(T_GRID, entropies, T, max_entropy=math.log2(K), title=t("soft_targets.entropy_title"))
    efig.data[-1].hovertemplate = (
        f"T={T:g}<br>H=%{{y:.3f}} {t('soft_targets.bits')}"
        f"<extra>{t('roles.teacher')}</extra>"
    )  # the marker at the current T
    i18n.localise_figure(efig)
    efig.update_layout(height=430)
    efig.update_xaxes(tickvals=TICKS_T, ticktext=[f"{v:g}" for v in TICKS_T])
    efig.update_layout(showlegend=False)
    efig.update_annotations(x=0, xanchor="left", yanchor="bottom")  # "uniform" away from the curve
    g2.plotly_chart(efig, key="st_chart_entropy", width="stretch", theme=None)
    others = np.delete(pT, int(cls))
    top_wrong = int(np.delete(np.arange(K), int(cls))[np.argmax(others)])
    if standardise:
        sigma = float(np.std(z, ddof=1))
        st.markdown(
            t(
                "soft_targets.zscore_reading",
                T=T,
                sigma=sigma,
                teff=T * sigma,
                top=100 * bars["teacher, standardised"][cls],
            )
        )
    st.markdown(
        t(
            "soft_targets.reading",
            T=T,
            c=classes[cls],
            keep=100 * pT[cls],
            share=100 * (1 - pT[cls]),
            share1=100 * (1 - p1[cls]),
            wrong=classes[top_wrong],
            h=entropy_bits(pT),
            hmax=math.log2(K),
        )
    )


# ------------------------------------------------------------------ your own digit
def own_image_error(e: KDError) -> str:
    """An image refusal in the session's language (the engine's English line as a fallback)."""
    key = f"soft_targets.own.errors.{getattr(e, 'code', '')}"
    if key in i18n.catalogue(i18n.DEFAULT):
        try:
            return t(key, **getattr(e, "params", {}))
        except (KeyError, IndexError, ValueError):
            pass
    return str(e)


def own_image(content: bytes | None, name: str):
    """(pixels (C, H, W) in [0, 1], normalised (1, C, H, W) input) of a drawing or upload,
    prepared like the dataset's images; None (with an st.error saying why) when refused."""
    try:
        px = images.pixels(images.check_upload(content, name), ds_name)
        return px, data.normalise_images(torch.from_numpy(px)[None], ds)
    except KDError as e:
        st.error(t("soft_targets.own.refused", error=own_image_error(e)))
        return None


def own_logits(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return metrics.predict_logits(model, x)[0].numpy()


st.subheader(t("soft_targets.own.header"))
st.caption(t("soft_targets.own.intro") + (" " + t("soft_targets.own.photo_note") if ds_name == "cifar10" else ""))
o1, o2, o3 = st.columns([1.4, 0.6, 2.1], gap="medium")
with o1:
    source = st.radio(
        t("soft_targets.own.source"),
        OWN_SOURCES,
        key="st_own_source",
        horizontal=True,
        format_func=lambda v, lang=i18n.lang(): i18n.text(f"soft_targets.own.sources.{v}", lang),
        label_visibility="collapsed",
    )
    content, own_name = None, t("soft_targets.own.drawing")
    if source == "draw":
        drawn = draw.canvas(
            key="st_canvas",
            size=CANVAS_PX,
            clear_label=t("soft_targets.own.clear"),
            hint=t("soft_targets.own.canvas_hint"),
        )
        if drawn:
            try:
                content = images.from_data_url(drawn)
            except KDError as e:
                st.error(t("soft_targets.own.refused", error=own_image_error(e)))
    else:
        up = st.file_uploader(
            t("soft_targets.own.upload"),
            type=images.EXTENSIONS,
            key="st_upload",
            help=t("soft_targets.own.upload_help", mb=images.MAX_UPLOAD_BYTES // 1024 // 1024),
        )
        if up is not None:
            content, own_name = up.getvalue(), up.name
if content is None:
    own = None
    o2.caption(t(f"soft_targets.own.waiting.{source}"))
else:
    with o3:
        own = own_image(content, own_name)
if own is not None:
    own_px, own_x = own
    own_z = own_logits(teacher.model, own_x)
    with o2:
        st.markdown(t("soft_targets.own.seen", h=own_px.shape[1], w=own_px.shape[2]))
        st.image(views.upscale(viz.to_display(own_px), SEEN_PX), width=SEEN_PX, output_format="PNG")
        st.caption(t("soft_targets.own.seen_caption." + images.RECIPES.get(ds_name, "mnist")))
    series = {"teacher at T = 1 (plain softmax)": softmax(own_z, 1.0), f"teacher at T = {T:g}": softmax(own_z, T)}
    names = [t("soft_targets.series_t1"), series_name("roles.teacher", T)]
    found_student = state.ended_run()
    if found_student is not None and found_student[0].config.dataset == ds_name:
        tr = found_student[0]
        for role, model in (("distilled student", tr.student), ("scratch student", tr.baseline)):
            if model is not None:
                series[f"{role} at T = {T:g}"] = softmax(own_logits(model, own_x), T)
                names.append(series_name(ROLE_KEYS[role], T))
    ofig = viz.prob_bars(series, classes, title=t("soft_targets.own.chart_title", T=T), log=log_scale)
    relabel_bars(ofig, names)
    ofig.data[0].marker.color = TEACHER_LIGHT
    legend_below(ofig, height=400)
    with o3:
        st.plotly_chart(ofig, key="st_chart_own", width="stretch", theme=None)
        p_own = softmax(own_z, 1.0)
        g_own = int(np.argmax(own_z))
        st.markdown(
            t(
                "soft_targets.own.guess",
                guess=classes[g_own],
                p=100 * p_own[g_own],
                h=entropy_bits(softmax(own_z, T)),
                T=T,
                hmax=math.log2(K),
            )
        )

# ------------------------------------------------------------------ the distilled student
st.subheader(t("soft_targets.student_header"))
found = state.ended_run()
if found is None:
    st.info(t("soft_targets.no_student"))
    st.page_link("app_pages/lab.py", label=t("soft_targets.lab_link"), icon="🧪")
else:
    trainer, job = found
    cfg = trainer.config
    if cfg.dataset != ds_name:
        st.info(t("soft_targets.other_dataset", dataset=cfg.dataset))
    else:
        cache_key = f"st_cache_student_{job.id}"
        if cache_key not in st.session_state:
            for old in [k for k in st.session_state if str(k).startswith("st_cache_student_")]:
                del st.session_state[old]
            with st.spinner(t("soft_targets.running_student")):
                st.session_state[cache_key] = {
                    "distilled student": metrics.predict_logits(trainer.student, ds.x_test).numpy(),
                    "scratch student": (
                        metrics.predict_logits(trainer.baseline, ds.x_test).numpy()
                        if trainer.baseline is not None
                        else None
                    ),
                }
        student_logits = {k: v for k, v in st.session_state[cache_key].items() if v is not None}
        run_teacher = getattr(trainer, "teacher", None) or teacher
        t_logits = state.test_logits(run_teacher.key, run_teacher.model, ds_name)
        series = {f"teacher at T = {T:g}": softmax(t_logits[i], T)}
        series.update({f"{name} at T = {T:g}": softmax(s[i], T) for name, s in student_logits.items()})
        who = {name: ROLE_KEYS.get(name, name) for name in student_logits}  # catalogue keys of the roles
        sfig = viz.prob_bars(
            series, classes, title=t("soft_targets.student_title", T=T), highlight=int(cls), log=log_scale
        )
        relabel_bars(sfig, [series_name("roles.teacher", T)] + [series_name(who[n], T) for n in student_logits])
        a, b = st.columns([2, 1], gap="large")
        a.plotly_chart(legend_below(sfig), key="st_chart_student", width="stretch", theme=None)
        with b:
            st.markdown(
                t(
                    "soft_targets.student_text",
                    student=cfg.student,
                    method=cfg.method,
                    T=cfg.temperature,
                    teacher=run_teacher.arch,
                )
            )
            for name, s in student_logits.items():
                st.metric(
                    t("soft_targets.kl_label", T=T, who=t(who[name])),
                    t("soft_targets.kl_value", kl=kl_at(t_logits[i], s[i], T)),
                    help=t("soft_targets.kl_help"),
                )
                st.caption(t("soft_targets.kl_average", n=len(y), kl=kl_at(t_logits, s, T).mean()))

# ------------------------------------------------------------------ dark knowledge matrix
st.subheader(t("soft_targets.dark_header"))
matrix = dark_knowledge(logits, y, K, T)
pairs = confused_pairs(matrix)
h1, h2 = st.columns([1.6, 1], gap="large")
with h2:
    hide_diag = st.toggle(t("soft_targets.hide_diag"), key="st_hide_diag", help=t("soft_targets.hide_diag_help"))
    st.markdown(t("soft_targets.dark_text", T=T))
    st.markdown(
        t("soft_targets.pairs_header")
        + "\n"
        + "\n".join(f"{n}. **{classes[a]} ↔ {classes[b]}** — {s:.3f}" for n, (a, b, s) in enumerate(pairs, 1))
    )
    if T <= 1:
        st.caption(t("soft_targets.tip_low_T"))
with h1:
    shown = matrix.copy()
    if hide_diag:
        np.fill_diagonal(shown, np.nan)
    fig = viz.heatmap(
        shown,
        classes,
        classes,
        title=t("soft_targets.dark_title", T=T),
        zmin=0,
        zmax=None if hide_diag else 1,
        xtitle=t("soft_targets.dark_x"),
        ytitle=t("soft_targets.dark_y"),
        colorbar_title="p",
        height=520,
    )
    st.plotly_chart(fig, key="st_chart_dark", width="stretch", theme=None)
    top = t("soft_targets.list_sep").join(f"{classes[a]}↔{classes[b]}" for a, b, _ in pairs)
    st.caption(t("soft_targets.pairs_caption", T=T, pairs=top))

links.settle([replace(f, default=IMAGE_DEFAULTS[f.key]) if f.key in IMAGE_DEFAULTS else f for f in FIELDS])

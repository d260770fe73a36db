"""The Lesson: a guided, live tour of knowledge distillation on the real engine.

Eight steps, narrative interleaved with live cells: why distil (teacher and student
measured on the spot), soft targets and temperature, the loss and its T² (gradients on
real logits), a one-click experiment with few labels, the missing class at T = 2 and
T = 20, beyond logits (feature, relational, contrastive), where KD is used and going, and
a quiz. Every text comes from the catalogues (``kd_app.i18n``); every control is mirrored
in the URL (``kd_app.links``). Trainings run as background jobs (``state.job_manager``)
and their curves are polled by fragments; everything else is computed on cached teacher
logits and small batches, so a slider redraws at once. Each step is a function: in
presentation mode (``?present=1``) only the step shown runs (``chrome.Screens``, ``&step=3``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
import torch.nn.functional as F
from streamlit.errors import StreamlitAPIException

from kd_app import chrome, links, noise, state, views
from kd_app.i18n import t
from kd_core import features, losses, methods, metrics, models, ship, teachers, train, viz
from kd_core.config import Config
from kd_core.errors import KDError
from kd_core.probs import entropy_bits, softmax

DATASET = "mnist-mini"
STUDENT_EPOCHS = ship.LESSON_STUDENT_EPOCHS  # the small student alone on every label (step 1): shipped
SOFT_T = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0]
T_GRID = np.geomspace(0.3, 40.0, 90)
LOSS_T = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0]
GRAD_T = [1, 2, 4, 8, 16, 32, 64, 128]
FRACTIONS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
EXP_EPOCHS = 3
MISSING = 3  # the omitted digit (Hinton et al. 2015, section 3)
MISSING_T = (2.0, 20.0)
TAUS = [0.02, 0.05, 0.07, 0.1, 0.2, 0.5, 1.0]
PER_CLASS = [1, 2, 3, 4]
DEMO_BATCH = 256  # test images for the loss and gradient cells
IMG_PX = 224
SOFT_TEACHER = "#A6CEE8"  # the teacher's blue, lightened: its plain (T = 1) probabilities
PAGES_DIR = Path(__file__).resolve().parent
SURE = 0.97  # the example image per digit: the teacher gives its true class about this probability at T = 1

FIELDS = [
    links.choice("digit", "lesson_digit", list(range(10)), 4),
    links.number("T", "lesson_T", 4.0, options=SOFT_T).also("temperature"),
    links.number("loss_T", "lesson_loss_T", 4.0, options=LOSS_T),
    links.number("loss_alpha", "lesson_alpha", 0.9, 0.0, 1.0),
    links.number("labels", "lesson_fraction", 0.1, options=FRACTIONS),
    links.choice("per_class", "lesson_per_class", PER_CLASS, 4),
    links.number("tau", "lesson_tau", 0.1, options=TAUS),
]


# ------------------------------------------------------------------ small helpers
def step_header(n: int, key: str) -> None:
    st.header(f"{n} · {t(key)}", anchor=f"step-{n}", divider="gray")


def page_link(file: str, label_key: str, icon: str) -> None:
    """A link to another page, shown only once that page exists and is in the navigation."""
    if not (PAGES_DIR / file).exists():
        return
    try:
        st.page_link(f"app_pages/{file}", label=t(label_key), icon=icon)
    except StreamlitAPIException:
        pass


def localise_acc(fig: go.Figure, teacher_acc: float | None = None) -> go.Figure:
    """viz.accuracy_curves with translated series, axes and teacher line."""
    names = {"distilled student": t("roles.distilled"), "scratch student": t("roles.scratch")}
    for tr in fig.data:
        tr.name = names.get(tr.name, tr.name)
    fig.update_xaxes(title=t("axes.epoch"))
    fig.update_yaxes(title=t("axes.test_accuracy"))
    if teacher_acc is not None:
        fig.update_annotations(text=t("roles.teacher_line", acc=100 * teacher_acc))
    return fig


# ------------------------------------------------------------------ cached computations
def student_alone(arch: str) -> train.Teacher:
    """The small student trained alone on every label (cached on disk like a teacher)."""
    if teachers.is_available(teachers.key(DATASET, arch, STUDENT_EPOCHS)):
        return train.get_teacher(DATASET, arch, STUDENT_EPOCHS)
    with st.status(t("lesson.s1.train_student", arch=arch), expanded=True) as box:
        bar = st.progress(0.0, text=t("lesson.s1.starting"))
        s = train.get_teacher(
            DATASET,
            arch,
            STUDENT_EPOCHS,
            progress=lambda e, n, acc: bar.progress(e / n, text=t("lesson.s1.epoch", epoch=e, total=n, acc=100 * acc)),
        )
        box.update(
            label=t("lesson.s1.student_ready", arch=arch, acc=100 * s.test_accuracy), state="complete", expanded=False
        )
    return s


@st.cache_resource(show_spinner=False)
def fresh_student(arch: str, in_shape: tuple, num_classes: int) -> torch.nn.Module:
    """An untrained student (seed 0): what distillation starts from. Read-only, shared."""
    torch.manual_seed(0)
    model = models.build(arch, in_shape, num_classes)
    model.eval()
    return model


@st.cache_resource(max_entries=4, show_spinner=False)
def gallery(teacher_key: str, _logits: np.ndarray, _y: np.ndarray) -> dict[int, int]:
    """Per class, a typical correctly classified test image: the one on which the teacher is
    closest to SURE sure at T = 1 (confident, as trained networks are, yet with dark knowledge)."""
    p_true = softmax(_logits, 1.0)[np.arange(len(_y)), _y]
    correct = _logits.argmax(1) == _y
    out = {}
    for c in range(_logits.shape[1]):
        idx = np.flatnonzero((_y == c) & correct)
        if len(idx):
            out[c] = int(idx[np.argmin(np.abs(p_true[idx] - SURE))])
    return out


@st.cache_resource(max_entries=4, show_spinner=False)
def demo_logits(
    teacher_key: str, _teacher: torch.nn.Module, _student: torch.nn.Module, _x: torch.Tensor, _y: torch.Tensor
) -> dict:
    """Teacher and fresh-student logits on the first DEMO_BATCH test images."""
    x = _x[:DEMO_BATCH]
    return {
        "teacher": metrics.predict_logits(_teacher, x),
        "student": metrics.predict_logits(_student, x),
        "y": _y[:DEMO_BATCH],
    }


@st.cache_resource(max_entries=4, show_spinner=False)
def gradient_table(teacher_key: str, _zt: torch.Tensor, _zs: torch.Tensor) -> pd.DataFrame:
    """Autograd on real logits: the gradient of KL(p_T || p_S) at temperature T with
    respect to the student's logits, its size without and with the factor T², and its
    cosine to the gradient of logit matching, (1/2N)||z_S - z_T||² on zero-mean logits."""
    rows = []
    n, k = _zt.shape
    centred = lambda z: z - z.mean(1, keepdim=True)  # noqa: E731
    matching = (centred(_zs) - centred(_zt)) / k  # per sample: d/dz_S of (1/2N)||z_S - z_T||^2
    for T in GRAD_T:
        zs = _zs.clone().requires_grad_(True)
        kl = losses.kd_loss(zs, _zt, float(T)) / T**2  # batch mean of KL at temperature T
        (g,) = torch.autograd.grad(kl, zs)
        g = g * n  # per-sample gradients (undo the batch mean)
        kd = g * T**2
        rows.append(
            {
                "T": T,
                "plain": float(g.norm(dim=1).mean()),
                "scaled": float(kd.norm(dim=1).mean()),
                "cos": float(F.cosine_similarity(kd.flatten(), matching.flatten(), dim=0)),
                "ratio": float(kd.norm() / matching.norm()),
            }
        )
    return pd.DataFrame(rows)


@st.cache_resource(max_entries=8, show_spinner=False)
def embeddings(key: str, _model: torch.nn.Module, _x: torch.Tensor, layer: str) -> torch.Tensor:
    return features.extract(_model, _x, [layer])[layer].flatten(1)


# ------------------------------------------------------------------ header
train.set_threads()
# presentation mode: one step per screen (?present=1&step=3), with Previous / Next
screens = chrome.Screens("lesson", [t(f"lesson.s{n}.title") for n in range(1, 9)])
if screens.shows(1):
    st.title("🎓 " + t("lesson.title"))
    st.caption(t("lesson.subtitle"))
links.sync("lesson", FIELDS)
screens.header()
if screens.current is None:
    with st.expander(t("lesson.toc_title"), expanded=False):
        st.markdown("\n".join(f"{n}. [{t(f'lesson.s{n}.title')}](#step-{n})" for n in range(1, 9)))
if screens.shows(1):
    st.markdown(t("lesson.intro"))

try:
    ds = state.dataset(DATASET)
    teacher = state.teacher(DATASET)
except KDError as e:
    st.error(t("lesson.no_teacher", error=str(e)))
    st.stop()
t_arch, s_arch = models.preset(DATASET)
classes = [str(c) for c in ds.classes]
K = len(classes)
logits = state.test_logits(teacher.key, teacher.model, DATASET)  # (N, K) once per teacher
y = ds.y_test.cpu().numpy()
picks = gallery(teacher.key, logits, y)


def image_of(i: int) -> np.ndarray:
    return viz.to_display(ds.denormalise(ds.x_test[i : i + 1])[0].cpu().numpy())


# what several steps share (drawn or not in presentation mode): the chosen digit's test image
# (its picker is in step 2; links.sync keeps its value), the KD loss and the untrained student
i_img = picks.get(int(st.session_state.get("lesson_digit", 4)), 0)
kd = methods.get("kd")
KD_TERMS = kd.formula_latex().removeprefix(r"\mathcal{L} = ")
fresh = fresh_student(s_arch, tuple(ds.in_shape), K)  # cached: the loss and relational views use it


# ================================================================== 1. why distil
def step_1() -> None:
    step_header(1, "lesson.s1.title")
    st.markdown(t("lesson.s1.text"))
    alone = student_alone(s_arch)
    t_prof = teacher.profile(ds.in_shape)
    s_prof = alone.profile(ds.in_shape)
    rows = []
    for role, m, prof in (("teacher", teacher, t_prof), ("student_alone", alone, s_prof)):
        rows.append(
            {
                t("lesson.s1.col_model"): t(f"lesson.s1.{role}"),
                t("lesson.s1.col_arch"): m.arch,
                t("lesson.s1.col_params"): prof["params"],
                t("lesson.s1.col_flops"): prof["flops"] / 1e6,
                t("lesson.s1.col_latency"): prof["latency_ms"],
                t("lesson.s1.col_acc"): m.test_accuracy,
            }
        )
    table = pd.DataFrame(rows).set_index(t("lesson.s1.col_model"))
    st.dataframe(
        table.style.format(
            {
                t("lesson.s1.col_params"): "{:,}",
                t("lesson.s1.col_flops"): "{:.2f}",
                t("lesson.s1.col_latency"): "{:.3f}",
                t("lesson.s1.col_acc"): "{:.1%}",
            }
        ),
        width="stretch",
        key="lesson_why_table",
    )
    st.markdown(
        t(
            "lesson.s1.ratio",
            params=t_prof["params"] / max(s_prof["params"], 1),
            flops=t_prof["flops"] / max(s_prof["flops"], 1),
            speed=t_prof["latency_ms"] / max(s_prof["latency_ms"], 1e-9),
            gap=100 * (teacher.test_accuracy - alone.test_accuracy),
        )
    )
    st.caption(
        t("lesson.s1.caption", epochs=STUDENT_EPOCHS, t_epochs=teacher.epochs, n=len(ds.y_train), m=len(ds.y_test))
    )


@st.fragment
def soft_targets_view() -> None:
    """The T slider and what it changes: moving it reruns only this (not the long page)."""
    links.sync("lesson", FIELDS)
    T = float(
        st.select_slider(
            t("lesson.s2.T"), SOFT_T, key="lesson_T", format_func=lambda v: f"{v:g}", help=t("lesson.s2.T_help")
        )
    )
    z = logits[i_img]
    p1, pT = softmax(z, 1.0), softmax(z, T)
    fig = viz.prob_bars(
        {t("lesson.s2.series_t1"): p1, t("lesson.s2.series_t", T=T): pT},
        classes,
        title=t("lesson.s2.chart_title"),
        highlight=int(y[i_img]),
    )
    fig.data[0].marker.color, fig.data[1].marker.color = SOFT_TEACHER, viz.TEACHER
    fig.update_xaxes(title=t("axes.class"))
    fig.update_yaxes(title=t("axes.probability"))
    fig.update_layout(height=420, legend=dict(y=-0.32))  # below the axis title, not over it
    st.plotly_chart(fig, key="lesson_probs", width="stretch", theme=None)
    true_c = int(y[i_img])
    wrong = [c for c in np.argsort(-pT) if c != true_c][:2]
    m1, m2, m3 = st.columns(3)
    m1.metric(
        t("lesson.s2.metric_true", c=classes[true_c]), f"{100 * pT[true_c]:.1f}%", help=t("lesson.s2.metric_true_help")
    )
    m2.metric(t("lesson.s2.metric_others"), f"{100 * (1 - pT[true_c]):.1f}%", help=t("lesson.s2.metric_others_help"))
    m3.metric(
        t("lesson.s2.metric_entropy"),
        f"{entropy_bits(pT):.2f}",
        help=t("lesson.s2.metric_entropy_help", max=math.log2(K)),
    )
    st.markdown(
        t(
            "lesson.s2.reading",
            T=T,
            a=classes[wrong[0]],
            b=classes[wrong[1]],
            pa=100 * pT[wrong[0]],
            pb=100 * pT[wrong[1]],
            p1=100 * (1 - p1[true_c]),
        )
    )


# ================================================================== 2. soft targets
def step_2() -> None:
    step_header(2, "lesson.s2.title")
    st.markdown(t("lesson.s2.text"))
    st.latex(
        r"p_i^{(T)} \;=\; \frac{\exp(z_i / T)}{\sum_{j=1}^{N} \exp(z_j / T)}, \qquad "
        r"H\!\left(p^{(T)}\right) = -\sum_{i=1}^{N} p_i^{(T)} \log_2 p_i^{(T)}"
    )
    st.markdown(t("lesson.s2.symbols"))
    left, right = st.columns([1, 2.6], gap="large")
    with left:
        digit_labels = {
            c: t("lesson.s2.digit_option", c=classes[c]) for c in range(K)
        }  # format_func runs outside the script
        st.selectbox(
            t("lesson.s2.digit"),
            list(range(K)),
            key="lesson_digit",
            format_func=digit_labels.get,
            help=t("lesson.s2.digit_help"),
        )
        st.image(
            views.upscale(image_of(i_img), IMG_PX),
            width=IMG_PX,
            output_format="PNG",
            caption=t("lesson.s2.image_caption", i=i_img, c=classes[int(y[i_img])]),
        )

    with right:
        soft_targets_view()
    st.info(t("lesson.s2.dark"), icon="🌑")


@st.fragment
def loss_section() -> None:
    """T and alpha of the loss and everything they change: reruns only this section."""
    links.sync("lesson", FIELDS)
    c1, c2 = st.columns(2)
    loss_T = float(
        c1.select_slider(
            t("lesson.s3.T"), LOSS_T, key="lesson_loss_T", format_func=lambda v: f"{v:g}", help=t("lesson.s3.T_help")
        )
    )
    alpha = float(
        c2.slider(t("lesson.s3.alpha"), 0.0, 1.0, step=0.05, key="lesson_alpha", help=t("lesson.s3.alpha_help"))
    )
    st.latex(
        rf"\mathcal{{L}} = {1 - alpha:.3g}\,\mathrm{{CE}}(y, p_S) + {alpha:.3g} \cdot {loss_T:g}^2\,"
        rf"\mathrm{{KL}}\!\left(p_T^{{({loss_T:g})}} \,\|\, p_S^{{({loss_T:g})}}\right)"
    )
    demo = demo_logits(teacher.key, teacher.model, fresh, ds.x_test, ds.y_test)
    zt, zs, yb = demo["teacher"], demo["student"], demo["y"]
    ce = float(F.cross_entropy(zs, yb))
    kl_T = float(losses.kd_loss(zs, zt, loss_T))  # already times T^2
    terms = {
        t("lesson.s3.term_ce"): (1 - alpha) * ce,
        t("lesson.s3.term_kd"): alpha * kl_T,
        t("lesson.s3.term_total"): (1 - alpha) * ce + alpha * kl_T,
    }
    lfig = go.Figure(
        go.Bar(
            x=list(terms),
            y=list(terms.values()),
            marker_color=[viz.SCRATCH, viz.TEACHER, viz.STUDENT],
            text=[f"{v:.3f}" for v in terms.values()],
            textposition="outside",
        )
    )
    viz.style(lfig, t("lesson.s3.terms_title", T=loss_T, alpha=alpha), height=380)
    lfig.update_layout(title=dict(x=0, xanchor="left", font=dict(size=viz.FONT)))  # a narrow column: never clip it
    lfig.update_yaxes(title=t("lesson.s3.terms_axis"), rangemode="tozero")
    lfig.update_layout(margin=dict(b=60))
    g1, g2 = st.columns([1, 1.3], gap="large")
    with g1:
        st.plotly_chart(lfig, key="lesson_loss_terms", width="stretch", theme=None)
        st.caption(t("lesson.s3.terms_caption", n=len(yb)))
    with g2:
        st.markdown(t("lesson.s3.why_t2"))
        st.latex(
            r"\frac{\partial\,\mathrm{KL}\!\left(p_T^{(T)} \,\|\, p_S^{(T)}\right)}{\partial z_i}"
            r" = \frac{1}{T}\left(q_i - p_i\right) \;\approx\; \frac{1}{N\,T^2}\,\left(z_i - v_i\right)"
        )
        st.markdown(t("lesson.s3.why_t2_symbols"))
        st.latex(
            r"\frac{\partial\,\left[T^2\,\mathrm{KL}\right]}{\partial z_i} \;\xrightarrow{\;T \to \infty\;}\;"
            r" \frac{1}{N}\left(z_i - v_i\right) = \frac{\partial}{\partial z_i}\,\frac{1}{2N}\sum_{j}\left(z_j - v_j\right)^2"
        )
    grads = gradient_table(teacher.key, zt, zs)
    h1, h2 = st.columns(2, gap="large")
    gfig = go.Figure()
    gfig.add_scatter(
        x=grads["T"].tolist(),
        y=grads["plain"].tolist(),
        mode="lines+markers",
        name=t("lesson.s3.grad_plain"),
        line=dict(color=viz.SCRATCH, width=3, dash="dot"),
        marker=dict(size=9),
    )
    gfig.add_scatter(
        x=grads["T"].tolist(),
        y=grads["scaled"].tolist(),
        mode="lines+markers",
        name=t("lesson.s3.grad_scaled"),
        line=dict(color=viz.STUDENT, width=4),
        marker=dict(size=10),
    )
    gfig.add_vline(x=loss_T, line_dash="dash", line_color="#555")
    viz.style(gfig, t("lesson.s3.grad_title"), height=420)
    gfig.update_xaxes(type="log", title=t("axes.temperature"), tickvals=GRAD_T, ticktext=[str(v) for v in GRAD_T])
    gfig.update_yaxes(type="log", title=t("lesson.s3.grad_axis"))
    h1.plotly_chart(gfig, key="lesson_grad_norms", width="stretch", theme=None)
    cfig = go.Figure()
    cfig.add_scatter(
        x=grads["T"].tolist(),
        y=grads["cos"].tolist(),
        mode="lines+markers",
        name=t("lesson.s3.cos_name"),
        line=dict(color=viz.TEACHER, width=4),
        marker=dict(size=10),
    )
    cfig.add_hline(y=1.0, line_dash="dot", line_color="#999")
    cfig.add_vline(x=loss_T, line_dash="dash", line_color="#555")
    viz.style(cfig, t("lesson.s3.cos_title"), height=420)
    cfig.update_xaxes(type="log", title=t("axes.temperature"), tickvals=GRAD_T, ticktext=[str(v) for v in GRAD_T])
    cfig.update_yaxes(title=t("lesson.s3.cos_axis"), range=[min(0.6, float(grads["cos"].min()) - 0.05), 1.02])
    cfig.update_layout(showlegend=False)
    h2.plotly_chart(cfig, key="lesson_grad_cos", width="stretch", theme=None)
    gt = grads.rename(
        columns={
            "T": "T",
            "plain": t("lesson.s3.col_plain"),
            "scaled": t("lesson.s3.col_scaled"),
            "cos": t("lesson.s3.col_cos"),
            "ratio": t("lesson.s3.col_ratio"),
        }
    )
    st.dataframe(
        gt.style.format(
            {
                t("lesson.s3.col_plain"): "{:.2e}",
                t("lesson.s3.col_scaled"): "{:.3f}",
                t("lesson.s3.col_cos"): "{:.4f}",
                t("lesson.s3.col_ratio"): "{:.3f}",
            }
        ),
        hide_index=True,
        width="stretch",
        key="lesson_grad_table",
    )
    st.markdown(
        t(
            "lesson.s3.grad_reading",
            lo=grads["cos"].iloc[0],
            hi=grads["cos"].iloc[-1],
            t_hi=GRAD_T[-1],
            drop=grads["plain"].iloc[0] / grads["plain"].iloc[-1],
        )
    )


# ================================================================== 3. the loss
def step_3() -> None:
    step_header(3, "lesson.s3.title")
    st.markdown(t("lesson.s3.text"))
    st.latex(kd.formula_latex())
    st.markdown(t("lesson.s3.symbols"))

    loss_section()


# ------------------------------------------------------------------ 4. and 5.: the runs
def job_status(snap: dict) -> None:
    status = snap["status"]
    if status == "queued":
        st.info(t("lesson.job.queued"))
    elif status == "teacher" or (status == "running" and not snap["total_steps"]):
        st.progress(0.0, text=t("lesson.job.teacher"))
    elif status == "running":
        total = snap["total_steps"] or 1
        st.progress(min(snap["step"] / total, 1.0), text=t("lesson.job.running", step=snap["step"], total=total))
    elif status in ("finished", "stopped"):
        st.success(t("lesson.job.finished", steps=snap["step"]))
    else:
        st.error(t("lesson.job.failed", message=snap["message"]))


def draw_experiment() -> None:
    job = state.find_job(st.session_state.get("lesson_exp_job"))
    if job is None:
        st.info(t("lesson.s4.press"))
        return
    snap = job.snapshot()
    job_status(snap)
    epochs = snap["epochs"]
    teacher_acc = epochs[0]["teacher_acc"] if epochs else teacher.test_accuracy
    fig = localise_acc(
        viz.accuracy_curves(epochs, teacher_acc, snap["config"].epochs, t("lesson.s4.chart_title")), teacher_acc
    )
    st.plotly_chart(fig, key="lesson_exp_curves", width="stretch", theme=None)
    r = snap["result"]
    if job.done and r and "baseline" in r:
        d, b = r["student"]["test_accuracy"], r["baseline"]["test_accuracy"]
        m1, m2, m3 = st.columns(3)
        m1.metric(
            t("roles.distilled"), f"{100 * d:.1f}%", delta=f"{100 * (d - b):+.1f}", help=t("lesson.s4.metric_help")
        )
        m2.metric(t("roles.scratch"), f"{100 * b:.1f}%")
        m3.metric(t("roles.teacher"), f"{100 * r['teacher']['test_accuracy']:.1f}%")
        if noise.failed_run(r, snap["status"]):  # diverged or at chance: the gain means nothing
            return
        st.markdown(
            t("lesson.s4.result", gain=100 * (d - b), d=100 * d, b=100 * b, frac=100 * snap["config"].labeled_fraction)
        )
        if abs(d - b) < 0.02:  # one seed each
            st.caption(t("noise.lesson_small_gain"))


def start_experiment() -> None:
    """Button callback (runs before the script, so the button is drawn disabled at once)."""
    cfg = Config(dataset=DATASET, labeled_fraction=float(st.session_state.lesson_fraction), epochs=EXP_EPOCHS)
    try:
        new = state.start_run(cfg)  # this session's run: the other pages show its students
    except KDError as e:
        st.session_state.lesson_job_error = str(e)
        return
    st.session_state.lesson_exp_job = new.id


def start_missing() -> None:
    ids = []
    try:
        for T_m in MISSING_T:
            cfg = Config(
                dataset=DATASET,
                labeled_fraction=1.0,
                epochs=EXP_EPOCHS,
                omit_class=MISSING,
                temperature=T_m,
                baseline=T_m == MISSING_T[0],
            )
            ids.append(state.job_manager().submit(cfg, owner=state.session_id()).id)
    except KDError as e:
        st.session_state.lesson_missing_error = str(e)
    st.session_state.lesson_missing_jobs = ids


def draw_missing() -> None:
    ids = st.session_state.get("lesson_missing_jobs")
    jobs = [state.find_job(i) for i in ids] if ids else []
    if not jobs or any(j is None for j in jobs):
        st.info(t("lesson.s5.press"))
        return
    fig = go.Figure()
    colours = {MISSING_T[0]: viz.EXTRA[0], MISSING_T[1]: viz.STUDENT}
    scratch = None
    finals = {}
    for job in jobs:
        snap = job.snapshot()
        T_job = snap["config"].temperature
        ep = snap["epochs"]
        fig.add_scatter(
            x=[e["epoch"] for e in ep],
            y=[e["student_omitted_acc"] for e in ep],
            mode="lines+markers",
            name=t("lesson.s5.series", T=T_job),
            line=dict(color=colours.get(T_job, viz.TEACHER), width=4),
            marker=dict(size=10),
        )
        if ep and "baseline_omitted_acc" in ep[0]:
            scratch = ep
        if job.done and snap["result"]:
            finals[T_job] = snap["result"]["student"]["per_class_accuracy"][MISSING]
    if scratch is not None:
        fig.add_scatter(
            x=[e["epoch"] for e in scratch],
            y=[e["baseline_omitted_acc"] for e in scratch],
            mode="lines+markers",
            name=t("roles.scratch"),
            line=dict(color=viz.SCRATCH, width=4, dash="dot"),
            marker=dict(size=10),
        )
    viz.style(fig, t("lesson.s5.chart_title", c=MISSING), height=400)
    fig.update_xaxes(title=t("axes.epoch"), range=[0.5, EXP_EPOCHS + 0.5], dtick=1)
    fig.update_yaxes(title=t("lesson.s5.axis", c=MISSING), tickformat=".0%", range=[0, 1.02])
    for job in jobs:
        snap = job.snapshot()
        if not job.done:
            job_status(snap)
    st.plotly_chart(fig, key="lesson_missing_curves", width="stretch", theme=None)
    if len(finals) == len(MISSING_T):
        lo, hi = finals[MISSING_T[0]], finals[MISSING_T[1]]
        key = "lesson.s5.result" if hi > lo + 0.02 else "lesson.s5.result_flat"
        st.markdown(t(key, c=MISSING, t_lo=MISSING_T[0], t_hi=MISSING_T[1], lo=100 * lo, hi=100 * hi))


# ================================================================== 4. one-click experiment
def step_4() -> None:
    step_header(4, "lesson.s4.title")
    st.markdown(t("lesson.s4.text"))
    exp_job = state.find_job(st.session_state.get("lesson_exp_job"))
    exp_running = exp_job is not None and not exp_job.done
    e1, e2 = st.columns([2, 1], vertical_alignment="bottom")
    e1.select_slider(  # read by start_experiment from its key
        t("lesson.s4.fraction"),
        FRACTIONS,
        key="lesson_fraction",
        format_func=lambda v: f"{v:.0%}",
        help=t("lesson.s4.fraction_help"),
    )
    e2.button(
        t("lesson.s4.run"),
        type="primary",
        key="lesson_run_exp",
        disabled=exp_running,
        on_click=start_experiment,
        help=t("lesson.s4.run_help", epochs=EXP_EPOCHS),
        width="stretch",
    )
    if "lesson_job_error" in st.session_state:
        st.error(st.session_state.pop("lesson_job_error"))
    if exp_running:

        @st.fragment(run_every=1.0)
        def live_experiment() -> None:
            draw_experiment()
            j = state.find_job(st.session_state.get("lesson_exp_job"))
            if j is not None and j.done:
                st.rerun()

        live_experiment()
    else:
        draw_experiment()
    page_link("lab.py", "lesson.s4.lab_link", "🧪")


# ================================================================== 5. the missing class
def step_5() -> None:
    step_header(5, "lesson.s5.title")
    st.markdown(t("lesson.s5.text", c=MISSING))
    # why temperature matters here: the share of "3" in the teacher's soft targets on other digits
    not_c = y != MISSING
    mass = softmax(logits[not_c][:, None, :], T_GRID[None, :, None])[:, :, MISSING].mean(axis=0)
    mfig = go.Figure()
    mfig.add_scatter(
        x=T_GRID.tolist(), y=mass.tolist(), mode="lines", line=dict(color=viz.TEACHER, width=4), name=t("roles.teacher")
    )
    for T_m, where in zip(MISSING_T, ("top left", "bottom left")):
        v = float(softmax(logits[not_c], T_m)[:, MISSING].mean())
        mfig.add_scatter(
            x=[T_m],
            y=[v],
            mode="markers+text",
            marker=dict(size=14, color=viz.STUDENT),
            text=[f"T = {T_m:g}: {100 * v:.2g}%"],
            textposition=where,
            showlegend=False,
        )
    viz.style(mfig, t("lesson.s5.mass_title", c=MISSING), height=400)
    mfig.update_xaxes(
        type="log",
        title=t("axes.temperature"),
        tickvals=[0.3, 1, 2, 5, 10, 20, 40],
        ticktext=["0.3", "1", "2", "5", "10", "20", "40"],
    )
    mfig.update_yaxes(type="log", title=t("lesson.s5.mass_axis", c=MISSING), tickformat=".1%")
    mfig.update_layout(showlegend=False)
    n1, n2 = chrome.columns("lesson_mass", [1, 1], min_rem=20, gap="large")
    n1.plotly_chart(mfig, key="lesson_missing_mass", width="stretch", theme=None)
    with n2:
        st.markdown(t("lesson.s5.mass_text", c=MISSING, t_lo=MISSING_T[0], t_hi=MISSING_T[1]))
        ids = st.session_state.get("lesson_missing_jobs") or []
        miss_jobs = [state.find_job(i) for i in ids]
        miss_running = any(j is not None and not j.done for j in miss_jobs)
        st.button(
            t("lesson.s5.run", t_lo=MISSING_T[0], t_hi=MISSING_T[1]),
            type="primary",
            key="lesson_run_missing",
            disabled=miss_running,
            on_click=start_missing,
            help=t("lesson.s5.run_help", c=MISSING, epochs=EXP_EPOCHS),
            width="stretch",
        )
        if "lesson_missing_error" in st.session_state:
            st.error(st.session_state.pop("lesson_missing_error"))
    if miss_running:

        @st.fragment(run_every=1.0)
        def live_missing() -> None:
            draw_missing()
            ids_now = st.session_state.get("lesson_missing_jobs") or []
            if all(j is not None and j.done for j in (state.find_job(i) for i in ids_now)):
                st.rerun()

        live_missing()
    else:
        draw_missing()


def formulas(names: tuple[str, ...]) -> None:
    """Each method's formula from the registry, its logit-KD part written L_KD to fit."""
    for name in names:
        m = methods.get(name)
        st.markdown(f"**{t('methods.' + name)}**")
        st.latex(m.formula_latex().replace(KD_TERMS, r"\mathcal{L}_{\mathrm{KD}}"))


@st.fragment
def relational_view() -> None:
    """Samples per class and the two distance matrices: reruns only this view."""
    links.sync("lesson", FIELDS)
    per_class = int(
        st.select_slider(
            t("lesson.s6.per_class"), PER_CLASS, key="lesson_per_class", help=t("lesson.s6.per_class_help")
        )
    )
    idx = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(K)])
    xb = ds.x_test[torch.as_tensor(idx)]
    labels = [f"{classes[int(y[i])]}·{n % per_class + 1}" for n, i in enumerate(idx)]
    firsts = labels[::per_class]
    et = embeddings(f"{teacher.key}-rel-{per_class}", teacher.model, xb, "embed")
    es = embeddings(f"fresh-{s_arch}-rel-{per_class}", fresh, xb, "embed")
    dt, dsd = losses.normalised_distances(et).numpy(), losses.normalised_distances(es).numpy()
    zmax = float(max(dt.max(), dsd.max()))
    q1, q2 = st.columns([1, 1.2])
    for col, m, role, key in ((q1, dt, "teacher", "lesson_rkd_teacher"), (q2, dsd, "fresh", "lesson_rkd_student")):
        hfig = viz.heatmap(
            m,
            labels,
            labels,
            title=t(f"lesson.s6.rkd_{role}"),
            zmin=0,
            zmax=zmax,
            text_fmt=None,
            colorbar_title="ψ_D",
            height=360,
        )
        hfig.update_traces(showscale=role != "teacher")
        hfig.update_layout(margin=dict(l=30, r=10, t=50, b=30))
        hfig.update_xaxes(tickvals=firsts, ticktext=classes, title=None)
        hfig.update_yaxes(tickvals=firsts, ticktext=classes, title=None)
        col.plotly_chart(hfig, key=key, width="stretch", theme=None)
    rkd_d = float(losses.rkd_distance_loss(es, et))
    lab = y[idx]
    same = (lab[:, None] == lab[None, :]) & ~np.eye(len(idx), dtype=bool)
    across = lab[:, None] != lab[None, :]
    st.caption(
        t(
            "lesson.s6.rkd_caption",
            n=len(idx),
            loss=rkd_d,
            t_same=float(dt[same].mean()),
            t_diff=float(dt[across].mean()),
            s_same=float(dsd[same].mean()),
            s_diff=float(dsd[across].mean()),
        )
        if per_class > 1
        else t("lesson.s6.rkd_caption_one", n=len(idx), loss=rkd_d)
    )


@st.fragment
def contrastive_view() -> None:
    """tau and the contrastive probabilities: reruns only this view."""
    links.sync("lesson", FIELDS)
    tau = float(
        st.select_slider(
            t("lesson.s6.tau"), TAUS, key="lesson_tau", format_func=lambda v: f"{v:g}", help=t("lesson.s6.tau_help")
        )
    )
    one = np.array([np.flatnonzero(y == c)[0] for c in range(K)])
    xc = ds.x_test[torch.as_tensor(one)]
    g_t = F.normalize(metrics.predict_logits(teacher.model, xc), dim=1)
    found = state.ended_run()
    trained = found is not None and found[0].config.dataset == DATASET
    s_model = found[0].student if trained else fresh
    g_s = F.normalize(metrics.predict_logits(s_model, xc), dim=1)
    prob = torch.softmax(losses.contrastive_logits(g_s, g_t, tau), dim=1).numpy()
    nce = float(losses.info_nce_loss(g_s, g_t, tau))
    who = t("roles.distilled") if trained else t("lesson.s6.fresh")
    cfig = viz.heatmap(
        prob,
        [classes[int(y[i])] for i in one],
        [classes[int(y[i])] for i in one],
        title=t("lesson.s6.contrast_title", who=who, tau=tau),
        zmin=0,
        zmax=1,
        text_fmt=".2f",
        xtitle=t("lesson.s6.contrast_x"),
        ytitle=t("lesson.s6.contrast_y"),
        colorbar_title="p",
        height=440,
    )
    st.plotly_chart(cfig, key="lesson_contrast", width="stretch", theme=None)
    st.caption(
        t("lesson.s6.contrast_caption", loss=nce, chance=math.log(K), diag=float(np.mean(np.diag(prob))))
        + ("" if trained else " " + t("lesson.s6.contrast_hint"))
    )


# ================================================================== 6. beyond logits
def step_6() -> None:
    step_header(6, "lesson.s6.title")
    st.markdown(t("lesson.s6.text"))
    x_img = ds.x_test[i_img : i_img + 1]

    # --- feature distillation
    st.subheader(t("lesson.s6.feature_title"))
    st.markdown(t("lesson.s6.feature_text"))
    formulas(("fitnets", "at"))
    f1, f2 = st.columns([1, 1.2], gap="large")
    with f1:
        st.markdown(t("lesson.s6.feature_symbols"))
        page_link("feature_maps.py", "lesson.s6.feature_link", "🗺️")
    with f2:
        shapes = models.module_shapes(teacher.model, ds.in_shape)
        spatial = [n for n in teacher.model.tap_names if len(shapes.get(n, ())) == 3]
        feats = features.extract(teacher.model, x_img, spatial)
        img = image_of(i_img)
        cols = chrome.columns("lesson_att", len(spatial), min_rem=11)
        for j, (col, layer) in enumerate(zip(cols, spatial)):
            ov = features.attention_overlay(feats[layer][0], img.shape[-2:])
            afig = viz.overlay_figure(
                img,
                ov["overlay"].numpy(),
                title=t("lesson.s6.att_title", layer=layer, shape="×".join(map(str, shapes[layer]))),
                role="teacher",
                height=300,
            )
            afig.update_traces(showscale=False, selector=dict(name="attention"))
            col.plotly_chart(afig, key=f"lesson_att_{j}", width="stretch", theme=None)
        st.caption(t("lesson.s6.att_caption", c=classes[int(y[i_img])]))

    # --- relational distillation
    st.subheader(t("lesson.s6.relational_title"))
    st.markdown(t("lesson.s6.relational_text"))
    formulas(("rkd", "sp", "pkt"))
    st.latex(
        r"\psi_D(t_i, t_j) = \frac{\|t_i - t_j\|_2}{\mu}, \qquad \mu = \frac{1}{|\mathcal{P}|}"
        r"\sum_{(i,j) \in \mathcal{P}} \|t_i - t_j\|_2"
    )
    r1, r2 = st.columns([1, 1.5], gap="large")
    with r1:
        st.markdown(t("lesson.s6.relational_symbols"))
        page_link("relations.py", "lesson.s6.relational_link", "🕸️")

    with r2:
        relational_view()

    # --- contrastive distillation
    st.subheader(t("lesson.s6.contrastive_title"))
    st.markdown(t("lesson.s6.contrastive_text"))
    formulas(tuple(n for n in ("contrastive", "crd") if n in methods.METHODS))
    k1, k2 = st.columns([1, 1.5], gap="large")
    with k1:
        st.markdown(t("lesson.s6.contrastive_symbols"))
        page_link("contrastive.py", "lesson.s6.contrastive_link", "🧲")

    with k2:
        contrastive_view()


# ================================================================== 7. where KD is used and going
def step_7() -> None:
    step_header(7, "lesson.s7.title")
    w1, w2 = st.columns(2, gap="large")
    with w1:
        st.subheader(t("lesson.s7.used_title"))
        st.markdown(t("lesson.s7.used"))
        st.markdown(t("lesson.s7.lm_try"))
        page_link("language_models.py", "lesson.s7.lm_link", "💬")
    with w2:
        st.subheader(t("lesson.s7.going_title"))
        st.markdown(t("lesson.s7.going"))


# ================================================================== 8. quiz
def step_8() -> None:
    step_header(8, "lesson.s8.title")
    st.markdown(t("lesson.s8.text"))
    QUIZ = [("q1", 1), ("q2", 1), ("q3", 0), ("q4", 2), ("q5", 1), ("q6", 3)]  # (question, index of the right option)
    score = 0
    answered = 0
    for n, (q, right) in enumerate(QUIZ, 1):
        with st.container(border=True):
            options = [t(f"lesson.quiz.{q}.o{o + 1}") for o in range(4)]
            pick = st.radio(
                f"**{n}.** " + t(f"lesson.quiz.{q}.question"),
                [0, 1, 2, 3],
                index=None,
                key=f"lesson_quiz_{q}",
                format_func=options.__getitem__,
                help=t("lesson.s8.help"),
            )
            if pick is not None:
                answered += 1
                if pick == right:
                    score += 1
                    st.success(t("lesson.s8.right") + " " + t(f"lesson.quiz.{q}.why"), icon="✅")
                else:
                    st.error(t("lesson.s8.wrong", answer=options[right]) + " " + t(f"lesson.quiz.{q}.why"), icon="❌")
    if answered:
        st.markdown(t("lesson.s8.score", score=score, answered=answered, total=len(QUIZ)))
    if answered == len(QUIZ) and score == len(QUIZ):
        st.balloons()
    st.caption(t("lesson.outro"))


for n, draw in enumerate((step_1, step_2, step_3, step_4, step_5, step_6, step_7, step_8), 1):
    if screens.shows(n):
        draw()
screens.footer()

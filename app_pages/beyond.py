"""Beyond one teacher: an ensemble of teachers, chains of runs and teacher-free learning.

1. The ensemble: K teachers (seeds and/or two architectures), each trained once and cached;
   for one test image, each teacher's softened probabilities at T, its weight and the blend
   the student learns from; each teacher's test accuracy against the ensemble's.
2. Run a method (ensemble KD, born-again networks, teacher-assistant KD, deep mutual
   learning) as a background job of the shared job manager, with its results when done.

In presentation mode (``?present=1``) the two are one screen each (``chrome.Screens``,
``&step=2``); only the one shown runs. The engine is ``kd_core/beyond.py`` (registry:
``kd_core.methods.BEYOND``). Every text comes from the catalogues (``beyond.*`` in
``kd_app/locales/<lang>/beyond.json``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from kd_app import chrome, datasets, i18n, links, noise, state, views
from kd_app.i18n import t
from kd_core import beyond, data, methods, teachers, viz
from kd_core.config import Config
from kd_core.errors import KDError

DEFAULT_DATASET = "mnist-mini"
RUN_METHODS = ("ensemble", "born-again", "ta", "dml")
MEMBER_COLOURS = ("#9ecae1", "#a1d99b", "#fdd0a2", "#dadaeb", "#c7e9c0", "#fcbba1")
BLEND_COLOUR = "#d62728"
T_ENSEMBLE = 4.0  # the cached ensemble's own T; the page's T only re-softens the members' outputs


def method_title(name: str) -> str:
    return t(f"beyond.methods.{name}")


def pct(v) -> str:
    return "—" if v is None else f"{100 * float(v):.2f}%"


def stage_text(stage: str) -> str:
    """An inner run's name from the engine ("generation 2", "assistant", ...) in the session's language."""
    if not stage:
        return ""
    if stage.startswith("generation "):
        return t("beyond.res.generation", g=stage.split()[-1])
    key = f"beyond.res.chain.{stage.replace(' ', '_')}"
    return t(key, arch="").strip(" ()（）") if key in i18n.catalogue(i18n.DEFAULT) else stage


def random_image(n: int) -> None:
    st.session_state.by_index = int(np.random.default_rng().integers(0, n))


# presentation mode: one section per screen (?present=1&step=2), with Previous / Next
screens = chrome.Screens("beyond", [t("beyond.present.ens"), t("beyond.present.run")])
if screens.shows(1):
    st.title("👥 " + t("beyond.title"))
    st.caption(t("beyond.intro"))

# the address bar holds the page's settings: a shared link opens the same ensemble and run set-up
HALVES = [x / 2 for x in range(2, 41)]  # the T slider's values, 1.0 .. 20.0
FIELDS = [
    links.choice("dataset", "by_dataset", list(data.DATASETS), DEFAULT_DATASET),
    links.number("teachers", "by_k", 3, 1, 6, integer=True),
    links.choice("archs", "by_archs", [1, 2], 1),
    links.choice("weighting", "by_weighting", list(beyond.WEIGHTINGS), "mean"),
    links.number("T", "by_T", 4.0, options=HALVES),
    links.choice("method", "by_method", list(RUN_METHODS), "born-again"),
    links.number("generations", "by_generations", 3, 0, 10, integer=True),
    links.number("students", "by_students", 2, 2, 4, integer=True),
    links.number("beta", "by_beta", 1.0, 0.0, 20.0),
    links.number("epochs", "by_epochs", 3, 1, 50, integer=True),
    links.number("labels", "by_frac", 0.1, options=[x / 100 for x in range(1, 101)]),
    links.kept("by_index", 0),
    links.kept("by_assistant", ""),
]
links.sync("beyond", FIELDS)
screens.header()
if st.session_state.by_dataset not in data.DATASETS:
    st.session_state.by_dataset = DEFAULT_DATASET
ds_names = list(data.DATASETS)
ds_name = datasets.picker(t("beyond.dataset"), "by_dataset", help=t("beyond.dataset_help"))
ds = datasets.load(ds_name)  # None after a notice saying why and where its files go
if ds is None:
    st.stop()
subset = state.QUICK_SUBSET.get(ds_name)
classes = [str(c) for c in ds.classes]

# what both sections use (drawn or not in presentation mode): the ensemble's settings, whose
# controls are in section 1 (links.sync keeps their values while they are not drawn), and the jobs
ss = st.session_state
n_test = len(ds.y_test)
if not 0 <= int(ss.by_index) < n_test:
    ss.by_index = 0
k, archs, weighting, T = int(ss.by_k), int(ss.by_archs), ss.by_weighting, float(ss.by_T)
weight_labels = {w: t(f"beyond.ens.weighting_{w}") for w in beyond.WEIGHTINGS}
ens_params = {"teachers": k, "archs": archs, "weighting": beyond.WEIGHTINGS.index(weighting)}
manager = state.job_manager()


def missing_members(cfg: Config) -> int:
    c = cfg.resolved()
    return sum(
        1
        for arch, seed in beyond.member_specs(c)
        if not teachers.is_available(
            teachers.key(c.dataset, arch, c.teacher_epochs, seed=seed, train_subset=c.train_subset)
        )
    )


def ensemble_teacher(cfg: Config):
    """The ensemble, its members trained (with progress on this page) the first time — only
    when asked: opening the page never starts minutes of training by itself."""
    if missing_members(cfg) == 0:
        with st.spinner(t("beyond.ens.loading")):
            return beyond.ensemble_teacher(cfg)
    specs = beyond.member_specs(cfg)
    st.info(t("beyond.ens.missing", n=missing_members(cfg), k=len(specs)))
    if not st.button(t("beyond.ens.train_members"), key="by_train_members", type="primary"):
        return None
    with st.status(t("beyond.ens.training", k=len(specs)), expanded=True) as box:
        bar = st.progress(0.0, text=t("beyond.ens.starting"))

        def progress(epoch, total, acc):
            bar.progress(min(1.0, epoch / total), text=t("beyond.ens.epoch", epoch=epoch, total=total, acc=100 * acc))

        teacher = beyond.ensemble_teacher(cfg, progress=progress)
        box.update(label=t("beyond.ens.ready", k=len(specs)), state="complete", expanded=False)
    return teacher


# ------------------------------------------------------------------ results
def bar_chart(labels: list[str], values: list[float], title: str, colours: list[str], baseline: float | None = None):
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=[100 * v for v in values],
            marker_color=colours,
            text=[f"{100 * v:.1f}%" for v in values],
            textposition="outside",
            hovertemplate="%{x}: %{y:.2f}%<extra></extra>",
        )
    )
    lo = min([v for v in values] + ([baseline] if baseline is not None else []))
    if baseline is not None:
        fig.add_hline(
            y=100 * baseline,
            line_dash="dash",
            line_color="#555",
            annotation_text=t("beyond.res.scratch_line", acc=100 * baseline),
        )
    fig.update_yaxes(title_text=t("axes.test_accuracy") + " (%)", range=[max(0.0, 100 * lo - 10), 100.5])
    fig.update_xaxes(type="category")
    return viz.style(fig, title)


def dml_curves(epochs_log: list[dict], k_students: int, title: str):
    fig = go.Figure()
    xs = [e["epoch"] for e in epochs_log]
    for i in range(k_students):
        ys = [100 * e["student_accs"][i] for e in epochs_log if "student_accs" in e]
        fig.add_scatter(
            x=xs,
            y=ys,
            mode="lines+markers",
            name=t("beyond.res.dml_student", k=i + 1),
            line=dict(color=viz.EXTRA[i % len(viz.EXTRA)], width=3),
        )
    base = [100 * e["baseline_acc"] for e in epochs_log if e.get("baseline_acc") is not None]
    if base:
        fig.add_scatter(
            x=xs[: len(base)],
            y=base,
            mode="lines+markers",
            name=t("beyond.res.independent"),
            line=dict(color="#555555", width=2, dash="dash"),
        )
    fig.update_xaxes(title_text=t("axes.epoch"), dtick=1)
    fig.update_yaxes(title_text=t("axes.test_accuracy") + " (%)")
    return viz.style(fig, title)


def show_result(snap: dict) -> None:
    r = snap["result"]
    rcfg = snap["config"].resolved()
    name = rcfg.method
    st.subheader(t("beyond.res.header", method=method_title(name), id=snap["id"]))
    if r is None:
        return
    base = (r.get("baseline") or {}).get("test_accuracy")
    if name == "ensemble":
        c = st.columns(3)
        c[0].metric(t("beyond.res.ensemble_teacher"), pct(r["teacher"]["test_accuracy"]))
        c[1].metric(
            t("beyond.res.student"),
            pct(r["student"]["test_accuracy"]),
            delta=None
            if base is None
            else t("beyond.res.vs_scratch", delta=100 * (r["student"]["test_accuracy"] - base)),
        )
        c[2].metric(t("beyond.res.scratch"), pct(base))
        labels = [t("beyond.res.ensemble_teacher"), t("beyond.res.student")] + (
            [t("beyond.res.scratch")] if base is not None else []
        )
        values = [r["teacher"]["test_accuracy"], r["student"]["test_accuracy"]] + ([base] if base is not None else [])
        fig = bar_chart(
            labels, values, t("beyond.res.ensemble_title"), ["#1f77b4", "#d62728", "#7f7f7f"][: len(values)]
        )
    elif name == "born-again":
        gens = r["generations"]
        labels = [
            t("beyond.res.generation0") if g["generation"] == 0 else t("beyond.res.generation", g=g["generation"])
            for g in gens
        ]
        values = [g["test_accuracy"] for g in gens]
        fig = bar_chart(
            labels,
            values,
            t("beyond.res.born_again_title"),
            ["#1f77b4"] + [viz.EXTRA[i % len(viz.EXTRA)] for i in range(len(gens) - 1)],
            base,
        )
    elif name == "ta":
        labels = [t(f"beyond.res.chain.{row['role'].replace(' ', '_')}", arch=row["arch"]) for row in r["chain"]]
        values = [row["test_accuracy"] for row in r["chain"]]
        fig = bar_chart(
            labels, values, t("beyond.res.ta_title"), ["#1f77b4", "#ff7f0e", "#d62728", "#9467bd"][: len(values)], base
        )
    else:
        fig = dml_curves(r["epochs"], len(r["students"]), t("beyond.res.dml_title"))
        c = st.columns(len(r["students"]) + 1)
        for i, s in enumerate(r["students"]):
            c[i].metric(
                t("beyond.res.dml_student", k=i + 1),
                pct(s["test_accuracy"]),
                delta=None if base is None else t("beyond.res.vs_scratch", delta=100 * (s["test_accuracy"] - base)),
            )
        c[-1].metric(t("beyond.res.independent"), pct(base))
    st.plotly_chart(i18n.localise_figure(fig), key="by_result", width="stretch", theme=None)
    if name == "dml" and base is not None:  # the students are seeds of one network: their spread is the noise
        noise.spread_notice(
            t("beyond.res.dml_students"), [s["test_accuracy"] for s in r["students"]], t("beyond.res.independent"), base
        )
    elif name != "dml":
        noise.one_seed_notice()
    st.caption(t("beyond.res.wall", seconds=r.get("wall_seconds", 0.0)))


def show_job() -> None:
    j = manager.get(st.session_state.get("by_job_id", -1), owner=state.session_id())
    if j is None:
        st.info(t("beyond.run.none"))
        return
    snap = j.snapshot()
    what = method_title(snap["config"].method)
    if not j.done:
        pos = manager.queue_position(j)
        if pos is not None:
            st.info(t("beyond.run.queued", what=what, pos=pos))
        elif snap["status"] == "teacher":
            te = snap["teacher_epoch"]
            st.info(
                t("beyond.run.teacher", what=what)
                if te is None
                else t("beyond.run.teacher_epoch", what=what, epoch=te[0], total=te[1])
            )
        else:
            total = max(1, snap["total_steps"])
            stage = stage_text(snap.get("stage") or "")
            st.progress(
                min(1.0, snap["step"] / total),
                text=t("beyond.run.progress", what=what, stage=stage, step=snap["step"], total=total),
            )
            if snap["config"].method == "dml" and snap["epochs"]:
                fig = dml_curves(snap["epochs"], len(snap["epochs"][-1]["student_accs"]), t("beyond.res.dml_title"))
                st.plotly_chart(i18n.localise_figure(fig), key="by_live_dml", width="stretch", theme=None)
            elif snap["epochs"]:
                ev = snap["epochs"][-1]
                st.caption(
                    t(
                        "beyond.run.last_epoch",
                        stage=stage_text(ev.get("stage", "")),
                        epoch=ev["epoch"],
                        acc=100 * ev.get("student_acc", 0.0),
                    )
                )
        return
    if snap["status"] in ("finished", "stopped"):
        st.success(t("beyond.run.done", what=what, status=t(f"beyond.status.{snap['status']}")))
        show_result(snap)
    else:
        st.error(t("beyond.run.failed", what=what, status=snap["status"], message=snap["message"]))


# ------------------------------------------------------------------ 1. the ensemble
def the_ensemble() -> None:
    """K teachers and one test image: each member's softened probabilities, its weight, the blend."""
    st.header(t("beyond.ens.header"))
    ens_m = methods.get("ensemble")
    left, right = st.columns([1, 2.3], gap="large")
    with left:  # the controls of the shared settings above (k, archs, weighting, T, the image)
        st.slider(t("beyond.ens.k"), 1, 6, key="by_k", help=t("beyond.ens.k_help"))
        st.radio(t("beyond.ens.archs"), [1, 2], key="by_archs", horizontal=True, help=t("beyond.ens.archs_help"))
        st.radio(
            t("beyond.ens.weighting"),
            list(beyond.WEIGHTINGS),
            key="by_weighting",
            horizontal=True,
            format_func=weight_labels.get,
            help=t("beyond.ens.weighting_help"),
        )
        st.slider(t("beyond.ens.T"), 1.0, 20.0, step=0.5, key="by_T", help=t("beyond.ens.T_help"))
        index = views.number_and_die(
            t("beyond.ens.index"),
            n_test - 1,
            "by_index",
            t("beyond.ens.index_help", n=n_test),
            "by_random",
            random_image,
            t("beyond.ens.random_help"),
            args=(n_test,),
        )
        img = np.clip(viz.to_display(ds.denormalise(ds.x_test[index : index + 1])[0].cpu().numpy()), 0.0, 1.0)
        f = max(1, 112 // img.shape[0])
        c1, c2 = st.columns([1, 2], vertical_alignment="center")
        c1.image(np.repeat(np.repeat(img, f, axis=0), f, axis=1), output_format="PNG", width=112)
        c2.markdown(t("beyond.ens.image_text", index=index, cls=classes[int(ds.y_test[index])]))
    ens_cfg = Config(dataset=ds_name, method="ensemble", temperature=T_ENSEMBLE, params=ens_params, train_subset=subset)
    with right:
        try:
            teacher = ensemble_teacher(ens_cfg)
            soft = beyond.image_soft_targets(ens_cfg, index, "test", temperature=T) if teacher is not None else None
        except KDError as e:
            st.error(t("beyond.ens.cannot", error=e))
            teacher = soft = None
        if soft is not None:
            names = [
                t("beyond.ens.member", k=i + 1, arch=m["arch"], seed=m["seed"]) for i, m in enumerate(soft["members"])
            ]
            series = {name: m["probs"] for name, m in zip(names, soft["members"])}
            blend_name = t("beyond.ens.blend")
            series[blend_name] = soft["blend"]
            fig = viz.prob_bars(series, classes, t("beyond.ens.bars_title", index=index, T=T), highlight=soft["label"])
            for i, trace in enumerate(fig.data):
                if trace.name == blend_name:
                    trace.marker.color = BLEND_COLOUR
                    trace.marker.line = dict(color="#000000", width=1.5)
                else:
                    trace.marker.color = MEMBER_COLOURS[i % len(MEMBER_COLOURS)]
                trace.hovertemplate = f"{t('axes.class')} %{{x}}: %{{y:.4f}}<extra>{trace.name}</extra>"
            fig.update_layout(
                height=470, margin=dict(b=140), legend=dict(orientation="h", x=0.0, y=-0.3, yanchor="top")
            )
            st.plotly_chart(i18n.localise_figure(fig), key="by_bars", width="stretch", theme=None)
            rows = [
                {
                    t("beyond.ens.col_member"): name,
                    t("beyond.ens.col_arch"): m["arch"],
                    t("beyond.ens.col_seed"): str(m["seed"]),
                    t("beyond.ens.col_weight"): m["weight"],
                    t("beyond.ens.col_acc"): 100 * m["test_accuracy"],
                }
                for name, m in zip(names, soft["members"])
            ]
            ens_acc = teacher.info["test_accuracy_at_T1"]
            rows.append(
                {
                    t("beyond.ens.col_member"): t("beyond.ens.ensemble_row"),
                    t("beyond.ens.col_arch"): "—",
                    t("beyond.ens.col_seed"): "—",
                    t("beyond.ens.col_weight"): sum(m["weight"] for m in soft["members"]),
                    t("beyond.ens.col_acc"): 100 * ens_acc,
                }
            )
            st.dataframe(
                pd.DataFrame(rows),
                key="by_members",
                hide_index=True,
                width="stretch",
                column_config={
                    t("beyond.ens.col_weight"): st.column_config.NumberColumn(format="%.3f"),
                    t("beyond.ens.col_acc"): st.column_config.NumberColumn(format="%.2f%%"),
                },
            )
            best = max(m["test_accuracy"] for m in soft["members"])
            m1, m2 = st.columns(2)
            m1.metric(t("beyond.ens.best_member"), pct(best))
            m2.metric(
                t("beyond.ens.ensemble_acc"),
                pct(ens_acc),
                delta=t("beyond.ens.vs_best", delta=100 * (ens_acc - best)),
                help=t("beyond.ens.ensemble_acc_help"),
            )
            st.caption(t(f"beyond.ens.weights_caption_{soft['weighting']}"))

    with st.expander(t("beyond.explain_title", method=method_title("ensemble")), expanded=False):
        st.markdown(t("beyond.explain.ensemble"))
        st.latex(ens_m.formula_latex(T, None, ens_params))


# ------------------------------------------------------------------ 2. run a method
def run_a_method() -> None:
    """A method's settings and formula, Train / Stop, then its run live and its results."""
    st.header(t("beyond.run.header"))
    method_labels = {m: method_title(m) for m in RUN_METHODS}
    run_left, run_right = st.columns([1, 2.3], gap="large")
    with run_left:
        method = st.radio(
            t("beyond.run.method"),
            list(RUN_METHODS),
            key="by_method",
            format_func=method_labels.get,
            help=t("beyond.run.method_help"),
        )
        params: dict = {}
        assistant = ""
        if method == "ensemble":
            params = dict(ens_params)
            st.caption(t("beyond.run.ensemble_uses", k=k, archs=archs, weighting=weight_labels[weighting]))
        elif method == "born-again":
            params["generations"] = int(
                st.number_input(
                    t("beyond.run.generations"),
                    0,
                    10,
                    step=1,
                    key="by_generations",
                    help=t("beyond.run.generations_help"),
                )
            )
        elif method == "ta":
            preset = beyond.ASSISTANT.get(ds_name, beyond.ASSISTANT_DEFAULT)
            assistant = st.text_input(
                t("beyond.run.assistant"),
                key="by_assistant",
                placeholder=preset,
                help=t("beyond.run.assistant_help", preset=preset),
            ).strip()
        else:
            params["students"] = int(
                st.slider(t("beyond.run.students"), 2, 4, key="by_students", help=t("beyond.run.students_help"))
            )
            params["beta"] = float(
                st.number_input(
                    t("beyond.run.beta"), 0.0, 20.0, step=0.5, key="by_beta", help=t("beyond.run.beta_help")
                )
            )
        epochs = int(
            st.number_input(t("beyond.run.epochs"), 1, 50, step=1, key="by_epochs", help=t("beyond.run.epochs_help"))
        )
        frac = float(
            st.slider(t("beyond.run.frac"), 0.01, 1.0, step=0.01, key="by_frac", help=t("beyond.run.frac_help"))
        )
        cfg = Config(
            dataset=ds_name,
            method=method,
            temperature=T if method == "ensemble" else 4.0,
            params=params,
            epochs=epochs,
            labeled_fraction=frac,
            assistant=assistant,
            train_subset=subset,
        )
        error = None
        try:
            cfg.resolved().validate()
        except KDError as e:
            error = e
            st.error(t("beyond.run.bad", error=e))
        job = manager.get(st.session_state.get("by_job_id", -1), owner=state.session_id())
        running = job is not None and not job.done
        b1, b2 = st.columns(2)
        start = b1.button(t("beyond.run.train"), key="by_train", type="primary", disabled=error is not None or running)
        if running and b2.button(t("beyond.run.stop"), key="by_stop"):
            job.stop()
        if start:
            try:
                job = manager.submit(cfg, owner=state.session_id())
                st.session_state.by_job_id = job.id
                running = True
            except KDError as e:
                st.error(t("beyond.run.bad", error=e))

    with run_right:
        m = methods.get(method)
        st.markdown(f"**{method_title(method)}** — " + t(f"beyond.explain.{method}"))
        st.latex(
            m.formula_latex(
                cfg.temperature if m.uses_temperature else None,
                cfg.alpha if m.uses_alpha else None,
                methods.get(method).resolve_params(params) if error is None else None,
            )
        )

    if running:

        @st.fragment(run_every=1.0)
        def live() -> None:
            show_job()
            j = manager.get(st.session_state.get("by_job_id", -1), owner=state.session_id())
            if j is not None and j.done:
                st.rerun()  # once: the page settles with the results

        live()
    else:
        show_job()


for n, draw in enumerate((the_ensemble, run_a_method), 1):
    if screens.shows(n):
        draw()
screens.footer()

links.settle(FIELDS)

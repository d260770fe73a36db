"""Distillation lab: choose teacher, student, method, T and alpha; train live in a worker
thread; compare the distilled student with the same student trained from scratch. Every text
comes from the catalogues (``kd_app/locales/<lang>/lab.json``, ``kd_app.i18n``)."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from kd_app import datasets, i18n, links, method_effect, noise, state
from kd_app.i18n import t
from kd_core import data, methods, models, train, viz
from kd_core.config import Config
from kd_core.errors import DataUnavailableError, KDError

TEMPERATURES = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0]
LEARNING_RATES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1]
FRACTIONS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
BATCHES = [16, 32, 64, 128, 256, 512]
NO_CLASS = "none"
# the per-class bars and the results table name the rows by role (English names pick the colours)
ROLE_KEYS = {"teacher": "roles.teacher", "distilled student": "roles.distilled", "scratch student": "roles.scratch"}


def known(key: str) -> bool:
    """Whether the catalogues hold ``key`` (texts of methods and parameters added to
    ``kd_core`` later fall back to their English text rather than to the raw key)."""
    return key in i18n.catalogue(i18n.DEFAULT)


def dataset_title(name: str) -> str:
    return t("datasets." + name) if known("datasets." + name) else data.DATASETS[name].title


def method_title(name: str) -> str:
    return t("methods." + name) if known("methods." + name) else methods.METHODS[name].title


def method_summary(m) -> str:
    key = f"lab.methods.{m.name}.summary"
    return t(key) if known(key) else m.summary


def param_text(m, p, what: str) -> str:
    """A method parameter's ``label`` (readable, from the registry, with the formula's
    symbol) or ``help``."""
    key = f"lab.params.{m.name}.{p.name}.{what}"
    text = t(key) if known(key) else (p.label if what == "label" else p.help)
    if what != "label":
        return text
    if text == p.name:  # a catalogue that still holds the raw name
        text = p.label or p.name
    return f"{text} (${p.symbol}$)" if p.symbol else text


st.title("🧪 " + t("lab.title"))
st.caption(t("lab.intro"))

# a shared link (?method=dkd&temperature=2...) sets the controls on the first visit; bad values -> notices
state.keep_all("lab_")  # the controls as they were before a visit to another page
links.restore_lab(
    options={"lab_T": TEMPERATURES, "lab_lr": LEARNING_RATES, "lab_fraction": FRACTIONS, "lab_batch": BATCHES},
    limits={"lab_epochs": (1, 50), "lab_seed": (0, 10_000)},
    no_class=NO_CLASS,
)
D = Config()
defaults = {
    "lab_dataset": D.dataset,
    "lab_method": D.method,
    "lab_T": D.temperature,
    "lab_alpha": D.alpha,
    "lab_epochs": D.epochs,
    "lab_lr": D.lr,
    "lab_batch": D.batch_size,
    "lab_fraction": D.labeled_fraction,
    "lab_omit": NO_CLASS,
    "lab_seed": D.seed,
    "lab_baseline": D.baseline,
}
for k, v in defaults.items():
    st.session_state.setdefault(k, v)

job = state.lab_job()
running = job is not None and not job.done

# at 1280 px the set-up column must fit "mnist-mini — MNIST mini (5,000 real digits)" and "cnn-32-64"
controls, output = st.columns([1.35, 2], gap="large")

# ------------------------------------------------------------------ controls
with controls:
    st.subheader(t("lab.setup"))

    # unavailable datasets (no files, offline) are marked; choosing one says why next to Train
    ds_name = datasets.picker(t("lab.dataset"), "lab_dataset", help=t("lab.dataset_help"))
    ds_available = datasets.availability(ds_name).available
    info = data.DATASETS[ds_name]
    t_default, s_default = models.preset(ds_name)
    choices = models.suggested_models(ds_name)
    c1, c2 = st.columns(2)
    teacher_arch = c1.selectbox(
        t("lab.teacher"),
        choices,
        index=choices.index(t_default),
        key=f"lab_teacher_{ds_name}",
        help=t("lab.teacher_help"),
    )
    student_arch = c2.selectbox(
        t("lab.student"),
        choices,
        index=choices.index(s_default),
        key=f"lab_student_{ds_name}",
        help=t("lab.student_help"),
    )
    method_labels = {n: method_title(n) for n in methods.METHODS}
    method_name = st.selectbox(
        t("lab.method"),
        list(methods.METHODS),
        key="lab_method",
        format_func=method_labels.get,
        help=t("lab.method_help"),
    )
    method = methods.get(method_name)
    st.caption(method_summary(method))

    T = st.select_slider(
        t("lab.T"), TEMPERATURES, key="lab_T", disabled=not method.uses_temperature, help=t("lab.T_help")
    )
    alpha = st.slider(
        t("lab.alpha"), 0.0, 1.0, step=0.05, key="lab_alpha", disabled=not method.uses_alpha, help=t("lab.alpha_help")
    )
    params = {}
    for p in method.params:
        key = f"lab_p_{method.name}_{p.name}"
        label, p_help = param_text(method, p, "label"), param_text(method, p, "help")
        if p.log or p.integer:
            params[p.name] = st.number_input(
                label,
                min_value=float(p.low),
                max_value=float(p.high),
                value=float(p.default),
                step=float(max(p.default / 10, 1.0 if p.integer else 1e-3)),
                key=key,
                help=p_help,
                format="%g",
            )
        else:
            params[p.name] = st.slider(label, float(p.low), float(p.high), float(p.default), key=key, help=p_help)

    pairs: list[str] = []
    if method.needs_features:
        # Layer pairs by the models' real module names: the taps (stages, embedding) first;
        # "every named layer" offers all modules. Impossible pairings are refused below
        # (resolve_pairs) with an error that keeps Train disabled.
        from kd_core.features import aligned_pairs

        try:
            t_model = models.build(teacher_arch, info.in_shape, info.num_classes)
            s_model = models.build(student_arch, info.in_shape, info.num_classes)
            t_shapes = models.module_shapes(t_model, info.in_shape)
            s_shapes = models.module_shapes(s_model, info.in_shape)
            kind = method.tap_kind if method.tap_kind != "any" else method.prefer
            dt, ds_ = train.default_pair(method, t_model, s_model, info.in_shape, strict=False)
            # defaults: the trainer's own pair, then the other pairs at the same relative depth
            # (deepest first, the method's preferred kind of layer first)
            others = [
                pr
                for pr in reversed(aligned_pairs(t_model, s_model, info.in_shape))
                if pr != (dt, ds_)
                and pr[0] in t_model.tap_names
                and pr[1] in s_model.tap_names
                and (method.tap_kind != "spatial" or len(t_shapes[pr[0]]) == len(s_shapes[pr[1]]) == 3)
            ]
            others.sort(key=lambda pr: models.tap_kind(t_shapes[pr[0]]) != kind)
            suggested = [(dt, ds_)] + others
            n_pairs = 1
            if method.multi_pair:
                n_pairs = int(
                    st.number_input(
                        t("lab.layers.pairs"),
                        1,
                        4,
                        value=1,
                        key=f"lab_npairs_{method.name}",
                        help=t("lab.layers.pairs_help"),
                    )
                )
            with st.expander(t("lab.layers.all"), expanded=False):
                every = st.toggle(t("lab.layers.every"), key="lab_all_layers", help=t("lab.layers.every_help"))
                st.caption(t("lab.layers.shapes_caption"))
                l1, l2 = st.columns(2)
                l1.dataframe(
                    pd.DataFrame(
                        {
                            t("lab.layers.col_teacher"): list(t_shapes),
                            t("lab.layers.col_shape"): ["×".join(map(str, v)) for v in t_shapes.values()],
                        }
                    ),
                    hide_index=True,
                    height=200,
                    key="lab_layers_teacher",
                )
                l2.dataframe(
                    pd.DataFrame(
                        {
                            t("lab.layers.col_student"): list(s_shapes),
                            t("lab.layers.col_shape"): ["×".join(map(str, v)) for v in s_shapes.values()],
                        }
                    ),
                    hide_index=True,
                    height=200,
                    key="lab_layers_student",
                )
            t_opts = list(t_shapes) if every else list(t_model.tap_names)
            s_opts = list(s_shapes) if every else list(s_model.tap_names)

            def shape_of(shapes):
                return lambda n: f"{n}  ({'×'.join(map(str, shapes[n]))})" if n in shapes else n

            for i in range(n_pairs):
                # keyed by method too: switching method starts from that method's sensible pair
                kt = f"lab_tl_{method.name}_{teacher_arch}" + (f"_{i + 1}" if i else "")
                ks = f"lab_sl_{method.name}_{student_arch}" + (f"_{i + 1}" if i else "")
                for k, opts in ((kt, t_opts), (ks, s_opts)):
                    if k in st.session_state and st.session_state[k] not in opts:
                        del st.session_state[k]  # a module of the full list, now hidden
                want_t, want_s = suggested[min(i, len(suggested) - 1)]
                num = f" {i + 1}" if n_pairs > 1 else ""
                p1, p2 = st.columns(2)
                tl = p1.selectbox(
                    t("lab.layers.teacher", num=num),
                    t_opts,
                    index=t_opts.index(want_t) if want_t in t_opts else 0,
                    key=kt,
                    format_func=shape_of(t_shapes),
                    help=t("lab.layers.teacher_help"),
                )
                sl = p2.selectbox(
                    t("lab.layers.student", num=num),
                    s_opts,
                    index=s_opts.index(want_s) if want_s in s_opts else 0,
                    key=ks,
                    format_func=shape_of(s_shapes),
                    help=t("lab.layers.student_help"),
                )
                pairs.append(f"{tl}:{sl}")
            if len(set(pairs)) < len(pairs):
                st.warning(t("lab.layers.twice"))
        except KDError as e:
            st.error(t("lab.kd_error", error=e))

    st.subheader(t("lab.training"))
    c1, c2 = st.columns(2)
    epochs = c1.number_input(t("lab.epochs"), 1, 50, key="lab_epochs", help=t("lab.epochs_help"))
    seed = c2.number_input(t("lab.seed"), 0, 10_000, key="lab_seed", help=t("lab.seed_help"))
    lr = c1.select_slider(
        t("lab.lr"), LEARNING_RATES, key="lab_lr", format_func=lambda v: f"{v:g}", help=t("lab.lr_help")
    )
    batch = c2.selectbox(t("lab.batch"), BATCHES, key="lab_batch", help=t("lab.batch_help"))
    fraction = st.select_slider(
        t("lab.fraction"), FRACTIONS, key="lab_fraction", format_func=lambda v: f"{v:.0%}", help=t("lab.fraction_help")
    )
    class_opts = [NO_CLASS] + list(range(info.num_classes))
    if st.session_state.lab_omit not in class_opts:
        st.session_state.lab_omit = NO_CLASS
    class_labels = {c: t("lab.omit_none") if c == NO_CLASS else f"{c}" for c in class_opts}
    omit = st.selectbox(
        t("lab.omit"), class_opts, key="lab_omit", format_func=class_labels.get, help=t("lab.omit_help")
    )
    baseline = st.checkbox(t("lab.baseline"), key="lab_baseline", help=t("lab.baseline_help"))

    cfg = Config(
        dataset=ds_name,
        teacher=teacher_arch,
        student=student_arch,
        method=method_name,
        temperature=float(T),
        alpha=float(alpha),
        params=params,
        pairs=pairs,
        epochs=int(epochs),
        lr=float(lr),
        batch_size=int(batch),
        seed=int(seed),
        labeled_fraction=float(fraction),
        omit_class=None if omit == NO_CLASS else int(omit),
        baseline=bool(baseline),
    )
    problem = None
    data_problem = None if ds_available else datasets.reason(datasets.availability(ds_name))
    try:
        cfg.resolved().validate()
        if ds_available:
            try:
                train.check_batch_fits(cfg, state.dataset(ds_name))
            except DataUnavailableError:  # files there but unreadable: say so without the raw error
                data_problem = datasets.unreadable(ds_name)
        if method.needs_features:  # refuse impossible layer pairings before training
            from kd_core.train import resolve_pairs

            resolve_pairs(
                method,
                models.build(teacher_arch, info.in_shape, info.num_classes),
                models.build(student_arch, info.in_shape, info.num_classes),
                info.in_shape,
                cfg.parsed_pairs(),
            )
    except KDError as e:
        problem = str(e)
        st.error(t("lab.kd_error", error=problem))

# ------------------------------------------------------------------ formula + buttons
with output:
    st.latex(method.formula_latex(T if method.uses_temperature else None, alpha if method.uses_alpha else None, params))
    if method.uses_alpha:
        st.caption(t("lab.formula_caption"))
    b1, b2, why = st.columns([1, 1, 3])
    if data_problem is not None:  # the reason sits next to the disabled button, not off screen
        why.warning(data_problem, icon="📦")
    if b1.button(
        t("lab.train"),
        type="primary",
        disabled=running or problem is not None or data_problem is not None,
        key="lab_train",
        help=t("lab.train_help"),
    ):
        try:
            new = state.job_manager().submit(cfg, owner=state.session_id(), on_end=state.save_lab_run)
            st.session_state.kd_lab_job_id = new.id
            job, running = new, True
        except KDError as e:
            st.error(t("lab.cannot_start", error=e))
    if b2.button(t("lab.stop"), disabled=not running, key="lab_stop", help=t("lab.stop_help")):
        job.stop()


# ------------------------------------------------------------------ live view
def draw_progress(snap: dict) -> None:
    status = snap["status"]
    if status == "queued":
        pos = state.job_manager().queue_position(job)
        st.info(t("lab.progress.queued_position", pos=pos) if pos else t("lab.progress.queued"))
    elif status == "teacher":
        te = snap["teacher_epoch"]
        frac = te[0] / te[1] if te else 0.0
        st.progress(
            frac,
            text=t("lab.progress.teacher_epoch", epoch=te[0], total=te[1])
            if te
            else t("lab.progress.teacher_preparing"),
        )
    elif status == "running":
        total = snap["total_steps"] or 1
        eta = job.eta_seconds()
        st.progress(
            min(snap["step"] / total, 1.0),
            text=t("lab.progress.step", step=snap["step"], total=total)
            if eta is None
            else t("lab.progress.step_eta", step=snap["step"], total=total, eta=eta),
        )
    elif status in ("finished", "stopped"):
        st.success(t(f"lab.progress.{status}", steps=snap["step"]))
    elif status == "diverged":
        st.error(t("lab.progress.diverged", message=snap["message"]))
    elif status == "error":
        st.error(t("lab.progress.failed", message=snap["message"]))


def accuracy_figure(fig, teacher_acc: float | None = None):
    """viz.accuracy_curves / agreement_curves in the session's language: the teacher's
    line label has a number in it, so it is rebuilt here; the rest is the engine's fixed text."""
    if teacher_acc is not None and fig.layout.annotations:
        fig.layout.annotations[0].text = t("roles.teacher_line", acc=100 * teacher_acc)
    return i18n.localise_figure(fig)


def loss_figure(fig):
    """viz.loss_curves in the session's language: "student: <term>" names keep the term's
    identifier (ce, kd, ...); the axes and "scratch: ce" are the engine's fixed text."""
    for trace in fig.data:
        if trace.name and trace.name.startswith("student: "):
            trace.name = t("lab.charts.student_term", term=trace.name[len("student: ") :])
    return i18n.localise_figure(fig)


def per_class_figure(fig):
    """viz.per_class_bars in the session's language, hover texts included (built with the
    English role names, which pick the role colours)."""
    for trace in fig.data:
        name = t(ROLE_KEYS[trace.name]) if trace.name in ROLE_KEYS else trace.name
        trace.name = name
        trace.hovertemplate = f"{t('axes.class')} %{{x}}: %{{y:.1%}}<extra>{name}</extra>"
    return i18n.localise_figure(fig)


def draw_curves(snap: dict) -> None:
    cfg_run: Config = snap["config"]
    total_epochs = cfg_run.epochs
    epochs = snap["epochs"]
    teacher_acc = epochs[0]["teacher_acc"] if epochs else None
    c1, c2 = st.columns(2)
    c1.plotly_chart(
        accuracy_figure(viz.accuracy_curves(epochs, teacher_acc, total_epochs, t("lab.charts.accuracy")), teacher_acc),
        key="lab_acc_chart",
        width="stretch",
    )
    c2.plotly_chart(
        loss_figure(viz.loss_curves(snap["steps"], t("lab.charts.loss"))), key="lab_loss_chart", width="stretch"
    )
    if epochs:
        c1.plotly_chart(
            accuracy_figure(viz.agreement_curves(epochs, total_epochs, t("lab.charts.agreement"))),
            key="lab_agree_chart",
            width="stretch",
        )
        if cfg_run.omit_class is not None:
            c2.plotly_chart(
                accuracy_figure(
                    viz.accuracy_curves(
                        epochs, None, total_epochs, t("lab.charts.omitted", c=cfg_run.omit_class), key="omitted_acc"
                    )
                ),
                key="lab_omit_chart",
                width="stretch",
            )


def draw_results(snap: dict) -> None:
    r = snap["result"]
    if not r:
        return
    st.subheader(t("lab.results.header"))
    c = r["config"]
    omitted_text = t("lab.results.omitted", c=c["omit_class"]) if c.get("omit_class") is not None else ""
    st.caption(
        t(
            "lab.results.caption",
            id=snap["id"],
            method=c["method"],
            teacher=c["teacher"],
            student=c["student"],
            dataset=c["dataset"],
            T=c["temperature"],
            alpha=c["alpha"],
            epochs=c["epochs"],
            fraction=c["labeled_fraction"],
            omitted=omitted_text,
            seed=c["seed"],
        )
    )
    col = {
        name: t(f"lab.results.col_{name}")
        for name in ("model", "arch", "acc", "agreement", "ece", "params", "flops", "latency", "compression", "speedup")
    }
    rows = []
    for role, label in (("teacher", "roles.teacher"), ("student", "roles.distilled"), ("baseline", "roles.scratch")):
        m = r.get(role)
        if m is None:
            continue
        rows.append(
            {
                col["model"]: t(label),
                col["arch"]: m["arch"],
                col["acc"]: m["test_accuracy"],
                col["agreement"]: m.get("agreement", math.nan) if role != "teacher" else 1.0,
                col["ece"]: m["ece"],
                col["params"]: m["params"],
                col["flops"]: m["flops"] / 1e6,
                col["latency"]: m["latency_ms"],
                col["compression"]: m.get("compression", 1.0),
                col["speedup"]: m.get("speedup", 1.0),
            }
        )
    df = pd.DataFrame(rows).set_index(col["model"])
    st.dataframe(
        df.style.format(
            {
                col["acc"]: "{:.1%}",
                col["agreement"]: "{:.1%}",
                col["ece"]: "{:.3f}",
                col["params"]: "{:,}",
                col["flops"]: "{:.2f}",
                col["latency"]: "{:.3f}",
                col["compression"]: "{:.1f}",
                col["speedup"]: "{:.1f}",
            }
        ),
        width="stretch",
        key="lab_results",
    )
    if noise.failed_run(r, snap["status"]):  # diverged or at chance: no "gained 0.0 points"
        pass
    elif "baseline" in r:
        gain = r["student"]["test_accuracy"] - r["baseline"]["test_accuracy"]
        st.markdown(
            t(
                "lab.results.gained" if gain >= 0 else "lab.results.lost",
                points=abs(100 * gain),
                student=100 * r["student"]["test_accuracy"],
                scratch=100 * r["baseline"]["test_accuracy"],
            )
        )
        if abs(gain) < 0.02:  # one seed each: a difference this small says nothing yet
            st.caption(t("noise.lab_small_gain"))
    classes = r["classes"]
    omitted = r["config"].get("omit_class")
    per_class = {"teacher": r["teacher"]["per_class_accuracy"], "distilled student": r["student"]["per_class_accuracy"]}
    if "baseline" in r:
        per_class["scratch student"] = r["baseline"]["per_class_accuracy"]
    c1, c2 = st.columns(2)
    c1.plotly_chart(
        per_class_figure(viz.per_class_bars(per_class, classes, omitted, t("lab.charts.per_class"))),
        key="lab_per_class",
        width="stretch",
    )
    conf = r["student"]["confusion"]
    c2.plotly_chart(
        i18n.localise_figure(
            viz.heatmap(
                conf,
                classes,
                classes,
                t("lab.charts.confusion"),
                colorscale="Blues",
                text_fmt="d",
                xtitle=t("lab.charts.predicted"),
                ytitle=t("lab.charts.true"),
            )
        ),
        key="lab_confusion",
        width="stretch",
    )
    st.caption(
        t(
            "lab.results.footer",
            steps=r["steps"],
            seconds=r["student"]["train_seconds"],
            rate=r["student"]["samples_per_second"],
            device=r["device"],
        )
    )


def draw_job() -> None:
    j = state.lab_job()
    if j is None:
        if data_problem is None:
            st.info(t("lab.press_train"))
        return
    snap = j.snapshot()
    draw_progress(snap)
    if snap["status"] == "queued":
        return  # nothing to plot yet: a queue of waiting sessions costs the server almost nothing
    draw_curves(snap)
    if j.done:
        draw_results(snap)


with output:
    if running:
        # once a second while it trains; a queued run only updates its position, every 3 s
        waiting = job.status == "queued"

        @st.fragment(run_every=3.0 if waiting else 1.0)
        def live() -> None:
            draw_job()
            j = state.lab_job()
            if j is not None and (j.done or (waiting and j.status != "queued")):
                st.rerun()  # redraw the whole page once: buttons re-enable, results show

        live()
    else:
        draw_job()

with output:
    method_effect.section(cfg)  # the method alone, KD alone, both and scratch, over seeds

links.write_lab(cfg)  # the address bar always holds this set-up: copy it to share it
state.remember_all("lab_", skip=("lab_train", "lab_stop"))

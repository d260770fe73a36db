"""Distillation lab: choose teacher, student, method, T and alpha; train live in a worker
thread; compare the distilled student with the same student trained from scratch. Every text
comes from the catalogues (``kd_app/locales/<lang>/lab.json``, ``kd_app.i18n``)."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from kd_app import chrome, datasets, i18n, links, method_effect, noise, state, views
from kd_app.i18n import t
from kd_core import data, methods, models, train, viz
from kd_core.config import Config
from kd_core.errors import DataUnavailableError, KDError

TEMPERATURES, LEARNING_RATES = links.TEMPERATURES, links.LEARNING_RATES
FRACTIONS, BATCHES, NO_CLASS = links.FRACTIONS, links.BATCHES, links.NO_CLASS
# the per-class bars and the results table name the rows by role (English names pick the colours)
ROLE_KEYS = {"teacher": "roles.teacher", "distilled student": "roles.distilled", "scratch student": "roles.scratch"}


def method_summary(m) -> str:
    key = f"lab.methods.{m.name}.summary"
    return t(key) if views.known(key) else m.summary


def param_text(m, p, what: str) -> str:
    """A method parameter's ``label`` (readable, from the registry, with the formula's
    symbol) or ``help``."""
    key = f"lab.params.{m.name}.{p.name}.{what}"
    text = t(key) if views.known(key) else (p.label if what == "label" else p.help)
    if what != "label":
        return text
    if text == p.name:  # a catalogue that still holds the raw name
        text = p.label or p.name
    return f"{text} (${p.symbol}$)" if p.symbol else text


# ------------------------------------------------------------------ settings
def restore_settings() -> None:
    """The controls as they were before a visit to another page; on the first visit, a
    shared link's settings (?method=dkd&T=2...; bad values -> notices) and its saved run
    (?run=<id>: reopened from the run store, so a reload finds its results again)."""
    links.keep_lab()
    first = "_kd_links_restored_lab" not in st.session_state
    links.restore_lab()
    D = Config()
    for r in links.lab_settings("", ""):
        if r.config in ("teacher", "student"):
            continue
        default = NO_CLASS if r.config == "omit_class" else getattr(D, r.config)
        st.session_state.setdefault(r.key, default)
    run_id = st.query_params.get(links.RUN)
    if first and run_id and state.current_run() is None:
        try:
            state.reload_run(run_id)
        except KDError as e:
            links.show([t("links.ignored", name=links.RUN, value=run_id, reason=str(e))])


def dataset_picker() -> str:
    """Unavailable datasets (no files, offline) are marked; choosing one says why next to Train."""
    return datasets.picker(t("lab.dataset"), "lab_dataset", help=t("lab.dataset_help"))


def model_pickers(ds_name: str) -> tuple[str, str]:
    """The teacher and the student, from the models suggested for the dataset (its preset first)."""
    choices = models.suggested_models(ds_name)
    out = []
    for role, default, col in zip(
        ("teacher", "student"), models.preset(ds_name), chrome.columns("lab_nets", 2, min_rem=8)
    ):
        key = links.lab_model_key(role, ds_name)
        if st.session_state.get(key) not in choices:
            st.session_state[key] = default
        out.append(col.selectbox(t(f"lab.{role}"), choices, key=key, help=t(f"lab.{role}_help")))
    return out[0], out[1]


def method_picker():
    method_labels = {n: views.method_title(n) for n in methods.METHODS}
    name = st.selectbox(
        t("lab.method"),
        list(methods.METHODS),
        key="lab_method",
        format_func=method_labels.get,
        help=t("lab.method_help"),
    )
    method = methods.get(name)
    st.caption(method_summary(method))
    return method


def method_controls(method) -> tuple[float, float, dict]:
    """T, alpha (greyed out where the method does not use them) and the method's own
    parameters, built from the registry. Returns (T, alpha, params)."""
    T = st.select_slider(
        t("lab.T"), TEMPERATURES, key="lab_T", disabled=not method.uses_temperature, help=t("lab.T_help")
    )
    alpha = st.slider(
        t("lab.alpha"), 0.0, 1.0, step=0.05, key="lab_alpha", disabled=not method.uses_alpha, help=t("lab.alpha_help")
    )
    params = {}
    for p in method.params:
        key = links.lab_param_key(method.name, p.name)
        st.session_state.setdefault(key, float(p.default))
        label, p_help = param_text(method, p, "label"), param_text(method, p, "help")
        if p.log or p.integer:
            params[p.name] = st.number_input(
                label,
                min_value=float(p.low),
                max_value=float(p.high),
                step=float(max(p.default / 10, 1.0 if p.integer else 1e-3)),
                key=key,
                help=p_help,
                format="%g",
            )
        else:
            params[p.name] = st.slider(label, float(p.low), float(p.high), key=key, help=p_help)
    return T, alpha, params


def layer_table(t_shapes: dict, s_shapes: dict) -> bool:
    """The expander with every named layer of both networks; returns "offer every layer"."""
    with st.expander(t("lab.layers.all"), expanded=False):
        every = st.toggle(t("lab.layers.every"), key=links.LAB_ALL_LAYERS, help=t("lab.layers.every_help"))
        st.caption(t("lab.layers.shapes_caption"))
        for col, role, shapes in zip(st.columns(2), ("teacher", "student"), (t_shapes, s_shapes)):
            col.dataframe(
                pd.DataFrame(
                    {
                        t(f"lab.layers.col_{role}"): list(shapes),
                        t("lab.layers.col_shape"): ["×".join(map(str, v)) for v in shapes.values()],
                    }
                ),
                hide_index=True,
                height=200,
                key=f"lab_layers_{role}",
            )
    return every


def suggested_pairs(method, t_model, s_model, in_shape, t_shapes, s_shapes) -> list[tuple[str, str]]:
    """The trainer's own default pair first, then the other pairs at the same relative depth
    (deepest first, the method's preferred kind of layer first)."""
    from kd_core.features import aligned_pairs

    kind = method.tap_kind if method.tap_kind != "any" else method.prefer
    dt, ds_ = train.default_pair(method, t_model, s_model, in_shape, strict=False)
    others = [
        pr
        for pr in reversed(aligned_pairs(t_model, s_model, in_shape))
        if pr != (dt, ds_)
        and pr[0] in t_model.tap_names
        and pr[1] in s_model.tap_names
        and (method.tap_kind != "spatial" or len(t_shapes[pr[0]]) == len(s_shapes[pr[1]]) == 3)
    ]
    others.sort(key=lambda pr: models.tap_kind(t_shapes[pr[0]]) != kind)
    return [(dt, ds_)] + others


def layer_pairs(method, info, teacher_arch: str, student_arch: str) -> list[str]:
    """Layer pairs by the models' real module names: the taps (stages, embedding) first;
    "every named layer" offers all modules. Impossible pairings are refused later
    (resolve_pairs) with an error that keeps Train disabled."""
    pairs: list[str] = []
    if not method.needs_features:
        return pairs
    try:
        t_model = models.build(teacher_arch, info.in_shape, info.num_classes)
        s_model = models.build(student_arch, info.in_shape, info.num_classes)
        t_shapes = models.module_shapes(t_model, info.in_shape)
        s_shapes = models.module_shapes(s_model, info.in_shape)
        suggested = suggested_pairs(method, t_model, s_model, info.in_shape, t_shapes, s_shapes)
        n_pairs = 1
        if method.multi_pair:
            key = links.lab_npairs_key(method.name)
            st.session_state.setdefault(key, 1)
            n_pairs = int(st.number_input(t("lab.layers.pairs"), 1, 4, key=key, help=t("lab.layers.pairs_help")))
        every = layer_table(t_shapes, s_shapes)
        t_opts = list(t_shapes) if every else list(t_model.tap_names)
        s_opts = list(s_shapes) if every else list(s_model.tap_names)

        def shape_of(shapes):
            return lambda n: f"{n}  ({'×'.join(map(str, shapes[n]))})" if n in shapes else n

        for i in range(n_pairs):
            kt = links.lab_layer_key("teacher", method.name, teacher_arch, i)
            ks = links.lab_layer_key("student", method.name, student_arch, i)
            want = suggested[min(i, len(suggested) - 1)]
            for k, opts, w in ((kt, t_opts, want[0]), (ks, s_opts, want[1])):
                if st.session_state.get(k) not in opts:  # new, or a module of the full list now hidden
                    st.session_state[k] = w if w in opts else opts[0]
            num = f" {i + 1}" if n_pairs > 1 else ""
            p1, p2 = chrome.columns(f"lab_layers_{i}", 2, min_rem=11)
            tl = p1.selectbox(
                t("lab.layers.teacher", num=num),
                t_opts,
                key=kt,
                format_func=shape_of(t_shapes),
                help=t("lab.layers.teacher_help"),
            )
            sl = p2.selectbox(
                t("lab.layers.student", num=num),
                s_opts,
                key=ks,
                format_func=shape_of(s_shapes),
                help=t("lab.layers.student_help"),
            )
            pairs.append(f"{tl}:{sl}")
        if len(set(pairs)) < len(pairs):
            st.warning(t("lab.layers.twice"))
    except KDError as e:
        st.error(t("lab.kd_error", error=e))
    return pairs


def training_controls(info) -> dict:
    """Epochs, seed, learning rate, batch, labelled fraction, an omitted class, the baseline."""
    st.subheader(t("lab.training"))
    c1, c2 = chrome.columns("lab_training", 2, min_rem=8)
    out = {
        "epochs": int(c1.number_input(t("lab.epochs"), *links.EPOCHS, key="lab_epochs", help=t("lab.epochs_help"))),
        "seed": int(c2.number_input(t("lab.seed"), *links.SEEDS, key="lab_seed", help=t("lab.seed_help"))),
    }
    out["lr"] = float(
        c1.select_slider(
            t("lab.lr"), LEARNING_RATES, key="lab_lr", format_func=lambda v: f"{v:g}", help=t("lab.lr_help")
        )
    )
    out["batch_size"] = int(c2.selectbox(t("lab.batch"), BATCHES, key="lab_batch", help=t("lab.batch_help")))
    out["labeled_fraction"] = float(
        st.select_slider(
            t("lab.fraction"),
            FRACTIONS,
            key="lab_fraction",
            format_func=lambda v: f"{v:.0%}",
            help=t("lab.fraction_help"),
        )
    )
    class_opts = [NO_CLASS] + list(range(info.num_classes))
    if st.session_state.lab_omit not in class_opts:
        st.session_state.lab_omit = NO_CLASS
    class_labels = {c: t("lab.omit_none") if c == NO_CLASS else f"{c}" for c in class_opts}
    omit = st.selectbox(
        t("lab.omit"), class_opts, key="lab_omit", format_func=class_labels.get, help=t("lab.omit_help")
    )
    out["omit_class"] = None if omit == NO_CLASS else int(omit)
    out["baseline"] = bool(st.checkbox(t("lab.baseline"), key="lab_baseline", help=t("lab.baseline_help")))
    return out


def check(cfg: Config, method, info) -> tuple[str | None, str | None]:
    """What is wrong with the set-up (shown as an error; Train stays disabled), and why its
    dataset cannot be used here (shown next to Train); None where all is well."""
    ds_available = datasets.availability(cfg.dataset).available
    data_problem = None if ds_available else datasets.reason(datasets.availability(cfg.dataset))
    try:
        cfg.resolved().validate()
        if ds_available:
            try:
                train.check_batch_fits(cfg, state.dataset(cfg.dataset))
            except DataUnavailableError:  # files there but unreadable: say so without the raw error
                data_problem = datasets.unreadable(cfg.dataset)
        if method.needs_features:  # refuse impossible layer pairings before training
            train.resolve_pairs(
                method,
                models.build(cfg.teacher, info.in_shape, info.num_classes),
                models.build(cfg.student, info.in_shape, info.num_classes),
                info.in_shape,
                cfg.parsed_pairs(),
            )
    except KDError as e:
        st.error(t("lab.kd_error", error=e))
        return str(e), data_problem
    return None, data_problem


def set_up() -> tuple[Config, object, str | None, str | None]:
    """The left column: every control, read into a Config. Returns (config, method, problem,
    data problem)."""
    st.subheader(t("lab.setup"))
    ds_name = dataset_picker()
    info = data.DATASETS[ds_name]
    teacher_arch, student_arch = model_pickers(ds_name)
    method = method_picker()
    T, alpha, params = method_controls(method)
    pairs = layer_pairs(method, info, teacher_arch, student_arch)
    cfg = Config(
        dataset=ds_name,
        teacher=teacher_arch,
        student=student_arch,
        method=method.name,
        temperature=float(T),
        alpha=float(alpha),
        params=params,
        pairs=pairs,
        **training_controls(info),
    )
    return cfg, method, *check(cfg, method, info)


def formula_and_buttons(cfg: Config, method, problem: str | None, data_problem: str | None) -> None:
    """The loss with the chosen values, Train and Stop."""
    T, alpha = cfg.temperature, cfg.alpha
    st.latex(
        method.formula_latex(T if method.uses_temperature else None, alpha if method.uses_alpha else None, cfg.params)
    )
    if method.uses_alpha:
        st.caption(t("lab.formula_caption"))
    # Train and Stop side by side (one above the other in a narrow column, never cut short), and
    # beside them the reason when the data is missing: next to the disabled button, not off screen
    buttons, why = st.columns([2, 3])
    row = buttons.container(horizontal=True)
    b1, b2 = row.empty(), row.empty()
    if data_problem is not None:
        why.warning(data_problem, icon="📦")
    job = state.current_run()
    running = job is not None and not job.done
    if b1.button(
        t("lab.train"),
        type="primary",
        disabled=running or problem is not None or data_problem is not None,
        key="lab_train",
        help=t("lab.train_help"),
    ):
        try:
            state.submit_lab_run(cfg)
            running = True
        except KDError as e:
            st.error(t("lab.cannot_start", error=e))
        else:
            if screens.current == 1:  # presentation mode: on to the step that shows the run
                screens.go(2)
                st.rerun()
    if b2.button(t("lab.stop"), disabled=not running, key="lab_stop", help=t("lab.stop_help")):
        job.stop()


def setup_label() -> str:
    """The collapsed set-up's title in presentation mode's later steps: what is set up."""
    ss = st.session_state
    name = ss.get("lab_method")
    method_name = views.method_title(name) if name in methods.METHODS else ""
    return t("lab.present.change_setup", method=method_name, dataset=ss.get("lab_dataset", ""))


# presentation mode: one step per screen (?present=1&step=2): the set-up, the run, the method's own effect
screens = chrome.Screens("lab", [t("lab.setup"), t("lab.present.run"), t("effect.header")])
if screens.shows(1):
    st.title("🧪 " + t("lab.title"))
    st.caption(t("lab.intro"))
restore_settings()
screens.header()
if screens.current in (None, 1):
    # at 1280 px the set-up column must fit "mnist-mini — MNIST mini (5,000 real digits)" and "cnn-32-64"
    controls, output = st.columns([1.35, 2], gap="large")
    with controls:
        cfg, method, problem, data_problem = set_up()
else:  # the set-up is still drawn (it makes the Config), folded away
    with st.expander(setup_label(), expanded=False):
        cfg, method, problem, data_problem = set_up()
    if problem is not None:  # why Train is disabled, outside the folded set-up
        st.error(t("lab.kd_error", error=problem))
    output = st.container()
if screens.shows(1) or screens.shows(2):
    with output:
        formula_and_buttons(cfg, method, problem, data_problem)


# ------------------------------------------------------------------ live view
def draw_progress(snap: dict) -> None:
    status = snap["status"]
    if status == "queued":
        pos = state.job_manager().queue_position(state.current_run())
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
        eta = state.current_run().eta_seconds()
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


def draw_learned_temperature(col, steps: list) -> None:
    """CTKD's learned T per step (and its curriculum's lambda), under the loss curves."""
    col.plotly_chart(
        i18n.localise_figure(viz.learned_temperature_curve(steps, t("lab.charts.learned_T"))),
        key="lab_T_chart",
        width="stretch",
    )
    col.caption(t("lab.charts.learned_T_caption", T=steps[-1]["tracked"]["T"]))


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
    if snap["steps"] and "tracked" in snap["steps"][-1]:  # CTKD: the temperature it learns, live
        draw_learned_temperature(c2, snap["steps"])
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
    j = state.current_run()
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


def live_view() -> None:
    """The run's progress, curves and results: redrawn once a second while it trains (a
    queued run only updates its position, every 3 s), then the whole page once."""
    job = state.current_run()
    if job is None or state.settled(job):
        draw_job()
        return
    waiting = job.status == "queued"

    @st.fragment(run_every=3.0 if waiting else 1.0)
    def live() -> None:
        draw_job()
        j = state.current_run()
        if j is not None and (state.settled(j) or (waiting and j.status != "queued")):
            st.rerun()  # redraw the whole page once: buttons re-enable, results show, the link gets run=<id>

    live()


with output:
    if screens.shows(2):
        live_view()
    if screens.shows(3):
        method_effect.section(cfg)  # the method alone, KD alone, both and scratch, over seeds
screens.footer()

# the address bar always holds this set-up (and the saved run it shows): copy it to share it
shown = state.current_run()
links.write_lab(cfg, getattr(shown, "run_id", None) if shown is not None and shown.done else None)
links.remember_lab()

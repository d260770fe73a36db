"""Distillation lab: choose teacher, student, method, T and alpha; train live in a worker
thread; compare the distilled student with the same student trained from scratch."""

from __future__ import annotations

import math
import time

import pandas as pd
import streamlit as st

from kd_app import chrome, links, state
from kd_core import data, methods, models, viz
from kd_core.config import Config
from kd_core.errors import KDError

TEMPERATURES = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0]
LEARNING_RATES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1]
FRACTIONS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
BATCHES = [16, 32, 64, 128, 256, 512]
NO_CLASS = "none"

st.title("🧪 Distillation lab")
st.caption("Train a small student from a big teacher — and the same student from scratch, side by side, "
           "with the same seed, data order and steps — and watch what the teacher's soft targets add.")

# a shared link (?method=dkd&temperature=2...) sets the controls on the first visit; bad values -> notices
links.restore_lab(options={"lab_T": TEMPERATURES, "lab_lr": LEARNING_RATES, "lab_fraction": FRACTIONS,
                           "lab_batch": BATCHES}, limits={"lab_epochs": (1, 50), "lab_seed": (0, 10_000)},
                  no_class=NO_CLASS)
D = Config()
defaults = {"lab_dataset": D.dataset, "lab_method": D.method, "lab_T": D.temperature, "lab_alpha": D.alpha,
            "lab_epochs": D.epochs, "lab_lr": D.lr, "lab_batch": D.batch_size, "lab_fraction": D.labeled_fraction,
            "lab_omit": NO_CLASS, "lab_seed": D.seed, "lab_baseline": D.baseline}
for k, v in defaults.items():
    st.session_state.setdefault(k, v)

job = state.lab_job()
running = job is not None and not job.done

controls, output = st.columns([1, 2.2], gap="large")

# ------------------------------------------------------------------ controls
with controls:
    st.subheader("Set-up")
    def _check_dataset() -> None:
        """Stay on the last working dataset when the new one cannot be loaded (e.g. offline)."""
        name = st.session_state.lab_dataset
        try:
            state.dataset(name)
            st.session_state.lab_good_dataset = name
        except KDError as e:
            st.session_state.lab_dataset_error = str(e)
            st.session_state.lab_dataset = st.session_state.get("lab_good_dataset", D.dataset)

    ds_name = st.selectbox("Dataset", list(data.DATASETS), key="lab_dataset", on_change=_check_dataset,
                           format_func=lambda n: f"{n} — {data.DATASETS[n].title}",
                           help="The embedded datasets need no download. mnist-mini: 5,000 real MNIST digits.")
    if "lab_dataset_error" in st.session_state:
        st.error(st.session_state.pop("lab_dataset_error") + " — staying on " + ds_name + ".")
    info = data.DATASETS[ds_name]
    t_default, s_default = models.preset(ds_name)
    choices = models.suggested_models(ds_name)
    c1, c2 = st.columns(2)
    teacher_arch = c1.selectbox("Teacher", choices, index=choices.index(t_default), key=f"lab_teacher_{ds_name}",
                                help="The big network. It is trained once on all labels and cached.")
    student_arch = c2.selectbox("Student", choices, index=choices.index(s_default), key=f"lab_student_{ds_name}",
                                help="The small network that learns from the teacher.")
    method_name = st.selectbox("Method", list(methods.METHODS), key="lab_method",
                               format_func=lambda n: methods.METHODS[n].title,
                               help="How the student learns from the teacher. 'Student alone' is the no-teacher floor.")
    method = methods.get(method_name)
    st.caption(method.summary)

    T = st.select_slider("Temperature T", TEMPERATURES, key="lab_T", disabled=not method.uses_temperature,
                         help="Softens both networks' probabilities: softmax(z / T). Higher T reveals more of the "
                              "teacher's beliefs about the wrong classes.")
    alpha = st.slider("alpha (weight of the distillation term)", 0.0, 1.0, step=0.05, key="lab_alpha",
                      disabled=not method.uses_alpha,
                      help="L = (1 - alpha) CE(labels) + alpha T² KL(teacher ‖ student). alpha = 0: labels only; "
                           "alpha = 1: soft targets only.")
    params = {}
    for p in method.params:
        key = f"lab_p_{method.name}_{p.name}"
        if p.log or p.integer:
            params[p.name] = st.number_input(p.name, min_value=float(p.low), max_value=float(p.high), value=float(p.default),
                                             step=float(max(p.default / 10, 1.0 if p.integer else 1e-3)), key=key, help=p.help,
                                             format="%g")
        else:
            params[p.name] = st.slider(p.name, float(p.low), float(p.high), float(p.default), key=key, help=p.help)

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
            try:
                dt, ds_ = models.default_pair(t_model, s_model, info.in_shape, kind)
            except KDError:
                dt, ds_ = models.default_pair(t_model, s_model, info.in_shape, "vector")
            # defaults: the trainer's own pair, then the other pairs at the same relative depth
            # (deepest first, the method's preferred kind of layer first)
            others = [pr for pr in reversed(aligned_pairs(t_model, s_model, info.in_shape))
                      if pr != (dt, ds_) and pr[0] in t_model.tap_names and pr[1] in s_model.tap_names
                      and (method.tap_kind != "spatial" or len(t_shapes[pr[0]]) == len(s_shapes[pr[1]]) == 3)]
            others.sort(key=lambda pr: models.tap_kind(t_shapes[pr[0]]) != kind)
            suggested = [(dt, ds_)] + others
            n_pairs = 1
            if method.multi_pair:
                n_pairs = int(st.number_input(
                    "Layer pairs", 1, 4, value=1, key=f"lab_npairs_{method.name}",
                    help="How many teacher/student layers are matched. The paper of attention transfer matches the "
                         "end of every stage; each pair adds its own term to the loss."))
            with st.expander("All layers", expanded=False):
                every = st.toggle("Offer every named layer", key="lab_all_layers",
                                  help="List every module of both networks (e.g. stage2.0.conv1), not only the stage "
                                       "outputs and the embedding.")
                st.caption("Output shape (channels × height × width, or a vector) of each named layer:")
                l1, l2 = st.columns(2)
                l1.dataframe(pd.DataFrame({"teacher layer": list(t_shapes),
                                           "shape": ["×".join(map(str, v)) for v in t_shapes.values()]}),
                             hide_index=True, height=200, key="lab_layers_teacher")
                l2.dataframe(pd.DataFrame({"student layer": list(s_shapes),
                                           "shape": ["×".join(map(str, v)) for v in s_shapes.values()]}),
                             hide_index=True, height=200, key="lab_layers_student")
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
                tl = p1.selectbox(f"Teacher layer{num}", t_opts, index=t_opts.index(want_t) if want_t in t_opts else 0,
                                  key=kt, format_func=shape_of(t_shapes),
                                  help="The teacher's layer whose features guide the student (output shape in brackets).")
                sl = p2.selectbox(f"Student layer{num}", s_opts, index=s_opts.index(want_s) if want_s in s_opts else 0,
                                  key=ks, format_func=shape_of(s_shapes),
                                  help="The student's layer that is matched to it (output shape in brackets).")
                pairs.append(f"{tl}:{sl}")
            if len(set(pairs)) < len(pairs):
                st.warning("The same layer pair is listed twice: its term counts double.")
        except KDError as e:
            st.error(str(e))

    st.subheader("Training")
    c1, c2 = st.columns(2)
    epochs = c1.number_input("Epochs", 1, 50, key="lab_epochs", help="Passes over the student's transfer set.")
    seed = c2.number_input("Seed", 0, 10_000, key="lab_seed", help="Same seed, same numbers.")
    lr = c1.select_slider("Learning rate", LEARNING_RATES, key="lab_lr", format_func=lambda v: f"{v:g}",
                          help="Adam's step size, annealed to 0 over the run.")
    batch = c2.selectbox("Batch size", BATCHES, key="lab_batch", help="Samples per step.")
    fraction = st.select_slider("Labelled fraction", FRACTIONS, key="lab_fraction", format_func=lambda v: f"{v:.0%}",
                                help="The student sees the labels of only this share of its training images; the "
                                     "teacher's soft targets cover all of them. Few labels is where KD shines.")
    class_opts = [NO_CLASS] + list(range(info.num_classes))
    if st.session_state.lab_omit not in class_opts:
        st.session_state.lab_omit = NO_CLASS
    omit = st.selectbox("Omit a class", class_opts, key="lab_omit",
                        format_func=lambda c: "none" if c == NO_CLASS else f"{c}",
                        help="Remove every image of this class from the student's data (Hinton et al.'s missing-3 "
                             "experiment). Only the teacher's soft targets on other images can teach it.")
    baseline = st.checkbox("Also train from scratch", key="lab_baseline",
                           help="The same student, same seed, data order and steps, learning from the labels only.")

    cfg = Config(dataset=ds_name, teacher=teacher_arch, student=student_arch, method=method_name,
                 temperature=float(T), alpha=float(alpha), params=params, pairs=pairs, epochs=int(epochs),
                 lr=float(lr), batch_size=int(batch), seed=int(seed), labeled_fraction=float(fraction),
                 omit_class=None if omit == NO_CLASS else int(omit), baseline=bool(baseline))
    problem = None
    try:
        cfg.resolved().validate()
        if method.needs_features:  # refuse impossible layer pairings before training
            from kd_core.train import resolve_pairs

            resolve_pairs(method, models.build(teacher_arch, info.in_shape, info.num_classes),
                          models.build(student_arch, info.in_shape, info.num_classes), info.in_shape, cfg.parsed_pairs())
    except KDError as e:
        problem = str(e)
        st.error(problem)

# ------------------------------------------------------------------ formula + buttons
with output:
    st.latex(method.formula_latex(T if method.uses_temperature else None, alpha if method.uses_alpha else None, params))
    if method.uses_alpha:
        st.caption(r"CE: cross-entropy with the true labels (labelled images only). KL: divergence from the teacher's "
                   r"softened probabilities $p_T$ to the student's $p_S$, both at temperature T; "
                   r"the factor T² keeps its gradients comparable across temperatures.")
    b1, b2, _ = st.columns([1, 1, 3])
    if b1.button("▶ Train", type="primary", disabled=running or problem is not None, key="lab_train",
                 help="Start a run in the background. You can keep using the page while it trains."):
        try:
            new = state.job_manager().submit(cfg, owner=state.session_id(), on_end=state.save_lab_run)
            st.session_state.kd_lab_job_id = new.id
            job, running = new, True
        except KDError as e:
            st.error(str(e))
    if b2.button("■ Stop", disabled=not running, key="lab_stop", help="End the run now and keep what it learned."):
        job.stop()


# ------------------------------------------------------------------ live view
def draw_progress(snap: dict) -> None:
    status = snap["status"]
    if status == "queued":
        pos = state.job_manager().queue_position(job)
        st.info(f"Waiting for a free trainer{f' (position {pos} in the queue)' if pos else ''}…")
    elif status == "teacher":
        te = snap["teacher_epoch"]
        frac = te[0] / te[1] if te else 0.0
        st.progress(frac, text=f"Training the teacher (once, then cached): epoch {te[0]}/{te[1]}" if te
                    else "Preparing the teacher…")
    elif status == "running":
        total = snap["total_steps"] or 1
        eta = job.eta_seconds()
        st.progress(min(snap["step"] / total, 1.0),
                    text=f"step {snap['step']}/{total}" + (f" — about {eta:.0f} s left" if eta is not None else ""))
    elif status in ("finished", "stopped"):
        st.success(("Finished" if status == "finished" else "Stopped — kept what it learned") +
                   f": {snap['step']} steps.")
    elif status == "diverged":
        st.error(f"The run diverged: {snap['message']}")
    elif status == "error":
        st.error(f"The run failed: {snap['message']}")


def draw_curves(snap: dict) -> None:
    cfg_run: Config = snap["config"]
    total_epochs = cfg_run.epochs
    epochs = snap["epochs"]
    teacher_acc = epochs[0]["teacher_acc"] if epochs else None
    c1, c2 = st.columns(2)
    c1.plotly_chart(viz.accuracy_curves(epochs, teacher_acc, total_epochs, "Test accuracy per epoch"),
                    key="lab_acc_chart", width="stretch")
    c2.plotly_chart(viz.loss_curves(snap["steps"], "Loss terms per step"), key="lab_loss_chart", width="stretch")
    if epochs:
        c1.plotly_chart(viz.agreement_curves(epochs, total_epochs, "Agreement with the teacher"),
                        key="lab_agree_chart", width="stretch")
        if cfg_run.omit_class is not None:
            c2.plotly_chart(viz.accuracy_curves(epochs, None, total_epochs,
                                                f"Accuracy on the omitted class {cfg_run.omit_class}", key="omitted_acc"),
                            key="lab_omit_chart", width="stretch")


def draw_results(snap: dict) -> None:
    r = snap["result"]
    if not r:
        return
    st.subheader("Results")
    c = r["config"]
    st.caption(f"Run #{snap['id']}: {c['method']} from {c['teacher']} to {c['student']} on {c['dataset']}, "
               f"T = {c['temperature']:g}, alpha = {c['alpha']:g}, {c['epochs']} epochs, "
               f"{c['labeled_fraction']:.0%} of labels"
               + (f", class {c['omit_class']} omitted" if c.get("omit_class") is not None else "")
               + f", seed {c['seed']}.")
    rows = []
    for role, label in (("teacher", "teacher"), ("student", "distilled student"), ("baseline", "scratch student")):
        m = r.get(role)
        if m is None:
            continue
        rows.append({
            "model": label, "architecture": m["arch"], "test accuracy": m["test_accuracy"],
            "agreement with teacher": m.get("agreement", math.nan) if role != "teacher" else 1.0,
            "ECE": m["ece"], "parameters": m["params"], "MFLOPs / image": m["flops"] / 1e6,
            "CPU latency (ms)": m["latency_ms"],
            "compression ×": m.get("compression", 1.0), "speed-up ×": m.get("speedup", 1.0),
        })
    df = pd.DataFrame(rows).set_index("model")
    st.dataframe(df.style.format({"test accuracy": "{:.1%}", "agreement with teacher": "{:.1%}", "ECE": "{:.3f}",
                                  "parameters": "{:,}", "MFLOPs / image": "{:.2f}", "CPU latency (ms)": "{:.3f}",
                                  "compression ×": "{:.1f}", "speed-up ×": "{:.1f}"}), width="stretch", key="lab_results")
    if "baseline" in r:
        gain = r["student"]["test_accuracy"] - r["baseline"]["test_accuracy"]
        st.markdown(f"**Distillation {'gained' if gain >= 0 else 'lost'} {abs(100 * gain):.1f} points** of test accuracy "
                    f"over the scratch student ({100 * r['student']['test_accuracy']:.1f}% vs "
                    f"{100 * r['baseline']['test_accuracy']:.1f}%).")
    classes = r["classes"]
    omitted = r["config"].get("omit_class")
    per_class = {"teacher": r["teacher"]["per_class_accuracy"], "distilled student": r["student"]["per_class_accuracy"]}
    if "baseline" in r:
        per_class["scratch student"] = r["baseline"]["per_class_accuracy"]
    c1, c2 = st.columns(2)
    c1.plotly_chart(viz.per_class_bars(per_class, classes, omitted, "Per-class test accuracy"),
                    key="lab_per_class", width="stretch")
    conf = r["student"]["confusion"]
    c2.plotly_chart(viz.heatmap(conf, classes, classes, "Distilled student: confusion matrix", colorscale="Blues",
                                text_fmt="d", xtitle="predicted", ytitle="true"), key="lab_confusion", width="stretch")
    st.caption(f"{r['steps']} steps, {r['student']['train_seconds']:.1f} s of training "
               f"({r['student']['samples_per_second']:.0f} samples/s) on {r['device']}.")


def draw_job() -> None:
    j = state.lab_job()
    if j is None:
        st.info("Press **Train** to start. With the defaults (10% of labels), watch the distilled student pull away "
                "from the scratch student.")
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

links.write_lab(cfg)  # the address bar always holds this set-up: copy it to share it

"""Compare & sweep: the saved runs side by side, T x alpha sweeps filling in live, and the
latest leaderboard.

Every run finished or stopped in the Lab is saved (``kd_core.runs``); here they can be
renamed, deleted, exported and reopened in the other pages. A sweep runs in a background
thread (``kd_core.sweep.SweepJob``, which never touches Streamlit) on local worker
processes; a fragment polls it every second and redraws the heatmaps.
"""

from __future__ import annotations

import math
import os
import time

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from kd_app import state
from kd_core import data, methods, runs, sweep, viz
from kd_core.config import Config
from kd_core.errors import KDError

PALETTE = [viz.STUDENT, "#009E73", "#CC79A7", "#E69F00", "#56B4E9", viz.TEACHER, "#000000"]
TEMPERATURES = [0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0]
ALPHAS = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0]
FRACTIONS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
DIFF = "background-color: #FFF1B8; font-weight: 600"
BEST = "background-color: #D6F5E3; font-weight: 700"


# ------------------------------------------------------------------ widget state
def keep(key: str, default) -> None:
    """Widgets keep their values across a visit to another page."""
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(f"_keep_{key}", default)


def remember(*keys: str) -> None:
    for k in keys:
        if k in st.session_state:
            st.session_state[f"_keep_{k}"] = st.session_state[k]


def when(ts: float) -> str:
    return time.strftime("%d %b %H:%M", time.localtime(ts))


def pct(v, digits: int = 1) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.{digits}f}%"


st.title("📊 Compare & sweep")
st.caption("Every run you finish or stop in the Distillation lab is saved. Put runs side by side, sweep T and alpha "
           "over a grid with several seeds per cell, and see every method ranked on one teacher/student pair.")

tab_runs, tab_sweep, tab_board = st.tabs(["Saved runs", "T × alpha sweep", "Leaderboard"])


# ================================================================== saved runs
def _rename(run_id: str) -> None:
    try:
        runs.rename(run_id, st.session_state.get(f"cmp_name_{run_id}", ""))
        st.session_state.cmp_flash = ("success", "Renamed.")
    except KDError as e:
        st.session_state.cmp_flash = ("error", str(e))


def _delete(run_id: str, name: str) -> None:
    try:
        runs.delete(run_id)
        st.session_state.cmp_flash = ("success", f"Deleted '{name}'.")
        st.session_state.cmp_confirm_delete = False
    except KDError as e:
        st.session_state.cmp_flash = ("error", str(e))


def _reload(run_id: str) -> None:
    st.session_state.cmp_reload = run_id  # done in the page body (it may show a progress bar)


def runs_overview(all_runs: list[runs.Run]) -> None:
    rows = []
    for r in all_runs:
        c, s = r.config, r.result.get("student", {})
        b = r.result.get("baseline") or {}
        rows.append({"name": r.name, "saved": when(r.created), "dataset": c.dataset, "method": c.method,
                     "T": c.temperature if c.method_obj.uses_temperature else None,
                     "alpha": c.alpha if c.method_obj.uses_alpha else None, "epochs": c.epochs,
                     "labels": c.labeled_fraction, "student acc.": s.get("test_accuracy"),
                     "scratch acc.": b.get("test_accuracy"), "agreement": s.get("agreement"), "status": r.status})
    df = pd.DataFrame(rows)
    st.dataframe(df, hide_index=True, width="stretch", key="cmp_overview",
                 column_config={"T": st.column_config.NumberColumn(format="%g"),
                                "alpha": st.column_config.NumberColumn(format="%g"),
                                "labels": st.column_config.NumberColumn(format="percent"),
                                "student acc.": st.column_config.NumberColumn(format="percent"),
                                "scratch acc.": st.column_config.NumberColumn(format="percent"),
                                "agreement": st.column_config.NumberColumn(format="percent")})


def manage(all_runs: list[runs.Run], by_id: dict) -> None:
    ids = [r.id for r in all_runs]
    if st.session_state.get("cmp_manage") not in ids:
        st.session_state.cmp_manage = ids[0]
    rid = st.selectbox("Run", ids, key="cmp_manage", format_func=lambda i: f"{by_id[i].name} ({when(by_id[i].created)})",
                       help="The run to rename, delete, export or open in the other pages.")
    run = by_id[rid]
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    c1.text_input("Name", value=run.name, key=f"cmp_name_{rid}", max_chars=runs.MAX_NAME,
                  help="Only a label: the run's files are named by its id.")
    c2.button("Rename", key="cmp_rename", on_click=_rename, args=(rid,), width="stretch")
    lab = state.lab_job()
    lab_busy = lab is not None and not lab.done
    d1, d2, d3, d4 = st.columns(4)
    d1.download_button("Metrics (CSV)", runs.export_csv(run, "metrics"), runs.export_name(run, "-metrics.csv"),
                       mime="text/csv", key="cmp_dl_metrics", width="stretch",
                       help="One row per model (teacher, distilled, scratch): accuracy, agreement, ECE, size, latency, "
                            "per-class accuracy.")
    d2.download_button("History (CSV)", runs.export_csv(run, "history"), runs.export_name(run, "-history.csv"),
                       mime="text/csv", key="cmp_dl_history", width="stretch",
                       help="One row per epoch: test accuracy and agreement of both students.")
    d3.download_button("Everything (JSON)", runs.export_json(run), runs.export_name(run, ".json"),
                       mime="application/json", key="cmp_dl_json", width="stretch",
                       help="Config, metrics, history and the loss per step.")
    try:
        weights = run.weights_bytes("student")
        d4.download_button("Weights (.safetensors)", weights, runs.export_name(run, "-student.safetensors"),
                           mime="application/octet-stream", key="cmp_dl_weights", width="stretch",
                           help="The distilled student (and its method's modules under 'extra.'), in safetensors: "
                                "models.build(config.student, ...) then models.load_weights(model, file).")
    except KDError as e:
        d4.warning(str(e))
    o1, o2, o3 = st.columns([1.3, 1, 1.2], vertical_alignment="center")
    o1.button("↗ Show in the other pages", key="cmp_reload_btn", on_click=_reload, args=(rid,), disabled=lab_busy,
              width="stretch", help="Make this run the session's Lab run: Soft targets, Feature maps, Relations, "
                                    "Contrastive and the Lab then show it." + (" (Wait for the Lab's run to end.)" if lab_busy else ""))
    o2.checkbox("Confirm deletion", key="cmp_confirm_delete", help="Deleting removes the run's files for good.")
    o3.button("🗑 Delete", key="cmp_delete", on_click=_delete, args=(rid, run.name),
              disabled=not st.session_state.get("cmp_confirm_delete"), width="stretch")


def label_of(run: runs.Run, i: int) -> str:
    return f"{i + 1}. {run.name}"


def side_by_side(sel: list[runs.Run]) -> None:
    labels = [label_of(r, i) for i, r in enumerate(sel)]
    config_rows: dict[str, list] = {}
    for r in sel:
        c = r.config
        m = c.method_obj
        vals = {
            "dataset": c.dataset, "teacher": c.teacher, "student": c.student, "method": c.method,
            "temperature T": f"{c.temperature:g}" if m.uses_temperature else "—",
            "alpha": f"{c.alpha:g}" if m.uses_alpha else "—",
            "method parameters": ", ".join(f"{k}={v:g}" for k, v in c.method_params().items()) or "—",
            "layer pairs": ", ".join(f"{a}:{b}" for a, b in r.result.get("pairs", [])) or "—",
            "epochs": str(c.epochs), "learning rate": f"{c.lr:g}", "batch size": str(c.batch_size),
            "labelled fraction": f"{c.labeled_fraction:.0%}",
            "omitted class": "—" if c.omit_class is None else str(c.omit_class),
            "train subset": "all" if c.train_subset is None else str(c.train_subset),
            "seed": str(c.seed), "status": r.status,
        }
        for k, v in vals.items():
            config_rows.setdefault(k, []).append(v)
    differ = {k for k, v in config_rows.items() if len(set(v)) > 1}
    metric_rows: dict[str, list] = {}
    raw_acc = []
    for r in sel:
        s, b, t = r.result.get("student", {}), r.result.get("baseline"), r.result.get("teacher", {})
        raw_acc.append(s.get("test_accuracy", math.nan))
        gain = (s["test_accuracy"] - b["test_accuracy"]) if b else None
        vals = {
            "student test accuracy": pct(s.get("test_accuracy")),
            "scratch test accuracy": pct(b["test_accuracy"]) if b else "—",
            "gain over scratch": f"{100 * gain:+.1f} points" if gain is not None else "—",
            "agreement with teacher": pct(s.get("agreement")),
            "ECE (calibration error)": f"{s['ece']:.3f}" if "ece" in s else "—",
            "student parameters": f"{s['params']:,}" if "params" in s else "—",
            "MFLOPs / image": f"{s['flops'] / 1e6:.2f}" if "flops" in s else "—",
            "CPU latency (ms)": f"{s['latency_ms']:.3f}" if "latency_ms" in s else "—",
            "teacher test accuracy": pct(t.get("test_accuracy")),
            "training time (s)": f"{s.get('train_seconds', 0):.1f}",
        }
        for k, v in vals.items():
            metric_rows.setdefault(k, []).append(v)
    settings = pd.DataFrame(config_rows, index=labels).T
    results = pd.DataFrame(metric_rows, index=labels).T
    best_i = max(range(len(sel)), key=lambda i: -1 if math.isnan(raw_acc[i]) else raw_acc[i])

    def paint(row: pd.Series):
        if row.name in differ:
            return [DIFF] * len(row)
        if row.name == "student test accuracy" and len(sel) > 1:
            return [BEST if i == best_i else "" for i in range(len(row))]
        return [""] * len(row)

    index_col = {"_index": st.column_config.TextColumn(width="medium")}
    left, right = st.columns(2)
    with left:
        st.markdown("**Settings**")
        st.dataframe(settings.style.apply(paint, axis=1), width="stretch", height=35 * (len(settings) + 1) + 3,
                     column_config=index_col, key="cmp_table")
    with right:
        st.markdown("**Results**")
        st.dataframe(results.style.apply(paint, axis=1), width="stretch", height=35 * (len(results) + 1) + 3,
                     column_config=index_col, key="cmp_results")
        note = (f"Highlighted in yellow: the settings that differ ({', '.join(sorted(differ))}); in green: the best "
                f"student accuracy.") if differ else "The runs share every setting (in green: the best student accuracy)."
        st.caption(note + " Agreement: share of test images where the student's top class is the teacher's. "
                          "ECE: expected calibration error (0 = confidence matches accuracy). Latency: one image on "
                          "one CPU thread.")


def overlays(sel: list[runs.Run]) -> None:
    acc, agree, loss = go.Figure(), go.Figure(), go.Figure()
    teachers = set()
    for i, r in enumerate(sel):
        col, name = PALETTE[i % len(PALETTE)], label_of(r, i)
        h = r.history
        x = [e["epoch"] + (0.0 if not e.get("partial") else 0.5) for e in h]
        acc.add_scatter(x=x, y=[e["student_acc"] for e in h], mode="lines+markers", name=name,
                        line=dict(color=col, width=4), marker=dict(size=9), legendgroup=name)
        if h and "baseline_acc" in h[0]:
            acc.add_scatter(x=x, y=[e["baseline_acc"] for e in h], mode="lines+markers", name=f"{name} (scratch)",
                            line=dict(color=col, width=2, dash="dot"), marker=dict(size=6), legendgroup=name)
        agree.add_scatter(x=x, y=[e.get("student_agreement", e.get("agreement")) for e in h], mode="lines+markers",
                          name=name, line=dict(color=col, width=4), marker=dict(size=9))
        if r.steps:
            loss.add_scatter(x=[s["step"] for s in r.steps], y=viz._smooth([s["loss"] for s in r.steps], 5),
                             mode="lines", name=name, line=dict(color=col, width=3))
        t = r.result.get("teacher", {})
        teachers.add((t.get("arch"), r.config.dataset, round(t.get("test_accuracy", 0), 6)))
    if len(teachers) == 1:
        arch, _, t_acc = next(iter(teachers))
        acc.add_hline(y=t_acc, line_color=viz.TEACHER, line_width=2, line_dash="dash",
                      annotation_text=f"teacher {100 * t_acc:.1f}%", annotation_position="top left",
                      annotation_font_color=viz.TEACHER)
    for fig in (acc, agree):
        fig.update_xaxes(title="epoch", dtick=1)
        fig.update_yaxes(tickformat=".0%")
    acc.update_yaxes(title="test accuracy")
    agree.update_yaxes(title="agreement with the teacher")
    loss.update_xaxes(title="step")
    loss.update_yaxes(title="training loss (weighted sum)", type="log")
    c1, c2 = st.columns(2)
    c1.plotly_chart(viz.style(acc, "Test accuracy per epoch (dotted: scratch)"), key="cmp_acc_chart", width="stretch")
    c2.plotly_chart(viz.style(agree, "Agreement with the teacher per epoch"), key="cmp_agree_chart", width="stretch")
    c1.plotly_chart(viz.style(loss, "Training loss per step"), key="cmp_loss_chart", width="stretch")
    with c2:
        per_class(sel)


def per_class(sel: list[runs.Run]) -> None:
    classes = sel[0].result.get("classes", [])
    same = [(i, r) for i, r in enumerate(sel) if r.result.get("classes") == classes]
    fig = go.Figure()
    for i, r in same:
        name = label_of(r, i)
        accs = r.result.get("student", {}).get("per_class_accuracy", [])
        fig.add_bar(x=list(classes), y=[0 if a is None or a != a else a for a in accs], name=name,
                    marker_color=PALETTE[i % len(PALETTE)], hovertemplate="class %{x}: %{y:.1%}<extra>" + name + "</extra>")
    fig.update_layout(barmode="group", bargap=0.15)
    fig.update_xaxes(title="class", type="category")
    fig.update_yaxes(title="student test accuracy", tickformat=".0%", range=[0, 1.05])
    st.plotly_chart(viz.style(fig, "Per-class accuracy of each student"), key="cmp_per_class", width="stretch")
    if len(same) < len(sel):
        st.caption("Runs on another dataset than the first are left out of the per-class chart.")


with tab_runs:
    flash = st.session_state.pop("cmp_flash", None)
    if flash:
        (st.success if flash[0] == "success" else st.error)(flash[1])
    pending = st.session_state.pop("cmp_reload", None)
    if pending:
        try:
            job = state.reload_run(pending)
            st.success(f"Run '{job.trainer.run.name}' reopened: the other pages (and the Lab's results) now show it.")
            l1, l2, l3, l4 = st.columns(4)
            l1.page_link("pages/soft_targets.py", label="Soft targets", icon="🌡️")
            l2.page_link("pages/feature_maps.py", label="Feature maps", icon="🗺️")
            l3.page_link("pages/relations.py", label="Relations", icon="🕸️")
            l4.page_link("pages/lab.py", label="Distillation lab", icon="🧪")
        except KDError as e:
            st.error(f"The run cannot be reopened: {e}")
    all_runs, notices = runs.list_runs()
    if any(r.owner for r in all_runs):  # a shared server: each student can narrow the list to their own runs
        if st.toggle("Only the runs of this browser session", key="cmp_mine",
                     help="Runs are saved for everyone using this server; show only those trained in this tab."):
            all_runs = [r for r in all_runs if r.owner == state.session_id()]
    if notices:
        with st.expander(f"⚠️ {len(notices)} run file(s) skipped", expanded=False):
            for n in notices:
                st.caption(n)
    if not all_runs:
        st.info("No saved runs yet. Every run you finish or stop in the Distillation lab is saved here "
                f"(in `{runs.folder()}`); train two with different settings and compare them.")
        st.page_link("pages/lab.py", label="Open the Distillation lab", icon="🧪")
    else:
        by_id = {r.id: r for r in all_runs}
        st.subheader(f"{len(all_runs)} saved run{'s' if len(all_runs) != 1 else ''}")
        runs_overview(all_runs)
        with st.expander("Rename, delete, export or reopen a run", expanded=False):
            manage(all_runs, by_id)
        st.subheader("Side by side")
        chosen = [i for i in st.session_state.get("cmp_pick", []) if i in by_id]
        if "cmp_pick" not in st.session_state:
            chosen = [r.id for r in all_runs[:2]]
        st.session_state.cmp_pick = chosen
        pick = st.multiselect("Runs to compare", list(by_id), key="cmp_pick", max_selections=len(PALETTE),
                              format_func=lambda i: f"{by_id[i].name} ({when(by_id[i].created)})",
                              help="Pick two or more runs: their settings, results and curves appear side by side.")
        sel = [by_id[i] for i in pick]
        if not sel:
            st.info("Pick runs above to compare them.")
        else:
            side_by_side(sel)
            overlays(sel)


# ================================================================== sweep
keep("cmp_sw_dataset", "mnist-mini")
keep("cmp_sw_method", "kd")
keep("cmp_sw_T", [1.0, 2.0, 4.0, 8.0])
keep("cmp_sw_alpha", [0.5, 0.9])
keep("cmp_sw_fraction", 0.1)
keep("cmp_sw_seeds", 2)
keep("cmp_sw_epochs", 2)
keep("cmp_sw_scratch", True)
keep("cmp_sw_workers", os.cpu_count() or 1)
if st.session_state.cmp_sw_dataset not in data.DATASETS:
    st.session_state.cmp_sw_dataset = "mnist-mini"

SWEEP_METHODS = [n for n, m in methods.METHODS.items() if m.uses_temperature or m.uses_alpha]


def sweep_job() -> sweep.SweepJob | None:
    return st.session_state.get("cmp_sweep_job")


def start_sweep(cfg: Config, temps, alphas, seeds: int, scratch: bool, workers: int) -> None:
    try:
        sw = sweep.Sweep.grid(cfg, sorted(temps), sorted(alphas), seeds=range(seeds), scratch=scratch)
    except KDError as e:
        st.session_state.cmp_sw_error = str(e)
        return
    sid = state.session_id()
    job = sweep.SweepJob(sw, backend="joblib", n_jobs=workers, is_alive=lambda: state._session_alive(sid))
    st.session_state.cmp_sweep_job = job.start()


def draw_sweep(job: sweep.SweepJob) -> None:
    sw, res = job.sweep, job.result
    done, total = res.done, sw.total
    if job.status == "queued":
        st.info("Waiting for another sweep on this server to finish (one sweep runs at a time)…")
    elif job.status == "teacher":
        te = job.teacher_epoch
        st.progress(te[0] / te[1] if te else 0.0, text=f"Training the teacher once (then cached): epoch {te[0]}/{te[1]}"
                    if te else "Preparing the teacher…")
    elif job.status == "running":
        st.progress(done / total, text=f"{done}/{total} runs done on {job.n_jobs} worker process"
                                       f"{'es' if job.n_jobs != 1 else ''}"
                    + ("" if done else " (the workers are starting)") + f" — {time.time() - job.started:.0f} s")
    elif job.status == "finished":
        st.success(f"Sweep finished: {total} runs in {job.ended - job.started:.0f} s.")
    elif job.status == "stopped":
        st.warning(f"Sweep stopped after {done} of {total} runs" + (f" ({job.message})." if job.message else "."))
    else:
        st.error(f"The sweep failed: {job.message}")
    rows = res.rows()
    best = res.best(rows=rows)
    b = sw.base
    for m in sw.axis("method"):
        for frac in sw.axis("labeled_fraction"):
            where = f"{m}, {frac:.0%} labels"
            c1, c2 = st.columns(2)
            c1.plotly_chart(sweep.heatmap_figure(res, m, frac, "acc", f"Student test accuracy (%): {where}", best),
                            key=f"cmp_hm_acc_{m}_{frac}", width="stretch")
            c2.plotly_chart(sweep.heatmap_figure(res, m, frac, "agree", f"Agreement with the teacher (%): {where}", best),
                            key=f"cmp_hm_agree_{m}_{frac}", width="stretch")
    lines = []
    if best is not None:
        lines.append(f"★ **Best cell: T = {best['temperature']:g}, alpha = {best['alpha']:g}** — "
                     f"{sweep.fmt_pm(best['acc_mean'], best['acc_std'])}% accuracy over {best['n']} seed"
                     f"{'s' if best['n'] != 1 else ''}.")
    ref = next((r for r in rows if r["reference"] and r["n"]), None)
    if ref is not None:
        lines.append(f"Scratch student (no teacher): {sweep.fmt_pm(ref['acc_mean'], ref['acc_std'])}%.")
    t_acc = res.teacher_acc()
    if t_acc is not None:
        lines.append(f"Teacher {b.teacher}: {pct(t_acc)}.")
    if lines:
        st.markdown(" ".join(lines))
    st.caption(f"Each cell: mean ± standard deviation over {len(sw.seeds)} seed{'s' if len(sw.seeds) != 1 else ''} "
               f"of {b.student} distilled from {b.teacher} on {b.dataset} for {b.epochs} epoch"
               f"{'s' if b.epochs != 1 else ''}; '…' not run yet. Rows: T; columns: alpha.")
    errs = res.errors()
    if errs:
        st.warning(f"{len(errs)} run(s) failed, e.g.: {errs[0]['message']}")


with tab_sweep:
    job = sweep_job()
    running = job is not None and not job.done
    st.markdown("Train the same student for every combination of **T** and **alpha**, with several seeds per cell, "
                "in parallel worker processes (one torch thread each). The heatmaps fill in as cells finish. "
                "The same sweep runs from the command line or on a Dask/Ray cluster: "
                "`python -m kd_core sweep --temperatures 1,2,4,8 --alphas 0.5,0.9 --seeds 0,1`.")
    st.latex(r"\mathcal{L} = (1-\alpha)\,\mathrm{CE}(y, p_S) + \alpha\,T^2\,\mathrm{KL}\!\left(p_T^{(T)} \,\|\, p_S^{(T)}\right)")
    with st.container(border=True):
        a1, a2, a3 = st.columns(3)
        ds_name = a1.selectbox("Dataset", list(data.DATASETS), key="cmp_sw_dataset", disabled=running,
                               format_func=lambda n: f"{n} — {data.DATASETS[n].title}",
                               help="digits trains in a blink; mnist-mini is the app's default.")
        if st.session_state.cmp_sw_method not in SWEEP_METHODS:
            st.session_state.cmp_sw_method = "kd"
        method_name = a2.selectbox("Method", SWEEP_METHODS, key="cmp_sw_method", disabled=running,
                                   format_func=lambda n: methods.METHODS[n].title,
                                   help="Methods that use T or alpha. Their own parameters keep their defaults.")
        fraction = a3.select_slider("Labelled fraction", FRACTIONS, key="cmp_sw_fraction", disabled=running,
                                    format_func=lambda v: f"{v:.0%}",
                                    help="Share of training images whose label the student sees.")
        b1, b2 = st.columns(2)
        temps = b1.multiselect("Temperatures T", TEMPERATURES, key="cmp_sw_T", disabled=running,
                               format_func=lambda v: f"{v:g}", help="One heatmap row per temperature.")
        alphas = b2.multiselect("alpha values", ALPHAS, key="cmp_sw_alpha", disabled=running,
                                format_func=lambda v: f"{v:g}", help="One heatmap column per alpha.")
        c1, c2, c3, c4 = st.columns(4)
        seeds = c1.number_input("Seeds per cell", 1, 5, key="cmp_sw_seeds", disabled=running,
                                help="Each cell is trained with this many seeds: mean ± std.")
        epochs = c2.number_input("Epochs", 1, 20, key="cmp_sw_epochs", disabled=running, help="Epochs per run.")
        workers = c3.number_input("Worker processes", 1, max(1, os.cpu_count() or 1) * 2, key="cmp_sw_workers",
                                  disabled=running, help="Runs in parallel (joblib, local processes, one torch "
                                                         "thread each). One per CPU core uses the machine well.")
        scratch = c4.checkbox("Scratch reference", key="cmp_sw_scratch", disabled=running,
                              help="Also train the student alone (no teacher), per seed, for comparison.")
        method = methods.get(method_name)
        if not method.uses_alpha:
            st.caption(f"{method.title} does not use alpha: the columns will repeat the same training.")
        if not method.uses_temperature:
            st.caption(f"{method.title} does not use T: the rows will repeat the same training.")
        n_runs = len(temps) * len(alphas) * seeds + (seeds if scratch else 0)
        problem = None
        if not temps or not alphas:
            problem = "Choose at least one temperature and one alpha."
        cfg = Config(dataset=ds_name, method=method_name, labeled_fraction=float(fraction), epochs=int(epochs),
                     baseline=False)
        s1, s2, s3 = st.columns([1, 1, 3], vertical_alignment="center")
        # callbacks: the sweep starts (or stops) before the page is drawn again, so the buttons show it
        s1.button("▶ Run sweep", type="primary", key="cmp_sw_start", disabled=running or problem is not None,
                  width="stretch", help="Start the sweep in the background; the heatmaps fill in live.",
                  on_click=start_sweep, args=(cfg, temps, alphas, int(seeds), bool(scratch), int(workers)))
        s2.button("■ Stop", key="cmp_sw_stop", disabled=not running, width="stretch",
                  help="Cancel the runs not yet started; the finished cells stay.", on_click=lambda: job.stop())
        s3.caption(problem or f"{n_runs} runs of {epochs} epoch{'s' if epochs != 1 else ''} on {ds_name}.")
        if "cmp_sw_error" in st.session_state:
            st.error(st.session_state.pop("cmp_sw_error"))

    job = sweep_job()
    if job is None:
        st.info("Choose the grid and press **Run sweep**.")
    elif not job.done:
        @st.fragment(run_every=1.0)
        def live() -> None:
            j = sweep_job()
            if j is None:
                return
            draw_sweep(j)
            if j.done:
                st.rerun()  # once: the buttons re-enable and the download appears

        live()
    else:
        draw_sweep(job)
        if job.result.done:
            st.download_button("Download the sweep (CSV)", job.result.to_csv(), "kd-sweep.csv", mime="text/csv",
                               key="cmp_sw_download", help="One row per cell: mean and std of accuracy, agreement, "
                                                           "ECE; the best cell marked.")


# ================================================================== leaderboard
with tab_board:
    st.markdown("Every method of the registry on one teacher/student pair, several seeds each, in the style of "
                "Table 1 of the CRD paper (Tian et al. 2020). Produce or refresh it from the command line: "
                "`python -m kd_core leaderboard --dataset mnist-mini` (add `--dataset cifar10` where its files "
                "are present).")
    files = sorted(sweep.leaderboard_dir().glob("*.csv"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not files:
        st.info("No leaderboard yet. Run `python -m kd_core leaderboard --dataset mnist-mini --seeds 0,1 --epochs 2` "
                "and reload this page.")
    else:
        names = [p.stem for p in files]
        if st.session_state.get("cmp_board") not in names:
            st.session_state.cmp_board = names[0]
        which = st.selectbox("Dataset", names, key="cmp_board", help="One leaderboard per dataset; the latest first.")
        path = files[names.index(which)]
        try:
            df = pd.read_csv(path)
            need = {"name", "method", "acc_mean", "acc_std", "agree_mean", "agree_std", "n"}
            if not need <= set(df.columns):
                raise ValueError(f"missing columns {sorted(need - set(df.columns))}")
        except Exception as e:  # a damaged or foreign file: say so, never crash
            st.warning(f"The leaderboard file {path} cannot be read ({type(e).__name__}: {e}).")
        else:
            first = df.iloc[0]
            scratch_acc = df.loc[df["method"] == "none", "acc_mean"]
            scratch_acc = float(scratch_acc.iloc[0]) if len(scratch_acc) else math.nan

            def pm(m, s):
                return sweep.fmt_pm(float(m) if pd.notna(m) else math.nan, float(s) if pd.notna(s) else math.nan)

            table = pd.DataFrame({
                "method": df["name"],
                "top-1 accuracy (%)": [pm(m, s) for m, s in zip(df["acc_mean"], df["acc_std"])],
                "Δ vs scratch (points)": ["" if meth in ("none", "teacher") or pd.isna(m) or math.isnan(scratch_acc)
                                          else f"{100 * (m - scratch_acc):+.2f}"
                                          for meth, m in zip(df["method"], df["acc_mean"])],
                "agreement (%)": [pm(m, s) for m, s in zip(df["agree_mean"], df["agree_std"])],
                "seeds": ["" if meth == "teacher" or pd.isna(n) else str(int(n)) for meth, n in zip(df["method"], df["n"])],
            })
            learned = df[~df["method"].isin(["teacher", "none"])]
            top = learned.loc[learned["acc_mean"].idxmax(), "name"] if len(learned) and learned["acc_mean"].notna().any() else None

            def paint_board(row: pd.Series):
                return [BEST if row["method"] == top else ""] * len(row)

            st.dataframe(table.style.apply(paint_board, axis=1), hide_index=True, width="stretch", key="cmp_board_table",
                         height=35 * (len(table) + 1) + 3)
            meta = []
            for col, fmt in (("dataset", "{}"), ("teacher", "teacher {}"), ("student", "student {}"),
                             ("epochs", "{} epochs"), ("labeled_fraction", "{:.0%} of labels"), ("seeds", "seeds {}"),
                             ("created", "made {}")):
                if col in df.columns and pd.notna(first.get(col)):
                    value = first[col]
                    meta.append(fmt.format(str(value).replace(";", ", ") if col == "seeds" else value))
            st.caption(" · ".join(meta) + ". Mean ± standard deviation over seeds; the best method in green. "
                       "Methods other than KD and DKD train on cross-entropy plus their own loss, as in the paper's table.")
            st.download_button("Download (CSV)", path.read_bytes(), path.name, mime="text/csv", key="cmp_board_dl")

remember("cmp_sw_dataset", "cmp_sw_method", "cmp_sw_T", "cmp_sw_alpha", "cmp_sw_fraction", "cmp_sw_seeds",
         "cmp_sw_epochs", "cmp_sw_scratch", "cmp_sw_workers")

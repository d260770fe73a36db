"""Language models: distillation as it is done for LLMs, on a character-level transformer.

Type a prompt and compare the teacher's next-character distribution with the scratch and
distilled students'; see forward KL cover both modes of a two-mode teacher and reverse KL
pick one; train a student (a background job, live perplexity curves, Stop keeps what was
done); read samples side by side; weigh size against speed. In presentation mode
(``?present=1``) each of the five is one screen (``chrome.Screens``, ``&step=3``); only the
one shown runs. The engine is ``kd_core.lm``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from kd_app import chrome, i18n, links, state
from kd_app.i18n import t
from kd_core.errors import KDError
from kd_core.lm import corpus as lm_corpus
from kd_core.lm import explain
from kd_core.lm import jobs as lm_jobs
from kd_core.lm import methods as lm_methods
from kd_core.lm import models as lm_models
from kd_core.lm import train as lm_train

D = lm_train.LMConfig()
TEMPERATURES = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0]
FRACTIONS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
TOP_BARS = 16  # characters shown in the next-character chart
COLOURS = {
    "teacher": "#1f77b4",
    "distilled": "#2ca02c",
    "scratch": "#ff7f0e",
    "forward": "#2ca02c",
    "reverse": "#d62728",
}
JOB_KEY = "kd_lm_job_id"
RUNS_KEY = "kd_lm_runs"  # finished runs of this session, for the forward-vs-reverse table


def method_title(name: str) -> str:
    key = f"lm.methods.{name}.title"
    return t(key) if key in i18n.catalogue(i18n.DEFAULT) else lm_methods.METHODS[name].title


def param_help(m, p) -> str:
    key = f"lm.params.{m.name}.{p.name}"
    return t(key) if key in i18n.catalogue(i18n.DEFAULT) else p.help


def show_char(c: str) -> str:
    return {"\n": "⏎", " ": "␣", "\t": "⇥"}.get(c, c)


# ------------------------------------------------------------------ the link <-> the controls
method_param_fields = []
for m in lm_methods.METHODS.values():
    for p in m.params:
        method_param_fields.append(
            links.number(f"{m.name}.{p.name}", f"lm_p_{m.name}_{p.name}", p.default, p.low, p.high, integer=p.integer)
        )
fields = [
    links.choice("corpus", "lm_corpus", list(lm_corpus.CORPORA), D.corpus),
    links.Field("prompt", "lm_prompt", "The ", lambda raw: (raw[:200], None)),
    links.number("T", "lm_T", 1.0, options=TEMPERATURES),
    links.number("k", "lm_k", 5, 1, 50, integer=True),
    links.number("sep", "lm_sep", 16, 4, 30, integer=True),
    links.number("w2", "lm_w2", 0.55, 0.05, 0.95),
    links.choice("method", "lm_method", list(lm_methods.METHODS), D.method),
    links.number("train_T", "lm_train_T", D.temperature, options=TEMPERATURES),
    links.number("alpha", "lm_alpha", D.alpha, 0.0, 1.0),
    links.number("fraction", "lm_fraction", D.train_fraction, options=FRACTIONS),
    links.choice("student", "lm_student", [a for a in lm_models.ARCHS if a != D.teacher], D.student),
    links.number("steps", "lm_steps", D.steps, 1, 20000, integer=True),
    links.number("teacher_steps", "lm_teacher_steps", D.teacher_steps, 1, 20000, integer=True),
    links.number("seed", "lm_seed", D.seed, 0, 10000, integer=True),
    links.number("sample_T", "lm_sample_T", 0.8, 0.1, 2.0),
    *method_param_fields,
]

# presentation mode: one section per screen (?present=1&step=3), with Previous / Next
STEPS = ("next", "kl", "train", "samples", "size")
screens = chrome.Screens("language_models", [t(f"lm.present.{s}") for s in STEPS])
if screens.shows(1):
    st.title("💬 " + t("lm.title"))
    st.caption(t("lm.intro"))
links.sync("language-models", fields)
screens.header()

job = state.find_job(st.session_state[JOB_KEY]) if JOB_KEY in st.session_state else None
running = job is not None and not job.done

# ------------------------------------------------------------------ corpus and teacher
c1, c2 = st.columns([2, 3])
c1.selectbox(
    t("lm.corpus"),
    list(lm_corpus.CORPORA),
    key="lm_corpus",
    format_func=lambda n, lang=i18n.lang(): i18n.text(f"lm.corpora.{n}", lang),
    help=t("lm.corpus_help"),
    disabled=running,
)
corpus_name = st.session_state.lm_corpus
try:
    corpus = lm_corpus.load(corpus_name)
except KDError as e:
    st.error(t("lm.corpus_missing", error=e))
    st.stop()
c2.caption(
    t(
        "lm.corpus_caption",
        source=corpus.source,
        train=len(corpus.train),
        val=len(corpus.val),
        test=len(corpus.test),
        vocab=corpus.vocab_size,
    )
)
teacher_steps = int(st.session_state.lm_teacher_steps)
teacher = None
if lm_train.teacher_cached(corpus_name, D.teacher, teacher_steps):
    with st.spinner(t("lm.loading_teacher")):
        teacher = lm_train.get_teacher(corpus_name, D.teacher, teacher_steps)
    st.caption(
        t(
            "lm.teacher_caption",
            arch=D.teacher,
            params=lm_models.count_params(teacher.model),
            steps=teacher.steps,
            ppl=teacher.val_perplexity,
            seconds=teacher.train_seconds,
            cpu=f"{teacher.train_cpu_seconds:.0f}" if teacher.train_cpu_seconds is not None else "?",
        )
    )
else:
    st.info(t("lm.no_teacher", arch=D.teacher, steps=teacher_steps))


def run_models():
    """(distilled student, scratch student, result) of this session's latest ended run on
    this corpus, or Nones."""
    if job is None or job.status not in ("finished", "stopped") or job.trainer is None:
        return None, None, None
    tr = job.trainer
    if tr.config.corpus != corpus_name or tr.student is None:
        return None, None, None
    return tr.student, tr.baseline, job.result


student, scratch, result = run_models()


def record_run(snap: dict) -> None:
    """Add an ended run to this session's table (once)."""
    r = snap["result"]
    runs = st.session_state.setdefault(RUNS_KEY, [])
    if r is None or any(x["id"] == snap["id"] for x in runs):
        return
    c = r["config"]
    runs.append(
        {
            "id": snap["id"],
            "method": c["method"],
            "T": c["temperature"],
            "fraction": c["train_fraction"],
            "ppl": r["student"]["test_perplexity"],
            "entropy": r["student"]["mean_entropy"],
            "scratch_entropy": r["baseline"]["mean_entropy"] if "baseline" in r else None,
            "sample": r["student"]["sample"],
        }
    )


if job is not None and job.done:
    record_run(job.snapshot())

# what several sections use (drawn or not in presentation mode): the prompt (its box is in section 1)
prompt = st.session_state.lm_prompt


def draw_job() -> None:
    j = state.find_job(st.session_state.get(JOB_KEY)) if JOB_KEY in st.session_state else None
    if j is None:
        st.info(t("lm.train.press_train"))
        return
    snap = j.snapshot()
    status = snap["status"]
    if status == "queued":
        st.info(t("lm.progress.queued"))
        return
    if status == "teacher":
        te = snap["teacher_epoch"]
        st.progress(
            te[0] / te[1] if te else 0.0,
            text=t("lm.progress.teacher", step=te[0] if te else 0, total=te[1] if te else "?"),
        )
    elif status == "running":
        total = snap["total_steps"] or 1
        st.progress(min(snap["step"] / total, 1.0), text=t("lm.progress.step", step=snap["step"], total=total))
    elif status in ("finished", "stopped"):
        st.success(t(f"lm.progress.{status}", steps=snap["step"]))
    else:
        st.error(t("lm.progress.failed", message=snap["message"]))
    evals = snap["evals"]
    if evals:
        fig = go.Figure()
        fig.add_scatter(
            x=[e["step"] for e in evals],
            y=[e["student_perplexity"] for e in evals],
            name=t("lm.roles.distilled"),
            mode="lines+markers",
            line=dict(color=COLOURS["distilled"]),
        )
        if "baseline_perplexity" in evals[0]:
            fig.add_scatter(
                x=[e["step"] for e in evals],
                y=[e["baseline_perplexity"] for e in evals],
                name=t("lm.roles.scratch"),
                mode="lines+markers",
                line=dict(color=COLOURS["scratch"]),
            )
        if teacher is not None:
            fig.add_hline(y=teacher.val_perplexity, line_dash="dot", annotation_text=t("lm.roles.teacher"))
        fig.update_layout(
            height=300,
            margin=dict(l=60, r=10, t=30, b=10),
            xaxis_title=t("lm.progress.steps"),
            yaxis_title=t("lm.progress.val_ppl"),
            legend=dict(orientation="h", y=1.15),
        )
        st.plotly_chart(fig, key="lm_chart_curves", width="stretch", theme=None)
    if j.done and snap["result"] is not None:
        record_run(snap)


# ------------------------------------------------------------------ 1. next character
def next_character() -> None:
    """The prompt's next character: the teacher's distribution beside the students'."""
    st.header(t("lm.next.header"))
    st.caption(t("lm.next.caption"))
    n1, n2, n3 = st.columns([3, 2, 1])
    n1.text_input(t("lm.next.prompt"), key="lm_prompt", help=t("lm.next.prompt_help"), max_chars=200)
    n2.select_slider(t("lm.next.T"), TEMPERATURES, key="lm_T", help=t("lm.next.T_help"))
    n3.number_input(t("lm.next.k"), 1, 50, key="lm_k", help=t("lm.next.k_help"))
    T, k = float(st.session_state.lm_T), int(st.session_state.lm_k)
    unknown = corpus.unknown(prompt)
    if unknown:
        st.warning(t("lm.next.unknown", chars="".join(unknown)))
    if teacher is None:
        st.info(t("lm.next.needs_teacher"))
    else:
        pt = explain.softmax(explain.next_char_logits(teacher.model, corpus, prompt), T)
        order = np.argsort(-pt)[:TOP_BARS]
        labels = [show_char(corpus.chars[i]) for i in order]
        series = [("teacher", t("lm.roles.teacher"), pt)]
        if student is not None:
            series.append(
                (
                    "distilled",
                    t("lm.roles.distilled"),
                    explain.softmax(explain.next_char_logits(student, corpus, prompt), T),
                )
            )
        if scratch is not None:
            series.append(
                (
                    "scratch",
                    t("lm.roles.scratch"),
                    explain.softmax(explain.next_char_logits(scratch, corpus, prompt), T),
                )
            )
        fig = go.Figure()
        for role, name, p in series:
            fig.add_bar(x=labels, y=p[order].tolist(), name=name, marker_color=COLOURS[role])
        if k < TOP_BARS:
            fig.add_vline(x=k - 0.5, line_dash="dash", line_color="#555")
            fig.add_annotation(
                x=k - 0.5, y=1.0, yref="paper", text=t("lm.next.cut", k=k), showarrow=False, xanchor="left"
            )
        fig.update_layout(
            barmode="group",
            height=330,
            margin=dict(l=60, r=10, t=30, b=10),
            yaxis_title=t("lm.next.prob"),
            legend=dict(orientation="h", y=1.12),
        )
        st.plotly_chart(fig, key="lm_chart_next", width="stretch", theme=None)
        cols = st.columns(len(series) + 1)
        for col, (_role, name, p) in zip(cols, series):
            col.metric(t("lm.next.entropy", who=name), f"{explain.entropy_nats(p):.2f}")
        lost = float(1.0 - np.sort(pt)[::-1][:k].sum())
        cols[-1].metric(t("lm.next.lost", k=k), f"{100 * lost:.1f}%", help=t("lm.next.lost_help"))
        if student is None:
            st.caption(t("lm.next.train_for_students"))


# ------------------------------------------------------------------ 2. forward vs reverse KL
def forward_vs_reverse() -> None:
    """Forward KL covers both modes of a two-mode teacher, reverse KL picks one; then the real runs."""
    st.header(t("lm.kl.header"))
    st.caption(t("lm.kl.caption"))
    k1, k2 = st.columns(2)
    k1.slider(t("lm.kl.sep"), 4, 30, key="lm_sep", help=t("lm.kl.sep_help"))
    k2.slider(t("lm.kl.w2"), 0.05, 0.95, step=0.05, key="lm_w2", help=t("lm.kl.w2_help"))
    teacher_p = explain.bimodal(40, float(st.session_state.lm_sep), float(st.session_state.lm_w2))
    fits = {d: explain.fit_unimodal(teacher_p, d) for d in ("forward", "reverse")}
    kfig = go.Figure()
    kfig.add_bar(x=list(range(40)), y=teacher_p.tolist(), name=t("lm.kl.teacher"), marker_color="#9ecae1")
    for d, fit in fits.items():
        kfig.add_scatter(
            x=list(range(40)),
            y=fit["probs"].tolist(),
            name=t(f"lm.kl.{d}"),
            mode="lines+markers",
            line=dict(color=COLOURS[d], width=3),
        )
    kfig.update_layout(height=300, margin=dict(l=60, r=10, t=30, b=10), legend=dict(orientation="h", y=1.15))
    st.plotly_chart(kfig, key="lm_chart_kl", width="stretch", theme=None)
    m1, m2, m3 = st.columns(3)
    m1.metric(t("lm.kl.teacher_entropy"), f"{explain.entropy_nats(teacher_p):.2f}")
    m2.metric(t("lm.kl.forward_entropy"), f"{fits['forward']['entropy']:.2f}")
    m3.metric(t("lm.kl.reverse_entropy"), f"{fits['reverse']['entropy']:.2f}")
    st.caption(t("lm.kl.explain"))
    runs = st.session_state.get(RUNS_KEY, [])
    if runs:
        st.subheader(t("lm.kl.real_header"))
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        t("lm.table.method"): method_title(r["method"]),
                        "T": r["T"],
                        t("lm.table.fraction"): r["fraction"],
                        t("lm.table.ppl"): round(r["ppl"], 3),
                        t("lm.table.entropy"): round(r["entropy"], 3),
                        t("lm.table.scratch_entropy"): None
                        if r["scratch_entropy"] is None
                        else round(r["scratch_entropy"], 3),
                        t("lm.table.sample"): r["sample"][:80],
                    }
                    for r in runs
                ]
            ),
            hide_index=True,
            width="stretch",
        )
        st.caption(t("lm.kl.real_caption"))
    else:
        st.caption(t("lm.kl.real_empty"))


# ------------------------------------------------------------------ 3. train
def train_a_student(job, running: bool) -> None:
    """A method and its settings, Train / Stop, then the run's live curves."""
    st.header(t("lm.train.header"))
    a1, a2, a3 = st.columns(3)
    a1.selectbox(
        t("lm.train.method"),
        list(lm_methods.METHODS),
        key="lm_method",
        format_func=lambda n, lang=i18n.lang(): i18n.text(f"lm.methods.{n}.title", lang),
        disabled=running,
    )
    method = lm_methods.METHODS[st.session_state.lm_method]
    a2.select_slider(t("lm.train.T"), TEMPERATURES, key="lm_train_T", help=t("lm.train.T_help"), disabled=running)
    a3.slider(t("lm.train.alpha"), 0.0, 1.0, step=0.05, key="lm_alpha", help=t("lm.train.alpha_help"), disabled=running)
    st.markdown(t(f"lm.methods.{method.name}.summary") + " — *" + method.paper + "*")
    st.latex(method.formula)
    if method.name != "scratch":
        st.latex(r"L = (1-\alpha)\,\mathrm{CE} + \alpha\, L_{\text{method}}")
    params = {}
    if method.params:
        pcols = st.columns(len(method.params))
        for col, p in zip(pcols, method.params):
            key = f"lm_p_{method.name}_{p.name}"
            if p.integer:
                col.number_input(p.name, int(p.low), int(p.high), key=key, help=param_help(method, p), disabled=running)
            else:
                col.slider(
                    p.name,
                    float(p.low),
                    float(p.high),
                    step=0.05,
                    key=key,
                    help=param_help(method, p),
                    disabled=running,
                )
            params[p.name] = st.session_state[key]
    b1, b2, b3, b4 = st.columns(4)
    b1.select_slider(
        t("lm.train.fraction"), FRACTIONS, key="lm_fraction", help=t("lm.train.fraction_help"), disabled=running
    )
    b2.selectbox(
        t("lm.train.student"),
        [a for a in lm_models.ARCHS if a != D.teacher],
        key="lm_student",
        format_func=lambda a, lang=i18n.lang(): f"{a} — {i18n.text(f'lm.archs.{a}', lang)}",
        disabled=running,
    )
    b3.number_input(t("lm.train.steps"), 1, 20000, key="lm_steps", help=t("lm.train.steps_help"), disabled=running)
    b4.number_input(t("lm.train.seed"), 0, 10000, key="lm_seed", disabled=running)
    with st.expander(t("lm.train.advanced")):
        st.number_input(
            t("lm.train.teacher_steps"),
            1,
            20000,
            key="lm_teacher_steps",
            help=t("lm.train.teacher_steps_help"),
            disabled=running,
        )
    cfg = lm_train.LMConfig(
        method=method.name,
        corpus=corpus_name,
        student=st.session_state.lm_student,
        temperature=float(st.session_state.lm_train_T),
        alpha=float(st.session_state.lm_alpha),
        params=params,
        train_fraction=float(st.session_state.lm_fraction),
        steps=int(st.session_state.lm_steps),
        seed=int(st.session_state.lm_seed),
        teacher_steps=teacher_steps,
        eval_every=max(1, int(st.session_state.lm_steps) // 16),
    )
    s1, s2, _ = st.columns([1, 1, 3])
    if s1.button(t("lm.train.train"), type="primary", disabled=running, key="lm_train", help=t("lm.train.train_help")):
        try:
            job = lm_jobs.submit(state.job_manager(), cfg, owner=state.session_id())
            st.session_state[JOB_KEY] = job.id
            running = True
        except KDError as e:
            st.error(t("lm.train.cannot_start", error=e))
    if s2.button(t("lm.train.stop"), disabled=not running, key="lm_stop", help=t("lm.train.stop_help")):
        job.stop()

    if running:

        @st.fragment(run_every=1.0)
        def live() -> None:
            draw_job()
            j = state.find_job(st.session_state.get(JOB_KEY))
            if j is not None and j.done:
                st.rerun()  # once: the buttons re-enable, the results and students show

        live()
    else:
        draw_job()


# ------------------------------------------------------------------ 4. samples
def after_run(header: str) -> bool:
    """The header of a section that shows a finished run, or nothing at all on the whole page
    before a run (presentation mode says where to go). Returns whether there is a run to show."""
    if result is not None or screens.current is not None:
        st.header(t(header))
    if result is None and screens.current is not None:
        st.info(t("lm.present.after_run"))
    return result is not None


def samples() -> None:
    """The teacher's, the scratch student's and the distilled student's text from the prompt."""
    if not after_run("lm.samples.header"):
        return
    st.slider(t("lm.samples.T"), 0.1, 2.0, step=0.1, key="lm_sample_T", help=t("lm.samples.T_help"))
    ts = float(st.session_state.lm_sample_T)
    seed = int(result["config"]["seed"])
    who = [("teacher", teacher.model if teacher is not None else None), ("scratch", scratch), ("distilled", student)]
    cols = st.columns(len(who))
    for col, (role, model) in zip(cols, who):
        col.markdown(f"**{t('lm.roles.' + role)}**")
        if model is not None:
            col.code(
                prompt + lm_train.sample_text(model, corpus, prompt, 200, ts, seed), language=None, wrap_lines=True
            )


# ------------------------------------------------------------------ 5. size and speed
def size_and_speed() -> None:
    """Parameters, FLOPs, latency and quality of the three models."""
    if not after_run("lm.size.header"):
        return
    rows = []
    for role, key in (("teacher", "teacher"), ("distilled", "student"), ("scratch", "baseline")):
        r = result.get(key)
        if r is None:
            continue
        rows.append(
            {
                t("lm.size.model"): t("lm.roles." + role),
                t("lm.size.arch"): r["arch"],
                t("lm.size.params"): f"{r['params']:,}",
                t("lm.size.kflops"): round(r["flops_per_token"] / 1e3, 1),
                t("lm.size.latency"): round(1000 * r["latency_ms_per_token"], 2),
                t("lm.size.tokens_s"): f"{r['tokens_per_s']:,.0f}",
                t("lm.size.ppl"): round(r["test_perplexity"], 3),
                t("lm.size.bpc"): round(r["bits_per_char"], 3),
                t("lm.size.entropy"): round(r["mean_entropy"], 3),
                t("lm.size.acc"): f"{100 * r['top1_accuracy']:.1f}%",
                t("lm.size.agree"): "—" if key == "teacher" else f"{100 * r['agreement']:.1f}%",
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    if "baseline" in result:
        gain = 1 - result["student"]["test_perplexity"] / result["baseline"]["test_perplexity"]
        st.caption(t("lm.size.gain", gain=100 * gain, fraction=100 * result["config"]["train_fraction"]))


for n, draw in enumerate(
    (next_character, forward_vs_reverse, lambda: train_a_student(job, running), samples, size_and_speed), 1
):
    if screens.shows(n):
        draw()
screens.footer()

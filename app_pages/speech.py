"""Image -> speech: a teacher that sees digits trains a student that hears them.

1. A pair: a spoken digit (synthesised with espeak-ng) and the MNIST image it is paired
   with; the clip's log-mel spectrogram, the image teacher's soft targets on the image and
   the audio student's prediction on the sound.
2. Train: the cross-modal student (soft targets only, no audio label), the supervised one
   and a few-labels one, as a background job with live curves and Stop; then accuracies on
   unseen voices, the confusion matrix, and what the mismatch slider did over this
   session's runs.
3. Your own voice: record (microphone) or upload a WAV; the trained students listen.

In presentation mode (``?present=1``) each is one screen (``chrome.Screens``, ``&step=2``);
only the one shown runs. The engine is ``kd_core/audio.py``; every text comes from
``kd_app/locales/<lang>/speech.json``.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from kd_app import chrome, i18n, links, state
from kd_app.i18n import t
from kd_core import audio, viz
from kd_core.errors import KDError

TEMPERATURES = [1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0]
MISMATCHES = [round(0.05 * i, 2) for i in range(21)]
DEFAULT = audio.CrossmodalConfig()
N_TRAIN_CLIPS = DEFAULT.train_voices * audio.NUM_CLASSES
STUDENT_KEYS = {"crossmodal": "student", "supervised": "supervised", "few_labels": "few_labels"}


def fig(f):
    return i18n.localise_figure(f)


def student_name(name: str) -> str:
    return t(f"speech.students.{name}")


# presentation mode: one section per screen (?present=1&step=2), with Previous / Next
screens = chrome.Screens("speech", [t("speech.present.pair"), t("speech.present.run"), t("speech.present.own")])
if screens.shows(1):
    st.title("🔊 " + t("speech.title"))
    st.caption(t("speech.intro"))

FIELDS = [
    links.number("T", "sp_T", DEFAULT.temperature, options=TEMPERATURES),
    links.number("mismatch", "sp_mismatch", 0.0, options=MISMATCHES),
    links.number("epochs", "sp_epochs", DEFAULT.epochs, low=1, high=60, integer=True),
    links.number("clip", "sp_clip", 0, low=0, high=N_TRAIN_CLIPS - 1, integer=True),
]
links.sync("speech", FIELDS)
screens.header()

# ------------------------------------------------------------------ the clips
missing = audio.missing_clips(DEFAULT)
if missing and not audio.espeak_available():
    st.error(t("speech.no_espeak", n=missing))
    st.code("sudo apt-get install espeak-ng", language="bash")
    st.caption(t("speech.no_espeak_mac"))
    st.stop()
if missing:
    bar = st.progress(0.0, text=t("speech.synth_start", n=missing))

    def progress(done, total):
        bar.progress(done / total, text=t("speech.synth_progress", done=done, total=total))

    try:
        tr_v, te_v = audio.make_voices(DEFAULT.train_voices, DEFAULT.test_voices, DEFAULT.seed)
        audio.build_corpus(tr_v + te_v, DEFAULT.seed, progress=progress)
    except KDError as e:
        st.error(t("speech.synth_failed", error=e))
        st.stop()
    bar.empty()


@st.cache_resource(max_entries=6, show_spinner=False)
def page_data(mismatch: float) -> audio.Data:
    """The default voices' clips, features and pairs (shared by every session)."""
    return audio.prepare(audio.CrossmodalConfig(mismatch=mismatch))


# what several sections use (drawn or not in presentation mode): the settings, whose controls
# show above the pair and the run (links.sync keeps their values while they are not drawn)
T = float(st.session_state.sp_T)
mismatch = float(st.session_state.sp_mismatch)
epochs = int(st.session_state.sp_epochs)
if screens.shows(1) or screens.shows(2):
    ctl = st.columns([1, 1, 1], gap="large")
    with ctl[0]:
        st.select_slider(
            t("speech.T"), TEMPERATURES, key="sp_T", format_func=lambda v: f"{v:g}", help=t("speech.T_help")
        )
    with ctl[1]:
        st.select_slider(
            t("speech.mismatch"),
            MISMATCHES,
            key="sp_mismatch",
            format_func=lambda v: f"{100 * v:.0f}%",
            help=t("speech.mismatch_help"),
        )
    with ctl[2]:
        st.number_input(t("speech.epochs"), 1, 60, step=1, key="sp_epochs", help=t("speech.epochs_help"))

manager = state.job_manager()
job = manager.get(st.session_state.get("sp_job_id", -1), owner=state.session_id())
trained = job.trainer if job is not None and job.done and job.trainer is not None and job.result else None


def record(snap: dict) -> None:
    """Remember each ended run's setting and accuracy: the mismatch slider's effect."""
    hist = st.session_state.setdefault("sp_history", {})
    r = snap["result"]
    if r is not None and snap["id"] not in hist:
        hist[snap["id"]] = {
            "mismatch": r["config"]["mismatch"],
            "T": r["config"]["temperature"],
            "epochs": r["config"]["epochs"],
            "status": r["status"],
            "crossmodal": r["student"]["test_accuracy"],
            "supervised": r["supervised"]["test_accuracy"],
            "few_labels": r["few_labels"]["test_accuracy"],
        }


def show_results(snap: dict) -> None:
    r = snap["result"]
    cols = st.columns(4)
    for col, name in zip(cols, audio.STUDENTS):
        res = r[STUDENT_KEYS[name]]
        col.metric(
            t(f"speech.short.{name}"),
            f"{100 * res['test_accuracy']:.1f}%",
            help=t("speech.res.labels_used", n=res["audio_labels_used"]),
        )
    cols[3].metric(t("speech.res.chance"), f"{100 * r['chance']:.0f}%")
    st.caption(
        t(
            "speech.res.caption",
            train=r["data"]["train_clips"],
            test=r["data"]["test_clips"],
            voices=len(r["data"]["test_voices"]),
            wrong=r["data"]["mismatched_pairs"],
            agree=100 * r["teacher"]["pair_agreement"],
            seconds=r["wall_seconds"],
        )
    )
    c1, c2 = st.columns(2)
    with c1:
        st.markdown(f"**{t('speech.res.curves_title')}**")
        f = audio.accuracy_figure(r["history"], r["config"]["epochs"])
        st.plotly_chart(fig(f), key="sp_res_curves", width="stretch", theme=None)
    with c2:
        st.markdown(f"**{t('speech.res.confusion_title')}**")
        f = audio.confusion_figure(r["student"]["confusion"])
        st.plotly_chart(fig(f), key="sp_confusion", width="stretch", theme=None)


def show_job() -> None:
    j = manager.get(st.session_state.get("sp_job_id", -1), owner=state.session_id())
    if j is None:
        st.info(t("speech.run.none"))
        return
    snap = j.snapshot()
    if not j.done:
        pos = manager.queue_position(j)
        if pos is not None:
            st.info(t("speech.run.queued", pos=pos))
            return
        if snap["status"] == "teacher":
            st.info(t("speech.run.preparing"))
            return
        total = max(1, snap["total_steps"])
        st.progress(min(1.0, snap["step"] / total), text=t("speech.run.progress", step=snap["step"], total=total))
        c1, c2 = st.columns(2)
        with c1:
            st.markdown(f"**{t('speech.res.curves_title')}**")
            f = audio.accuracy_figure(snap["epochs"], snap["config"].epochs)
            st.plotly_chart(fig(f), key="sp_live_curves", width="stretch", theme=None)
        with c2:
            if snap["steps"]:
                st.markdown(f"**{t('speech.run.loss_title')}**")
                f = audio.loss_figure(snap["steps"])
                st.plotly_chart(fig(f), key="sp_live_loss", width="stretch", theme=None)
        return
    if snap["status"] in ("finished", "stopped") and snap["result"] is not None:
        record(snap)
        st.success(t(f"speech.run.done_{snap['status']}", message=snap["result"]["message"]))
        show_results(snap)
    elif snap["status"] == "stopped":
        st.info(t("speech.run.stopped_early"))
    else:
        st.error(t("speech.run.failed", status=snap["status"], message=snap["message"]))


# ------------------------------------------------------------------ 1. a pair
def a_pair() -> None:
    """A spoken digit and its image: the spectrogram, the teacher's soft targets, the student's guess."""
    with st.spinner(t("speech.loading")):
        d = page_data(mismatch)
    teacher = state.teacher("mnist-mini")
    mnist = state.dataset("mnist-mini")
    st.header(t("speech.pair.header"))
    st.caption(t("speech.pair.caption"))
    clip_col, _ = st.columns([1, 2])
    clip = int(
        clip_col.number_input(
            t("speech.pair.clip"), 0, len(d.train) - 1, step=1, key="sp_clip", help=t("speech.pair.clip_help")
        )
    )
    voice = d.train.voices[int(d.train.voice_index[clip])]
    said = int(d.train.digits[clip])
    img_index = int(d.pairs.image_index[clip])
    shown = int(mnist.y_train[img_index])
    wave = d.train.waves[clip]

    left, mid, right = st.columns([1.5, 0.75, 1.4], gap="medium")
    with left:
        st.markdown(t("speech.pair.sound", voice=voice.name))
        st.audio(audio.to_wav_bytes(wave), format="audio/wav")
        st.markdown(f"**{t('speech.pair.spec_title')}**")
        st.plotly_chart(fig(audio.spectrogram_figure(wave)), key="sp_spec", width="stretch", theme=None)
    with mid:
        st.markdown(t("speech.pair.image"))
        st.plotly_chart(
            viz.image_figure(viz.to_display(mnist.denormalise(mnist.x_train[img_index]).numpy()), height=260),
            key="sp_image",
            width="stretch",
            theme=None,
        )
        if bool(d.mismatched[clip]):
            st.warning(t("speech.pair.mismatched", said=said, shown=shown))
        else:
            st.caption(t("speech.pair.matched", said=said))
    with right:
        soft = audio.teacher_soft_targets(teacher.model, d.pairs.images[clip : clip + 1], T)[0].cpu().numpy()
        series = {t("speech.pair.teacher_series", T=T): soft}
        if trained is not None:
            series[t("speech.pair.student_series")] = trained.predict("crossmodal", wave)[0].numpy()
        st.markdown(f"**{t('speech.pair.bars_title')}**")
        bars = viz.prob_bars(series, [str(c) for c in range(10)], highlight=said)
        bars.update_layout(height=440, margin=dict(b=150), legend=dict(orientation="v", y=-0.3, yanchor="top"))
        for i, trace in enumerate(bars.data):
            trace.marker.color = viz.TEACHER if i == 0 else viz.STUDENT
        st.plotly_chart(fig(bars), key="sp_bars", width="stretch", theme=None)
        if trained is None:
            st.caption(t("speech.pair.no_student"))
        else:
            p = series[t("speech.pair.student_series")]
            st.caption(t("speech.pair.student_hears", digit=int(np.argmax(p)), p=100 * float(np.max(p)), said=said))


# ------------------------------------------------------------------ 2. train
def train_the_students(job) -> None:
    """The loss, Train / Stop, the run live, its results and what the mismatch did."""
    st.header(t("speech.run.header"))
    st.markdown(t("speech.run.explain"))
    st.latex(
        r"\mathcal{L}_{\text{audio}} = T^2\,\mathrm{KL}\big(\,\mathrm{softmax}(z_{\text{image}}/T)\;\|\;\mathrm{softmax}(s_{\text{sound}}/T)\big)"
    )
    cfg = audio.CrossmodalConfig(temperature=T, mismatch=mismatch, epochs=epochs)
    running = job is not None and not job.done
    b1, b2, _ = st.columns([1, 1, 3])
    start = b1.button(t("speech.run.train"), key="sp_train", type="primary", disabled=running)
    if running and b2.button(t("speech.run.stop"), key="sp_stop"):
        job.stop()
    if start:
        try:
            job = audio.submit(manager, cfg, owner=state.session_id())
            st.session_state.sp_job_id = job.id
            running = True
        except KDError as e:
            st.error(t("speech.run.bad", error=e))

    if running:

        @st.fragment(run_every=1.0)
        def live() -> None:
            show_job()
            j = manager.get(st.session_state.get("sp_job_id", -1), owner=state.session_id())
            if j is not None and j.done:
                st.rerun()  # once: the page settles with the results and the trained student

        live()
    else:
        show_job()

    hist = st.session_state.get("sp_history", {})
    if hist:
        with st.expander(t("speech.effect.header"), expanded=len(hist) > 1):
            st.caption(t("speech.effect.caption"))
            rows = sorted(hist.values(), key=lambda h: (h["mismatch"], h["T"]))
            st.dataframe(
                [
                    {
                        t("speech.effect.mismatch"): f"{100 * h['mismatch']:.0f}%",
                        "T": h["T"],
                        t("speech.effect.epochs"): h["epochs"],
                        student_name("crossmodal"): f"{100 * h['crossmodal']:.1f}%",
                        student_name("supervised"): f"{100 * h['supervised']:.1f}%",
                        student_name("few_labels"): f"{100 * h['few_labels']:.1f}%",
                    }
                    for h in rows
                ],
                hide_index=True,
                width="stretch",
            )


# ------------------------------------------------------------------ 3. your own voice
def your_own_voice() -> None:
    """A recording or an uploaded WAV, and what the trained students hear in it."""
    st.header(t("speech.own.header"))
    st.caption(t("speech.own.caption", seconds=audio.MAX_UPLOAD_SECONDS, mb=audio.MAX_UPLOAD_BYTES // 2**20))
    o1, o2 = st.columns(2)
    with o1:
        recorded = st.audio_input(t("speech.own.record"), key="sp_record")
    with o2:
        uploaded = st.file_uploader(t("speech.own.upload"), key="sp_upload", help=t("speech.own.upload_help"))
    source = uploaded if uploaded is not None else recorded
    if source is not None:
        name = getattr(source, "name", "") or "recording.wav"
        try:
            own = audio.check_upload(source.getvalue(), name if uploaded is not None else "recording.wav")
        except KDError as e:
            st.error(t("speech.own.bad", name=name, error=e))
            own = None
        if own is not None:
            a, b = st.columns([1, 1.2])
            with a:
                st.audio(audio.to_wav_bytes(own), format="audio/wav")
                st.markdown(f"**{t('speech.pair.spec_title')}**")
                st.plotly_chart(fig(audio.spectrogram_figure(own)), key="sp_own_spec", width="stretch", theme=None)
            with b:
                if trained is None:
                    st.info(t("speech.own.train_first"))
                else:
                    probs = {student_name(n): trained.predict(n, own)[0].numpy() for n in audio.STUDENTS}
                    st.markdown(f"**{t('speech.own.bars_title')}**")
                    f = viz.prob_bars(probs, [str(c) for c in range(10)])
                    f.update_layout(height=460, margin=dict(b=170), legend=dict(orientation="v", y=-0.3, yanchor="top"))
                    for trace, n in zip(f.data, audio.STUDENTS):
                        trace.marker.color = audio.STUDENT_COLOURS[n]
                    st.plotly_chart(fig(f), key="sp_own_bars", width="stretch", theme=None)
                    top = probs[student_name("crossmodal")]
                    st.success(t("speech.own.heard", digit=int(np.argmax(top)), p=100 * float(np.max(top))))


for n, draw in enumerate((a_pair, lambda: train_the_students(job), your_own_voice), 1):
    if screens.shows(n):
        draw()
screens.footer()

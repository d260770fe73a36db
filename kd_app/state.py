"""Process-wide resources shared by every session (guarded), and per-session helpers."""

from __future__ import annotations

import threading
import uuid

import numpy as np
import streamlit as st
import torch

from kd_app.i18n import t
from kd_core import classroom, data, metrics, teachers, train
from kd_core.jobs import JobManager


def session_alive(owner: str) -> bool:
    """Whether the browser session that owns a job is still connected."""
    from streamlit.runtime import Runtime

    if not Runtime.exists():  # headless (AppTest): no browser sessions to lose
        return True
    return Runtime.instance().is_active_session(owner)


@st.cache_resource
def job_manager() -> JobManager:
    """One job manager for the whole server: it limits how many trainings run at once
    (KD_PLAYGROUND_MAX_JOBS, default: one per CPU core, each job on one torch thread) and
    stops the jobs of sessions whose tab was closed, after a grace period."""
    import os
    import sys

    # Training threads and the web server share one GIL. Python hands it over every 5 ms by
    # default; a training step of tiny ops keeps asking for it back, so every hop of the
    # event loop (a static file chunk, a health check) could wait 5 ms. 1 ms keeps page
    # loads and /_stcore/health responsive while a classroom trains (see tests/test_load.py).
    sys.setswitchinterval(0.001)
    grace = float(os.environ.get("KD_PLAYGROUND_GRACE_SECONDS", "60"))
    # trainings run niced so that the server (page loads, the polling of every session)
    # answers first and training takes the rest of the CPU
    nice = int(os.environ.get("KD_PLAYGROUND_JOB_NICE", "5"))
    return JobManager(is_alive=session_alive, grace_seconds=grace, nice=nice, limits=classroom.Limits.from_env())


LECTURER = "kd_lecturer"  # session_state: this session unlocked lecturer mode


def lecturer_password() -> str | None:
    """The password the server set for lecturer mode (environment, then secrets); None: no lecturer."""
    return classroom.lecturer_password(st.secrets)


def is_lecturer() -> bool:
    return bool(st.session_state.get(LECTURER)) and lecturer_password() is not None


def unlock_lecturer(given: str) -> bool:
    ok = classroom.check_password(given, lecturer_password())
    st.session_state[LECTURER] = ok
    return ok


def session_id() -> str:
    """This browser session's id: owner of its jobs (each session sees only its own)."""
    if "kd_session_id" not in st.session_state:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        st.session_state.kd_session_id = ctx.session_id if ctx is not None else uuid.uuid4().hex
    return st.session_state.kd_session_id


@st.cache_resource(max_entries=8, show_spinner=False)
def dataset(name: str) -> data.Dataset:
    """Datasets are read-only and shared by all sessions."""
    return data.load(name)


_teacher_lock = threading.Lock()


def teacher(dataset_name: str, arch: str = "", epochs: int = 0, train_subset: int | None = None) -> train.Teacher:
    """The cached teacher, trained on first use with a progress bar on this page
    (``train_subset``: on that many training images only, e.g. CIFAR-10 on a CPU)."""
    arch, epochs = teachers.recipe(dataset_name, arch, epochs)
    if teachers.is_available(teachers.key(dataset_name, arch, epochs, train_subset=train_subset)):
        with st.spinner(t("lab.state.loading_cached", arch=arch)):
            return teachers.get(dataset_name, arch, epochs, train_subset=train_subset)
    label = (
        t("lab.state.training_teacher_subset", arch=arch, subset=train_subset, dataset=dataset_name)
        if train_subset
        else t("lab.state.training_teacher", arch=arch, dataset=dataset_name)
    )
    with st.status(label, expanded=True) as box:
        bar = st.progress(0.0, text=t("lab.state.starting"))

        def progress(epoch, total, acc):
            bar.progress(epoch / total, text=t("lab.state.epoch", epoch=epoch, total=total, acc=100 * acc))

        trained = train.get_teacher(dataset_name, arch, epochs, train_subset=train_subset, progress=progress)
        box.update(
            label=t("lab.state.teacher_ready", arch=arch, acc=100 * trained.test_accuracy),
            state="complete",
            expanded=False,
        )
    return trained


# quick runs from the Feature maps / Relations / Contrastive pages on CIFAR-10 use a training
# subset, so that a CPU trains them in a lecture
QUICK_SUBSET = {"cifar10": 5000}


def quick_teacher(dataset_name: str) -> train.Teacher:
    """The preset teacher of a dataset as the pages' quick runs use it (CIFAR-10: on a subset)."""
    return teacher(dataset_name, train_subset=QUICK_SUBSET.get(dataset_name))


@st.cache_resource(max_entries=16, show_spinner=False)
def test_logits(teacher_key: str, _model: torch.nn.Module, dataset_name: str) -> np.ndarray:
    """The teacher's logits on the test set, computed once per teacher and shared."""
    ds = dataset(dataset_name)
    return metrics.predict_logits(_model, ds.x_test).numpy()


# ------------------------------------------------------------------ this session's run
# "The run" is this session's latest Lab run (trained from the Lab, a page's quick button or
# the Lesson, or reopened from the run store): the job whose id is in ``RUN_KEY``. Every page
# that shows a run's students follows it.
RUN_KEY = "kd_lab_job_id"


def current_run():
    """This session's run (a ``Job``, any status), or None."""
    job_id = st.session_state.get(RUN_KEY)
    return find_job(job_id) if job_id is not None else None


def find_job(job_id):
    """One of this session's jobs by id (None when unknown or another session's)."""
    return job_manager().get(job_id, owner=session_id())


def start_run(cfg, on_end=None):
    """Submit ``cfg`` as this session's run; returns the Job (raises KDError when refused)."""
    job = job_manager().submit(cfg, owner=session_id(), on_end=on_end)
    st.session_state[RUN_KEY] = job.id
    return job


def settled(job, wait_s: float = 10.0) -> bool:
    """The job has ended and its end callback has had its say: a finished or stopped Lab
    run has its ``run_id`` in the run store (the callback runs after the status says done),
    or ``wait_s`` seconds have passed since it ended."""
    import time

    if not job.done:
        return False
    if job.on_end is None or getattr(job, "run_id", None) or job.status not in ("finished", "stopped"):
        return True
    return time.time() - (job.ended or 0.0) > wait_s


def ended_run():
    """(trainer, job) of this session's run once it has finished or stopped, else None.
    ``trainer.student`` / ``trainer.baseline`` are the trained models (eval them only),
    ``trainer.config`` the run's config and ``job.result`` the summary."""
    job = current_run()
    if job is None or job.status not in ("finished", "stopped") or job.trainer is None:
        return None
    return job.trainer, job


def current_run_snapshot():
    """(snapshot, job) of this session's run — training or ended — once it has finished at
    least one epoch; else None. ``snapshot`` is ``Trainer.snapshot()``: frozen eval-mode
    copies of the student, scratch baseline and method modules at the last epoch, safe to
    run while training continues. Pages that draw live maps poll this."""
    job = current_run()
    trainer = getattr(job, "trainer", None) if job is not None else None
    snap = trainer.snapshot() if trainer is not None else None
    return (snap, job) if snap is not None else None


def reload_run(run_id: str):
    """Make a saved run (``kd_core.runs``) this session's latest Lab run, so every page that
    draws from the Lab run (soft targets, feature maps, relations, contrastive, the Lab's
    results) shows it. Returns the (ended) Job; raises KDError when the run cannot be read."""
    import time

    from kd_core import runs
    from kd_core.jobs import Job

    run = runs.load_run(run_id)
    cfg = run.config
    if cfg.train_subset is None:
        teacher_ = teacher(cfg.dataset, cfg.teacher, cfg.teacher_epochs)  # with a progress bar if it must train
    else:
        with st.spinner(t("lab.state.loading_teacher", arch=cfg.teacher)):
            teacher_ = train.get_teacher(cfg.dataset, cfg.teacher, cfg.teacher_epochs, train_subset=cfg.train_subset)
    restored = run.restore(teacher=teacher_)
    job = Job(config=cfg, owner=session_id())
    job.status = run.status if run.status in ("finished", "stopped") else "finished"
    job.message = t("lab.state.reloaded", name=run.name)
    job.result, job.trainer = restored.result, restored
    job.epochs, job.steps = list(run.history), list(run.steps)
    job.step = int(run.result.get("steps") or 0)
    job.total_steps = int(run.result.get("total_steps") or job.step)
    job.started = job.ended = time.time()
    job.run_id = run.id
    job_manager().adopt(job)  # an ended job: the manager only keeps it for lookups (and forgets it after keep_seconds)
    st.session_state[RUN_KEY] = job.id
    return job


def save_lab_run(job):
    """``Job.on_end`` for the Lab: save the finished or stopped run in the run store
    (``kd_core.runs.save_lab_run``; runs in the job's worker thread, never touches the UI)."""
    from kd_core import runs

    return runs.save_lab_run(job)


def submit_lab_run(cfg):
    """Start ``cfg`` as this session's run from the Lab. It is recorded in the run store as
    it is queued, so a server that dies while it trains lists it as interrupted instead of
    losing it, and it is saved there when it ends (``save_lab_run``)."""
    from kd_core import runs

    started = runs.begin(cfg.to_dict(), owner=session_id(), source="lab")
    try:
        job = start_run(cfg, on_end=save_lab_run)
    except Exception:
        runs.discard(started)
        raise
    job.started_run = started
    return job


def run_progress() -> None:
    """A progress bar for this session's live Lab run: its teacher's epochs, then its steps."""
    j = current_run()
    if j is None or j.done:
        return
    snap = j.snapshot()
    if snap["status"] in ("queued", "teacher"):
        te = snap["teacher_epoch"]
        st.progress(
            te[0] / te[1] if te else 0.0,
            text=t("lab.state.progress_teacher", epoch=te[0], total=te[1]) if te else t("lab.state.progress_starting"),
        )
    else:
        total = snap["total_steps"] or 1
        st.progress(
            min(snap["step"] / total, 1.0),
            text=t(
                "lab.state.progress_training",
                step=snap["step"],
                total=total,
                done=len(snap["epochs"]),
                epochs=snap["config"].epochs,
            ),
        )

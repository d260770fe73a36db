"""Background jobs shared by every session of the app (and usable anywhere): the one
job system for every kind of run.

A ``Job`` runs a run object in a worker thread — anything with ``events()`` (a generator of
the event dicts of kd_core/train.py) and ``stop()``: a ``Trainer``, a chained method's
``ChainedRun``, the Lab pair as a ``batched.BatchedRun`` (``batched.make_run`` picks), a sweep's ``SweepRun`` — and keeps what a page needs to draw —
status, progress, ETA, the loss terms per step, the accuracies per epoch, the final
result — behind a lock, so a page can poll it from any thread. Workers never touch UI
code. The ``JobManager`` runs at most ``max_running`` jobs at once and queues the rest.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from . import batched
from .classroom import Limits
from .config import Config
from .errors import KDError

_ids = itertools.count(1)
# what a "step" event leaves in ``Job.steps``, where the event has it
STEP_KEYS = ("step", "epoch", "losses", "loss", "baseline_loss", "tracked", "stage")


@dataclass
class Job:
    config: Config
    owner: str = ""
    id: int = field(default_factory=lambda: next(_ids))
    status: str = "queued"  # queued, teacher, running, finished, stopped, diverged, error
    message: str = ""
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    step: int = 0
    total_steps: int = 0
    teacher_epoch: tuple[int, int] | None = None
    stage: str = ""  # a chained method's current inner run ("generation 2", "assistant", ...)
    steps: list = field(default_factory=list)  # {"step", "epoch", "losses", "baseline_loss"}
    epochs: list = field(default_factory=list)  # epoch events
    result: dict | None = None
    trainer: object = None  # the Trainer (a single run), for its models once the job has ended
    on_end: object = None  # optional callback(job) run in the worker after the end
    # make_run(teacher_progress) -> the run object; default: batched.make_run(config, ...)
    make_run: Callable | None = field(default=None, repr=False)
    run: object = field(default=None, repr=False)  # the run object, once made
    _thread: threading.Thread | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ------------------------------------------------------------ control
    def stop(self) -> None:
        self._stop.set()
        run = self.run
        if run is not None:
            run.stop()
        with self._lock:
            if self.status == "queued":
                self.status, self.message, self.ended = "stopped", "stopped before it started", time.time()

    @property
    def done(self) -> bool:
        return self.status in ("finished", "stopped", "diverged", "error")

    def join(self, timeout: float | None = None) -> None:
        """Wait for the job's worker thread (at most ``timeout`` seconds)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def eta_seconds(self) -> float | None:
        with self._lock:
            if self.status != "running" or not self.step or not self.started:
                return None
            rate = (time.time() - self._run_started) / self.step
            return rate * (self.total_steps - self.step)

    def snapshot(self) -> dict:
        """A consistent copy of what a page draws."""
        with self._lock:
            return {
                "id": self.id,
                "status": self.status,
                "message": self.message,
                "step": self.step,
                "total_steps": self.total_steps,
                "teacher_epoch": self.teacher_epoch,
                "stage": self.stage,
                "steps": list(self.steps),
                "epochs": list(self.epochs),
                "result": self.result,
                "config": self.config,
            }

    # ------------------------------------------------------------ worker
    def _record(self, ev: dict) -> None:
        """One event of the run into what the job keeps (the caller holds the lock). A subclass
        whose run sends events of its own kinds handles those and passes the rest here."""
        kind = ev["kind"]
        if self.status == "teacher":
            self.status, self._run_started = "running", time.time()
        self.stage = ev.get("stage", self.stage)
        if "total_steps" in ev:
            self.total_steps = ev["total_steps"]
        if kind == "start":
            self._run_started = time.time()
        elif kind == "progress":  # a run without steps of its own (a sweep's finished cells)
            self.step = ev["step"]
        elif kind == "step":
            self.step = ev["step"]
            # the optional keys: CTKD's learned temperature, a chained run's stage, the scratch twin
            self.steps.append({k: ev[k] for k in STEP_KEYS if k in ev})
        elif kind == "epoch":
            self.epochs.append({k: v for k, v in ev.items() if k != "kind"})
        elif kind == "end":
            self.result = ev["result"]
            self.status, self.message = ev["status"], ev["message"]

    def _run(self) -> None:
        if self._stop.is_set():
            return
        with self._lock:
            self.status, self.started = "teacher", time.time()
        try:

            def teacher_progress(epoch, epochs, acc):
                with self._lock:
                    self.teacher_epoch = (epoch, epochs)

            make = self.make_run or (lambda progress: batched.make_run(self.config, teacher_progress=progress))
            run = make(teacher_progress)
            self.run = run
            # what holds the trained models for the pages: the run itself (a Trainer), or
            # the one it names (a chained run's inner run that keeps its models; a sweep: none)
            self.trainer = getattr(run, "trainer", run)
            if self._stop.is_set():
                run.stop()
            for ev in run.events():
                with self._lock:
                    self._record(ev)
        except KDError as e:  # a stop while the teacher trains ends the run this way
            with self._lock:
                self.status, self.message = ("stopped" if self._stop.is_set() else "error"), str(e)
        except Exception as e:  # a bug: keep the app alive and say what happened
            traceback.print_exc()
            with self._lock:
                self.status, self.message = "error", f"{type(e).__name__}: {e}"
        finally:
            with self._lock:
                self.ended = time.time()
                if not self.done:
                    self.status = "error"
            if self.on_end is not None:
                try:
                    self.on_end(self)
                except Exception:
                    traceback.print_exc()


def _lower_priority(nice: int) -> None:
    """Make the calling thread nicer (on Linux a thread is a task with its own priority);
    a no-op where the platform has no per-thread priorities."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except (AttributeError, OSError):
        pass


class JobManager:
    """Runs jobs in daemon threads, at most ``max_running`` at once; the rest wait in order.

    ``is_alive(owner) -> bool`` (optional) tells whether a job's owner (a browser session)
    is still connected. A watchdog drops the queued jobs of an owner that has been gone for
    ``grace_seconds`` and stops its running job (which keeps its partial results), so a
    closed tab never holds a trainer. Finished jobs are forgotten after ``keep_seconds``
    so memory stays bounded as sessions come and go. ``nice`` (Linux) lowers the priority
    of the training threads so that a server sharing the machine keeps answering first.
    ``limits`` (a ``classroom.Limits``; default: none) caps the queued or running jobs of one
    owner and, in classroom mode, the size of each run: ``submit`` raises ``LimitReached``.
    """

    def __init__(
        self,
        max_running: int | None = None,
        is_alive=None,
        grace_seconds: float = 60.0,
        keep_seconds: float = 3600.0,
        watch_every: float = 5.0,
        nice: int = 0,
        limits: Limits | None = None,
    ):
        cpus = os.cpu_count() or 1
        self.limits = limits
        self.max_running = max_running or int(os.environ.get("KD_PLAYGROUND_MAX_JOBS", 0)) or cpus
        self._slots = threading.Semaphore(self.max_running)
        self._lock = threading.Lock()
        self._jobs: dict[int, Job] = {}
        self._queue: list[int] = []
        self.is_alive = is_alive
        self.grace_seconds = grace_seconds
        self.keep_seconds = keep_seconds
        self.nice = nice
        self._gone_since: dict[str, float] = {}
        if is_alive is not None:
            self._watch_every = watch_every
            threading.Thread(target=self._watch, name="kd-job-watchdog", daemon=True).start()

    def _watch(self) -> None:
        while True:
            time.sleep(self._watch_every)
            try:
                self.reap()
            except Exception:  # the watchdog must never die
                traceback.print_exc()

    def reap(self, now: float | None = None) -> list[Job]:
        """Stop the jobs of owners gone for longer than the grace period; forget old jobs.
        Returns the jobs stopped."""
        now = time.time() if now is None else now
        with self._lock:
            jobs = list(self._jobs.values())
        stopped = []
        owners = {j.owner for j in jobs if not j.done}
        for owner in owners:
            if self.is_alive is None or self.is_alive(owner):
                self._gone_since.pop(owner, None)
                continue
            since = self._gone_since.setdefault(owner, now)
            if now - since >= self.grace_seconds:
                for j in jobs:
                    if j.owner == owner and not j.done:
                        j.stop()
                        j.message = j.message or "stopped: the browser session closed"
                        stopped.append(j)
        with self._lock:
            for j in jobs:
                if j.done and j.ended is not None and now - j.ended > self.keep_seconds:
                    self._jobs.pop(j.id, None)
        return stopped

    def submit(self, config: Config, owner: str = "", on_end=None) -> Job:
        """Queue a training run of ``config`` (a single run or a chained method)."""
        config.resolved().validate()  # refuse bad configs now, in the caller's thread
        if self.limits is not None:
            self.limits.check_run(config)
        return self.submit_job(Job(config=config, owner=owner, on_end=on_end))

    def submit_job(self, job: Job) -> Job:
        """Queue a ready-made job (any run kind: see ``Job.make_run``; or a ``Job`` subclass
        with its own ``_run``, e.g. ``kd_core.lm.jobs.LMJob``): it shares the slots, the
        queue, the watchdog and the per-session limit (``LimitReached``)."""
        with self._lock:
            if self.limits is not None and job.owner:
                self.limits.check_session(sum(1 for j in self._jobs.values() if j.owner == job.owner and not j.done))
            self._jobs[job.id] = job
            self._queue.append(job.id)
        job._thread = threading.Thread(target=self._worker, args=(job,), name=f"kd-job-{job.id}", daemon=True)
        job._thread.start()
        return job

    def adopt(self, job: Job) -> Job:
        """Keep an ended job (e.g. a saved run reloaded) for lookups, like the jobs it ran;
        it is forgotten after ``keep_seconds`` like them."""
        with self._lock:
            self._jobs[job.id] = job
        return job

    def _worker(self, job: Job) -> None:
        with self._slots:
            with self._lock:
                if job.id in self._queue:
                    self._queue.remove(job.id)
            if self.nice:
                _lower_priority(self.nice)
            job._run()

    def queue_position(self, job: Job) -> int | None:
        """1 for the next job to start; None when the job is not waiting."""
        with self._lock:
            waiting = [i for i in self._queue if not self._jobs[i].done] if job.id in self._queue else []
            return waiting.index(job.id) + 1 if job.id in waiting else None

    def get(self, job_id: int, owner: str | None = None) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or (owner is not None and job.owner != owner):
            return None
        return job

    def jobs_of(self, owner: str) -> list[Job]:
        with self._lock:
            return [j for j in self._jobs.values() if j.owner == owner]

    def running(self) -> list[Job]:
        with self._lock:
            return [j for j in self._jobs.values() if j.status in ("teacher", "running")]

    def forget(self, job: Job) -> None:
        with self._lock:
            self._jobs.pop(job.id, None)

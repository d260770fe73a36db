"""``LMJob``: a language-model distillation run in the app's ``JobManager`` (its slots, queue
and watchdog), polled by the page like the Lab's jobs: status, the teacher's training
progress, per-step losses, validation perplexity curves, the final result."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field

from ..errors import KDError
from ..jobs import Job
from .train import LMConfig, LMTrainer


@dataclass
class LMJob(Job):
    evals: list = field(default_factory=list)  # {"step", "student_perplexity", "baseline_perplexity"}

    def snapshot(self) -> dict:
        snap = super().snapshot()
        with self._lock:
            snap["evals"] = list(self.evals)
        return snap

    def _run(self) -> None:
        if self._stop.is_set():
            return
        with self._lock:
            self.status, self.started = "teacher", time.time()
        try:

            def teacher_progress(step, steps, loss):
                with self._lock:
                    self.teacher_epoch = (step, steps)

            trainer = LMTrainer(self.config, teacher_progress=teacher_progress)
            self.trainer = trainer
            if self._stop.is_set():
                trainer.stop()
            with self._lock:
                self.status, self._run_started = "running", time.time()
            for ev in trainer.events():
                with self._lock:
                    kind = ev["kind"]
                    if kind == "start":
                        self.total_steps = ev["total_steps"]
                    elif kind == "step":
                        self.step = ev["step"]
                        self.steps.append(
                            {k: ev[k] for k in ("step", "loss", "losses") if k in ev}
                            | ({"baseline_loss": ev["baseline_loss"]} if "baseline_loss" in ev else {})
                        )
                    elif kind == "eval":
                        self.evals.append({k: v for k, v in ev.items() if k != "kind"})
                    elif kind == "end":
                        self.result = ev["result"]
                        self.status, self.message = ev["status"], ev["message"]
        except KDError as e:
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


def submit(manager, config: LMConfig, owner: str = "", on_end=None) -> LMJob:
    """Validate ``config`` now (in the caller's thread) and queue it in ``manager``."""
    config.validate()
    return manager.submit_job(LMJob(config=config, owner=owner, on_end=on_end))

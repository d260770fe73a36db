"""``LMJob``: a language-model distillation run in the app's ``JobManager`` (its slots, queue
and watchdog), polled by the page like the Lab's jobs: status, the teacher's training
progress, per-step losses, validation perplexity curves, the final result. The worker is
``Job``'s own; an ``LMTrainer`` is its run object, and this class adds the "eval" events."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..jobs import Job
from .train import LMConfig, LMTrainer


@dataclass
class LMJob(Job):
    evals: list = field(default_factory=list)  # {"step", "student_perplexity", "baseline_perplexity"}

    def __post_init__(self) -> None:
        if self.make_run is None:
            self.make_run = lambda progress: LMTrainer(self.config, teacher_progress=progress)

    def snapshot(self) -> dict:
        snap = super().snapshot()
        with self._lock:
            snap["evals"] = list(self.evals)
        return snap

    def _record(self, ev: dict) -> None:
        if ev["kind"] == "eval":
            self.evals.append({k: v for k, v in ev.items() if k != "kind"})
        else:
            super()._record(ev)


def submit(manager, config: LMConfig, owner: str = "", on_end=None) -> LMJob:
    """Validate ``config`` now (in the caller's thread) and queue it in ``manager``."""
    config.validate()
    return manager.submit_job(LMJob(config=config, owner=owner, on_end=on_end))

"""A server killed outright (SIGKILL) while runs are being saved, or while a run trains:
after a restart the run store lists cleanly — no half-written run, no crash — and the run
that was training is listed as interrupted, with its settings, instead of silently gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kd_core import runs

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

PRELUDE = """
import sys, time
from pathlib import Path
from kd_core import runs
runs.folder = lambda: Path({folder!r})  # the test's own run store; teachers from the shared cache
"""


def _spawn(code: str, folder: Path) -> subprocess.Popen:
    script = textwrap.dedent(PRELUDE.format(folder=str(folder))) + textwrap.dedent(code)
    return subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(proc: subprocess.Popen, word: str, limit_s: float = 300) -> None:
    deadline = time.monotonic() + limit_s  # a generous bound, not a timing assertion
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if word in line:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the child ended early: {proc.stderr.read()[-2000:]}")
    raise AssertionError(f"the child never printed {word!r}")


def test_a_run_killed_while_training_is_listed_as_interrupted(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "folder", lambda: tmp_path)
    proc = _spawn(
        """
        from kd_core import train
        from kd_core.config import Config
        cfg = Config(dataset="digits", epochs=200, seed=7)
        rid = runs.begin(cfg.to_dict(), owner="student-7", source="lab")
        trainer = train.Trainer(cfg)
        for ev in trainer.events():
            if ev["kind"] == "step" and ev["step"] == 3:
                print("training", rid, flush=True)
        """,
        tmp_path,
    )
    try:
        _wait_for(proc, "training")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    listed, notices = runs.list_runs()
    assert notices == []
    assert len(listed) == 1
    run = listed[0]
    assert run.status == runs.INTERRUPTED and run.owner == "student-7"
    assert run.config.epochs == 200 and run.config.seed == 7 and "interrupted" in run.name
    assert runs.load_run(run.id).status == runs.INTERRUPTED
    with pytest.raises(runs.RunError):
        run.load_student()  # nothing was saved: no weights to load, a clear error
    with pytest.raises(runs.RunError):
        runs.delete(run.id, by="someone-else")
    runs.delete(run.id, by="student-7")  # its owner clears it
    assert runs.list_runs() == ([], [])


def test_a_run_still_training_is_not_listed_and_a_saved_one_replaces_its_record(tmp_path, monkeypatch):
    from kd_core import models
    from kd_core.config import Config

    monkeypatch.setattr(runs, "folder", lambda: tmp_path)
    cfg = Config(dataset="digits", epochs=1).resolved()
    rid = runs.begin(cfg.to_dict(), owner="me")
    assert runs.list_runs() == ([], [])  # this process is alive: the run is training, not interrupted
    student = models.build(cfg.student, (1, 8, 8), 10)
    result = {"config": cfg.to_dict(), "status": "finished", "student": {"test_accuracy": 0.5}, "steps": 3}
    saved = runs.save_run(result, student, owner="me", run_id=rid)
    assert saved.id == rid and not (tmp_path / rid / runs.STARTED_FILE).exists()
    assert [r.status for r in runs.list_runs()[0]] == ["finished"]
    other = runs.begin(cfg.to_dict(), owner="me")
    runs.discard(other)  # a diverged run leaves nothing behind
    assert not (tmp_path / other).exists()


def test_killing_the_server_while_it_saves_never_leaves_a_half_written_run(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "folder", lambda: tmp_path)
    code = """
        import torch
        from kd_core import models
        from kd_core.config import Config
        cfg = Config(dataset="mnist-mini", epochs=1, student="cnn-32-64").resolved()  # a big student: a save takes a while
        student = models.build(cfg.student, (1, 28, 28), 10)
        result = {"config": cfg.to_dict(), "status": "finished", "student": {"test_accuracy": 0.9}, "steps": 5}
        print("saving", flush=True)
        while True:
            runs.save_run(result, student, baseline=student, owner="me")
        """
    kills = 0
    for delay in (0.05, 0.13, 0.31, 0.52, 0.77):
        proc = _spawn(code, tmp_path)
        try:
            _wait_for(proc, "saving")
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            kills += 1
        finally:
            if proc.poll() is None:
                proc.kill()
        listed, notices = runs.list_runs()
        assert notices == [], notices
        for run in listed:  # every listed run is whole: its weights load and match their hashes
            assert run.status == "finished"
            student, baseline, _ = run.load_student()
            assert student is not None and baseline is not None
        complete = {r.id for r in listed}
        half = [d.name for d in tmp_path.iterdir() if d.is_dir() and d.name not in complete]
        assert len(half) <= kills  # at most the one save each kill cut short, never listed
    assert kills == 5

"""The run store: save -> reload is exact, bad run files are skipped with a notice, a save
killed half-way leaves the older runs intact and no half-run listed, and the Lab's
``on_end`` callback saves finished and stopped runs."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kd_core import data, metrics, runs, train
from kd_core.config import Config
from kd_core.jobs import JobManager

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_dir(tmp_path, monkeypatch) -> Path:
    """A private run folder per test (the teacher cache stays shared)."""
    d = tmp_path / "runs"
    d.mkdir()
    monkeypatch.setattr(runs, "folder", lambda: d)
    return d


@pytest.fixture(scope="module")
def trained():
    """Two finished digits runs: vanilla KD with a scratch baseline, FitNets (with regressors)."""
    out = {}
    for method in ("kd", "fitnets"):
        tr = train.Trainer(Config(dataset="digits", method=method, epochs=1, temperature=2.0))
        tr.run()
        out[method] = tr
    return out


def logits(model) -> torch.Tensor:
    return metrics.predict_logits(model, data.load("digits").x_test)


@pytest.mark.parametrize("method", ["kd", "fitnets"])
def test_save_and_reload_are_exact(run_dir, trained, method):
    tr = trained[method]
    saved = runs.save_trainer(tr, name="  my\nfirst   run ")
    assert saved.name == "my first run"  # one clean line
    assert sorted(p.name for p in (run_dir / saved.id).iterdir()) == sorted(
        ["run.json", "student.safetensors", "baseline.safetensors"]
    )
    run = runs.load_run(saved.id)
    assert run.config == tr.config
    expected = json.loads(json.dumps(runs._jsonable({k: v for k, v in tr.result.items() if k != "step_losses"})))
    assert run.result == expected
    assert run.history == expected["epochs"] and run.history[0]["student_acc"] == tr.history[0]["student_acc"]
    assert [s["loss"] for s in run.steps] == [s["loss"] for s in tr.steps]  # short run: every step kept
    student, baseline, modules = run.load_student()
    assert torch.equal(logits(student), logits(tr.student))
    assert torch.equal(logits(baseline), logits(tr.baseline))
    if method == "fitnets":
        want = tr.modules.state_dict()
        got = modules.state_dict()
        assert want.keys() == got.keys() and all(torch.equal(want[k].cpu(), got[k]) for k in want)
    else:
        assert modules is None
    # the Trainer-like view the pages draw from
    restored = run.restore()
    assert restored.config == tr.config and restored.snapshot()["epoch"] == 1
    assert torch.equal(logits(restored.snapshot()["student"]), logits(tr.student))
    # and the weights file offered for download is the one on disk, hash-checked
    assert run.weights_bytes() == (run_dir / saved.id / "student.safetensors").read_bytes()


def test_long_step_histories_are_thinned():
    steps = [{"step": i, "loss": float(i)} for i in range(1, 5001)]
    kept = runs.thin_steps(steps)
    assert len(kept) == runs.MAX_STEPS_KEPT and kept[0]["step"] == 1 and kept[-1]["step"] == 5000


def _copy_run(run_dir: Path, src_id: str, new_id: str, edit) -> None:
    shutil.copytree(run_dir / src_id, run_dir / new_id)
    f = run_dir / new_id / "run.json"
    doc = json.loads(f.read_text())
    doc["id"] = new_id
    text = edit(doc)
    f.write_text(text if isinstance(text, str) else json.dumps(doc))


def test_bad_run_files_are_skipped_with_a_notice(run_dir, trained):
    good = runs.save_trainer(trained["kd"])
    _copy_run(run_dir, good.id, "20000101-000000-aaaaaa", lambda d: '{"format": 1, "name": "cut off')
    _copy_run(run_dir, good.id, "20000101-000000-bbbbbb", lambda d: d.update(format=0))
    _copy_run(run_dir, good.id, "20000101-000000-cccccc", lambda d: d.pop("format"))
    _copy_run(run_dir, good.id, "20000101-000000-dddddd", lambda d: d.update(format=runs.FORMAT + 1))
    _copy_run(run_dir, good.id, "20000101-000000-eeeeee", lambda d: d.update(config={"dataset": "digits", "bogus": 1}))
    _copy_run(run_dir, good.id, "20000101-000000-ffffff", lambda d: d.pop("result"))
    (run_dir / "20000101-000000-abcdef").mkdir()  # a save in progress: no run.json yet
    (run_dir / "not-a-run").mkdir()
    (run_dir / "20000101-000000-999999").write_text("a stray file")
    listed, notices = runs.list_runs()
    assert [r.id for r in listed] == [good.id]
    assert len(notices) == 6, notices
    text = "\n".join(notices)
    assert "unreadable" in text and "an older version" in text and "a newer version" in text
    assert "damaged" in text or "incomplete" in text
    assert all("\n" not in n for n in notices)
    with pytest.raises(runs.RunError, match="older version"):
        runs.load_run("20000101-000000-bbbbbb")
    with pytest.raises(runs.RunError, match="unreadable"):
        runs.load_run("20000101-000000-aaaaaa")


def test_damaged_weights_are_reported_not_loaded(run_dir, trained):
    good = runs.save_trainer(trained["kd"])
    f = run_dir / good.id / "student.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-5] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(runs.RunError, match="damaged"):
        runs.load_run(good.id).load_student()


def test_rename_delete_and_export(run_dir, trained):
    a = runs.save_trainer(trained["kd"])
    b = runs.save_trainer(trained["fitnets"], name="fitnets try")
    assert a.id != b.id
    assert runs.rename(a.id, "KD at T=2").name == "KD at T=2"
    assert runs.load_run(a.id).name == "KD at T=2"
    with pytest.raises(runs.RunError):
        runs.rename(a.id, "   ")
    for bad in ("../../etc", "", "20000101-000000-zzzzzz/..", None):
        with pytest.raises(runs.RunError):
            runs.load_run(bad)
    run = runs.load_run(a.id)
    rows = list(csv.DictReader(io.StringIO(runs.export_csv(run))))
    assert [r["model"] for r in rows] == ["teacher", "distilled student", "scratch student"]
    assert float(rows[1]["test_accuracy"]) == pytest.approx(run.result["student"]["test_accuracy"])
    assert "acc_class_9" in rows[1]
    hist = list(csv.DictReader(io.StringIO(runs.export_csv(run, "history"))))
    assert len(hist) == 1 and hist[0]["epoch"] == "1"
    doc = json.loads(runs.export_json(run))
    assert doc["config"] == run.config.to_dict() and doc["name"] == "KD at T=2"
    assert runs.export_name(run, ".json").startswith("kd-KD-at-T=2-")
    runs.delete(a.id)
    assert [r.id for r in runs.list_runs()[0]] == [b.id]
    assert not (run_dir / a.id).exists()
    with pytest.raises(runs.RunError):
        runs.delete(a.id)


CHILD = r"""
import sys, time
from pathlib import Path
from kd_core import paths, runs

folder, src, phase = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
runs.folder = lambda: folder
run = runs.load_run(src)
student, baseline, modules = run.load_student()
real_bytes, real_text = paths.atomic_write_bytes, paths.atomic_write_text

def stall():
    print("STALLED", flush=True)
    time.sleep(120)

def slow_bytes(path, data):
    if phase == "weights":  # half the weights written to the temporary file, then killed
        tmp = Path(path).with_name(f".{Path(path).name}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
        stall()
    real_bytes(path, data)

def slow_text(path, text):
    if phase == "run.json" and Path(path).name == "run.json":  # weights in place, run.json not yet
        stall()
    real_text(path, text)

paths.atomic_write_bytes, paths.atomic_write_text = slow_bytes, slow_text
runs.save_run(run.result, student, baseline, modules, name="half")
print("SAVED", flush=True)
"""


@pytest.mark.parametrize("phase", ["weights", "run.json"])
def test_a_save_killed_half_way_leaves_no_half_run(run_dir, trained, phase, tmp_path):
    before = runs.save_trainer(trained["kd"], name="before")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(run_dir), before.id, phase],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "STALLED", line + proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    folders = [p.name for p in run_dir.iterdir()]
    assert len(folders) == 2  # the half-saved run's folder is there...
    listed, notices = runs.list_runs()
    assert [r.id for r in listed] == [before.id] and notices == []  # ...but never listed, and nothing to warn about
    student, _, _ = runs.load_run(before.id).load_student()  # the older run is intact
    assert torch.equal(logits(student), logits(trained["kd"].student))
    # an interrupted save that is long stale is cleaned away
    half = next(run_dir / f for f in folders if f != before.id)
    old = time.time() - 2 * runs.STALE_SECONDS
    os.utime(half, (old, old))
    runs.list_runs()
    assert not half.exists() and (run_dir / before.id).exists()


def test_the_lab_callback_saves_finished_and_stopped_runs(run_dir):
    mgr = JobManager(max_running=1)
    job = mgr.submit(Config(dataset="digits", epochs=1, method="kd"), owner="t", on_end=runs.save_lab_run)
    stopped = mgr.submit(
        Config(dataset="digits", epochs=3, method="none", baseline=False), owner="t", on_end=runs.save_lab_run
    )
    deadline = time.time() + 120
    while not job.done and time.time() < deadline:
        time.sleep(0.05)
    while stopped.step < 3 and time.time() < deadline:
        time.sleep(0.01)
    stopped.stop()
    while not stopped.done and time.time() < deadline:
        time.sleep(0.05)
    assert job.status == "finished" and stopped.status == "stopped"
    deadline = time.time() + 10  # on_end runs in the worker thread, after the status is set
    while not hasattr(stopped, "run_id") and time.time() < deadline:
        time.sleep(0.05)
    listed, _ = runs.list_runs()
    assert {r.id for r in listed} == {job.run_id, stopped.run_id}
    s = runs.load_run(stopped.run_id)
    assert s.status == "stopped" and not s.has_baseline() and s.load_student()[1] is None
    assert runs.load_run(job.run_id).source == "lab"

    class Failed:  # diverged or failed runs are not kept
        status, trainer, result = "error", None, None

    assert runs.save_lab_run(Failed()) is None

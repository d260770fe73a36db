"""The run store: every finished or stopped run, on disk under ``KD_PLAYGROUND_HOME/runs``.

One folder per run, named by a generated id (never by user text; a run's name is only a
field)::

    runs/<run_id>/student.safetensors   the distilled student (+ the method's modules as 'extra.')
                  baseline.safetensors  the scratch student, when the run trained one
                  run.json              format version, name, created, config, metrics, history

Each file is written to a temporary name and moved into place (``os.replace``), and
``run.json`` is written last, with the hashes of the weight files: a folder without a
valid ``run.json`` is an interrupted save and is never listed, so a crash at any moment
leaves the older runs intact and no half-run behind. Unreadable ``run.json`` files and
files of another format version are skipped with a notice, never a crash.

A run that is training has a ``started.json`` in its folder (``begin``), replaced by
``run.json`` when it is saved. If the server dies while it trains (a crash, SIGKILL), the
record stays: the run is listed as **interrupted** — with its settings, no weights — rather
than silently gone, until its owner deletes it.

``load_run(id).load_student()`` rebuilds the models from the config (``models.build``)
and loads the weights; ``load_run(id).restore()`` gives a Trainer-like object that the
app's pages can draw from as if the run had just finished.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import data as data_mod
from . import models, paths, teachers
from .config import Config
from .errors import ConfigError, KDError

FORMAT = 1  # bump when what run.json holds changes; runs of another version are skipped
RUN_FILE = "run.json"
STARTED_FILE = "started.json"  # a run in training; an orphaned one is an interrupted run
INTERRUPTED = "interrupted"
STUDENT_FILE = "student.safetensors"
BASELINE_FILE = "baseline.safetensors"
MAX_STEPS_KEPT = 400  # the per-step loss curve is thinned to this many points
MAX_NAME = 80
STALE_SECONDS = 3600.0  # an incomplete run folder older than this is an interrupted save: removed
_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")


class RunError(KDError):
    """A run that does not exist or cannot be read."""


def folder() -> Path:
    return paths.subdir("runs")


def new_id() -> str:
    """A fresh run id: time of creation plus randomness (sorts by age; safe as a folder name)."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def _run_dir(run_id: str) -> Path:
    if not isinstance(run_id, str) or not _ID.match(run_id):
        raise RunError(f"'{run_id}' is not a run id")
    return folder() / run_id


def clean_name(name) -> str:
    """A display name: one line, printable, at most MAX_NAME characters."""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in str(name or "")).split())
    return text[:MAX_NAME]


def default_name(config: dict) -> str:
    c = config
    method = c.get("method", "?")
    label = "scratch" if method == "none" else method
    tail = f"{c.get('dataset', '?')}, seed {c.get('seed', 0)}"
    if method == "none":
        return clean_name(f"{label} · {tail}")
    return clean_name(f"{label} T={c.get('temperature', 0):g} α={c.get('alpha', 0):g} · {tail}")


@dataclass
class Run:
    id: str
    name: str
    created: float
    config: Config
    result: dict  # the run's summary without the per-step losses (see ``steps``)
    steps: list = field(default_factory=list)  # the loss per step, thinned to MAX_STEPS_KEPT points
    source: str = ""
    files: dict = field(default_factory=dict)  # file name -> sha256
    owner: str = ""  # the app session that made it (empty: the CLI, a notebook)

    @property
    def path(self) -> Path:
        return _run_dir(self.id)

    @property
    def status(self) -> str:
        return self.result.get("status", "")

    @property
    def history(self) -> list[dict]:
        return self.result.get("epochs", [])

    def has_baseline(self) -> bool:
        return BASELINE_FILE in self.files

    def weights_bytes(self, which: str = "student") -> bytes:
        """The raw safetensors file, for a download (checked against the hash saved with the run)."""
        name = STUDENT_FILE if which == "student" else BASELINE_FILE
        if name not in self.files:
            raise RunError(f"run '{self.name}' has no {which} weights")
        try:
            raw = (self.path / name).read_bytes()
        except OSError as e:
            raise RunError(f"the {which} weights of run '{self.name}' cannot be read ({e.strerror or e})") from None
        if hashlib.sha256(raw).hexdigest() != self.files[name]:
            raise RunError(f"the {which} weights of run '{self.name}' are damaged (their hash does not match)")
        return raw

    # ---------------------------------------------------------- models
    def load_student(self):
        """(student, baseline or None, modules or None): rebuilt from the config and loaded,
        in eval mode on the CPU."""
        if self.status == INTERRUPTED:
            raise RunError(f"run '{self.name}' was interrupted before it was saved: it has no weights")
        cfg = self.config
        info = data_mod.DATASETS.get(cfg.dataset)
        if info is None:
            raise RunError(f"run '{self.name}' uses the unknown dataset '{cfg.dataset}'")
        in_shape, k = info.in_shape, info.num_classes
        student = models.build(cfg.student, in_shape, k)
        modules = self._modules(in_shape, k)
        _load_into(student, modules, self.weights_bytes("student"), self.name)
        baseline = None
        if self.has_baseline():
            baseline = models.build(cfg.student, in_shape, k)
            _load_into(baseline, None, self.weights_bytes("baseline"), self.name)
        out = []
        for m in (student, baseline, modules):
            if m is not None:
                m.eval()
                for p in m.parameters():
                    p.requires_grad_(False)
            out.append(m)
        return tuple(out)

    def _modules(self, in_shape, k):
        """The method's extra trainable modules (FitNets regressors, projection heads), built
        as the Trainer built them, from the layer pairs the run used."""
        method = self.config.method_obj
        if method.make_modules is None or not self.result.get("pairs"):
            return None
        teacher = models.build(self.config.teacher, in_shape, k)
        student = models.build(self.config.student, in_shape, k)
        t_shapes = models.module_shapes(teacher, in_shape)
        s_shapes = models.module_shapes(student, in_shape)
        shapes = [(tuple(t_shapes[t]), tuple(s_shapes[s])) for t, s in self.result["pairs"]]
        with torch.random.fork_rng(devices=[]):  # the weights are loaded next: leave torch's RNG as it was
            return method.make_modules(shapes, self.config.method_params())

    def restore(self, teacher=None) -> RestoredRun:
        """A Trainer-like object (``config``, ``student``, ``baseline``, ``modules``, ``teacher``,
        ``pairs``, ``result``, ``snapshot()``) so the app's pages can show this run as if it had
        just finished. The teacher comes from the teacher cache (trained again if it is gone)."""
        cfg = self.config
        student, baseline, modules = self.load_student()
        if teacher is None:
            teacher = teachers.get(cfg.dataset, cfg.teacher, cfg.teacher_epochs, train_subset=cfg.train_subset)
        return RestoredRun(self, cfg, student, baseline, modules, teacher)


class RestoredRun:
    """A saved run, reloaded: what pages read from a finished ``Trainer``."""

    def __init__(self, run: Run, config: Config, student, baseline, modules, teacher):
        self.run = run
        self.config = config
        self.student, self.baseline, self.modules, self.teacher = student, baseline, modules, teacher
        self.result = dict(run.result, step_losses=run.steps)
        self.history = run.history
        self.steps = run.steps
        self.status = run.status
        self.pairs = [tuple(p) for p in run.result.get("pairs", [])]
        last = run.history[-1]["epoch"] if run.history else 0
        self._snap = {
            "epoch": last,
            "student": student,
            "baseline": baseline,
            "modules": modules,
            "teacher": teacher.model,
            "pairs": self.pairs,
        }

    def snapshot(self) -> dict:
        return self._snap

    def stop(self) -> None:  # already ended
        pass


def _load_into(model, extra, raw: bytes, name: str) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(raw)
    except SafetensorError as e:
        raise RunError(f"the weights of run '{name}' are not a readable safetensors file ({e})") from None
    try:
        model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("extra.")})
        if extra is not None:
            extra.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("extra.")})
    except RuntimeError as e:
        lines = str(e).strip().splitlines()
        raise RunError(
            f"the weights of run '{name}' do not fit {model.arch}: "
            f"{lines[1].strip() if len(lines) > 1 else lines[0] if lines else ''}"
        ) from None


# ---------------------------------------------------------------- saving


def thin_steps(steps: list[dict], keep: int = MAX_STEPS_KEPT) -> list[dict]:
    """At most ``keep`` evenly spaced step records (the last one always kept)."""
    if len(steps) <= keep:
        return list(steps)
    stride = len(steps) / keep
    picked = [steps[int(i * stride)] for i in range(keep - 1)] + [steps[-1]]
    return picked


def _jsonable(obj):
    """NaN/inf -> None, tuples -> lists: strict JSON that any reader accepts."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _weights_blob(model, extra=None) -> bytes:
    from safetensors.torch import save

    tensors = models.state_tensors(model)
    if extra is not None:
        tensors.update(models.state_tensors(extra, "extra."))
    return save(tensors)


def _new_folder() -> tuple[str, Path]:
    run_id = new_id()
    target = folder() / run_id
    while target.exists():  # two saves in the same second with the same random tail: next id
        run_id = new_id()
        target = folder() / run_id
    target.mkdir(parents=True)
    return run_id, target


def begin(config: dict, owner: str = "", source: str = "") -> str:
    """Record a run that starts training (``started.json``); returns its id. Save it with
    ``save_run(..., run_id=id)`` or drop the record with :func:`discard`. A record whose
    process died is listed as an interrupted run."""
    run_id, target = _new_folder()
    doc = {
        "format": FORMAT,
        "id": run_id,
        "owner": str(owner or ""),
        "source": source,
        "created": time.time(),
        "pid": os.getpid(),
        "config": Config.from_dict(dict(config)).resolved().to_dict(),
    }
    paths.atomic_write_text(target / STARTED_FILE, json.dumps(_jsonable(doc), indent=1))
    return run_id


def discard(run_id: str) -> None:
    """Drop a started run that will not be saved (it diverged or failed)."""
    d = _run_dir(run_id)
    if not (d / RUN_FILE).exists():
        shutil.rmtree(d, ignore_errors=True)


def _alive(pid) -> bool:
    """Whether the process that started a run still runs (then the run is training)."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _interrupted(run_dir: Path) -> Run | None:
    """The interrupted run of a folder with an orphaned ``started.json`` (None while its
    process still trains it); RunError when the record is unreadable."""
    try:
        doc = json.loads((run_dir / STARTED_FILE).read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT or doc.get("id") != run_dir.name:
            raise ValueError("not a run record of this version")
        if _alive(doc.get("pid")):
            return None
        config = Config.from_dict(dict(doc["config"]))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, ConfigError) as e:
        raise RunError(f"the record of run '{run_dir.name}' is unreadable ({type(e).__name__}); skipped") from None
    return Run(
        id=doc["id"],
        name=clean_name(f"{default_name(config.to_dict())} (interrupted)"),
        created=float(doc.get("created", 0.0)),
        config=config,
        result={"status": INTERRUPTED, "config": config.to_dict(), "epochs": []},
        source=str(doc.get("source", "")),
        owner=str(doc.get("owner") or ""),
    )


def save_run(
    result: dict,
    student,
    baseline=None,
    modules=None,
    name: str | None = None,
    source: str = "",
    owner: str = "",
    run_id: str | None = None,
) -> Run:
    """Save a finished or stopped run: ``result`` is ``Trainer.result`` / ``distil()``'s dict;
    ``student`` (with the method's ``modules``) and ``baseline`` are its trained models.
    Returns the saved :class:`Run`."""
    if not result or "config" not in result:
        raise RunError("nothing to save: the run has no results")
    config = Config.from_dict(dict(result["config"]))
    if run_id is not None:  # the folder that ``begin`` made when the run started
        target = _run_dir(run_id)
        target.mkdir(parents=True, exist_ok=True)
    else:
        run_id, target = _new_folder()
    files = {}
    blobs = [(STUDENT_FILE, _weights_blob(student, modules))]
    if baseline is not None:
        blobs.append((BASELINE_FILE, _weights_blob(baseline)))
    for fname, blob in blobs:
        paths.atomic_write_bytes(target / fname, blob)
        files[fname] = hashlib.sha256(blob).hexdigest()
    metrics = {k: v for k, v in result.items() if k != "step_losses"}
    doc = {
        "format": FORMAT,
        "id": run_id,
        "name": clean_name(name) or default_name(result["config"]),
        "created": time.time(),
        "source": source,
        "owner": str(owner or ""),
        "config": config.to_dict(),
        "result": metrics,
        "steps": thin_steps(result.get("step_losses") or []),
        "files": files,
    }
    paths.atomic_write_text(target / RUN_FILE, json.dumps(_jsonable(doc), indent=1))  # last: the run now exists
    (target / STARTED_FILE).unlink(missing_ok=True)
    return _from_doc(doc)


def save_trainer(trainer, name: str | None = None, source: str = "", owner: str = "", run_id: str | None = None) -> Run:
    """Save a Trainer's run once it has ended (finished or stopped)."""
    if trainer.result is None:
        raise RunError("the run has not ended yet")
    return save_run(
        trainer.result,
        trainer.student,
        trainer.baseline,
        trainer.modules,
        name=name,
        source=source,
        owner=owner,
        run_id=run_id,
    )


def save_lab_run(job) -> Run | None:
    """``Job.on_end`` callback: save the job's run when it finished or was stopped with at
    least one step done (diverged and failed runs are not kept). Sets ``job.run_id``."""
    trainer = getattr(job, "trainer", None)
    result = getattr(job, "result", None)
    started = getattr(job, "started_run", None)  # the record ``begin`` made, if any
    if job.status not in ("finished", "stopped") or trainer is None or not result or not result.get("steps"):
        if started:
            discard(started)
        return None
    if isinstance(trainer, RestoredRun):  # a reloaded run is already saved
        return None
    run = save_trainer(trainer, source="lab", owner=getattr(job, "owner", ""), run_id=started)
    job.run_id = run.id
    return run


# ---------------------------------------------------------------- reading


def _from_doc(doc: dict) -> Run:
    config = Config.from_dict(dict(doc["config"]))
    result = doc["result"]
    if not isinstance(result, dict):
        raise ValueError("result is not an object")
    return Run(
        id=doc["id"],
        name=str(doc.get("name") or default_name(doc["config"])),
        created=float(doc["created"]),
        config=config,
        result=result,
        steps=list(doc.get("steps") or []),
        source=str(doc.get("source", "")),
        files=dict(doc.get("files") or {}),
        owner=str(doc.get("owner") or ""),
    )


def _read(run_dir: Path) -> Run:
    """Read one run folder; raises RunError with a one-line reason."""
    file = run_dir / RUN_FILE
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"run '{run_dir.name}' does not exist (or its save was interrupted)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"run file {file} is unreadable ({type(e).__name__}); skipped") from None
    if not isinstance(doc, dict):
        raise RunError(f"run file {file} is not a run; skipped")
    fmt = doc.get("format")
    if fmt != FORMAT:
        age = "an older" if not isinstance(fmt, int) or fmt < FORMAT else "a newer"
        raise RunError(
            f"run '{doc.get('name', run_dir.name)}' was saved by {age} version of KD Playground "
            f"(format {fmt}, this one reads {FORMAT}); skipped"
        )
    if doc.get("id") != run_dir.name:
        raise RunError(f"run file {file} belongs to another run ('{doc.get('id')}'); skipped")
    try:
        return _from_doc(doc)
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise RunError(f"run file {file} is incomplete or damaged ({type(e).__name__}: {e}); skipped") from None


def list_runs() -> tuple[list[Run], list[str]]:
    """(runs, newest first; notices about run files that were skipped). Folders without a
    run.json are saves in progress or interrupted ones: never listed (stale ones are removed)."""
    runs, notices = [], []
    now = time.time()
    try:
        entries = sorted(folder().iterdir(), reverse=True)
    except OSError as e:
        return [], [f"the run folder {folder()} cannot be read ({e.strerror or e})"]
    for d in entries:
        if not d.is_dir() or not _ID.match(d.name):
            continue
        if not (d / RUN_FILE).exists():
            if (d / STARTED_FILE).exists():  # training now, or interrupted
                try:
                    run = _interrupted(d)
                    if run is not None:
                        runs.append(run)
                except RunError as e:
                    notices.append(str(e))
                continue
            try:  # an interrupted save: no record, no run
                if now - d.stat().st_mtime > STALE_SECONDS:
                    shutil.rmtree(d, ignore_errors=True)
            except OSError:
                pass
            continue
        try:
            runs.append(_read(d))
        except RunError as e:
            notices.append(str(e))
    runs.sort(key=lambda r: (r.created, r.id), reverse=True)
    return runs, notices


def load_run(run_id: str) -> Run:
    d = _run_dir(run_id)
    if not (d / RUN_FILE).exists() and (d / STARTED_FILE).exists():
        run = _interrupted(d)
        if run is None:
            raise RunError(f"run '{run_id}' is still training")
        return run
    return _read(d)


def may_change(run: Run, by: str | None, lecturer: bool = False) -> bool:
    """Whether ``by`` (a browser session id) may rename or delete ``run``: its owner, or a
    lecturer. ``by=None`` is the engine's own caller (the CLI, a notebook, a test): no check.
    A run without an owner (saved from the CLI) is read-only for every session but a lecturer."""
    return by is None or lecturer or (bool(run.owner) and run.owner == by)


def _check_may_change(run: Run, by: str | None, lecturer: bool, what: str) -> None:
    if not may_change(run, by, lecturer):
        raise RunError(
            f"'{run.name}' belongs to another session: only its owner (or the lecturer) may {what} it; "
            "copy it to your list to change your copy"
        )


def rename(run_id: str, name: str, by: str | None = None, lecturer: bool = False) -> Run:
    """Give a run a new name (the folder keeps its id). Empty names are refused, and so is a
    session that does not own the run (see :func:`may_change`)."""
    new = clean_name(name)
    if not new:
        raise RunError("a run's name cannot be empty")
    d = _run_dir(run_id)
    run = _read(d)
    _check_may_change(run, by, lecturer, "rename")
    doc = json.loads((d / RUN_FILE).read_text(encoding="utf-8"))
    doc["name"] = new
    paths.atomic_write_text(d / RUN_FILE, json.dumps(doc, indent=1))
    run.name = new
    return run


def delete(run_id: str, by: str | None = None, lecturer: bool = False) -> None:
    """Remove a run: run.json first (the run disappears at once), then its folder. Refused
    for a session that does not own the run (see :func:`may_change`)."""
    d = _run_dir(run_id)
    if not d.exists():
        raise RunError(f"run '{run_id}' does not exist")
    _check_may_change(load_run(run_id), by, lecturer, "delete")
    try:
        (d / RUN_FILE).unlink(missing_ok=True)
        (d / STARTED_FILE).unlink(missing_ok=True)
    except OSError as e:
        raise RunError(f"run '{run_id}' cannot be deleted ({e.strerror or e})") from None
    shutil.rmtree(d, ignore_errors=True)


def copy(run_id: str, owner: str, name: str | None = None) -> Run:
    """A copy of a run (any run: reading is free) in ``owner``'s list, under a new id, with
    the same weights and results; the original is untouched."""
    src = _run_dir(run_id)
    run = _read(src)
    doc = json.loads((src / RUN_FILE).read_text(encoding="utf-8"))
    new = new_id()
    target = folder() / new
    while target.exists():
        new = new_id()
        target = folder() / new
    target.mkdir(parents=True)
    for fname in run.files:
        paths.atomic_write_bytes(target / fname, (src / fname).read_bytes())
    doc.update(
        id=new,
        owner=str(owner or ""),
        created=time.time(),
        name=clean_name(name) or clean_name(f"copy of {run.name}"),
        copied_from=run.id,
    )
    paths.atomic_write_text(target / RUN_FILE, json.dumps(doc, indent=1))  # last: the copy now exists
    return _from_doc(doc)


def clear(lecturer: bool, owner: str | None = None) -> int:
    """Delete every saved run (or every run of ``owner``): the lecturer's clean-up after a
    lesson. Refused without lecturer rights. Returns how many runs were deleted."""
    if not lecturer:
        raise RunError("only the lecturer may clear the runs of a class")
    done = 0
    for run in list_runs()[0]:
        if owner is None or run.owner == owner:
            delete(run.id, lecturer=True)
            done += 1
    return done


# ---------------------------------------------------------------- export

MODEL_ROWS = (("teacher", "teacher"), ("student", "distilled student"), ("baseline", "scratch student"))
METRIC_COLUMNS = (
    "test_accuracy",
    "agreement",
    "kl_to_teacher",
    "ece",
    "params",
    "flops",
    "latency_ms",
    "compression",
    "speedup",
    "train_seconds",
)


def metrics_rows(run: Run) -> list[dict]:
    """One row per model (teacher, distilled student, scratch student) with its metrics."""
    rows = []
    for role, label in MODEL_ROWS:
        m = run.result.get(role)
        if not m:
            continue
        row = {"run_id": run.id, "name": run.name, "model": label, "arch": m.get("arch", "")}
        row.update({k: m.get(k) for k in METRIC_COLUMNS})
        for c, acc in zip(run.result.get("classes", []), m.get("per_class_accuracy", [])):
            row[f"acc_class_{c}"] = acc
        rows.append(row)
    return rows


def history_rows(run: Run) -> list[dict]:
    return [{"run_id": run.id, "name": run.name, **h} for h in run.history]


def _csv(rows: list[dict]) -> str:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if v is None else v for k, v in r.items()})
    return buf.getvalue()


def export_csv(run: Run, what: str = "metrics") -> str:
    """CSV of the run's metrics (one row per model) or of its history (one row per epoch)."""
    if what == "history":
        return _csv(history_rows(run))
    if what != "metrics":
        raise ValueError("what must be 'metrics' or 'history'")
    return _csv(metrics_rows(run))


def export_json(run: Run) -> str:
    """Everything saved with the run (config, metrics, history, thinned losses) as JSON."""
    doc = {
        "format": FORMAT,
        "id": run.id,
        "name": run.name,
        "created": run.created,
        "source": run.source,
        "config": run.config.to_dict(),
        "result": run.result,
        "steps": run.steps,
    }
    return json.dumps(_jsonable(doc), indent=1)


def export_name(run: Run, suffix: str) -> str:
    """A safe download file name for a run's export."""
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "-", run.name).strip("-")[:48] or "run"
    return f"kd-{slug}-{run.id}{suffix}"

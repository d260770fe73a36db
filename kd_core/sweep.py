"""Sweeps: a grid over T and alpha (and optionally methods and labelled fractions), several
seeds per cell, each cell one ``distil()`` call, run in parallel; and the leaderboard, every
method of the registry on one teacher/student pair.

Backends (``backend=``):

- ``auto`` (default): ``batched`` where a batch of students trains faster than one
  process per cell (on a GPU; MLP students on a CPU: ``Sweep.choose_backend``), else
  ``joblib``;
- ``batched``: in this process, the cells that share an architecture trained together as
  one batch of students (kd_core/batched.py), in groups sized by a memory budget; every
  cell of a group reports each epoch, so a heatmap fills in with all cells at once;
- ``joblib``: local processes (loky), ``n_jobs`` of them (default: one per CPU
  core), each on one torch thread;
- ``dask``: a Dask cluster, ``distributed.Client(address)``; without an address a
  ``LocalCluster`` of ``n_jobs`` single-threaded worker processes;
- ``ray``: a Ray cluster at ``address`` (or a local one); needs ``pip install ray``.

With ``group=N`` a worker of joblib, dask or ray trains N cells as one batch.

The teacher is trained once, in this process, before any worker starts: local workers
read it from the disk cache; workers of a cluster at an address receive its weights with
their tasks (a remote machine has its own cache). Results arrive as cells finish
(:meth:`Sweep.results`, a generator), so a page can fill its heatmaps live; one failing
cell reports an error and the others go on.

The cluster backends (dask, ray) are imported only when a sweep uses them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from . import batched, paths, teachers, train
from . import methods as methods_mod
from .config import Config
from .errors import ConfigError, KDError
from .jobs import Job, JobManager

BACKENDS = ("auto", "batched", "joblib", "dask", "ray")
MAX_TASKS = 2000
CELL_KEYS = ("method", "labeled_fraction", "temperature", "alpha")
RAY_MISSING = "the ray backend needs Ray, which is not installed: pip install ray (or use --backend joblib or dask)"
DASK_MISSING = "the dask backend needs Dask's distributed scheduler: pip install 'dask[distributed]'"


# ---------------------------------------------------------------- the worker side


def _task_out(task: dict) -> dict:
    """A task's result record before it has run."""
    return {
        "index": task["index"],
        "cell_index": task.get("cell_index"),
        "cell": task["cell"],
        "seed": task["seed"],
        "reference": task.get("reference", False),
        "status": "error",
        "message": "",
        "student_acc": None,
        "agreement": None,
        "ece": None,
        "history": [],
        "seconds": 0.0,
        "worker": os.getpid(),
    }


def _outcome(result: dict) -> dict:
    """What a sweep keeps of a run's result."""
    s = result["student"]
    return dict(
        status=result["status"],
        message=result["message"],
        student_acc=s["test_accuracy"],
        agreement=s.get("agreement"),
        ece=s.get("ece"),
        # the single cached teacher (an ensemble's teacher 0; none for DML)
        teacher_acc=(
            result["teachers"][0]["test_accuracy"]
            if result.get("teachers")
            else (result.get("teacher") or {}).get("test_accuracy")
        ),
        history=[h["test_accuracy"] for h in s.get("history", [])],
    )


def run_task(task: dict, teacher: dict | None = None) -> dict:
    """Run one (cell, seed): a plain function of plain data, so any backend can ship it.

    ``task["env"]`` holds the KD_PLAYGROUND_* settings for a worker process (applied only
    in another process than the one that planned the sweep); ``teacher`` (a cluster
    at an address) holds the teacher's weights, written into this machine's cache once."""
    t0 = time.perf_counter()
    out = _task_out(task)
    try:
        if os.getpid() != task.get("parent_pid"):
            os.environ.update(task.get("env") or {})
        train.set_threads()
        out["threads"] = torch.get_num_threads()
        if teacher is not None:
            teachers.from_blob(teacher)
        out.update(_outcome(train.distil(Config.from_dict(dict(task["config"])))))
    except KDError as e:
        out["message"] = str(e)
    except Exception as e:  # a bug in one cell: report it, keep the sweep going
        out["message"] = f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc(limit=8)
    out["seconds"] = time.perf_counter() - t0
    return out


def group_events(tasks: list[dict], teacher: dict | None = None, stop: threading.Event | None = None):
    """Run tasks whose configs can train together (``batched.why_not``) as one batch of
    students; yield each task's record at every epoch end (``status`` "running", its
    accuracy so far: a heatmap fills in while all cells advance together), then its final
    record. A group that cannot start (bad data, a missing teacher) yields an error record
    per task; each task that cannot batch runs alone."""
    t0 = time.perf_counter()
    outs = [_task_out(t) for t in tasks]
    if tasks and os.getpid() != tasks[0].get("parent_pid"):
        os.environ.update(tasks[0].get("env") or {})
    try:
        train.set_threads()
        if teacher is not None:
            teachers.from_blob(teacher)
        run = batched.BatchedRun([Config.from_dict(dict(t["config"])) for t in tasks])
    except Exception as e:  # KDError or a bug: every task of the group says so
        msg = str(e) if isinstance(e, KDError) else f"{type(e).__name__}: {e}"
        for o in outs:
            o["message"], o["seconds"] = msg, time.perf_counter() - t0
            yield dict(o)
        return
    members = len(run.members)
    try:
        for ev in run.events():
            if stop is not None and stop.is_set():
                run.stop()
            i = ev.get("member", 0)
            if ev["kind"] == "epoch" and not ev.get("partial"):
                o = outs[i]
                o.update(
                    status="running",
                    student_acc=ev["student_acc"],
                    agreement=ev["agreement"],
                    epoch=ev["epoch"],
                    epochs=run.trainers[i].config.epochs,
                )
                o["history"] = [*o["history"], ev["student_acc"]]
                o["seconds"] = time.perf_counter() - t0
                yield dict(o)
            elif ev["kind"] == "end" and ev.get("result") is not None:
                o = outs[i]
                o.update(_outcome(ev["result"]), batched=members, seconds=time.perf_counter() - t0)
                o.pop("epoch", None)
                yield dict(o)
    except Exception as e:  # a bug mid-run: the tasks not yet ended say so
        for o in outs:
            if o["status"] in ("error", "running"):
                o.update(status="error", message=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=8))
                yield dict(o)


def run_tasks(tasks: list[dict], teacher: dict | None = None) -> list[dict]:
    """What one worker runs: a single task (``run_task``), or a group of tasks as one batch
    of students (``group_events``); the final record of each task."""
    if len(tasks) == 1:
        return [run_task(tasks[0], teacher)]
    return [r for r in group_events(tasks, teacher) if r["status"] != "running"]


def group_tasks(tasks: list[dict], size: int) -> list[list[dict]]:
    """Tasks in groups that can train as one batch (same ``batched.group_key``), at most
    ``size`` each, in the order of their first task; a task that cannot batch is alone."""
    groups: dict = {}
    for t in tasks:
        key = batched.group_key(Config.from_dict(dict(t["config"])))
        groups.setdefault(key if key is not None else ("alone", t["index"]), []).append(t)
    return [g[i : i + max(1, size)] for g in groups.values() for i in range(0, len(g), max(1, size))]


# ---------------------------------------------------------------- planning


def parse_list(text: str, kind=float, name: str = "value") -> list:
    """'2,4, 8' -> [2.0, 4.0, 8.0]; raises ConfigError with one line."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ConfigError(f"{name}: give at least one value, comma-separated (e.g. 2,4)")
    out = []
    for t in items:
        try:
            v = kind(t)
        except ValueError:
            what = "whole numbers" if kind is int else "numbers" if kind is float else "names"
            raise ConfigError(f"{name} must be {what} separated by commas, got '{t}'") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{name} must be finite numbers, got '{t}'")
        out.append(v)
    return list(dict.fromkeys(out))


@dataclass
class Sweep:
    """The cells of a sweep and the configs of each cell (one per seed).

    ``cells`` are dicts of the swept values (e.g. ``{"method": "kd", "labeled_fraction": 0.1,
    "temperature": 4.0, "alpha": 0.9}``); ``reference`` cells (the scratch student) are shown
    beside the grid, not in it."""

    base: Config
    cells: list[dict]
    configs: list[list[Config]]  # per cell, one config per seed
    reference: list[bool] = field(default_factory=list)
    kind: str = "grid"  # grid | leaderboard

    # ---------------------------------------------------------- constructors
    @classmethod
    def grid(
        cls, base: Config, temperatures, alphas, seeds=(0,), methods=None, fractions=None, scratch: bool = False
    ) -> Sweep:
        """T x alpha (x methods x labelled fractions), ``seeds`` per cell; ``scratch`` adds the
        student alone (method 'none') per fraction as a reference."""
        base = base.resolved().validate()
        methods = list(methods or [base.method])
        fractions = list(fractions or [base.labeled_fraction])
        temperatures, alphas, seeds = list(temperatures), list(alphas), list(seeds)
        for name, values in (("temperatures", temperatures), ("alphas", alphas), ("seeds", seeds)):
            if not values:
                raise ConfigError(f"a sweep needs at least one value in {name}")
        cells, configs, ref = [], [], []
        for frac in fractions:
            for m in methods:
                for T in temperatures:
                    for a in alphas:
                        cell = {
                            "method": m,
                            "labeled_fraction": float(frac),
                            "temperature": float(T),
                            "alpha": float(a),
                        }
                        cells.append(cell)
                        configs.append([_cell_config(base, cell, s) for s in seeds])
                        ref.append(False)
            if scratch:
                cell = {"method": "none", "labeled_fraction": float(frac), "temperature": None, "alpha": None}
                cells.append(cell)
                configs.append(
                    [_cell_config(base, {"method": "none", "labeled_fraction": float(frac)}, s) for s in seeds]
                )
                ref.append(True)
        return cls(base, cells, configs, ref, "grid")._checked()

    @classmethod
    def leaderboard(
        cls, base: Config, seeds=(0, 1, 2), methods=None, kd_on_all: bool = False, beyond: bool = False
    ) -> Sweep:
        """Every method (default: the whole registry, 'none' first as the scratch student) on
        ``base``'s teacher/student pair. Methods other than the logit ones train on CE plus their
        own term (alpha = 0), as in the CRD paper's Table 1; ``kd_on_all`` adds the KD term
        (``base.alpha``) to every method instead. ``beyond`` appends the methods beyond one
        teacher (ensemble, born-again, TA, DML) to the default list; they use ``base.alpha``."""
        base = base.resolved().validate()
        names = list(methods or (list(methods_mod.METHODS) + (list(methods_mod.BEYOND) if beyond else [])))
        for n in names:
            methods_mod.get(n)
        names.sort(key=lambda n: n != "none")
        cells, configs = [], []
        for n in names:
            m = methods_mod.get(n)
            alpha = base.alpha if (m.family in ("logits", "multi-teacher", "chain") or kd_on_all) else 0.0
            cell = {"method": n}
            cells.append(cell)
            configs.append(
                [replace(base, method=n, alpha=alpha, params={}, pairs=[], baseline=False, seed=int(s)) for s in seeds]
            )
        return cls(base, cells, configs, [False] * len(cells), "leaderboard")._checked()

    def _checked(self) -> Sweep:
        if not self.configs or not self.configs[0]:
            raise ConfigError("a sweep needs at least one cell and one seed")
        if self.total > MAX_TASKS:
            raise ConfigError(f"this sweep has {self.total} runs; at most {MAX_TASKS} (fewer values or seeds)")
        for cfgs in self.configs:
            for c in cfgs:
                c.validate()
        return self

    # ---------------------------------------------------------- facts
    @property
    def total(self) -> int:
        return sum(len(c) for c in self.configs)

    @property
    def seeds(self) -> list[int]:
        return [c.seed for c in self.configs[0]]

    def axis(self, key: str) -> list:
        return list(dict.fromkeys(c[key] for c, r in zip(self.cells, self.reference) if not r and key in c))

    def tasks(self, env: dict | None = None) -> list[dict]:
        """One task per (cell, seed). A leaderboard runs seed by seed (every method with the
        first seed, then the second...): stopped early, it still has every method."""
        pairs = [(ci, k) for ci, cfgs in enumerate(self.configs) for k in range(len(cfgs))]
        if self.kind == "leaderboard":
            pairs.sort(key=lambda p: (p[1], p[0]))
        out = []
        for ci, k in pairs:
            cfg = self.configs[ci][k]
            out.append(
                {
                    "index": len(out),
                    "cell_index": ci,
                    "cell": self.cells[ci],
                    "seed": cfg.seed,
                    "reference": self.reference[ci],
                    "config": cfg.to_dict(),
                    "env": env or {},
                    "parent_pid": os.getpid(),
                }
            )
        return out

    # ---------------------------------------------------------- running
    def prepare_teacher(self, progress=None):
        """Train (or load) the teacher here, once, before any worker starts."""
        b = self.base
        teacher = teachers.get(b.dataset, b.teacher, b.teacher_epochs, train_subset=b.train_subset, progress=progress)
        for cfgs in self.configs:  # methods with several teachers (ensemble): all of them, once, here
            m = methods_mod.get(cfgs[0].method)
            if m.prepare is not None:
                m.prepare(cfgs[0], progress)
        return teacher

    def results(
        self,
        backend: str = "auto",
        n_jobs: int | None = None,
        address: str | None = None,
        stop: threading.Event | None = None,
        teacher_progress=None,
        group: int | None = None,
    ):
        """Run every task; yield each task's record as it finishes (in any order) — and,
        with the batched backend, at every epoch end (``status`` "running") while all the
        cells of a batch advance together. Setting ``stop`` cancels the tasks not yet started
        (running ones finish; a running batch stops at its next step).

        ``group``: cells per batch of students (default: as many as the memory budget
        allows, ``batched.group_size``, for the batched backend; 1 — no batching — for the
        others, where each worker then trains a group as one batch)."""
        backend = (backend or "auto").lower()
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
        if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1):
            raise ConfigError(f"n_jobs must be a whole number >= 1, got {n_jobs!r}")
        if group is not None and (isinstance(group, bool) or not isinstance(group, int) or group < 1):
            raise ConfigError(f"group must be a whole number >= 1, got {group!r}")
        address = (address or "").strip() or None
        if address and backend in ("auto", "joblib", "batched"):
            raise ConfigError("an address needs a cluster backend: --backend dask or --backend ray")
        if backend == "auto":
            backend = self.choose_backend()[0]
        _check_backend(backend)
        teacher = self.prepare_teacher(teacher_progress)
        n_jobs = n_jobs or os.cpu_count() or 1
        remote = address is not None
        env = {"KD_PLAYGROUND_THREADS": "1"}
        if not remote:  # local workers share this process's cache folder and settings
            env.update(
                {k: v for k, v in os.environ.items() if k.startswith("KD_PLAYGROUND_") and k != "KD_PLAYGROUND_THREADS"}
            )
            env["KD_PLAYGROUND_HOME"] = str(paths.home())
        tasks = self.tasks(env)
        if backend == "batched":
            yield from _in_process(group_tasks(tasks, group or self.group_size()), stop)
            return
        blob = teachers.to_blob(teacher) if remote else None
        runner = {"joblib": _joblib, "dask": _dask, "ray": _ray}[backend]
        jobs = group_tasks(tasks, group) if group and group > 1 else [[t] for t in tasks]
        yield from runner(jobs, min(n_jobs, len(jobs)), address, blob, stop)

    def group_size(self) -> int:
        """Students per batch for this sweep's pair and data (``batched.group_size``)."""
        return batched.group_size(self.base)

    def choose_backend(self) -> tuple[str, str]:
        """What ``backend="auto"`` runs, and why: the batched backend where a batch of this
        sweep's students trains faster than one process per cell (``batched.faster_together``:
        on a GPU, or four or more MLP students on a CPU); else joblib."""
        if self.total < 2:
            return "joblib", "a single run"
        yes, why = batched.faster_together(self.base, min(self.total, self.group_size()))
        return ("batched" if yes else "joblib"), why

    def run(
        self,
        backend: str = "auto",
        n_jobs: int | None = None,
        address: str | None = None,
        on_result=None,
        stop: threading.Event | None = None,
        teacher_progress=None,
        group: int | None = None,
    ) -> SweepResult:
        """Run to the end; ``on_result(record, result)`` for each task's final record."""
        res = SweepResult(self)
        for r in self.results(backend, n_jobs, address, stop, teacher_progress, group):
            res.add(r)
            if on_result is not None and r["status"] != "running":
                on_result(r, res)
        return res


def _cell_config(base: Config, cell: dict, seed) -> Config:
    kw = {k: v for k, v in cell.items() if v is not None}
    method_changed = kw.get("method", base.method) != base.method
    return replace(
        base,
        **kw,
        seed=int(seed),
        baseline=False,
        params={} if method_changed else dict(base.params),
        pairs=[] if method_changed else list(base.pairs),
    )


def _check_backend(backend: str) -> None:
    if backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise KDError(RAY_MISSING) from None
    elif backend == "dask":
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise KDError(DASK_MISSING) from None


# ---------------------------------------------------------------- backends


def _in_process(jobs, stop):
    """The batched backend: each group trains here as one batch of students, one group
    after another (a task that cannot batch runs alone)."""
    for job in jobs:
        if stop is not None and stop.is_set():
            break
        if len(job) == 1:
            yield run_task(job[0])
        else:
            yield from group_events(job, None, stop)


def _joblib(jobs, n_jobs, address, blob, stop):
    from joblib import Parallel, delayed

    gen = Parallel(n_jobs=n_jobs, backend="loky", return_as="generator_unordered")(
        delayed(run_tasks)(job, blob) for job in jobs
    )
    try:
        for rs in gen:
            yield from rs
            if stop is not None and stop.is_set():
                break
    finally:
        gen.close()  # joblib cancels what has not started


def _dask(jobs, n_jobs, address, blob, stop):
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    try:
        if address:
            client = Client(address, timeout="20s")
        else:
            cluster = LocalCluster(n_workers=n_jobs, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
    except (OSError, TimeoutError) as e:
        if cluster is not None:
            cluster.close()
        raise KDError(f"cannot reach the Dask scheduler at {address}: {e}") from None
    try:
        teacher = client.scatter(blob, broadcast=True) if blob is not None else None
        futures = [client.submit(run_tasks, job, teacher, pure=False) for job in jobs]
        done = as_completed(futures)
        for fut in done:
            yield from fut.result()
            if stop is not None and stop.is_set():
                break
        client.cancel(futures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _ray(jobs, n_jobs, address, blob, stop):
    import ray

    started = False
    if not ray.is_initialized():
        kw = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
        if address:
            kw["address"] = address
        else:
            root = str(Path(__file__).resolve().parents[1])
            kw["num_cpus"] = n_jobs
            kw["runtime_env"] = {
                "env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
            }
        try:
            ray.init(**kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise KDError(
                f"cannot start or reach Ray{' at ' + address if address else ''}: {str(e).splitlines()[0]}"
            ) from None
        started = True
    try:
        remote = ray.remote(num_cpus=1)(run_tasks)
        teacher = ray.put(blob) if blob is not None else None
        pending = [remote.remote(job, teacher) for job in jobs]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield from ray.get(done[0])
            if stop is not None and stop.is_set():
                break
        for ref in pending:
            ray.cancel(ref)
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------- results


def last_epoch_accuracy(r: dict) -> float | None:
    """A run's test accuracy at its LAST epoch (what the model ends with), never the best
    epoch's: picking the best epoch on the test set is what makes published tables hard to
    reproduce. The run's final accuracy when it has no per-epoch history."""
    history = r.get("history") or []
    return history[-1] if history else r.get("student_acc")


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else math.nan


def _std(xs):
    xs = [x for x in xs if x is not None]
    return statistics.stdev(xs) if len(xs) >= 2 else math.nan


class SweepResult:
    """Task results as they arrive, aggregated per cell (mean and std over seeds)."""

    def __init__(self, sweep: Sweep):
        self.sweep = sweep
        self.items: list[dict] = []
        self._at: dict[int, int] = {}  # task index -> position in items
        self._lock = threading.Lock()

    def add(self, r: dict) -> None:
        """A task's record; a later record of the same task (a running batch's epoch, then
        its end) replaces the earlier one."""
        with self._lock:
            at = self._at.get(r["index"]) if "index" in r else None
            if at is None:
                if "index" in r:
                    self._at[r["index"]] = len(self.items)
                self.items.append(r)
            else:
                self.items[at] = r

    @property
    def done(self) -> int:
        """Tasks that have ended (not those still training)."""
        with self._lock:
            return sum(1 for r in self.items if r["status"] != "running")

    def progress(self) -> float:
        """Tasks done, counting a task still training in a batch by the share of its epochs
        done (a batched sweep's cells all end together: this moves while they train)."""
        with self._lock:
            return sum(
                (r["epoch"] / max(r.get("epochs") or 1, 1)) if r["status"] == "running" else 1.0 for r in self.items
            )

    def training(self) -> tuple[int, int] | None:
        """``(epoch, epochs)`` of the batch still training (the least advanced), or None."""
        with self._lock:
            live = [(r["epoch"], r["epochs"]) for r in self.items if r["status"] == "running"]
        return min(live) if live else None

    def errors(self) -> list[dict]:
        with self._lock:
            return [r for r in self.items if r["status"] not in ("finished", "stopped", "running")]

    def teacher_acc(self) -> float | None:
        with self._lock:
            return next((r.get("teacher_acc") for r in self.items if r.get("teacher_acc") is not None), None)

    def rows(self) -> list[dict]:
        """One row per cell: its values, n (finished seeds), acc / agreement / ECE mean and std
        — over the ended seeds, or while none has ended, over the seeds still training
        (``live``: how many, at ``epoch`` of ``epochs``)."""
        with self._lock:
            items = list(self.items)
        by_cell: dict[int, list[dict]] = {}
        live: dict[int, list[dict]] = {}
        for r in items:
            i = r.get("cell_index")
            if i is not None and r["status"] in ("finished", "stopped"):
                by_cell.setdefault(i, []).append(r)
            elif i is not None and r["status"] == "running":
                live.setdefault(i, []).append(r)
        rows = []
        for i, cell in enumerate(self.sweep.cells):
            got = sorted(by_cell.get(i, []), key=lambda r: r["seed"])
            training = [] if got else sorted(live.get(i, []), key=lambda r: r["seed"])
            shown = got or training
            accs = [last_epoch_accuracy(r) for r in shown]
            agrees = [r["agreement"] for r in shown]
            rows.append(
                {
                    **cell,
                    "reference": self.sweep.reference[i],
                    "n": len(got),
                    "live": len(training),
                    "epoch": min((r["epoch"] for r in training), default=None),
                    "epochs": training[0]["epochs"] if training else None,
                    "seeds": len(self.sweep.configs[i]),
                    "acc_mean": _mean(accs),
                    "acc_std": _std(accs),
                    "agree_mean": _mean(agrees),
                    "agree_std": _std(agrees),
                    "ece_mean": _mean([r["ece"] for r in shown]),
                    "seconds_mean": _mean([r.get("seconds") for r in got]),
                    "accs": accs,
                }
            )
        return rows

    def best(self, metric: str = "acc_mean", rows: list[dict] | None = None) -> dict | None:
        """The finished non-reference cell with the highest ``metric`` (ties: the first)."""
        rows = self.rows() if rows is None else rows
        cand = [r for r in rows if not r["reference"] and r["n"] and not math.isnan(r[metric])]
        return max(cand, key=lambda r: r[metric]) if cand else None

    def to_csv(self, path=None) -> str:
        """Per-cell rows as CSV (``best`` marks the best cell by mean accuracy); written
        atomically to ``path`` when given. Returns the text."""
        rows = self.rows()
        best = self.best(rows=rows)
        b = self.sweep.base
        cols = list(CELL_KEYS if self.sweep.kind == "grid" else ("method",)) + [
            "n",
            "acc_mean",
            "acc_std",
            "agree_mean",
            "agree_std",
            "ece_mean",
            "accs",
            "best",
            "reference",
            "dataset",
            "teacher",
            "student",
            "epochs",
            "teacher_acc",
        ]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        t_acc = self.teacher_acc()
        for r in rows:
            vals = dict(
                r,
                best=r is best,
                dataset=b.dataset,
                teacher=b.teacher,
                student=b.student,
                epochs=b.epochs,
                teacher_acc=t_acc,
                accs=";".join(f"{a:.6f}" for a in r["accs"]),
            )
            w.writerow(
                [
                    ""
                    if vals.get(c) is None or (isinstance(vals.get(c), float) and math.isnan(vals[c]))
                    else (f"{vals[c]:.6f}" if isinstance(vals[c], float) else vals[c])
                    for c in cols
                ]
            )
        text = buf.getvalue()
        if path is not None:
            paths.atomic_write_text(Path(path), text)
        return text


def fmt_pm(mean: float, std: float, scale: float = 100.0, digits: int = 2) -> str:
    if mean is None or math.isnan(mean):
        return "—"
    if std is None or math.isnan(std):
        return f"{scale * mean:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def grid_table(res: SweepResult, metric: str = "acc") -> str:
    """A text table per (method, fraction): rows T, columns alpha, cells mean ± std (%)."""
    rows = res.rows()
    best = res.best(rows=rows)
    out = []
    for frac in res.sweep.axis("labeled_fraction"):
        for m in res.sweep.axis("method"):
            sub = [r for r in rows if not r["reference"] and r["method"] == m and r["labeled_fraction"] == frac]
            Ts, As = res.sweep.axis("temperature"), res.sweep.axis("alpha")
            head = [f"{m}, {frac:.0%} labels: {'accuracy' if metric == 'acc' else 'agreement'} (%)   T \\ alpha"] + [
                f"{a:g}" for a in As
            ]
            table = [head]
            for T in Ts:
                line = [f"T={T:g}"]
                for a in As:
                    r = next((r for r in sub if r["temperature"] == T and r["alpha"] == a), None)
                    cell = fmt_pm(r[f"{metric}_mean"], r[f"{metric}_std"]) if r else "—"
                    line.append(cell + (" *" if r is best else ""))
                table.append(line)
            out.append(_text_table(table))
        ref = next((r for r in rows if r["reference"] and r["labeled_fraction"] == frac), None)
        if ref is not None:
            out.append(f"scratch student (no teacher), {frac:.0%} labels: {fmt_pm(ref['acc_mean'], ref['acc_std'])}%")
    if best is not None:
        out.append(
            f"* best cell: {best['method']} T={best['temperature']:g} alpha={best['alpha']:g} "
            f"({best['labeled_fraction']:.0%} labels): {fmt_pm(best['acc_mean'], best['acc_std'])}% accuracy"
        )
    return "\n".join(out)


def _text_table(rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# ---------------------------------------------------------------- leaderboard


def leaderboard_name(method: str) -> str:
    """The method's short name from the registry (its ``label``)."""
    try:
        return methods_mod.get(method).label
    except KDError:
        return method


def leaderboard_dir() -> Path:
    return paths.subdir("leaderboards")


def leaderboard_rows(res: SweepResult) -> list[dict]:
    """The leaderboard as rows: teacher first, then each method: mean ± std over the seeds
    of the test accuracy at the last epoch (see ``last_epoch_accuracy``)."""
    b = res.sweep.base
    rows = [
        {
            "method": "teacher",
            "name": f"Teacher ({b.teacher})",
            "n": 1,
            "acc_mean": res.teacher_acc(),
            "acc_std": math.nan,
            "agree_mean": math.nan,
            "agree_std": math.nan,
            "ece_mean": math.nan,
        }
    ]
    for r in res.rows():
        rows.append(
            {
                "method": r["method"],
                "name": leaderboard_name(r["method"]),
                "n": r["n"],
                "acc_mean": r["acc_mean"],
                "acc_std": r["acc_std"],
                "agree_mean": r["agree_mean"],
                "agree_std": r["agree_std"],
                "ece_mean": r["ece_mean"],
                "seconds_mean": r["seconds_mean"],
            }
        )
    return rows


def leaderboard_text(res: SweepResult) -> str:
    b = res.sweep.base
    rows = leaderboard_rows(res)
    scratch = next((r for r in rows if r["method"] == "none"), None)
    head = [["method", "top-1 acc (%)", "Δ vs scratch", "agreement (%)", "seeds", "s / run"]]
    for r in rows:
        delta = ""
        mean = math.nan if r["acc_mean"] is None else r["acc_mean"]
        if (
            scratch is not None
            and r["method"] not in ("none", "teacher")
            and not math.isnan(mean)
            and not math.isnan(scratch["acc_mean"])
        ):
            delta = f"{100 * (mean - scratch['acc_mean']):+.2f}"
        head.append(
            [
                r["name"],
                fmt_pm(mean, r["acc_std"]),
                delta,
                fmt_pm(r["agree_mean"], r["agree_std"]),
                "" if r["method"] == "teacher" else str(r["n"]),
                "" if math.isnan(r.get("seconds_mean", math.nan)) else f"{r['seconds_mean']:.0f}",
            ]
        )
    title = (
        f"{b.dataset}: teacher {b.teacher} -> student {b.student}; {b.epochs} epochs, "
        f"{b.labeled_fraction:.0%} of labels, seeds {', '.join(map(str, res.sweep.seeds))} "
        "(mean ± std at the last epoch)"
    )
    return title + "\n" + _text_table(head)


def leaderboard_csv(res: SweepResult, path=None) -> str:
    b = res.sweep.base
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = [
        "method",
        "name",
        "n",
        "acc_mean",
        "acc_std",
        "agree_mean",
        "agree_std",
        "ece_mean",
        "dataset",
        "teacher",
        "student",
        "epochs",
        "labeled_fraction",
        "seeds",
        "created",
    ]
    w.writerow(cols)
    meta = {
        "dataset": b.dataset,
        "teacher": b.teacher,
        "student": b.student,
        "epochs": b.epochs,
        "labeled_fraction": b.labeled_fraction,
        "seeds": ";".join(map(str, res.sweep.seeds)),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    for r in leaderboard_rows(res):
        vals = {**r, **meta}
        w.writerow(
            [
                ""
                if vals[c] is None or (isinstance(vals[c], float) and math.isnan(vals[c]))
                else (f"{vals[c]:.6f}" if isinstance(vals[c], float) and c not in ("labeled_fraction",) else vals[c])
                for c in cols
            ]
        )
    text = buf.getvalue()
    if path is not None:
        paths.atomic_write_text(Path(path), text)
    return text


def leaderboard(
    dataset: str = "mnist-mini",
    seeds=(0, 1, 2),
    methods=None,
    base: Config | None = None,
    backend: str = "auto",
    n_jobs: int | None = None,
    address: str | None = None,
    group: int | None = None,
    kd_on_all: bool = False,
    csv_path=None,
    on_result=None,
    teacher_progress=None,
    beyond: bool = False,
):
    """Train every registered method (and the scratch student) with each seed; returns
    (SweepResult, text table, path of the CSV saved under ``<home>/leaderboards``)."""
    base = replace(base or Config(), dataset=dataset)
    sw = Sweep.leaderboard(base, seeds=seeds, methods=methods, kd_on_all=kd_on_all, beyond=beyond)
    log = leaderboard_dir() / f"{dataset}.runs.jsonl"  # each run as it ends: a long board stopped early keeps them
    paths.atomic_write_text(log, "")

    def logged(r, res):
        with open(log, "a") as fh:
            fh.write(json.dumps({k: v for k, v in r.items() if k != "traceback"}, default=str) + "\n")
        if on_result is not None:
            on_result(r, res)

    res = sw.run(
        backend=backend,
        n_jobs=n_jobs,
        address=address,
        on_result=logged,
        teacher_progress=teacher_progress,
        group=group,
    )
    saved = leaderboard_dir() / f"{dataset}.csv"
    text = leaderboard_csv(res, saved)
    if csv_path:
        paths.atomic_write_text(Path(csv_path), text)
    return res, leaderboard_text(res), saved


def latest_leaderboard() -> Path | None:
    """The most recently written leaderboard CSV, if any."""
    try:
        files = [p for p in leaderboard_dir().glob("*.csv") if p.is_file()]
    except OSError:
        return None
    return max(files, key=lambda p: p.stat().st_mtime) if files else None


# ---------------------------------------------------------------- a sweep in the background (the app)


class SweepRun:
    """A sweep as a run for the job manager: ``events()`` trains (or loads) the teacher,
    then yields ``{"kind": "progress", "step": cells done}`` as results arrive (``result``, a
    SweepResult, fills in live) and ends like every run; ``stop()`` cancels the tasks not yet
    started. ``is_alive`` (optional ``() -> bool``): whether anybody still watches; the sweep
    stops when nobody does."""

    trainer = None  # no single model for the pages: the result is the sweep's table

    def __init__(
        self,
        sweep: Sweep,
        backend: str = "joblib",
        n_jobs=None,
        address=None,
        is_alive=None,
        result=None,
        progress=None,
    ):
        self.sweep, self.backend, self.n_jobs, self.address = sweep, backend, n_jobs, address
        self.is_alive = is_alive
        self.result = result if result is not None else SweepResult(sweep)
        self.teacher_progress = progress
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def events(self):
        self.sweep.prepare_teacher(self.teacher_progress)  # trained once, here (results() then finds it cached)
        yield {"kind": "start", "total_steps": self.sweep.total}
        message = ""
        for r in self.sweep.results(self.backend, self.n_jobs, self.address, self._stop):
            self.result.add(r)
            if self.is_alive is not None and not self._stop.is_set() and not self.is_alive():
                message = "stopped: the browser session closed"
                self._stop.set()
            yield {"kind": "progress", "step": self.result.progress()}
        # stopped: runs were cancelled, or a batch was stopped part-way (its runs ended "stopped")
        cut = self.result.done < self.sweep.total or any(r["status"] == "stopped" for r in list(self.result.items))
        status = "stopped" if self._stop.is_set() and cut else "finished"
        yield {"kind": "end", "status": status, "message": message, "result": self.result}


# At most KD_PLAYGROUND_MAX_SWEEPS (default 1) sweeps run at once per server; the others queue.
SWEEPS = JobManager(max_running=max(1, int(os.environ.get("KD_PLAYGROUND_MAX_SWEEPS", "1") or 1)))


class SweepJob(Job):
    """A sweep in the background, a job of ``SWEEPS`` (a ``JobManager``): ``status`` (queued,
    teacher, running, finished, stopped, error), ``result`` (a SweepResult filling in live),
    ``start()``, ``stop()``, ``join()``. The worker thread never touches UI code; a page polls
    this object. ``is_alive`` (optional ``() -> bool``) says whether its owner is still
    there; the sweep stops when it is not."""

    def __init__(
        self,
        sweep: Sweep,
        backend: str = "joblib",
        n_jobs: int | None = None,
        address: str | None = None,
        is_alive=None,
        owner: str = "",
    ):
        super().__init__(config=sweep.base, owner=owner)
        self.sweep, self.backend, self.n_jobs, self.address = sweep, backend, n_jobs, address
        self.result = SweepResult(sweep)
        self.make_run = lambda progress: SweepRun(
            sweep, backend, n_jobs, address, is_alive=is_alive, result=self.result, progress=progress
        )

    def start(self, manager: JobManager | None = None) -> SweepJob:
        (manager or SWEEPS).submit_job(self)
        return self

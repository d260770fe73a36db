"""The teacher store: a teacher is trained once, then kept in memory and on disk.

A teacher is named by ``key(...)``, a hash of what produced it (dataset and its exact split,
architecture, epochs, seed, optimiser recipe). ``get`` finds it in this order, in one place
(``find``): memory -> shipped -> disk cache -> (not found) train it now and save it. A source that
ships ready teachers slots into ``SOURCES`` before the disk cache: the teachers shipped with
the project (kd_core/shipped, see kd_core/ship.py) do. ``Teacher.source`` says which:
"shipped", "cache" or "trained".

    teachers.get("mnist-mini")                  # from wherever it is, trained if need be
    teachers.is_available(k)                    # True when get(...) would not train
    teachers.cached(k)                          # the Teacher, or None (never trains)
    with teachers.installed(t, k): ...          # ``get`` returns t for k meanwhile (bench)
    teachers.to_blob(t) / teachers.from_blob(b) # ship a cached teacher to a remote worker

Thread-safe: two sessions asking for the same teacher train it once.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import data as data_mod
from . import metrics, models, paths

# Teacher recipe per dataset (epochs of Adam at 1e-3 on the full labelled training set).
TEACHER_EPOCHS = {"digits": 30, "mnist-mini": 10, "mnist": 3, "fashion-mnist": 6, "cifar10": 15}
TEACHER_LR = 1e-3
TEACHER_BATCH = 64


def set_threads() -> int:
    """Torch's intra-op threads for training, from KD_PLAYGROUND_THREADS (default 1).

    The models here are tiny: on a 2-core machine, waking a second thread for every small
    op costs far more than it gains (measured by ``make bench``: see PERFORMANCE.md), and
    one thread per job lets two jobs share two cores without thrashing.
    """
    n = int(os.environ.get("KD_PLAYGROUND_THREADS", "1") or 1)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def epoch_batches(n: int, batch_size: int, gen: torch.Generator) -> list[Tensor]:
    """One epoch of index batches: a random permutation of ``range(n)`` from ``gen``, cut
    into slices of ``batch_size`` (the last one shorter)."""
    perm = torch.randperm(n, generator=gen)
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


@dataclass
class Teacher:
    model: nn.Module  # frozen, eval mode; shared: never train or modify it
    arch: str
    dataset: str
    test_accuracy: float
    key: str
    epochs: int
    train_seconds: float
    from_cache: bool
    _profile: dict | None = None
    members: list | None = None  # an ensemble's teachers: [{"arch", "seed", "test_accuracy", ...}]
    info: dict | None = None  # an ensemble's own facts (weighting, temperature, accuracy at T = 1)
    source: str = "trained"  # where the weights came from: "shipped", "cache" or "trained"

    def profile(self, in_shape) -> dict:
        """Parameters, FLOPs and CPU latency, measured once per teacher."""
        if self._profile is None:
            self._profile = models.profile(self.model, in_shape)
        return self._profile


def recipe(dataset: str, arch: str | None = None, epochs: int | None = None) -> tuple[str, int]:
    """(architecture, epochs) with the dataset's presets filled in where not given."""
    return arch or models.preset(dataset)[0], epochs or TEACHER_EPOCHS.get(dataset, 10)


def key(
    dataset: str, arch: str | None = None, epochs: int | None = None, seed: int = 0, train_subset: int | None = None
) -> str:
    """What produced a teacher: recipe, architecture and the exact data split it saw
    (``arch`` / ``epochs`` left out: the dataset's preset)."""
    arch, epochs = recipe(dataset, arch, epochs)
    ds = data_mod.load(dataset, train_subset=train_subset)
    return paths.key_of(
        {
            "v": 1,
            "dataset": dataset,
            "data": ds.fingerprint,
            "arch": arch,
            "epochs": epochs,
            "seed": seed,
            "lr": TEACHER_LR,
            "batch": TEACHER_BATCH,
            "subset": train_subset,
        }
    )


def train_teacher(
    ds: data_mod.Dataset,
    arch: str,
    epochs: int,
    seed: int = 0,
    device=None,
    progress=None,
    stop: threading.Event | None = None,
) -> nn.Module:
    """Train ``arch`` on all of ``ds``'s labelled training data with Adam.
    ``progress(epoch, epochs, test_accuracy)`` is called after each epoch."""
    device = device or models.pick_device()
    set_threads()
    torch.manual_seed(seed)
    model = models.build(arch, ds.in_shape, ds.num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=TEACHER_LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * -(-len(ds.x_train) // TEACHER_BATCH)))
    x, y = ds.x_train.to(device), ds.y_train.to(device)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        model.train()
        for idx in epoch_batches(len(x), TEACHER_BATCH, gen):
            idx = idx.to(device)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if stop is not None and stop.is_set():
                raise InterruptedError("teacher training stopped")
        if progress is not None:
            acc = metrics.accuracy(metrics.predict_logits(model, ds.x_test), ds.y_test)
            progress(epoch, epochs, acc)
    model.eval()
    return model


# ---------------------------------------------------------------- the store

_memory: dict[str, Teacher] = {}
_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()


def _lock_of(k: str) -> threading.Lock:
    with _guard:
        return _locks.setdefault(k, threading.Lock())


def folder(k: str) -> Path:
    """Where the disk cache keeps teacher ``k`` (weights.safetensors, meta.json)."""
    return paths.subdir("teachers") / k


def frozen(model: nn.Module, device) -> nn.Module:
    """``model`` on ``device``, in eval mode, its parameters frozen (a teacher's state)."""
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _on_disk(k: str) -> bool:
    f = folder(k)
    return (f / "weights.safetensors").exists() and (f / "meta.json").exists()


def _from_disk(k: str, device) -> Teacher | None:
    """The disk cache's teacher ``k``, or None (absent, or unreadable: then with a warning)."""
    if not _on_disk(k):
        return None
    f = folder(k)
    try:
        meta = json.loads((f / "meta.json").read_text())
        ds = data_mod.load(meta["dataset"], train_subset=meta.get("subset"))
        model = models.build(meta["arch"], ds.in_shape, ds.num_classes)
        models.load_weights(model, f / "weights.safetensors")
    except Exception as e:  # corrupted cache: rebuild, with a notice
        warnings.warn(f"teacher cache {f} was unreadable ({type(e).__name__}); retraining the teacher", stacklevel=3)
        return None
    return Teacher(
        frozen(model, device),
        meta["arch"],
        meta["dataset"],
        float(meta["test_accuracy"]),
        k,
        int(meta["epochs"]),
        float(meta.get("train_seconds", 0.0)),
        True,
        source="cache",
    )


# Where a teacher is found without training, after memory and in this order: each source is
# ``(exists(key) -> bool, load(key, device) -> Teacher | None)``.
SOURCES: list[tuple[Callable[[str], bool], Callable[[str, object], Teacher | None]]] = [(_on_disk, _from_disk)]


def add_source(exists: Callable[[str], bool], load: Callable[[str, object], Teacher | None]) -> None:
    """Consult ``(exists, load)`` before the disk cache, after the sources added before it
    (kd_core/ship.py adds the teachers shipped with the project; importing kd_core does)."""
    SOURCES.insert(len(SOURCES) - 1, (exists, load))


def is_available(k: str) -> bool:
    """True when teacher ``k`` is in memory or in a source (``get`` would not train it)."""
    with _guard:
        if k in _memory:
            return True
    return any(exists(k) for exists, _ in SOURCES)


def find(k: str, device=None) -> Teacher | None:
    """Teacher ``k`` from memory, else from the first source that has it (then kept in
    memory); None when it would have to be trained. The one place of the lookup order."""
    with _guard:
        if k in _memory:
            return _memory[k]
    with _lock_of(k):
        with _guard:
            if k in _memory:
                return _memory[k]
        device = device or models.pick_device()
        for _, load in SOURCES:
            teacher = load(k, device)
            if teacher is not None:
                with _guard:
                    _memory[k] = teacher
                return teacher
    return None


def cached(k: str, device=None) -> Teacher | None:
    """Teacher ``k`` if it exists anywhere without training (memory, then the sources)."""
    return find(k, device)


def get(
    dataset: str,
    arch: str | None = None,
    epochs: int | None = None,
    seed: int = 0,
    train_subset: int | None = None,
    progress=None,
    device=None,
) -> Teacher:
    """The teacher for (dataset, arch, epochs, seed): found (``find``), else trained now
    (``progress`` as in ``train_teacher``), saved to the disk cache and kept in memory."""
    arch, epochs = recipe(dataset, arch, epochs)
    k = key(dataset, arch, epochs, seed, train_subset)
    teacher = find(k, device)
    if teacher is not None:
        return teacher
    with _lock_of(k):
        with _guard:  # trained by another thread while this one waited
            if k in _memory:
                return _memory[k]
        device = device or models.pick_device()
        ds = data_mod.load(dataset, train_subset=train_subset)
        t0 = time.perf_counter()
        model = train_teacher(ds, arch, epochs, seed=seed, device=device, progress=progress)
        seconds = time.perf_counter() - t0
        acc = metrics.accuracy(metrics.predict_logits(model, ds.x_test), ds.y_test)
        meta = {
            "arch": arch,
            "dataset": dataset,
            "epochs": epochs,
            "seed": seed,
            "test_accuracy": acc,
            "train_seconds": seconds,
            "subset": train_subset,
        }
        f = folder(k)
        models.save_weights(model, f / "weights.safetensors")
        paths.atomic_write_text(f / "meta.json", json.dumps(meta, indent=1))
        teacher = Teacher(frozen(model, device), arch, dataset, acc, k, epochs, seconds, False)
        with _guard:
            _memory[k] = teacher
        return teacher


def forget(k: str) -> Teacher | None:
    """Drop teacher ``k`` from memory (the disk cache keeps it); returns what was there."""
    with _guard:
        return _memory.pop(k, None)


@contextmanager
def installed(teacher: Teacher, k: str | None = None):
    """Within the block, ``get`` / ``find`` return ``teacher`` for key ``k`` (default its own
    key); the previous entry is put back afterwards (e.g. a random teacher for a benchmark)."""
    k = k or teacher.key
    with _guard:
        old = _memory.get(k)
        _memory[k] = teacher
    try:
        yield teacher
    finally:
        with _guard:
            if old is None:
                _memory.pop(k, None)
            else:
                _memory[k] = old


def to_blob(teacher: Teacher) -> dict:
    """What a remote worker needs to put the teacher in its own disk cache: the cached files,
    or — for a teacher that is not on disk here (a shipped one) — its weights and facts."""
    f = folder(teacher.key)
    if (f / "weights.safetensors").exists() and (f / "meta.json").exists():
        weights, meta = (f / "weights.safetensors").read_bytes(), (f / "meta.json").read_text()
    else:
        from safetensors.torch import save

        weights = save(models.state_tensors(teacher.model))
        meta = json.dumps(
            {
                "arch": teacher.arch,
                "dataset": teacher.dataset,
                "epochs": teacher.epochs,
                "test_accuracy": teacher.test_accuracy,
                "train_seconds": teacher.train_seconds,
                "subset": getattr(teacher, "subset", None),
            },
            indent=1,
        )
    return {"key": teacher.key, "weights": weights, "meta": meta}


def from_blob(blob: dict) -> None:
    """Write ``to_blob``'s teacher into this machine's disk cache (kept if already there)."""
    if _on_disk(blob["key"]):
        return
    f = folder(blob["key"])
    paths.atomic_write_bytes(f / "weights.safetensors", blob["weights"])
    paths.atomic_write_text(f / "meta.json", blob["meta"])

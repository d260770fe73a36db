"""Issue 16 (what a lecturer trips over), driven headless by AppTest: unavailable datasets in
every picker, the method's own effect in the Lab, honest texts and noise warnings, readable
parameter labels, and warnings for diverged or chance-level runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def open_page(page: str, lang: str = "en", params: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    if lang != "en":
        at.query_params["lang"] = lang
    for k, v in (params or {}).items():
        at.query_params[k] = v
    at.run()
    if page != "pages/lesson.py":
        at.switch_page(page)
        at.run()
    assert not at.exception, at.exception
    return at


def page_text(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "header", "subheader"):
        for el in at.get(kind):
            parts.append(str(getattr(el, "value", "")))
    return "\n".join(parts)


# ------------------------------------------------------------------ Major 2: unavailable datasets

PICKERS = [
    ("pages/lab.py", "lab_dataset"),
    ("pages/soft_targets.py", "st_dataset"),
    ("pages/feature_maps.py", "fm_dataset"),
    ("pages/relations.py", "rel_dataset"),
    ("pages/contrastive.py", "ct_dataset"),
    ("pages/compare.py", "cmp_sw_dataset"),
    ("pages/beyond.py", "by_dataset"),
]


@pytest.mark.parametrize(("page", "key"), PICKERS)
def test_unavailable_datasets_are_marked_in_every_picker(page, key):
    at = open_page(page)
    box = at.selectbox(key=key)
    labels = dict(zip(box.options, box.options))  # options are the formatted labels
    marked = [o for o in box.options if "not on this server" in o]
    assert any(o.startswith("cifar10 ") for o in marked), box.options
    assert not any(o.startswith(("digits ", "mnist-mini ")) for o in marked), labels


@pytest.mark.parametrize(("page", "key"), PICKERS)
def test_choosing_one_says_why_and_where_without_raw_errors_or_server_paths(page, key):
    at = open_page(page)
    at.selectbox(key=key).set_value("cifar10").run()
    assert not at.exception
    text = page_text(at)
    assert "cifar-10-batches-py/" in text and "not on this server" in text
    home = os.environ["KD_PLAYGROUND_HOME"]
    for raw in ("URLError", "DataUnavailableError", "Traceback", "KD_PLAYGROUND_OFFLINE=1", home + "/datasets"):
        assert raw not in text, raw
    assert not at.error, [e.value for e in at.error]


def test_lab_disables_train_with_the_reason_beside_it_and_keeps_the_choice():
    at = open_page("pages/lab.py")
    at.selectbox(key="lab_dataset").set_value("cifar10").run()
    assert at.selectbox(key="lab_dataset").value == "cifar10"  # not silently switched back
    assert at.button(key="lab_train").disabled
    warn = [w.value for w in at.warning]
    assert any("cifar-10-batches-py/" in w for w in warn)
    assert not any("Press Train" in str(i.value) for i in at.info)
    # back to an embedded dataset: Train is available again
    at.selectbox(key="lab_dataset").set_value("digits").run()
    assert not at.button(key="lab_train").disabled


def test_fashion_mnist_reason_names_the_debian_package(monkeypatch, tmp_path):
    from kd_core import data

    if data.availability("fashion-mnist").available:
        pytest.skip("Fashion-MNIST is installed here")
    at = open_page("pages/lab.py")
    at.selectbox(key="lab_dataset").set_value("fashion-mnist").run()
    assert any("apt-get install dataset-fashion-mnist" in w.value for w in at.warning)


def test_the_reason_is_translated():
    at = open_page("pages/lab.py", lang="zh")
    at.selectbox(key="lab_dataset").set_value("cifar10").run()
    assert any("本服务器上没有" in w.value for w in at.warning)

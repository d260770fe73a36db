"""The "No data" page driven with AppTest: it renders in English and Chinese; a quick
data-free run from the page forms images live and ends with the student's real-test accuracy
beside the teacher's; a label-free run ends with k-NN / probe bars and embeddings; a dataset
that cannot be loaded shows an error, not an exception. Runs use the digits dataset."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from kd_app import i18n

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def open_page(lang: str | None = None, **settings) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    if lang is not None:
        at.query_params["lang"] = lang
    at.session_state["nd_dataset"] = "digits"
    for k, v in settings.items():
        at.session_state[k] = v
    at.run()
    at.switch_page("app_pages/no_data.py")
    at.run()
    assert not at.exception, at.exception
    return at


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def titled(at: AppTest, key: str) -> dict:
    want = i18n.text(key, "en")
    for spec in charts(at):
        if spec["layout"].get("title", {}).get("text", "").startswith(want):
            return spec
    raise AssertionError(f"no figure titled {want!r}")


def run_to_end(at: AppTest, button: str, limit: float = 240.0, during=None) -> AppTest:
    at.button(key=button).click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    t0 = time.time()
    while time.time() - t0 < limit:
        time.sleep(1.0)
        at.run()
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
        if during is not None:
            during(at)
        if at.success:
            return at
    raise AssertionError("the run did not finish in time")


def test_the_page_renders_in_english():
    at = open_page()
    assert at.title[0].value.endswith(i18n.text("no_data.title", "en"))
    headers = [h.value for h in at.header]
    assert i18n.text("no_data.df.header", "en") in headers and i18n.text("no_data.lf.header", "en") in headers
    assert at.button(key="nd_df_start") and at.button(key="nd_lf_start")
    assert not at.error


@pytest.mark.slow
def test_a_quick_datafree_run_forms_images_and_ends_with_the_students_accuracy():
    at = open_page(nd_setting="quick", nd_compare=False)
    seen = {"images": 0}

    def during(at):
        seen["images"] = max(seen["images"], len(at.get("image")))

    run_to_end(at, "nd_df_start", during=during)
    assert seen["images"] >= 1  # the grid of forming images was drawn while it ran
    spec = titled(at, "no_data.df.result_title")
    labels = spec["data"][0]["x"]
    assert labels == [i18n.text("no_data.roles.teacher", "en"), i18n.text("no_data.roles.datafree", "en")]
    teacher, student = spec["data"][0]["y"]
    assert teacher > 80 and student > 30  # chance is 10%
    synth = titled(at, "no_data.df.synth_title")
    assert {tr["name"] for tr in synth["data"]} == {
        i18n.text("no_data.df.bn_loss", "en"),
        i18n.text("no_data.df.confidence", "en"),
    }
    facts = [c.value for c in at.caption if "synthetic images" in c.value]
    assert facts and "and 0 real training images" in facts[0]


@pytest.mark.slow
def test_a_label_free_run_shows_knn_and_probe_beside_teacher_and_random_student():
    at = open_page(nd_lf_epochs=1, nd_dataset="mnist-mini")  # on 8x8 digits even random embeddings score 93%
    run_to_end(at, "nd_lf_start")
    spec = titled(at, "no_data.lf.scores_title")
    names = [tr["name"] for tr in spec["data"]]
    assert names == [i18n.text("no_data.lf.knn_accuracy", "en"), i18n.text("no_data.lf.linear_probe_accuracy", "en")]
    assert spec["data"][0]["x"] == [i18n.text(f"no_data.lf.role_{k}", "en") for k in ("teacher", "student", "random")]
    knn = spec["data"][0]["y"]
    assert knn[1] > knn[2]  # distilled student above the random one
    titles = [s["layout"].get("title", {}).get("text", "") for s in charts(at)]
    for k in ("before", "after", "teacher"):
        assert any(x.startswith(i18n.text(f"no_data.lf.emb_{k}", "en")) for x in titles)


def test_the_page_in_chinese():
    at = open_page(lang="zh")
    assert at.title[0].value.endswith(i18n.text("no_data.title", "zh"))
    texts = [e.value for kind in ("markdown", "caption", "header", "subheader", "info") for e in getattr(at, kind)]
    texts += [
        w.label
        for kind in ("slider", "select_slider", "radio", "selectbox", "button", "checkbox")
        for w in getattr(at, kind)
    ]
    assert not [x for x in texts if isinstance(x, str) and "no_data." in x]
    assert any(i18n.text("no_data.df.header", "zh") in x for x in texts)


def test_a_dataset_that_cannot_be_loaded_shows_an_error():
    at = open_page(nd_dataset="mnist")  # tests run offline, with no MNIST files
    assert at.error, "expected an error message"
    assert not at.exception

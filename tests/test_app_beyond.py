"""The Beyond-one-teacher page driven with AppTest: it renders; the image and T change the
ensemble's bars; the blend shown is a distribution and the weighted mean of the members'
bars shown (weights from the page's table); born-again and DML runs submitted from the
page finish and show their results; bad settings show an error, not an exception; the
page in Chinese. Runs use the digits dataset (its teachers come from the shared test cache)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from kd_app import i18n

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def open_page(lang: str | None = None, **settings) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    if lang is not None:
        at.query_params["lang"] = lang
    at.session_state["by_dataset"] = "digits"
    at.session_state["by_k"] = 2  # two digits teachers: seeds 0 and 1, shared with tests/test_beyond.py
    for k, v in settings.items():
        at.session_state[k] = v
    at.run()
    at.switch_page("app_pages/beyond.py")
    at.run()
    assert not at.exception, at.exception
    missing = [b for b in at.button if b.key == "by_train_members"]
    if missing:  # the members are trained when asked, as a user would
        missing[0].click().run()
        assert not at.exception, at.exception
    return at


def charts(at: AppTest) -> dict:
    out = {}
    for c in at.get("plotly_chart"):
        spec = json.loads(c.proto.spec)
        out[c.proto.id] = spec
    return out


def bars(at: AppTest) -> dict:
    """The ensemble figure: trace name -> y values."""
    for spec in charts(at).values():
        names = [tr.get("name") for tr in spec["data"]]
        if any(n == i18n.text("beyond.ens.blend", "en") for n in names):
            return {tr["name"]: np.asarray(tr["y"], dtype=float) for tr in spec["data"]}
    raise AssertionError("no ensemble figure")


def test_page_renders_and_controls_change_the_bars():
    at = open_page()
    first = bars(at)
    assert len(first) == 3  # K = 2 teachers and the blend
    at.number_input(key="by_index").set_value(7).run()
    assert not at.exception, at.exception
    other_image = bars(at)
    assert any(not np.allclose(first[k], other_image[k]) for k in first)
    at.slider(key="by_T").set_value(1.0).run()
    assert not at.exception, at.exception
    sharper = bars(at)
    assert any(not np.allclose(other_image[k], sharper[k]) for k in sharper)
    assert not at.error


@pytest.mark.parametrize("weighting", ["mean", "confidence"])
def test_the_blend_is_the_weighted_mean_of_the_members(weighting):
    at = open_page(by_weighting=weighting, by_index=3, by_T=3.0)
    series = bars(at)
    blend = series.pop(i18n.text("beyond.ens.blend", "en"))
    assert blend.min() >= 0 and abs(blend.sum() - 1) < 1e-4
    table = at.dataframe[0].value
    weights = table[i18n.text("beyond.ens.col_weight", "en")].to_numpy(dtype=float)[:-1]  # the last row: the ensemble
    assert abs(weights.sum() - 1) < 1e-5
    if weighting == "mean":
        assert np.allclose(weights, 1 / len(weights))
    members = np.stack(list(series.values()))
    assert np.allclose(weights @ members, blend, atol=1e-5)


def run_to_end(at: AppTest, limit: float = 120.0) -> AppTest:
    at.button(key="by_train").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    t0 = time.time()
    while time.time() - t0 < limit:
        time.sleep(1.0)
        at.run()
        assert not at.exception, at.exception
        if at.success:
            return at
        assert not at.error, [e.value for e in at.error]
    raise AssertionError("the run did not finish in time")


def test_a_born_again_run_from_the_page_finishes_and_shows_each_generation():
    at = open_page(by_method="born-again", by_generations=2, by_epochs=1)
    run_to_end(at)
    spec = next(
        s
        for s in charts(at).values()
        if s["layout"].get("title", {}).get("text", "").startswith(i18n.text("beyond.res.born_again_title", "en"))
    )
    labels = spec["data"][0]["x"]
    assert labels == [i18n.text("beyond.res.generation0", "en")] + [
        i18n.text("beyond.res.generation", "en", g=g) for g in (1, 2)
    ]
    assert all(0 < v <= 100 for v in spec["data"][0]["y"])


def test_a_dml_run_from_the_page_shows_curves_against_the_independent_student():
    at = open_page(by_method="dml", by_students=2, by_epochs=1)
    run_to_end(at)
    spec = next(
        s
        for s in charts(at).values()
        if s["layout"].get("title", {}).get("text", "").startswith(i18n.text("beyond.res.dml_title", "en"))
    )
    names = [tr["name"] for tr in spec["data"]]
    assert names == [
        i18n.text("beyond.res.dml_student", "en", k=1),
        i18n.text("beyond.res.dml_student", "en", k=2),
        i18n.text("beyond.res.independent", "en"),
    ]
    assert len(at.metric) >= 3


@pytest.mark.parametrize(
    "settings", [{"by_method": "ta", "by_assistant": "no-such-net"}, {"by_method": "born-again", "by_generations": 9}]
)
def test_bad_values_show_an_error_not_an_exception(settings):
    at = open_page(**settings)
    assert at.error, "expected an error message"
    assert at.button(key="by_train").disabled


def test_the_page_in_chinese():
    at = open_page(lang="zh")
    assert at.title[0].value.endswith(i18n.text("beyond.title", "zh"))
    texts = [e.value for kind in ("markdown", "caption", "header", "subheader", "info") for e in getattr(at, kind)]
    texts += [w.label for kind in ("slider", "radio", "number_input", "selectbox", "button") for w in getattr(at, kind)]
    assert not [x for x in texts if isinstance(x, str) and "beyond." in x]
    assert any(i18n.text("beyond.ens.header", "zh") in x for x in texts)


def test_opening_the_page_trains_nothing_until_asked(monkeypatch):
    from kd_core import teachers

    monkeypatch.setattr(teachers, "train_teacher", lambda *a, **k: pytest.fail("the page trained a teacher by itself"))
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["by_dataset"] = "digits"
    at.session_state["by_k"] = 6  # seeds 2..5 of the digits teacher are in no cache
    at.run()
    at.switch_page("app_pages/beyond.py")
    at.run()
    assert not at.exception
    assert any(b.key == "by_train_members" for b in at.button)
    assert any(i18n.text("beyond.ens.train_members", "en") == b.label for b in at.button)
    assert not [c for c in at.get("plotly_chart") if c.proto.id.endswith("by_bars")]

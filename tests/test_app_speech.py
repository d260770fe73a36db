"""The Image -> speech page driven with AppTest: it renders a pair (sound, spectrogram,
image, the teacher's soft targets); the controls are mirrored in the link and a link sets
them; a short run trains to the end from the page, in English and in Chinese, and shows
the students' accuracies, the confusion matrix and the student's prediction on the clip;
without espeak-ng (and no cached clips) the page says how to install it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from kd_app import i18n

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def open_page(lang: str | None = None, query: dict | None = None, **settings) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    if lang is not None:
        at.query_params["lang"] = lang
    for k, v in (query or {}).items():
        at.query_params[k] = v
    for k, v in settings.items():
        at.session_state[k] = v
    at.run()
    at.switch_page("app_pages/speech.py")
    at.run()
    assert not at.exception, at.exception
    return at


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def texts(at: AppTest) -> str:
    return " ".join(
        str(getattr(e, "value", "")) for kind in ("markdown", "caption", "title", "header") for e in at.get(kind)
    )


def run_to_end(at: AppTest, limit: float = 400.0) -> AppTest:
    at.button(key="sp_train").click().run()
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


def test_page_shows_a_pair_and_mirrors_its_controls_in_the_link():
    at = open_page()
    assert at.title[0].value.endswith(i18n.text("speech.title", "en"))
    assert len(at.get("audio")) == 1  # the clip, playable
    specs = charts(at)
    kinds = [tr.get("type") for s in specs for tr in s["data"]]
    assert kinds.count("heatmap") >= 1 and "bar" in kinds  # spectrogram and the teacher's bars
    teacher = [s for s in specs if any(tr.get("type") == "bar" for tr in s["data"])][0]["data"][0]
    assert sum(teacher["y"]) == pytest.approx(1.0, abs=1e-4)
    assert "Train the students below" in texts(at)
    at.select_slider(key="sp_mismatch").set_value(0.3).run()
    at.number_input(key="sp_clip").set_value(17).run()
    assert not at.exception
    assert at.query_params["mismatch"] == "0.3" and at.query_params["clip"] == "17"


def test_a_link_sets_the_controls_and_a_bad_value_falls_back_with_a_notice():
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()  # AppTest opens a page only after the app registered its navigation
    at.switch_page("app_pages/speech.py")  # the link opens this page directly
    at.query_params.clear()  # then the link's own parameters
    for k, v in {"T": "2", "mismatch": "0.5", "epochs": "3", "clip": "5000"}.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, at.exception
    assert any("clip" in w.value for w in at.warning)  # 5000 is beyond the 400 clips
    assert at.select_slider(key="sp_T").value == 2.0
    assert at.select_slider(key="sp_mismatch").value == 0.5
    assert at.number_input(key="sp_epochs").value == 3
    assert at.number_input(key="sp_clip").value == 0


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_short_run_trains_to_the_end_from_the_page(lang):
    at = open_page(lang=lang if lang != "en" else None, sp_epochs=1)
    assert at.title[0].value.endswith(i18n.text("speech.title", lang))
    at = run_to_end(at)
    labels = [m.label for m in at.metric]
    for name in ("crossmodal", "supervised", "few_labels"):
        assert i18n.text(f"speech.short.{name}", lang) in labels
    accs = {m.label: float(m.value.rstrip("%")) for m in at.metric}
    assert 0.0 <= accs[i18n.text("speech.short.crossmodal", lang)] <= 100.0
    specs = charts(at)
    heat = [tr for s in specs for tr in s["data"] if tr.get("type") == "heatmap"]
    confusion = [h for h in heat if len(h["z"]) == 10 and len(h["z"][0]) == 10]
    assert confusion and sum(map(sum, confusion[0]["z"])) == 120  # every unseen-voice test clip
    # the trained student's prediction now stands beside the teacher's targets on the clip
    bars = [s for s in specs if sum(tr.get("type") == "bar" for tr in s["data"]) == 2]
    assert bars
    if lang == "zh":
        assert any("跨模态学生" in (tr.get("name") or "") for s in specs for tr in s["data"])


def test_without_espeak_ng_the_page_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("KD_PLAYGROUND_ESPEAK", "/nonexistent/espeak-ng")
    monkeypatch.setenv("KD_PLAYGROUND_HOME", str(tmp_path))  # no cached clips here
    at = open_page()
    assert at.error and "espeak-ng is not installed" in at.error[0].value
    assert any("apt-get install espeak-ng" in c.value for c in at.code)


@pytest.mark.slow
def test_stop_keeps_what_was_trained():
    at = open_page(sp_epochs=30)
    at.button(key="sp_train").click().run()
    assert not at.exception, at.exception
    t0 = time.time()  # stop once a few steps have trained, as a user watching the curves would
    while time.time() - t0 < 300 and not any("Training: step" in str(p.proto) for p in at.get("progress")):
        time.sleep(1.0)
        at.run()
    at.button(key="sp_stop").click().run()
    while time.time() - t0 < 400 and not at.success:
        time.sleep(1.0)
        at.run()
        assert not at.exception, at.exception
    assert at.success and at.success[0].value.startswith("Stopped")
    assert len(at.metric) == 4  # the three students (as far as they got) and chance

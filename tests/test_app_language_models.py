"""The Language models page, driven like a user would with AppTest, in English and Chinese:
it opens without a teacher and says how to get one; Train (a tiny teacher recipe and a few
steps) runs in the background to the end with live curves; then the prompt shows the
teacher's and both students' next-character bars with the top-k cut, the samples and the
size/speed table appear, and the run is listed with its entropy; the forward/reverse KL
fit shows the reverse-KL student with the lower entropy; a bad link value and a missing
corpus give notices, not crashes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from kd_app import i18n

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TINY = {"lm_teacher_steps": 20, "lm_steps": 12}


def open_page(lang: str | None = None, query: dict | None = None, **settings) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    if lang is not None:
        at.query_params["lang"] = lang  # the session's language is the first run's
    at.run()  # AppTest opens a page only after the app registered its navigation
    at.switch_page("app_pages/language_models.py")  # a link opens this page directly
    at.query_params.clear()  # then the link's own parameters
    if lang is not None:
        at.query_params["lang"] = lang
    for k, v in (query or {}).items():
        at.query_params[k] = v
    for k, v in settings.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def _chart(at: AppTest, key: str) -> dict:
    for c in at.get("plotly_chart"):
        if c.proto.id.endswith(key):
            return json.loads(c.proto.spec)
    raise AssertionError(f"no chart {key}: {[c.proto.id for c in at.get('plotly_chart')]}")


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [m.value for m in at.caption] + [m.value for m in at.info]
    parts += [m.value for m in at.success] + [m.value for m in at.error] + [m.value for m in at.warning]
    return "\n".join(parts + [h.value for h in at.header] + [h.value for h in at.title])


def train_to_end(at: AppTest, limit: float = 400) -> AppTest:
    at.button(key="lm_train").click().run()
    assert not at.exception, at.exception
    t0 = time.time()
    while time.time() - t0 < limit:
        time.sleep(1.5)
        at.run()
        assert not at.exception, at.exception
        if at.button(key="lm_stop").disabled:
            at.run()  # the page's redraw once the run has ended
            return at
    raise AssertionError("the run did not end")


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_train_runs_to_the_end_and_every_view_fills(lang):
    zh = lang == "zh"
    tr = lambda key, **fmt: i18n.text(key, lang, **fmt)  # noqa: E731
    at = open_page(lang="zh" if zh else None, **TINY)
    assert at.title[0].value.endswith(tr("lm.title"))
    train_to_end(at)
    text = _texts(at)
    assert tr("lm.progress.finished", steps=12) in text
    curves = _chart(at, "lm_chart_curves")
    names = {t["name"] for t in curves["data"]}
    assert {tr("lm.roles.distilled"), tr("lm.roles.scratch")} <= names
    bars = [t for t in _chart(at, "lm_chart_next")["data"] if t["type"] == "bar"]
    assert [b["name"] for b in bars] == [tr("lm.roles.teacher"), tr("lm.roles.distilled"), tr("lm.roles.scratch")]
    teacher = bars[0]["y"]
    assert teacher == sorted(teacher, reverse=True) and 0 < sum(teacher) <= 1.0 + 1e-9
    assert tr("lm.next.cut", k=5) in json.dumps(_chart(at, "lm_chart_next"), ensure_ascii=False)
    assert tr("lm.samples.header") in text and tr("lm.size.header") in text
    size = next(d.value for d in at.dataframe if tr("lm.size.params") in d.value.columns)
    assert list(size[tr("lm.size.model")]) == [tr("lm.roles.teacher"), tr("lm.roles.distilled"), tr("lm.roles.scratch")]
    runs = next(d.value for d in at.dataframe if tr("lm.table.entropy") in d.value.columns)
    assert len(runs) == 1
    assert at.query_params.get("steps") == ["12"] or at.query_params.get("steps") == "12"


def test_forward_vs_reverse_kl_fit_and_its_controls():
    at = open_page()
    m = {x.label: float(x.value) for x in at.metric}
    assert m["Reverse-KL student entropy"] < m["Forward-KL student entropy"]
    lines = {t["name"]: t for t in _chart(at, "lm_chart_kl")["data"]}
    assert len(lines) == 3
    at.slider(key="lm_sep").set_value(4).run()  # modes that overlap: both fits agree
    m2 = {x.label: float(x.value) for x in at.metric}
    assert abs(m2["Reverse-KL student entropy"] - m2["Forward-KL student entropy"]) < 0.2
    assert at.query_params.get("sep") in (["4"], "4")


def test_bad_link_value_and_missing_corpus_are_notices_not_crashes(monkeypatch, tmp_path):
    at = open_page(query={"T": "hot", "method": "magic"})
    warnings = " ".join(w.value for w in at.warning)
    assert "hot" in warnings and "magic" in warnings
    assert at.select_slider(key="lm_T").value == 1.0 and at.selectbox(key="lm_method").value == "kd"
    monkeypatch.setenv("KD_FORTUNES_DIR", str(tmp_path))  # as if fortunes-zh were not installed
    at.selectbox(key="lm_corpus").set_value("tang-song").run()
    assert not at.exception
    assert "apt-get install fortunes-zh" in " ".join(e.value for e in at.error)
    at.selectbox(key="lm_corpus").set_value("pydoc").run()  # still usable
    assert not at.error and not at.exception

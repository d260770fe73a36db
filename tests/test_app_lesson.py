"""The Lesson, driven headless by AppTest in English and in Chinese: it opens first, every
step is there, its sliders redraw its figures, the one-click experiment and the
missing-class runs train for real and draw live curves, and the quiz answers at once."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from kd_app import i18n

APP = str(Path(__file__).resolve().parents[1] / "app.py")
CJK = re.compile(r"[\u4e00-\u9fff]")


def open_lesson(lang: str = "en") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    if lang != "en":
        at.query_params["lang"] = lang
    at.run()
    assert not at.exception, at.exception
    return at


def chart(at: AppTest, key: str) -> dict:
    for c in at.get("plotly_chart"):
        if c.proto.id.endswith(key):
            return json.loads(c.proto.spec)
    raise AssertionError(f"no chart {key}: {[c.proto.id for c in at.get('plotly_chart')]}")


def texts(at: AppTest) -> list[str]:
    out = [
        e.value
        for kind in (
            "markdown",
            "caption",
            "info",
            "success",
            "error",
            "warning",
            "header",
            "subheader",
            "title",
            "latex",
        )
        for e in at.get(kind)
        if isinstance(getattr(e, "value", None), str)
    ]
    out += [w.label for kind in ("radio", "selectbox", "slider", "select_slider", "button") for w in at.get(kind)]
    return out


def poll(at: AppTest, until, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.5)
        at.run()
        assert not at.exception, at.exception
        if until(at):
            return
    pytest.fail("the lesson's run did not reach the expected state in time")


@pytest.fixture(scope="module", params=["en", "zh"])
def lesson(request) -> tuple[AppTest, str]:
    return open_lesson(request.param), request.param


def test_the_lesson_is_the_first_page_and_has_every_step(lesson):
    at, lang = lesson
    cat = i18n.catalogue(lang)
    assert at.title[0].value == "🎓 " + cat["lesson.title"]
    headers = [h.value for h in at.header]
    for n in range(1, 9):
        assert f"{n} · {cat[f'lesson.s{n}.title']}" in headers
    # every formula the lesson names is rendered: softmax with T, the KD loss, its gradient, the families
    latex = " ".join(x.value for x in at.latex)
    for piece in (
        r"\exp(z_i / T)",
        r"\mathrm{KL}",
        r"\frac{1}{N\,T^2}",
        r"\psi_D",
        "r(F_S)",
        r"Q_T^j",
        r"G_T - G_S",
        r"p^T_{i|j}",
        r"g_S(s_i)",
    ):
        assert piece in latex, piece
    # each family links to its page, once that page exists
    linked = {p.proto.page for p in at.get("page_link")}
    for file, path in (
        ("lab.py", "lab"),
        ("feature_maps.py", "feature-maps"),
        ("relations.py", "relations"),
        ("contrastive.py", "contrastive"),
    ):
        if (Path(APP).parent / "app_pages" / file).exists():
            assert path in linked, (path, linked)
    # no raw catalogue key leaks onto the page, and the page is in the chosen language
    keys = set(cat)
    shown = texts(at)
    assert not [s for s in shown if s in keys]
    if lang == "zh":
        assert sum(bool(CJK.search(s)) for s in shown) > 40
    else:
        assert not [s for s in shown if CJK.search(s) and "语言" not in s]


def test_why_distil_table_is_measured(lesson):
    at, lang = lesson
    df = at.get("arrow_data_frame")[0].value if at.get("arrow_data_frame") else at.dataframe[0].value
    assert len(df) == 2
    params = df[i18n.text("lesson.s1.col_params", lang)]
    acc = df[i18n.text("lesson.s1.col_acc", lang)]
    assert params.iloc[0] > 5 * params.iloc[1]  # the teacher is much bigger
    assert (acc > 0.8).all() and acc.iloc[0] > acc.iloc[1]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_sliders_redraw_the_figures(lang):
    at = open_lesson(lang)
    probs = chart(at, "lesson_probs")
    assert len(probs["data"]) == 2 and abs(sum(probs["data"][1]["y"]) - 1) < 1e-6
    if lang == "zh":
        assert CJK.search(probs["layout"]["title"]["text"])
    at.select_slider(key="lesson_T").set_value(20.0).run()
    hot = chart(at, "lesson_probs")
    assert max(hot["data"][1]["y"]) < max(probs["data"][1]["y"])  # flatter at T = 20
    assert hot["data"][0]["y"] == probs["data"][0]["y"]  # the T = 1 series stays

    att = chart(at, "lesson_att_0")
    at.selectbox(key="lesson_digit").set_value(2).run()
    assert chart(at, "lesson_probs")["data"][0]["y"] != hot["data"][0]["y"]
    assert chart(at, "lesson_att_0")["data"][-1]["z"] != att["data"][-1]["z"]

    terms = chart(at, "lesson_loss_terms")["data"][0]["y"]
    grad = chart(at, "lesson_grad_norms")
    at.slider(key="lesson_alpha").set_value(0.5).run()
    at.select_slider(key="lesson_loss_T").set_value(10.0).run()
    terms2 = chart(at, "lesson_loss_terms")["data"][0]["y"]
    assert terms2 != terms
    assert abs(terms2[2] - terms2[0] - terms2[1]) < 1e-9
    shapes = chart(at, "lesson_grad_norms")["layout"]["shapes"]
    assert shapes[0]["x0"] == 10.0 and grad["layout"]["shapes"][0]["x0"] == 4.0
    assert "10^2" in " ".join(x.value for x in at.latex)  # the formula with the values in force
    # T² keeps the gradient's size while the plain one collapses; the direction tends to logit matching
    scaled, plain = grad["data"][1]["y"], grad["data"][0]["y"]
    assert plain[0] / plain[-1] > 1000 and max(scaled) / min(scaled) < 3
    cos = chart(at, "lesson_grad_cos")["data"][0]["y"]
    assert cos[-1] > 0.99 and cos[-1] > cos[0]

    rkd = chart(at, "lesson_rkd_teacher")
    at.select_slider(key="lesson_per_class").set_value(3).run()
    assert len(chart(at, "lesson_rkd_teacher")["data"][0]["z"]) == 30 != len(rkd["data"][0]["z"])
    nce = chart(at, "lesson_contrast")["data"][0]["z"]
    at.select_slider(key="lesson_tau").set_value(1.0).run()
    assert chart(at, "lesson_contrast")["data"][0]["z"] != nce
    assert not at.exception
    # the settings are in the link
    assert at.query_params["T"] == "20" and at.query_params["loss_alpha"] == "0.5" and at.query_params["tau"] == "1"
    assert (at.query_params.get("lang") == "zh") == (lang == "zh")


def test_quiz_answers_at_once():
    at = open_lesson()
    at.radio(key="lesson_quiz_q1").set_value(0).run()  # wrong
    assert any(i18n.text("lesson.s8.wrong", "en", answer="").split("—")[0] in e.value for e in at.error)
    at.radio(key="lesson_quiz_q1").set_value(1).run()  # right
    assert any(e.value.startswith("Right.") for e in at.success)
    at.radio(key="lesson_quiz_q3").set_value(0).run()
    assert any("**2 of 2**" in m.value for m in at.markdown)
    for w in at.radio:
        assert w.help


def test_every_control_has_help_and_a_key():
    at = open_lesson("zh")
    for kind in ("selectbox", "slider", "select_slider", "radio", "button"):
        for w in at.get(kind):
            if w.key and w.key.startswith("lesson_"):
                assert w.help, w.key


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_one_click_experiment_trains_live(lang):
    at = open_lesson(lang)
    at.select_slider(key="lesson_fraction").set_value(0.05).run()
    at.button(key="lesson_run_exp").click().run()
    assert not at.exception
    assert at.session_state["kd_lab_job_id"] == at.session_state["lesson_exp_job"]
    assert at.button(key="lesson_run_exp").disabled
    finished = i18n.text("lesson.job.finished", lang, steps=0).split("0")[0]
    poll(at, lambda a: any(s.value.startswith(finished) for s in a.success))
    curves = chart(at, "lesson_exp_curves")
    assert [len(tr["x"]) for tr in curves["data"][:2]] == [3, 3]
    assert {tr["name"] for tr in curves["data"]} >= {
        i18n.text("roles.distilled", lang),
        i18n.text("roles.scratch", lang),
    }
    assert len(at.metric) >= 3
    assert not at.button(key="lesson_run_exp").disabled


@pytest.mark.slow
def test_missing_class_runs_at_two_temperatures():
    at = open_lesson()
    at.button(key="lesson_run_missing").click().run()
    assert not at.exception
    ids = at.session_state["lesson_missing_jobs"]
    assert len(ids) == 2
    poll(at, lambda a: any("never saw" in m.value or "similar results" in m.value for m in a.markdown))
    fig = chart(at, "lesson_missing_curves")
    names = [tr["name"] for tr in fig["data"]]
    assert names == ["distilled at T = 2", "distilled at T = 20", "scratch student"]
    hot, cold, scratch = fig["data"][1]["y"][-1], fig["data"][0]["y"][-1], fig["data"][2]["y"][-1]
    assert scratch == 0.0  # never saw a 3, no teacher: never says 3
    assert hot > cold  # a high temperature carries the hint about the missing digit

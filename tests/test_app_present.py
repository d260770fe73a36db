"""Presentation mode's one thing per screen (issue 24, part 5), driven headless by AppTest:
with ?present=1 the Lesson shows one step at a time and the Lab one of its three steps, with
Previous / Next and "step i of n"; the step is kept in the link (&step=3) and across a visit
to another page; a bad step in the link falls back to the first with a notice; outside
presentation mode both pages are as they were. No data, Beyond, Language models and Image ->
speech show one of their sections per screen the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from kd_app import i18n
from kd_core import runs

APP = str(Path(__file__).resolve().parents[1] / "app.py")
LESSON_STEPS = 8


def open_app(query: dict[str, str], page: str | None = None) -> AppTest:
    """The app opened from a link: ``query`` is set before the first run (the sidebar, which
    reads ?present=1 and ?lang, runs only then); ``page``: then switched to with the same link."""
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params.update(query)
    at.run()
    if page is not None:
        at.switch_page(page)
        at.query_params.clear()
        at.query_params.update(query)
        at.run()
    assert not at.exception, at.exception
    return at


def lesson_steps(at: AppTest) -> list[int]:
    """The numbers of the Lesson's steps on the page (their headers read "n · title")."""
    return [int(h.value.split(" · ")[0]) for h in at.header if h.value[:1].isdigit()]


def step_in_link(at: AppTest) -> str | None:
    return at.query_params.get("step")


def click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_lesson_shows_one_step_at_a_time(lang):
    query = {"present": "1", "step": "2"} | ({"lang": lang} if lang != "en" else {})
    at = open_app(query)
    assert lesson_steps(at) == [2]
    assert not at.title  # the page's title belongs to step 1
    picker = at.selectbox(key="kd_screen_pick_lesson")
    assert picker.value == 2
    assert picker.label == i18n.text("present.step_of", lang, i=2, n=LESSON_STEPS)
    assert picker.help
    assert at.button(key="kd_screen_next_top_lesson").label.startswith(i18n.text("present.next", lang))
    # the step's own controls still work, and the link keeps the step beside them
    at.select_slider(key="lesson_T").set_value(20.0).run()
    assert not at.exception and at.query_params.get("T") == "20" and step_in_link(at) == "2"
    assert (at.query_params.get("lang") == "zh") == (lang == "zh")

    click(at, "kd_screen_next_top_lesson")
    assert lesson_steps(at) == [3] and step_in_link(at) == "3"
    assert at.selectbox(key="kd_screen_pick_lesson").label == i18n.text("present.step_of", lang, i=3, n=LESSON_STEPS)
    click(at, "kd_screen_prev_bottom_lesson")  # Previous under the step, too
    click(at, "kd_screen_prev_top_lesson")
    assert lesson_steps(at) == [1]
    assert step_in_link(at) is None  # step 1 is the default: left out of the link
    assert at.title and at.button(key="kd_screen_prev_top_lesson").disabled
    at.selectbox(key="kd_screen_pick_lesson").set_value(LESSON_STEPS).run()
    assert not at.exception
    assert lesson_steps(at) == [LESSON_STEPS] and step_in_link(at) == str(LESSON_STEPS)
    assert at.button(key="kd_screen_next_top_lesson").disabled
    assert at.query_params.get("present") == "1"


@pytest.mark.parametrize("bad", ["0", "-1", "99", "abc", "2.5", ""])
def test_a_bad_step_in_the_link_falls_back_with_a_notice(bad):
    at = open_app({"present": "1", "step": bad})
    assert lesson_steps(at) == [1]
    assert any(f"step={bad}" in w.value for w in at.warning), [w.value for w in at.warning]
    assert step_in_link(at) is None and at.query_params.get("present") == "1"
    click(at, "kd_screen_next_top_lesson")  # and the page goes on normally
    assert lesson_steps(at) == [2] and step_in_link(at) == "2"


def test_a_step_given_twice_is_written_once():
    at = open_app({"present": "1", "step": ["3", "5"]})
    assert lesson_steps(at) == [5]
    assert at.query_params["step"] == "5"  # one value, no longer two


def test_the_lesson_outside_presentation_mode_is_unchanged():
    at = open_app({"step": "3"})  # a step without presentation mode: the whole page, no notice
    assert lesson_steps(at) == list(range(1, LESSON_STEPS + 1))
    assert not [b for b in at.button if b.key and b.key.startswith("kd_screen_")]
    assert not [w.value for w in at.warning]
    assert step_in_link(at) is None


def test_the_step_survives_a_visit_to_another_page():
    at = open_app({"present": "1", "step": "4"})
    assert lesson_steps(at) == [4]
    at.switch_page("app_pages/soft_targets.py")
    at.run()
    assert not at.exception
    at.switch_page("app_pages/lesson.py")
    at.run()
    assert not at.exception
    assert lesson_steps(at) == [4] and step_in_link(at) == "4"


def test_the_lab_shows_one_step_at_a_time():
    at = open_app({"present": "1", "step": "2", "method": "dkd", "T": "2"}, "app_pages/lab.py")
    picker = at.selectbox(key="kd_screen_pick_lab")
    assert picker.value == 2 and picker.label == i18n.text("present.step_of", "en", i=2, n=3)
    # step 2, the run: the set-up folded away (it still makes the run's config), the formula, Train
    folded = [e for e in at.expander if e.label.startswith("⚙️")]
    assert len(folded) == 1 and "Decoupled KD" in folded[0].label
    assert not at.title and at.button(key="lab_train")
    assert at.selectbox(key="lab_method").value == "dkd" and at.select_slider(key="lab_T").value == 2.0
    assert not [s for s in at.subheader if s.value == i18n.text("effect.header", "en")]
    assert at.query_params.get("step") == "2" and at.query_params.get("method") == "dkd"

    click(at, "kd_screen_next_top_lab")  # step 3: the method's own effect
    assert at.query_params.get("step") == "3"
    assert [s for s in at.subheader if s.value == i18n.text("effect.header", "en")]
    assert at.button(key="lab_fx_start")
    assert at.query_params.get("method") == "dkd"  # the set-up stays in the link

    at.selectbox(key="kd_screen_pick_lab").set_value(1).run()  # step 1: the set-up, open
    assert not at.exception
    assert at.title and at.query_params.get("step") is None
    assert not [e for e in at.expander if e.label.startswith("⚙️")]
    assert at.selectbox(key="lab_method").value == "dkd"  # kept while the set-up was folded
    assert at.button(key="kd_screen_next_bottom_lab")


@pytest.mark.slow
def test_train_on_the_lab_set_up_moves_on_to_the_run():
    at = open_app({"present": "1", "epochs": "1"}, "app_pages/lab.py")
    assert at.title and at.button(key="lab_train")
    click(at, "lab_train")
    assert at.query_params.get("step") == "2"
    assert at.selectbox(key="kd_screen_pick_lab").value == 2
    click(at, "lab_stop")


def test_the_lab_outside_presentation_mode_is_unchanged():
    at = open_app({}, "app_pages/lab.py")
    assert at.title and at.button(key="lab_train")
    assert not [b for b in at.button if b.key and b.key.startswith("kd_screen_")]
    assert not [e for e in at.expander if e.label.startswith("⚙️")]
    assert at.query_params.get("step") is None


# the other long pages: page -> (its name in chrome.Screens, the headers of its sections in order)
LONG_PAGES = {
    "app_pages/no_data.py": ("no_data", ["no_data.df.header", "no_data.lf.header"]),
    "app_pages/beyond.py": ("beyond", ["beyond.ens.header", "beyond.run.header"]),
    "app_pages/language_models.py": (
        "language_models",
        ["lm.next.header", "lm.kl.header", "lm.train.header", "lm.samples.header", "lm.size.header"],
    ),
    "app_pages/speech.py": ("speech", ["speech.pair.header", "speech.run.header", "speech.own.header"]),
}
# the small dataset and ensemble where a page trains or loads one
QUICK = {"app_pages/no_data.py": {"dataset": "digits"}, "app_pages/beyond.py": {"dataset": "digits", "teachers": "2"}}


def sections(at: AppTest, page: str, lang: str = "en") -> list[int]:
    """The numbers (from 1) of ``page``'s sections on the screen, by their headers."""
    number = {i18n.text(key, lang): i for i, key in enumerate(LONG_PAGES[page][1], 1)}
    return [number[h.value] for h in at.header if h.value in number]


@pytest.mark.parametrize("page", list(LONG_PAGES))
def test_a_long_page_shows_one_section_at_a_time(page):
    name, keys = LONG_PAGES[page]
    n = len(keys)
    at = open_app({"present": "1", "step": "2"} | QUICK.get(page, {}), page)
    assert sections(at, page) == [2]
    assert not at.title  # the page's title belongs to the first screen
    picker = at.selectbox(key=f"kd_screen_pick_{name}")
    assert picker.value == 2 and picker.label == i18n.text("present.step_of", "en", i=2, n=n)
    assert step_in_link(at) == "2"
    if n > 2:
        click(at, f"kd_screen_next_top_{name}")
        assert sections(at, page) == [3] and step_in_link(at) == "3"
    else:
        assert at.button(key=f"kd_screen_next_top_{name}").disabled
    at.selectbox(key=f"kd_screen_pick_{name}").set_value(1).run()
    assert not at.exception, at.exception
    assert sections(at, page) == [1] and at.title and step_in_link(at) is None
    assert at.button(key=f"kd_screen_prev_top_{name}").disabled
    click(at, f"kd_screen_next_bottom_{name}")  # Next under the section, too
    assert sections(at, page) == [2] and step_in_link(at) == "2"
    assert at.query_params.get("present") == "1"
    for k, v in QUICK.get(page, {}).items():  # the page's own settings stay in the link
        assert at.query_params.get(k) == v


@pytest.mark.parametrize("page", list(LONG_PAGES))
def test_a_long_page_outside_presentation_mode_is_unchanged(page):
    at = open_app({"step": "2"} | QUICK.get(page, {}), page)
    # every section (Language models: samples, and size and speed, wait for a run)
    n = 3 if page.endswith("language_models.py") else len(LONG_PAGES[page][1])
    assert sections(at, page) == list(range(1, n + 1))
    assert at.title
    assert not [b for b in at.button if b.key and b.key.startswith("kd_screen_")]
    assert not [w.value for w in at.warning if "step=" in w.value]
    assert step_in_link(at) is None


@pytest.mark.parametrize("page", list(LONG_PAGES))
def test_a_bad_step_on_a_long_page_falls_back_with_a_notice(page):
    name = LONG_PAGES[page][0]
    at = open_app({"present": "1", "step": "99"} | QUICK.get(page, {}), page)
    assert sections(at, page) == [1] and at.selectbox(key=f"kd_screen_pick_{name}").value == 1
    assert any("step=99" in w.value for w in at.warning), [w.value for w in at.warning]
    assert step_in_link(at) is None and at.query_params.get("present") == "1"


def test_beyond_runs_an_ensemble_with_the_settings_of_its_first_screen():
    """The ensemble's controls are on step 1; step 2 runs an ensemble with what they say."""
    at = open_app({"present": "1"} | QUICK["app_pages/beyond.py"], "app_pages/beyond.py")
    at.slider(key="by_k").set_value(1).run()
    at.radio(key="by_weighting").set_value("confidence").run()
    assert not at.exception, at.exception
    click(at, "kd_screen_next_top_beyond")
    at.radio(key="by_method").set_value("ensemble").run()
    assert not at.exception, at.exception
    weighting = i18n.text("beyond.ens.weighting_confidence", "en")
    want = i18n.text("beyond.run.ensemble_uses", "en", k=1, archs=1, weighting=weighting)
    assert want in [c.value for c in at.caption]
    assert at.query_params.get("teachers") == "1" and at.query_params.get("weighting") == "confidence"
    click(at, "kd_screen_prev_top_beyond")  # and the controls kept what they said
    assert at.slider(key="by_k").value == 1 and at.radio(key="by_weighting").value == "confidence"


def test_speech_keeps_its_settings_on_the_screen_without_their_controls():
    at = open_app({"present": "1", "T": "7"}, "app_pages/speech.py")
    assert at.select_slider(key="sp_T").value == 7.0
    at.selectbox(key="kd_screen_pick_speech").set_value(3).run()  # your own voice: no T there
    assert not at.exception, at.exception
    assert sections(at, "app_pages/speech.py") == [3]
    assert not [s for s in at.select_slider if s.key == "sp_T"]
    assert at.query_params.get("T") == "7" and step_in_link(at) == "3"
    click(at, "kd_screen_prev_top_speech")
    assert at.select_slider(key="sp_T").value == 7.0


def test_language_models_says_where_a_run_comes_from_before_there_is_one():
    at = open_app({"present": "1", "step": "4"}, "app_pages/language_models.py")
    assert sections(at, "app_pages/language_models.py") == [4]
    assert i18n.text("lm.present.after_run", "en") in [i.value for i in at.info]
    assert not [b for b in at.button if b.key == "lm_train"]  # Train is on step 3


@pytest.mark.slow
def test_a_language_model_trained_on_its_screen_fills_the_later_screens():
    """Train on step 3 (its live curves are the only thing running), then step 4 shows the
    samples and step 5 the size table — screens that only said where a run comes from before."""
    from test_app_language_models import TINY, train_to_end

    query = {
        "present": "1",
        "step": "3",
        "teacher_steps": str(TINY["lm_teacher_steps"]),
        "steps": str(TINY["lm_steps"]),
    }
    at = open_app(query, "app_pages/language_models.py")
    assert sections(at, "app_pages/language_models.py") == [3]
    train_to_end(at)
    assert i18n.text("lm.progress.finished", "en", steps=TINY["lm_steps"]) in [s.value for s in at.success]
    click(at, "kd_screen_next_top_language_models")
    assert sections(at, "app_pages/language_models.py") == [4] and step_in_link(at) == "4"
    assert len(at.code) == 3 and not at.info  # the teacher's, the scratch student's and the distilled student's text
    click(at, "kd_screen_next_top_language_models")
    assert sections(at, "app_pages/language_models.py") == [5]
    size = at.dataframe[0].value
    assert len(size) == 3 and i18n.text("lm.size.params", "en") in size.columns


def compare_screens(at: AppTest) -> list[str]:
    """Which of Compare & sweep's three parts are on the screen."""
    texts = [x.value for x in [*at.subheader, *at.info, *at.markdown]]
    shown = []
    if (
        i18n.text("compare.runs.side", "en") in texts
        or i18n.text("compare.runs.none", "en", folder=runs.folder()) in texts
    ):
        shown.append("runs")
    if any(b.key == "cmp_sw_start" for b in at.button):
        shown.append("sweep")
    if i18n.text("compare.board.intro", "en") in texts:
        shown.append("board")
    return shown


def test_compare_shows_one_tab_per_screen():
    """Compare & sweep's three tabs become three screens; the sweep's set-up stays in the link."""
    at = open_app({"present": "1", "step": "2", "T": "1,4"}, "app_pages/compare.py")
    assert compare_screens(at) == ["sweep"] and not at.tabs
    assert not at.title  # the page's title belongs to the first screen
    assert at.multiselect(key="cmp_sw_T").value == [1.0, 4.0]
    assert at.selectbox(key="kd_screen_pick_compare").label == i18n.text("present.step_of", "en", i=2, n=3)
    click(at, "kd_screen_next_top_compare")
    assert compare_screens(at) == ["board"] and step_in_link(at) == "3"
    assert at.query_params.get("T") == "1,4"  # the sweep's set-up, off screen, is still in the link
    click(at, "kd_screen_prev_bottom_compare")
    click(at, "kd_screen_prev_top_compare")
    assert compare_screens(at) == ["runs"] and step_in_link(at) is None and at.title


def test_compare_outside_presentation_mode_keeps_its_tabs():
    at = open_app({"step": "2"}, "app_pages/compare.py")
    assert len(at.tabs) == 3 and compare_screens(at) == ["runs", "sweep", "board"]
    assert not [b for b in at.button if b.key and b.key.startswith("kd_screen_")]

"""What a lecturer tripped over, driven with AppTest: a language switch keeps every page's
controls (labels in Chinese, values and link unchanged), every ignored link value gets a
notice (the Lab's ?T=999 did not), one name for the temperature on every page (old links
still open), the Soft targets image in the link, and a reloaded Lab finds its last run
again from the address bar."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")
CJK = re.compile(r"[\u4e00-\u9fff]")
KINDS = ("selectbox", "select_slider", "slider", "radio", "number_input", "multiselect", "toggle", "checkbox")


def open_page(page: str | None, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    if page is None:
        at.query_params.update(query or {})
        at.run()
    else:
        at.run()
        at.switch_page(page)
        at.query_params.clear()
        at.query_params.update(query or {})
        at.run()
    assert not at.exception, at.exception
    return at


def widget(at: AppTest, key: str):
    for kind in KINDS:
        for w in at.get(kind):
            if getattr(w, "key", None) == key:
                return w
    raise AssertionError(f"no widget {key}")


def warnings(at: AppTest) -> str:
    return " ".join([w.value for w in at.warning] + [w.value for w in at.sidebar.warning])


# (page, widget key, a value that is not the default, its name in the link, its text there)
SWITCHES = [
    (None, "lesson_digit", 2, "digit", "2"),
    ("app_pages/soft_targets.py", "st_T", 2.0, "T", "2"),
    ("app_pages/lab.py", "lab_method", "dkd", "method", "dkd"),
    ("app_pages/lab.py", "lab_omit", 3, "omit_class", "3"),
    ("app_pages/feature_maps.py", "fm_channels", 9, "channels", "9"),
    ("app_pages/relations.py", "rel_kind", "angle", "relation", "angle"),
    ("app_pages/contrastive.py", "ct_tau", 0.2, "tau", "0.2"),
    ("app_pages/compare.py", "cmp_sw_method", "dkd", "method", "dkd"),
    ("app_pages/beyond.py", "by_weighting", "confidence", "weighting", "confidence"),
]


@pytest.mark.parametrize(
    "page,key,value,name,text", SWITCHES, ids=[f"{(p or 'lesson').split('/')[-1]}:{k}" for p, k, *_ in SWITCHES]
)
def test_a_language_switch_keeps_the_pages_controls(page, key, value, name, text):
    at = open_page(page)
    widget(at, key).set_value(value).run()
    assert not at.exception and widget(at, key).value == value
    label_en = widget(at, key).label
    at.session_state["kd_lang"] = "zh"  # what the sidebar's switch sets
    at.run()
    at.run()  # the next interaction (in the browser: the Train click that lost the method)
    assert not at.exception, at.exception
    w = widget(at, key)
    assert w.value == value
    assert CJK.search(w.label) and w.label != label_en  # the label is translated
    assert at.query_params[name] in (text, [text]) and at.query_params["lang"] in ("zh", ["zh"])
    at.session_state["kd_lang"] = "en"
    at.run()
    assert not at.exception and widget(at, key).value == value and widget(at, key).label == label_en
    assert at.query_params[name] in (text, [text])


# ------------------------------------------------------------------ links: notices, one name, the image
def test_the_lab_says_when_it_ignores_a_temperature():
    at = open_page("app_pages/lab.py", {"T": "999"})
    assert "T='999'" in warnings(at)  # it was ignored without a word
    assert widget(at, "lab_T").value == 4.0 and "T" not in at.query_params
    at = open_page("app_pages/lab.py", {"T": "50"})  # a valid temperature the slider does not offer
    assert "T=50" in warnings(at) and widget(at, "lab_T").value == 20.0
    at = open_page("app_pages/lab.py", {"T": "hot", "colour": "red"})
    shown = warnings(at)
    assert "T='hot'" in shown and "colour=red" in shown
    assert widget(at, "lab_T").value == 4.0


def test_the_temperature_has_one_name_and_old_links_still_open():
    at = open_page("app_pages/lab.py", {"temperature": "2"})  # a Lab link of before
    assert widget(at, "lab_T").value == 2.0 and not warnings(at)
    assert at.query_params["T"] in ("2", ["2"]) and "temperature" not in at.query_params
    at = open_page("app_pages/soft_targets.py", {"temperature": "2"})
    assert widget(at, "st_T").value == 2.0 and not warnings(at)
    assert at.query_params["T"] in ("2", ["2"])


def test_an_unknown_parameter_gets_a_notice_on_every_page():
    at = open_page("app_pages/relations.py", {"relation": "angle", "colour": "red"})
    assert "colour=red" in warnings(at) and widget(at, "rel_kind").value == "angle"


def test_the_soft_targets_image_is_in_the_link():
    at = open_page("app_pages/soft_targets.py")
    assert "class" not in at.query_params and "number" not in at.query_params  # the page's own first pick
    widget(at, "st_class").set_value(3).run()
    widget(at, "st_index").set_value(5).run()
    q = {k: at.query_params[k] for k in at.query_params}
    assert q["class"] in ("3", ["3"]) and q["number"] in ("5", ["5"])
    shown = [m.value for m in at.markdown]
    # a shared link opens the same image
    again = open_page("app_pages/soft_targets.py", {"class": "3", "number": "5"})
    assert widget(again, "st_class").value == 3 and widget(again, "st_index").value == 5
    assert [m.value for m in again.markdown][: len(shown)] == shown
    # the random button's pick goes into the link too
    again.button(key="st_random").click().run()
    c, k = widget(again, "st_class").value, widget(again, "st_index").value
    q = {k_: again.query_params[k_] for k_ in again.query_params}
    assert q.get("class", str(c)) in (str(c), [str(c)]) and q.get("number", str(k)) in (str(k), [str(k)])
    bad = open_page("app_pages/soft_targets.py", {"class": "12", "number": "99999"})
    shown = warnings(bad)
    assert "class=12" in shown and "number=99999" in shown


# ------------------------------------------------------------------ F5 on the Lab
def test_a_reloaded_lab_reopens_its_last_run_from_the_link():
    at = open_page("app_pages/lab.py", {"dataset": "digits", "epochs": "1"})
    at.button(key="lab_train").click().run()
    deadline = time.time() + 240
    while time.time() < deadline and "run" not in at.query_params:
        time.sleep(0.5)
        at.run()
        assert not at.exception, at.exception
    assert "run" in at.query_params, dict(at.query_params)
    query = {k: at.query_params[k] for k in at.query_params}
    table = at.get("dataframe")[-1].value
    # F5: a new session with the same address
    reloaded = open_page("app_pages/lab.py", query)
    assert not warnings(reloaded)
    frames = reloaded.get("dataframe")
    assert frames and frames[-1].value.equals(table)  # the same results, not trained again
    assert widget(reloaded, "lab_dataset").value == "digits" and widget(reloaded, "lab_epochs").value == 1
    assert reloaded.query_params["run"] == query["run"]
    gone = open_page("app_pages/lab.py", {"run": "nosuchrun"})
    assert "run=nosuchrun" in warnings(gone)

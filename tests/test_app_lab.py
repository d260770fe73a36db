"""The Distillation Lab driven headless by AppTest: controls from the registry, the formula
with live values, a real background run polled to its results, Stop, and bad combinations."""

import json
import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from kd_app import i18n

APP = str(Path(__file__).resolve().parents[1] / "app.py")
CJK = re.compile(r"[\u4e00-\u9fff]")


def open_lab(lang: str = "en") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    if lang != "en":
        at.query_params["lang"] = lang  # a shared link in that language: set before the first run
    at.run()
    at.switch_page("app_pages/lab.py")
    at.run()
    assert not at.exception
    return at


def poll(at: AppTest, until, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.5)
        at.run()
        assert not at.exception
        if until(at):
            return
    pytest.fail("the run did not reach the expected state in time")


def formula(at) -> str:
    return " ".join(e.value for e in at.get("latex") if hasattr(e, "value")) or " ".join(
        e.proto.body for e in at.get("markdown") if "mathcal" in getattr(e.proto, "body", "")
    )


def test_controls_and_formula_follow_the_registry():
    at = open_lab()
    assert at.selectbox(key="lab_method").value == "kd"
    f1 = formula(at)
    assert "4^2" in f1 and "0.9" in f1 and "0.1" in f1
    at.select_slider(key="lab_T").set_value(2.0).run()
    at.slider(key="lab_alpha").set_value(0.25).run()
    f2 = formula(at)
    assert "2^2" in f2 and "0.25" in f2 and "0.75" in f2
    # every control says what it does
    for w in list(at.selectbox) + list(at.slider) + list(at.select_slider) + list(at.number_input):
        assert w.help, w.label
    # DKD: its own weights appear, alpha does not apply
    at.selectbox(key="lab_method").set_value("dkd").run()
    assert at.slider(key="lab_alpha").disabled
    labels = [w.label for w in at.slider] + [w.label for w in at.number_input]
    assert any(x.startswith("Non-target-class weight (NCKD)") for x in labels), labels
    assert not {"nckd_weight", "tckd_weight", "warmup"} & set(labels)
    assert "TCKD" in formula(at)


def test_impossible_pairing_is_refused_with_an_error_not_an_exception():
    at = open_lab()
    at.selectbox(key="lab_dataset").set_value("digits").run()
    at.selectbox(key="lab_method").set_value("at").run()  # the digits student is an MLP: no maps
    assert not at.exception
    assert any("spatial" in e.value for e in at.error)
    assert at.button(key="lab_train").disabled


def test_a_run_trains_in_the_background_and_shows_results():
    at = open_lab()
    at.selectbox(key="lab_dataset").set_value("digits").run()
    at.number_input(key="lab_epochs").set_value(2).run()
    at.button(key="lab_train").click().run()
    assert not at.exception
    # clicking other controls during the run does not kill it
    at.select_slider(key="lab_T").set_value(8.0).run()
    poll(at, lambda a: len(a.get("dataframe")) > 0)
    table = at.get("dataframe")[0].value
    assert list(table.index) == ["teacher", "distilled student", "scratch student"]
    assert (table["test accuracy"] > 0.5).all()
    assert any("Finished" in s.value for s in at.success)
    charts = at.get("plotly_chart")
    assert len(charts) >= 5  # curves, per-class accuracy, confusion matrix
    # the run used the T in force when Train was pressed, not the one changed later
    assert any("over the scratch student" in m.value for m in at.markdown)


def test_stop_ends_the_run_and_keeps_what_it_learned():
    at = open_lab()
    at.selectbox(key="lab_dataset").set_value("digits").run()
    at.number_input(key="lab_epochs").set_value(50).run()
    at.button(key="lab_train").click().run()
    poll(
        at,
        lambda a: any("step" in (p.proto.text or "") for p in a.get("progress")) or len(a.get("dataframe")) > 0,
        timeout=60,
    )
    at.button(key="lab_stop").click().run()
    poll(at, lambda a: len(a.get("dataframe")) > 0, timeout=60)
    assert any("Stopped" in s.value for s in at.success)
    assert not at.button(key="lab_train").disabled


def test_a_dataset_that_is_not_on_disk_is_kept_with_the_reason_beside_a_disabled_train():
    """Issue 16: the choice stays (it used to jump back with a raw error), Train is disabled
    and the reason says where the files go; see tests/test_app_lecturer.py for every picker."""
    at = open_lab()
    at.selectbox(key="lab_dataset").set_value("mnist").run()  # offline in tests, files absent
    assert not at.exception and not at.error
    assert at.selectbox(key="lab_dataset").value == "mnist"
    assert any("MNIST/raw/" in w.value and "not on this server" in w.value for w in at.warning)
    assert at.button(key="lab_train").disabled


def shown_texts(at: AppTest) -> list[str]:
    """Every text a user reads on the page: headings, markdown, captions, notices, and the
    labels, help texts and option labels of the widgets."""
    out = [
        e.value
        for kind in (
            "title",
            "header",
            "subheader",
            "markdown",
            "caption",
            "info",
            "success",
            "warning",
            "error",
            "latex",
        )
        for e in at.get(kind)
        if isinstance(getattr(e, "value", None), str)
    ]
    for kind in ("selectbox", "slider", "select_slider", "number_input", "checkbox", "toggle", "button", "radio"):
        for w in at.get(kind):
            out += [w.label, w.help or ""] + [str(o) for o in getattr(w, "options", None) or []]
    out += [e.proto.label for e in at.get("expandable")]
    out += [p.proto.text for p in at.get("progress")]
    return [s for s in out if s]


def chart(at: AppTest, key: str) -> dict:
    for c in at.get("plotly_chart"):
        if c.proto.id.endswith(key):
            return json.loads(c.proto.spec)
    raise AssertionError(f"no chart {key}")


def no_raw_keys(at: AppTest) -> None:
    keys = set(i18n.catalogue("en"))
    shown = shown_texts(at)
    assert not [s for s in shown if s in keys or re.fullmatch(r"lab(\.[\w-]+)+", s)]


def test_the_lab_in_chinese():
    """A Chinese link opens the Lab in Chinese: its texts, its method picker and parameters,
    its notices, its live progress, its charts and its results table, with working controls."""
    zh = i18n.catalogue("zh")
    at = open_lab("zh")
    assert at.title[0].value == "🧪 " + i18n.text("lab.title", "zh")
    shown = shown_texts(at)
    for key in (
        "lab.intro",
        "lab.setup",
        "lab.training",
        "lab.formula_caption",
        "lab.press_train",
        "lab.methods.kd.summary",
        "lab.dataset",
        "lab.T",
        "lab.T_help",
        "lab.fraction",
        "lab.baseline",
        "lab.train",
        "lab.stop",
        "methods.dkd",
        "lab.omit_none",
    ):
        assert zh[key] in shown, key
    assert at.selectbox(key="lab_method").label == zh["lab.method"]
    assert (
        at.button(key="lab_train").label == zh["lab.train"] and at.button(key="lab_train").help == zh["lab.train_help"]
    )
    assert sum(bool(CJK.search(s)) for s in shown) > 30
    no_raw_keys(at)

    # the controls still drive the formula; a method's parameters have Chinese labels and help
    at.select_slider(key="lab_T").set_value(2.0).run()
    at.slider(key="lab_alpha").set_value(0.25).run()
    assert not at.exception
    f = formula(at)
    assert "2^2" in f and "0.25" in f
    at.selectbox(key="lab_method").set_value("dkd").run()
    assert not at.exception and at.slider(key="lab_alpha").disabled
    labels = [w.label for w in at.slider] + [w.label for w in at.number_input]
    assert any(x.startswith(zh["lab.params.dkd.nckd_weight.label"]) for x in labels)  # + the formula's symbol
    assert zh["lab.methods.dkd.summary"] in [c.value for c in at.caption]
    at.selectbox(key="lab_method").set_value("at").run()  # layer pickers and the layer table
    assert not at.exception
    assert at.selectbox(key=f"lab_tl_at_{at.selectbox(key='lab_teacher_mnist-mini').value}").label == zh[
        "lab.layers.teacher"
    ].format(num="")
    no_raw_keys(at)

    # a dataset that cannot be loaded: the reason in Chinese, no English engine error
    at.selectbox(key="lab_method").set_value("kd").run()
    at.selectbox(key="lab_dataset").set_value("mnist").run()
    assert not at.exception and not at.error
    assert any("本服务器上没有" in w.value and "MNIST/raw/" in w.value for w in at.warning)

    # a short run: Chinese progress, charts and results table
    at.selectbox(key="lab_dataset").set_value("digits").run()
    at.number_input(key="lab_epochs").set_value(1).run()
    at.button(key="lab_train").click().run()
    assert not at.exception
    poll(at, lambda a: len(a.get("dataframe")) > 0)
    table = at.get("dataframe")[0].value
    assert list(table.index) == [zh["roles.teacher"], zh["roles.distilled"], zh["roles.scratch"]]
    assert (table[zh["lab.results.col_acc"]] > 0.2).all()
    assert zh["lab.results.header"] in [h.value for h in at.subheader]
    finished = i18n.text("lab.progress.finished", "zh", steps=0).split("0")[0]
    assert any(s.value.startswith(finished) for s in at.success)
    assert any(c.value.startswith("运行 #") for c in at.caption)
    acc = chart(at, "lab_acc_chart")
    assert acc["layout"]["title"]["text"] == zh["lab.charts.accuracy"]
    assert [tr["name"] for tr in acc["data"]] == [zh["roles.distilled"], zh["roles.scratch"]]
    assert acc["layout"]["xaxis"]["title"]["text"] == zh["axes.epoch"]
    loss = chart(at, "lab_loss_chart")
    assert all(CJK.search(tr["name"]) for tr in loss["data"]) and CJK.search(loss["layout"]["yaxis"]["title"]["text"])
    per_class = chart(at, "lab_per_class")
    assert [tr["name"] for tr in per_class["data"]][0] == zh["roles.teacher"]
    no_raw_keys(at)
    assert at.query_params["lang"] == "zh"  # the language stays in the link


def test_settings_survive_a_visit_to_another_page():
    at = open_lab()
    at.selectbox(key="lab_method").set_value("dkd").run()
    at.number_input(key="lab_epochs").set_value(3).run()
    at.select_slider(key="lab_T").set_value(2.0).run()
    at.checkbox(key="lab_baseline").uncheck().run()
    nckd = at.get("number_input") + at.get("slider")
    nckd = next(w for w in nckd if w.key == "lab_p_dkd_nckd_weight")
    nckd.set_value(4.0).run()
    at.switch_page("app_pages/soft_targets.py").run()
    at.switch_page("app_pages/lab.py").run()
    assert not at.exception
    assert at.selectbox(key="lab_method").value == "dkd"
    assert at.number_input(key="lab_epochs").value == 3
    assert at.select_slider(key="lab_T").value == 2.0
    assert at.checkbox(key="lab_baseline").value is False
    assert next(w for w in at.get("number_input") + at.get("slider") if w.key == "lab_p_dkd_nckd_weight").value == 4.0
    assert r"4\,\mathrm{NCKD}" in formula(at)  # the formula shows the restored weight

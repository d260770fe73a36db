"""The Distillation Lab driven headless by AppTest: controls from the registry, the formula
with live values, a real background run polled to its results, Stop, and bad combinations."""

import time

import pytest
from streamlit.testing.v1 import AppTest

from pathlib import Path

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def open_lab() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/lab.py")
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
        e.proto.body for e in at.get("markdown") if "mathcal" in getattr(e.proto, "body", ""))


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
    assert "nckd_weight" in labels and "tckd_weight" in labels
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
    poll(at, lambda a: any("step" in (p.proto.text or "") for p in a.get("progress")) or len(a.get("dataframe")) > 0,
         timeout=60)
    at.button(key="lab_stop").click().run()
    poll(at, lambda a: len(a.get("dataframe")) > 0, timeout=60)
    assert any("Stopped" in s.value for s in at.success)
    assert not at.button(key="lab_train").disabled


def test_a_dataset_that_is_not_on_disk_keeps_the_last_working_one():
    at = open_lab()
    at.selectbox(key="lab_dataset").set_value("mnist").run()  # offline in tests, files absent
    assert not at.exception
    assert any("mnist" in e.value and "staying on mnist-mini" in e.value for e in at.error)
    assert at.selectbox(key="lab_dataset").value == "mnist-mini"
    assert not at.button(key="lab_train").disabled

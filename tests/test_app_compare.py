"""The Compare & sweep page driven headless by AppTest: saved runs side by side, rename and
delete, a skipped run file, reopening a run in the other pages, a 2x2 sweep filling in
live (all cells together as one batch, and cell by cell on worker processes), and the
leaderboard."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from kd_app import i18n
from kd_core import runs, sweep, train
from kd_core.config import Config

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(scope="module")
def trainers():
    out = []
    for T in (2.0, 4.0):
        tr = train.Trainer(Config(dataset="digits", epochs=1, temperature=T))
        tr.run()
        out.append(tr)
    return out


@pytest.fixture
def saved(tmp_path, monkeypatch, trainers):
    """Two saved runs (T = 2 and T = 4) and one damaged run file, in a private run folder."""
    d = tmp_path / "runs"
    d.mkdir()
    monkeypatch.setattr(runs, "folder", lambda: d)
    monkeypatch.setattr(sweep, "leaderboard_dir", lambda: tmp_path / "boards")
    (tmp_path / "boards").mkdir()
    a = runs.save_trainer(trainers[0], name="soft T=2", owner=ME)  # this session's runs: it may manage them
    b = runs.save_trainer(trainers[1], name="soft T=4", owner=ME)
    shutil.copytree(d / a.id, d / "20000101-000000-aaaaaa")
    (d / "20000101-000000-aaaaaa" / "run.json").write_text('{"format": 1, "na')
    return a, b


ME = "session-of-this-test"


def open_compare(lang: str = "en", session: str = ME) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["kd_session_id"] = session  # the browser session that owns the runs saved above
    if lang != "en":
        at.query_params["lang"] = lang
    at.run()
    at.switch_page("app_pages/compare.py")
    at.run()
    assert not at.exception
    return at


def frame(at, column: str):
    """The first table with this column (st.dataframe's key is not visible to AppTest here)."""
    return next((d.value for d in at.dataframe if column in d.value.columns), None)


def charts(at) -> set[str]:
    return {e.proto.id.rsplit("-", 1)[-1] for e in at.get("plotly_chart")}


def test_picking_two_runs_shows_the_table_and_the_overlays(saved):
    a, b = saved
    at = open_compare()
    assert any("1 run file(s) skipped" in e.label for e in at.expander)
    at.multiselect(key="cmp_pick").set_value([]).run()
    assert frame(at, "1. soft T=2") is None
    at.multiselect(key="cmp_pick").set_value([a.id, b.id]).run()
    assert not at.exception
    settings, results = [d.value for d in at.dataframe if "1. soft T=2" in d.value.columns]
    assert list(settings.columns) == ["1. soft T=2", "2. soft T=4"] == list(results.columns)
    assert list(settings.loc["temperature T"]) == ["2", "4"]
    assert settings.loc["method"].tolist() == ["kd", "kd"]
    assert all(v.endswith("%") for v in results.loc["student test accuracy"])
    assert {"agreement with teacher", "ECE (calibration error)", "student parameters", "CPU latency (ms)"} <= set(
        results.index
    )
    assert any("differ (temperature T)" in c.value for c in at.caption)
    assert {"cmp_acc_chart", "cmp_agree_chart", "cmp_loss_chart", "cmp_per_class"} <= charts(at)
    acc = next(e for e in at.get("plotly_chart") if e.proto.id.endswith("cmp_acc_chart"))
    fig = json.loads(acc.proto.spec)
    names = [t.get("name") for t in fig["data"]]
    assert "1. soft T=2" in names and "2. soft T=4" in names and "1. soft T=2 (scratch)" in names


def test_rename_and_delete(saved):
    a, b = saved
    at = open_compare()
    at.selectbox(key="cmp_manage").set_value(a.id).run()
    at.text_input(key=f"cmp_name_{a.id}").set_value("the T=2 run").run()
    at.button(key="cmp_rename").click().run()
    assert not at.exception
    assert runs.load_run(a.id).name == "the T=2 run"
    assert "the T=2 run" in frame(at, "saved")["name"].tolist()
    assert at.button(key="cmp_delete").disabled  # not before confirming
    at.checkbox(key="cmp_confirm_delete").check().run()
    at.button(key="cmp_delete").click().run()
    assert not at.exception
    assert [r.id for r in runs.list_runs()[0]] == [b.id]
    assert frame(at, "saved")["name"].tolist() == ["soft T=4"]
    assert at.multiselect(key="cmp_pick").value == [b.id]  # the deleted run left the comparison


def test_another_sessions_run_is_read_only_and_can_be_copied(saved):
    a, b = saved
    at = open_compare(session="another-student")
    at.selectbox(key="cmp_manage").set_value(a.id).run()
    assert at.button(key="cmp_rename").disabled and at.text_input(key=f"cmp_name_{a.id}").disabled
    assert at.checkbox(key="cmp_confirm_delete").disabled and at.button(key="cmp_delete").disabled
    assert any("belongs to another session" in i.value for i in at.info)
    at.button(key="cmp_copy").click().run()
    assert not at.exception
    listed = runs.list_runs()[0]
    copy = next(r for r in listed if r.owner == "another-student")
    assert copy.name == "copy of soft T=2" and {a.id, b.id} <= {r.id for r in listed}
    assert at.selectbox(key="cmp_manage").value == copy.id  # the copy is selected, and it is ours
    assert not at.button(key="cmp_rename").disabled
    at.text_input(key=f"cmp_name_{copy.id}").set_value("my copy").run()
    at.button(key="cmp_rename").click().run()
    assert runs.load_run(copy.id).name == "my copy" and runs.load_run(a.id).name == "soft T=2"
    assert "cmp_clear" not in [x.key for x in at.button]  # clearing the class is the lecturer's


def _lecturer_box():
    from kd_app import chrome

    chrome.lecturer_box()


def test_the_sidebar_unlocks_lecturer_mode_with_the_servers_password_only(monkeypatch):
    monkeypatch.setenv("KD_PLAYGROUND_LECTURER_PASSWORD", "front-row")
    at = AppTest.from_function(_lecturer_box, default_timeout=60)
    at.run()
    at.text_input(key="kd_lecturer_password").set_value("front-ro").run()
    at.button(key="kd_lecturer_unlock").click().run()
    assert at.error[0].value == "Wrong password." and at.session_state["kd_lecturer"] is False
    at.text_input(key="kd_lecturer_password").set_value("front-row").run()
    at.button(key="kd_lecturer_unlock").click().run()
    assert not at.exception and at.session_state["kd_lecturer"] is True
    assert "kd_lecturer_password" not in at.session_state  # the typed password is not kept
    assert "Lecturer mode" in at.success[0].value
    at.button(key="kd_lecturer_lock").click().run()
    assert at.session_state["kd_lecturer"] is False and at.text_input(key="kd_lecturer_password")


def test_the_lecturer_manages_every_run_and_clears_the_class(saved, monkeypatch):
    a, b = saved
    monkeypatch.setenv("KD_PLAYGROUND_LECTURER_PASSWORD", "front-row")
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["kd_session_id"] = "lecturer-laptop"
    at.session_state["kd_lecturer"] = True  # unlocked in the sidebar (the test above)
    at.run()
    at.switch_page("app_pages/compare.py")
    at.run()
    at.selectbox(key="cmp_manage").set_value(a.id).run()
    assert not at.button(key="cmp_rename").disabled  # someone else's run, but the lecturer may
    at.checkbox(key="cmp_confirm_clear").check().run()
    at.button(key="cmp_clear").click().run()
    assert not at.exception
    assert runs.list_runs()[0] == []


def test_no_password_set_means_no_lecturer_mode(saved, monkeypatch):
    monkeypatch.delenv("KD_PLAYGROUND_LECTURER_PASSWORD", raising=False)
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["kd_session_id"] = "curious-student"
    at.session_state["kd_lecturer"] = True  # even a forged flag gives no rights without a password
    at.run()
    assert "kd_lecturer_password" not in [x.key for x in at.text_input]  # no lecturer box at all
    at.switch_page("app_pages/compare.py")
    at.run()
    at.selectbox(key="cmp_manage").set_value(saved[0].id).run()
    assert at.button(key="cmp_rename").disabled
    assert "cmp_clear" not in [x.key for x in at.button]


def test_a_saved_run_reopens_in_the_other_pages(saved):
    a, _ = saved
    at = open_compare()
    at.selectbox(key="cmp_manage").set_value(a.id).run()
    at.button(key="cmp_reload_btn").click().run()
    assert not at.exception
    assert any("reopened" in s.value for s in at.success)
    at.switch_page("app_pages/lab.py")
    at.run()
    assert not at.exception
    assert any(s.value.startswith("Finished") for s in at.success)
    assert frame(at, "test accuracy") is not None  # the Lab's results table
    at.switch_page("app_pages/soft_targets.py")
    at.run()
    assert not at.exception
    assert any("digits" in i.value for i in at.info)  # "your last Lab run distilled a student on digits"


def heat_texts(at, key: str) -> list[str]:
    """The cell texts of the heatmap whose chart key ends with ``key`` (its data trace)."""
    chart = next(e for e in at.get("plotly_chart") if e.proto.id.endswith(key))
    spec = json.loads(chart.proto.spec)
    return [c for row in spec["data"][-1]["text"] for c in row]


def set_small_sweep(at, epochs: int = 2) -> None:
    at.selectbox(key="cmp_sw_dataset").set_value("digits")
    at.multiselect(key="cmp_sw_T").set_value([2.0, 4.0])
    at.multiselect(key="cmp_sw_alpha").set_value([0.5, 0.9])
    at.number_input(key="cmp_sw_seeds").set_value(1)
    at.number_input(key="cmp_sw_epochs").set_value(epochs)
    at.run()


def poll_to_end(at, seen=None) -> None:
    """Re-run the page (AppTest does not fire the fragment's run_every) until the sweep
    ends; ``seen`` (a list) collects the live rows found in between."""
    deadline = time.time() + 400
    while time.time() < deadline:
        time.sleep(0.3)
        if seen is not None:
            seen += [r for r in at.session_state["cmp_sweep_job"].result.rows() if r["live"]]
        at.run()
        assert not at.exception
        if at.session_state["cmp_sweep_job"].done:
            break
    at.run()


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_batched_sweep_fills_every_cell_together_epoch_by_epoch(saved, monkeypatch, lang):
    """All cells together (the default): the 2x2 grid and its scratch reference train as one
    batch of students; after the first epoch every cell shows its accuracy so far and
    "epoch 1/2" at once, the progress bar says so, and the end fills every cell."""
    import threading

    say = lambda key, **kw: i18n.text(key, lang, **kw)  # noqa: E731
    added = []  # every record the sweep's result receives, in order
    at_epoch_1, release = threading.Event(), threading.Event()
    original = sweep.SweepResult.add

    def add(self, r):
        original(self, r)
        added.append(dict(r))
        live = [x for x in added if x["status"] == "running" and x.get("epoch") == 1]
        if len(live) == self.sweep.total and not at_epoch_1.is_set():
            at_epoch_1.set()  # every run has ended its first epoch: hold the batch while the page looks
            release.wait(300)

    monkeypatch.setattr(sweep.SweepResult, "add", add)
    at = open_compare(lang)
    assert at.radio(key="cmp_sw_train").value == "together"
    assert at.number_input(key="cmp_sw_workers").disabled  # no worker processes in a batch
    set_small_sweep(at)
    at.button(key="cmp_sw_start").click().run()
    assert not at.exception
    job = at.session_state["cmp_sweep_job"]
    assert job.backend == "batched"
    try:
        assert at_epoch_1.wait(400), f"the batch did not end its first epoch: {job.status} {job.message}"
        at.run()
        assert not at.exception
        texts = heat_texts(at, "cmp_hm_acc_kd_0.1")
        assert len(texts) == 4 and all(c.endswith(say("compare.sweep.epoch_word") + " 1/2") for c in texts), texts
        bars = [p.proto.text for p in at.get("progress")]
        head = say("compare.sweep.progress_together_all", n=4, students="§", epoch=1, epochs=2, seconds=0)
        head = head.split("§")[0]
        assert any(b.startswith(head) for b in bars), bars
        assert any(say("compare.units.student_many", n=5) in b for b in bars), bars
        assert [p.proto.value for p in at.get("progress")] == [50]  # half of every run's epochs
    finally:
        release.set()
    poll_to_end(at)
    job = at.session_state["cmp_sweep_job"]
    assert job.status == "finished" and job.result.done == 5
    assert not any(r["live"] for r in job.result.rows())
    # every run reported each epoch as the batch went (epoch 1, epoch 2), then its end
    for i in range(5):
        mine = [x for x in added if x["index"] == i]
        assert [x.get("epoch") for x in mine] == [1, 2, None] and mine[-1]["status"] == "finished"
        assert mine[-1]["batched"] == 5
    texts = heat_texts(at, "cmp_hm_acc_kd_0.1")
    assert len(texts) == 4 and all(c and "/2" not in c for c in texts), texts  # final numbers only
    assert sum("★" in c for c in texts) == 1
    assert say("compare.sweep.epoch_word") not in " ".join(texts)
    assert not at.button(key="cmp_sw_start").disabled


def test_stopping_a_batch_keeps_the_accuracy_every_cell_reached(saved, monkeypatch):
    import threading

    at_epoch_1, release = threading.Event(), threading.Event()
    original = sweep.SweepResult.add

    def add(self, r):
        original(self, r)
        live = [x for x in self.items if x["status"] == "running" and x.get("epoch") == 1]
        if len(live) == self.sweep.total and not at_epoch_1.is_set():
            at_epoch_1.set()
            release.wait(300)

    monkeypatch.setattr(sweep.SweepResult, "add", add)
    at = open_compare()
    set_small_sweep(at, epochs=20)
    at.button(key="cmp_sw_start").click().run()
    try:
        assert at_epoch_1.wait(400)
        at.run()
        at.button(key="cmp_sw_stop").click().run()
        assert not at.exception
    finally:
        release.set()
    poll_to_end(at)
    job = at.session_state["cmp_sweep_job"]
    assert job.status == "stopped" and all(r["status"] == "stopped" for r in job.result.items)
    assert any("5 run(s) stopped part-way" in w.value for w in at.warning), [w.value for w in at.warning]
    texts = heat_texts(at, "cmp_hm_acc_kd_0.1")
    assert len(texts) == 4 and all(c and "epoch" not in c for c in texts), texts


def test_a_2x2_sweep_cell_by_cell_runs_on_worker_processes_and_marks_the_best_cell(saved, monkeypatch):
    made = []
    original = sweep.SweepJob.__init__

    def init(self, sw, backend="joblib", n_jobs=None, *args, **kw):
        made.append((backend, n_jobs))
        original(self, sw, backend, n_jobs, *args, **kw)

    monkeypatch.setattr(sweep.SweepJob, "__init__", init)
    at = open_compare()
    assert "train" not in at.query_params  # the default (all cells together) stays out of the link
    at.radio(key="cmp_sw_train").set_value("cells").run()
    assert at.query_params["train"] in ("cells", ["cells"])
    assert not at.number_input(key="cmp_sw_workers").disabled
    at.number_input(key="cmp_sw_workers").set_value(2)
    set_small_sweep(at, epochs=1)
    at.button(key="cmp_sw_start").click().run()
    assert not at.exception
    assert made == [("joblib", 2)]
    assert at.button(key="cmp_sw_start").disabled and at.radio(key="cmp_sw_train").disabled
    seen = []
    poll_to_end(at, seen)
    job = at.session_state["cmp_sweep_job"]
    assert job.status == "finished" and job.result.done == 5  # 4 cells + the scratch reference
    assert not seen and all(r.get("batched") is None for r in job.result.items)  # one process per run
    assert any("Best cell" in m.value for m in at.markdown)
    assert {"cmp_hm_acc_kd_0.1", "cmp_hm_agree_kd_0.1"} <= {
        e.proto.id.split("-", 2)[-1] for e in at.get("plotly_chart")
    }
    assert len(heat_texts(at, "cmp_hm_acc_kd_0.1")) == 4
    assert not at.button(key="cmp_sw_start").disabled
    at.radio(key="cmp_sw_train").set_value("together").run()
    assert "train" not in at.query_params


@pytest.mark.parametrize("raw,mode,notice", [("cells", "cells", False), ("sideways", "together", True)])
def test_a_shared_link_opens_with_its_way_of_training(raw, mode, notice):
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("app_pages/compare.py")
    at.query_params["train"] = raw
    at.run()
    assert not at.exception
    assert at.radio(key="cmp_sw_train").value == mode  # a bad value: the default, with a notice
    assert at.number_input(key="cmp_sw_workers").disabled == (mode == "together")
    assert any("sideways" in w.value for w in at.warning) == notice


def test_the_latest_leaderboard_is_shown(saved, tmp_path):
    at = open_compare()
    assert any("No leaderboard yet" in i.value for i in at.info)
    (tmp_path / "boards" / "digits.csv").write_text(
        "method,name,n,acc_mean,acc_std,agree_mean,agree_std,ece_mean,dataset,teacher,student,epochs,labeled_fraction,seeds,created\n"
        "teacher,Teacher (cnn-32-64),1,0.99,,,,,digits,cnn-32-64,mlp-32,2,0.1,0;1,2026-01-01 10:00:00\n"
        "none,Student (scratch),2,0.60,0.02,0.60,0.02,0.1,digits,cnn-32-64,mlp-32,2,0.1,0;1,2026-01-01 10:00:00\n"
        "kd,KD,2,0.70,0.01,0.71,0.01,0.1,digits,cnn-32-64,mlp-32,2,0.1,0;1,2026-01-01 10:00:00\n"
    )
    broken = tmp_path / "boards" / "broken.csv"
    broken.write_text("not,a\nleaderboard")
    os.utime(broken, (time.time() - 60, time.time() - 60))  # the latest leaderboard is shown first
    at.run()
    assert not at.exception
    board = frame(at, "top-1 accuracy (%)")
    assert board["method"].tolist() == ["Teacher (cnn-32-64)", "Student (scratch)", "KD"]
    assert board["top-1 accuracy (%)"].tolist()[1:] == ["60.00 ± 2.00", "70.00 ± 1.00"]
    assert board["Δ vs scratch (points)"].tolist()[2] == "+10.00"
    at.selectbox(key="cmp_board").set_value("broken").run()
    assert not at.exception
    assert any("cannot be read" in w.value for w in at.warning)


CJK = re.compile(r"[\u4e00-\u9fff]")
RAW_KEY = re.compile(r"\b(compare|status|roles|axes|datasets|methods|nav)\.[a-z_-]+")


def shown_texts(at: AppTest) -> list[str]:
    """Everything a user reads: texts, widget labels, help texts and options, tab and expander
    labels, table headers and row names, and the charts' titles, legends and axis titles."""
    out = [
        e.value
        for kind in ("title", "header", "subheader", "markdown", "caption", "info", "success", "warning", "error")
        for e in at.get(kind)
        if isinstance(getattr(e, "value", None), str)
    ]
    for kind in (
        "selectbox",
        "multiselect",
        "select_slider",
        "slider",
        "number_input",
        "text_input",
        "checkbox",
        "toggle",
        "button",
        "download_button",
    ):
        for w in at.get(kind):
            out += [w.label, getattr(w.proto, "help", "")] + [str(o) for o in getattr(w.proto, "options", [])]
    out += [e.label for kind in ("tab", "expander") for e in at.get(kind)]
    for d in at.dataframe:
        out += [str(c) for c in d.value.columns] + [str(i) for i in d.value.index]
    for c in at.get("plotly_chart"):
        spec = json.loads(c.proto.spec)
        out += [tr.get("name", "") for tr in spec["data"]]
        out += [spec["layout"].get(k, {}).get("title", {}).get("text", "") for k in ("xaxis", "yaxis")]
        out.append(spec["layout"].get("title", {}).get("text", ""))
    return [s for s in out if s]


def test_the_page_in_chinese(saved, tmp_path):
    a, b = saved
    zh = lambda key, **kw: i18n.text(key, "zh", **kw)  # noqa: E731
    at = open_compare("zh")
    assert at.title[0].value == "📊 " + zh("compare.title")
    assert [tab.label for tab in at.get("tab")] == [
        zh("compare.tabs.runs"),
        zh("compare.tabs.sweep"),
        zh("compare.tabs.board"),
    ]
    assert zh("compare.units.saved_many", n=2) in [s.value for s in at.subheader]
    assert any(e.label == zh("compare.runs.skipped", n=1) for e in at.expander)
    assert zh("compare.sweep.intro") in [m.value for m in at.markdown]
    assert zh("compare.board.none") in [i.value for i in at.info]
    assert at.multiselect(key="cmp_pick").label == zh("compare.runs.pick")
    assert at.selectbox(key="cmp_sw_dataset").label == zh("compare.sweep.dataset")
    assert zh("datasets.mnist-mini") in at.selectbox(key="cmp_sw_dataset").proto.options[0]

    # the two runs side by side: rows, values, captions and charts in Chinese
    at.multiselect(key="cmp_pick").set_value([a.id, b.id]).run()
    assert not at.exception
    settings, results = [d.value for d in at.dataframe if "1. soft T=2" in d.value.columns]
    assert list(settings.loc[zh("compare.side.rows.temperature")]) == ["2", "4"]
    assert list(settings.loc[zh("compare.side.rows.status")]) == [zh("status.finished")] * 2
    assert zh("compare.side.metrics.student_acc") in results.index
    note = zh("compare.side.differ", names=zh("compare.side.rows.temperature"))
    assert any(c.value.startswith(note) for c in at.caption)
    acc = json.loads(next(e for e in at.get("plotly_chart") if e.proto.id.endswith("cmp_acc_chart")).proto.spec)
    assert acc["layout"]["title"]["text"] == zh("compare.charts.acc_title")
    assert zh("compare.charts.scratch_series", name="1. soft T=2") in [tr.get("name") for tr in acc["data"]]
    assert acc["layout"]["xaxis"]["title"]["text"] == zh("axes.epoch")

    # the sweep's controls still work, and their texts follow
    at.select_slider(key="cmp_sw_fraction").set_value(0.2)
    at.selectbox(key="cmp_sw_dataset").set_value("digits")
    at.multiselect(key="cmp_sw_T").set_value([]).run()
    assert not at.exception
    assert zh("compare.sweep.problem") in [c.value for c in at.caption]
    assert at.button(key="cmp_sw_start").disabled
    at.multiselect(key="cmp_sw_T").set_value([2.0, 4.0]).run()
    assert not at.exception
    assert at.session_state["cmp_sw_fraction"] == 0.2 and at.session_state["cmp_sw_dataset"] == "digits"
    plan = zh("compare.sweep.plan", runs=2 * 2 * 2 + 2, epochs=zh("compare.units.epoch_many", n=2), dataset="digits")
    assert plan in [c.value for c in at.caption]

    # a leaderboard, with the engine's English row names translated
    (tmp_path / "boards" / "digits.csv").write_text(
        "method,name,n,acc_mean,acc_std,agree_mean,agree_std,ece_mean,dataset,teacher,student,epochs,labeled_fraction,seeds,created\n"
        "teacher,Teacher (cnn-32-64),1,0.99,,,,,digits,cnn-32-64,mlp-32,2,0.1,0;1,2026-01-01 10:00:00\n"
        "none,Student (scratch),2,0.60,0.02,0.60,0.02,0.1,digits,cnn-32-64,mlp-32,2,0.1,0;1,2026-01-01 10:00:00\n"
        "kd,KD,2,0.70,0.01,0.71,0.01,0.1,digits,cnn-32-64,mlp-32,2,0.1,0;1,2026-01-01 10:00:00\n"
    )
    at.run()
    assert not at.exception
    board = frame(at, zh("compare.board.col_acc"))
    assert board[zh("compare.board.col_method")].tolist() == [
        zh("compare.board.teacher_name", arch="cnn-32-64"),
        zh("compare.board.scratch_name"),
        "KD",
    ]
    assert board[zh("compare.board.col_delta")].tolist()[2] == "+10.00"

    shown = shown_texts(at)
    assert not [s for s in shown if s in i18n.catalogue("zh") or RAW_KEY.search(s)]  # no raw catalogue key
    assert sum(bool(CJK.search(s)) for s in shown) > 60
    for english in ("Saved runs", "Runs to compare", "Side by side", "Leaderboard", "Choose the grid"):
        assert not [s for s in shown if english in s], english


def test_an_interrupted_run_is_listed_and_does_not_break_the_page(saved):
    """A run whose server died while it trained: listed as interrupted, its owner can delete it."""
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    rid = runs.begin(Config(dataset="digits", epochs=9).to_dict(), owner=ME, source="lab")
    record = runs.folder() / rid / runs.STARTED_FILE
    doc = json.loads(record.read_text())
    doc["pid"] = int(gone.stdout)  # the process that was training it is gone
    record.write_text(json.dumps(doc))
    at = open_compare()
    assert not at.exception
    table = frame(at, "saved")
    assert "interrupted (the server stopped)" in table["status"].tolist()
    at.multiselect(key="cmp_pick").set_value([rid, saved[0].id]).run()
    assert not at.exception  # side by side with a finished run: no crash
    at.selectbox(key="cmp_manage").set_value(rid).run()
    at.checkbox(key="cmp_confirm_delete").check().run()
    at.button(key="cmp_delete").click().run()
    assert not at.exception and rid not in [r.id for r in runs.list_runs()[0]]

"""Issue 16 (what a lecturer trips over), driven headless by AppTest: unavailable datasets in
every picker, the method's own effect in the Lab, honest texts and noise warnings, readable
parameter labels, and warnings for diverged or chance-level runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def open_page(page: str, lang: str = "en", params: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    if lang != "en":
        at.query_params["lang"] = lang
    for k, v in (params or {}).items():
        at.query_params[k] = v
    at.run()
    if page != "pages/lesson.py":
        at.switch_page(page)
        at.run()
    assert not at.exception, at.exception
    return at


def page_text(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "header", "subheader"):
        for el in at.get(kind):
            parts.append(str(getattr(el, "value", "")))
    return "\n".join(parts)


# ------------------------------------------------------------------ Major 2: unavailable datasets

PICKERS = [
    ("pages/lab.py", "lab_dataset"),
    ("pages/soft_targets.py", "st_dataset"),
    ("pages/feature_maps.py", "fm_dataset"),
    ("pages/relations.py", "rel_dataset"),
    ("pages/contrastive.py", "ct_dataset"),
    ("pages/compare.py", "cmp_sw_dataset"),
    ("pages/beyond.py", "by_dataset"),
]


@pytest.mark.parametrize(("page", "key"), PICKERS)
def test_unavailable_datasets_are_marked_in_every_picker(page, key):
    at = open_page(page)
    box = at.selectbox(key=key)
    labels = dict(zip(box.options, box.options))  # options are the formatted labels
    marked = [o for o in box.options if "not on this server" in o]
    assert any(o.startswith("cifar10 ") for o in marked), box.options
    assert not any(o.startswith(("digits ", "mnist-mini ")) for o in marked), labels


@pytest.mark.parametrize(("page", "key"), PICKERS)
def test_choosing_one_says_why_and_where_without_raw_errors_or_server_paths(page, key):
    at = open_page(page)
    at.selectbox(key=key).set_value("cifar10").run()
    assert not at.exception
    text = page_text(at)
    assert "cifar-10-batches-py/" in text and "not on this server" in text
    home = os.environ["KD_PLAYGROUND_HOME"]
    for raw in ("URLError", "DataUnavailableError", "Traceback", "KD_PLAYGROUND_OFFLINE=1", home + "/datasets"):
        assert raw not in text, raw
    assert not at.error, [e.value for e in at.error]


def test_lab_disables_train_with_the_reason_beside_it_and_keeps_the_choice():
    at = open_page("pages/lab.py")
    at.selectbox(key="lab_dataset").set_value("cifar10").run()
    assert at.selectbox(key="lab_dataset").value == "cifar10"  # not silently switched back
    assert at.button(key="lab_train").disabled
    warn = [w.value for w in at.warning]
    assert any("cifar-10-batches-py/" in w for w in warn)
    assert not any("Press Train" in str(i.value) for i in at.info)
    # back to an embedded dataset: Train is available again
    at.selectbox(key="lab_dataset").set_value("digits").run()
    assert not at.button(key="lab_train").disabled


def test_fashion_mnist_reason_names_the_debian_package(monkeypatch, tmp_path):
    from kd_core import data

    if data.availability("fashion-mnist").available:
        pytest.skip("Fashion-MNIST is installed here")
    at = open_page("pages/lab.py")
    at.selectbox(key="lab_dataset").set_value("fashion-mnist").run()
    assert any("apt-get install dataset-fashion-mnist" in w.value for w in at.warning)


def test_the_reason_is_translated():
    at = open_page("pages/lab.py", lang="zh")
    at.selectbox(key="lab_dataset").set_value("cifar10").run()
    assert any("本服务器上没有" in w.value for w in at.warning)


# ------------------------------------------------------------------ Major 3: the method's own effect


def _poll(at: AppTest, until, timeout=600):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(1.0)
        at.run()
        assert not at.exception, at.exception
        if until(at):
            return
    pytest.fail("the comparison did not finish in time")


def test_the_lab_compares_the_method_alone_kd_alone_both_and_scratch_over_seeds():
    from kd_app import state
    from kd_core import presets

    at = open_page("pages/lab.py")
    at.selectbox(key="lab_dataset").set_value("digits").run()
    at.selectbox(key="lab_method").set_value("rkd").run()
    assert at.subheader and any("own effect" in h.value for h in at.subheader)
    at.number_input(key="lab_fx_seeds").set_value(2).run()
    at.number_input(key="lab_fx_epochs").set_value(1).run()
    assert "8 runs" in at.button(key="lab_fx_start").label
    at.button(key="lab_fx_start").click().run()
    assert not at.exception
    run = at.session_state["kd_fx_run"]
    assert len(run["jobs"]) == 8 and run["method"] == "rkd"
    mgr = state.job_manager()

    def ended(at):
        return all(mgr.get(j).done for _, _, j in run["jobs"]) and not at.button(key="lab_fx_start").disabled

    _poll(at, ended)
    jobs = [(p, s, mgr.get(j)) for p, s, j in run["jobs"]]
    assert {j.config.method for p, _, j in jobs if p == "scratch"} == {"none"}
    assert {j.config.alpha for p, _, j in jobs if p == "method"} == {0.0}
    assert all(j.status == "finished" and j.config.epochs == 1 for _, _, j in jobs)
    # the chart: one bar per preset with error bars, and a dot per run
    import json

    (fig,) = [f for f in (json.loads(c.proto.spec) for c in at.get("plotly_chart")) if f["data"][0]["type"] == "bar"]
    bars = fig["data"][0]
    assert bars["type"] == "bar" and len(bars["x"]) == 4 and "error_y" in bars
    assert len(fig["data"][1]["y"]) == 8
    # the table: four presets, two runs each
    (df,) = [d.value for d in at.dataframe if "preset" in list(d.value.columns)]
    assert len(df) == 4 and list(df.iloc[:, 1]) == [2, 2, 2, 2]
    # the verdicts: one line per comparison, and "within seed noise" exactly where the rule says so
    summary = presets.summarise(
        "rkd", [{"preset": p, "seed": s, "acc": j.result["student"]["test_accuracy"]} for p, s, j in jobs]
    )
    noise_lines = [w.value for w in at.warning if "within seed noise" in w.value and " vs " in w.value]
    beyond_lines = [s.value for s in at.success if "beyond seed noise" in s.value]
    assert len(noise_lines) == sum(c.verdict == "noise" for c in summary.comparisons)
    assert len(beyond_lines) == sum(c.verdict in ("better", "worse") for c in summary.comparisons)
    assert len(noise_lines) + len(beyond_lines) == len(summary.comparisons) == 4
    all_noise = any("Every difference here is within seed noise" in w.value for w in at.warning)
    assert all_noise == summary.all_within_noise


def test_the_presets_follow_the_kind_of_method():
    at = open_page("pages/lab.py")
    at.selectbox(key="lab_dataset").set_value("digits").run()
    at.selectbox(key="lab_method").set_value("kd").run()
    assert "6 runs" in at.button(key="lab_fx_start").label  # scratch and KD, three seeds each
    at.selectbox(key="lab_method").set_value("dkd").run()  # DKD replaces the KD term: no "DKD + KD"
    assert "9 runs" in at.button(key="lab_fx_start").label

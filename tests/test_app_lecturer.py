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
    if page != "app_pages/lesson.py":
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
    ("app_pages/lab.py", "lab_dataset"),
    ("app_pages/soft_targets.py", "st_dataset"),
    ("app_pages/feature_maps.py", "fm_dataset"),
    ("app_pages/relations.py", "rel_dataset"),
    ("app_pages/contrastive.py", "ct_dataset"),
    ("app_pages/compare.py", "cmp_sw_dataset"),
    ("app_pages/beyond.py", "by_dataset"),
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
    at = open_page("app_pages/lab.py")
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

    # as on a server without the package (this machine has it: the app would read it from there)
    absent = tmp_path / "usr-share-datasets" / "fashion-mnist"
    monkeypatch.setitem(data.SYSTEM_FOLDERS, "fashion-mnist", [absent])
    assert not data.availability("fashion-mnist").available
    at = open_page("app_pages/lab.py")
    at.selectbox(key="lab_dataset").set_value("fashion-mnist").run()
    warn = [w.value for w in at.warning]
    assert any("apt-get install dataset-fashion-mnist" in w and str(absent) in w for w in warn), warn


def test_the_reason_is_translated():
    at = open_page("app_pages/lab.py", lang="zh")
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

    at = open_page("app_pages/lab.py")
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
    assert bars["type"] == "bar" and len(bars["y"]) == 4 and "error_x" in bars
    assert len(fig["data"][1]["x"]) == 8
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
    at = open_page("app_pages/lab.py")
    at.selectbox(key="lab_dataset").set_value("digits").run()
    at.selectbox(key="lab_method").set_value("kd").run()
    assert "6 runs" in at.button(key="lab_fx_start").label  # scratch and KD, three seeds each
    at.selectbox(key="lab_method").set_value("dkd").run()  # DKD replaces the KD term: no "DKD + KD"
    assert "9 runs" in at.button(key="lab_fx_start").label


# ------------------------------------------------------------------ Major 4: honest texts, noise warnings


def test_beyond_texts_say_what_to_expect_at_this_scale():
    from kd_app import i18n

    for lang, word in (("en", "seed noise"), ("zh", "种子噪声")):
        for method in ("born-again", "dml"):
            text = i18n.text(f"beyond.explain.{method}", lang)
            assert word in text, (lang, method)
    en = i18n.text("beyond.explain.dml", "en")
    assert en.index("In the paper") < en.index("ends up better")


def test_a_dml_result_says_whether_it_is_beyond_the_students_seed_spread():
    import statistics

    from kd_app import state
    from tests.test_app_beyond import open_page as open_beyond
    from tests.test_app_beyond import run_to_end

    at = run_to_end(open_beyond(by_method="dml", by_students=3, by_epochs=1))
    r = state.job_manager().get(at.session_state["by_job_id"]).result
    accs = [s["test_accuracy"] for s in r["students"]]
    delta, std = statistics.fmean(accs) - r["baseline"]["test_accuracy"], statistics.stdev(accs)
    within = abs(delta) < 2 * std
    shown = [w.value for w in at.warning if "within seed noise" in w.value]
    beyond = [i.value for i in at.info if "beyond seed noise" in i.value]
    assert (len(shown), len(beyond)) == ((1, 0) if within else (0, 1))
    assert f"{100 * std:.1f} points" in (shown + beyond)[0]  # the seed std is shown


def test_a_single_seed_beyond_result_warns_that_it_has_no_noise_estimate():
    from tests.test_app_beyond import open_page as open_beyond
    from tests.test_app_beyond import run_to_end

    at = run_to_end(open_beyond(by_method="born-again", by_generations=1, by_epochs=1))
    assert any("One seed" in w.value for w in at.warning)


def test_a_sweep_warns_when_its_best_cell_is_within_seed_noise():
    import time

    from kd_app import noise  # noqa: F401  (the page's helper)
    from kd_core import presets

    at = open_page("app_pages/compare.py")
    at.selectbox(key="cmp_sw_dataset").set_value("digits")
    at.multiselect(key="cmp_sw_T").set_value([2.0, 4.0])
    at.multiselect(key="cmp_sw_alpha").set_value([0.9])
    at.number_input(key="cmp_sw_seeds").set_value(2)
    at.number_input(key="cmp_sw_epochs").set_value(1)
    at.run()
    at.button(key="cmp_sw_start").click().run()
    deadline = time.time() + 300
    while time.time() < deadline and not at.session_state["cmp_sweep_job"].done:
        time.sleep(1.0)
        at.run()
        assert not at.exception
    at.run()
    res = at.session_state["cmp_sweep_job"].result
    rows = res.rows()
    best = res.best(rows=rows)
    other = next(r for r in rows if not r["reference"] and r is not best and r["n"])
    _, tie = presets.within_noise(best["acc_mean"] - other["acc_mean"], best["acc_std"], other["acc_std"])
    ties = [w.value for w in at.warning if "not clearly the best" in w.value]
    assert len(ties) == (1 if tie else 0)
    if tie:
        assert f"±{100 * best['acc_std']:.1f} points" in ties[0]


# ------------------------------------------------------------------ Minor: readable parameter labels

RAW = {"tckd_weight", "nckd_weight", "warmup", "distance_weight", "angle_weight", "beta", "momentum"}


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("dkd", ["Target-class weight (TCKD)", "Non-target-class weight (NCKD)", "Warm-up epochs"]),
        ("rkd", ["Distance-term weight ($\\lambda_D$)", "Angle-term weight ($\\lambda_A$)"]),
        ("crd", ["Memory-bank momentum ($m$)", "Weight of the method's term ($\\beta$)"]),
    ],
)
def test_method_parameters_have_readable_labels_with_their_symbol(method, expected):
    at = open_page("app_pages/lab.py")
    at.selectbox(key="lab_method").set_value(method).run()
    labels = [w.label for w in list(at.slider) + list(at.number_input) if w.key.startswith("lab_p_")]
    assert not RAW & set(labels), labels
    for want in expected:
        assert any(x.startswith(want) for x in labels), (want, labels)
    assert all("$" in x for x in labels)  # every one carries its symbol from the formula


# ------------------------------------------------------------------ Minor: a failed run is not "gained 0.0 points"


def test_a_chance_level_run_warns_instead_of_reporting_a_gain():
    at = open_page("app_pages/lab.py")
    at.select_slider(key="lab_lr").set_value(0.1).run()
    at.number_input(key="lab_epochs").set_value(1).run()
    at.button(key="lab_train").click().run()
    _poll(at, lambda a: a.session_state["kd_lab_job_id"] is not None and any(s.value for s in a.success), 300)
    at.run()
    text = page_text(at)
    assert "Distillation gained" not in text and "Distillation lost" not in text
    warn = [w.value for w in at.warning if "chance level" in w.value or "diverged" in w.value]
    assert warn and "0.1" in warn[0]


def test_a_comparison_refused_by_the_session_limit_leaves_nothing_running(monkeypatch):
    from kd_app import state
    from kd_core.classroom import Limits

    mgr = state.job_manager()
    monkeypatch.setattr(mgr, "limits", Limits(session_jobs=3))
    at = open_page("app_pages/lab.py")
    at.selectbox(key="lab_dataset").set_value("digits").run()
    at.selectbox(key="lab_method").set_value("rkd").run()
    at.number_input(key="lab_fx_seeds").set_value(2).run()
    at.button(key="lab_fx_start").click().run()
    assert not at.exception
    assert any("3" in e.value for e in at.error)  # the limit is named
    owner = at.session_state["kd_session_id"]
    import time

    time.sleep(1.0)
    assert not [j for j in mgr.jobs_of(owner) if not j.done]

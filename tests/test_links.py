"""Shareable links: a link with query parameters opens a page with those settings, a bad
value falls back to its default with a visible notice, and the pages write their settings
back to the URL (the Lab through Config.to_query / from_query)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from kd_app import links
from kd_core.config import Config

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def open_page(page: str | None, query: dict) -> AppTest:
    """A fresh session opened on ``page`` with a link carrying ``query``."""
    at = AppTest.from_file(APP, default_timeout=300)
    if page is None:
        at.query_params.update(query)
        at.run()
    else:
        at.run()  # register the navigation, then follow the link to the page
        at.switch_page(page)
        at.query_params.clear()
        at.query_params.update(query)
        at.run()
    assert not at.exception, at.exception
    return at


def warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.warning] + [w.value for w in at.sidebar.warning]


# ------------------------------------------------------------------ the Lab
def test_a_lab_link_restores_its_settings():
    at = open_page(
        "app_pages/lab.py",
        {
            "method": "dkd",
            "temperature": "2",
            "alpha": "0.3",
            "epochs": "7",
            "p.nckd_weight": "4",
            "omit_class": "3",
            "labeled_fraction": "0.5",
        },
    )
    assert at.selectbox(key="lab_method").value == "dkd"
    assert at.select_slider(key="lab_T").value == 2.0
    assert at.slider(key="lab_alpha").value == 0.3
    assert at.number_input(key="lab_epochs").value == 7
    assert at.select_slider(key="lab_fraction").value == 0.5
    assert at.selectbox(key="lab_omit").value == 3
    key = links.lab_param_key("dkd", "nckd_weight")  # its label is readable now ("NCKD weight (β)")
    assert [w.value for w in at.slider if w.key == key] + [w.value for w in at.number_input if w.key == key] == [4.0]
    assert not warnings(at)
    # the same settings are still in the link, and a change is written back
    # one name per concept: the temperature is T on every page (an old link's "temperature" opens)
    assert at.query_params["method"] == "dkd" and at.query_params["T"] == "2"
    at.select_slider(key="lab_T").set_value(8.0).run()
    assert at.query_params["T"] == "8" and at.query_params["alpha"] == "0.3"
    assert at.query_params["p.nckd_weight"] == "4"
    assert "p.tckd_weight" not in at.query_params  # defaults stay out of the link


def test_a_bad_value_falls_back_to_the_default_with_a_notice():
    at = open_page("app_pages/lab.py", {"temperature": "-1", "alpha": "0.3", "method": "nonsense", "batch_size": "100"})
    assert at.select_slider(key="lab_T").value == Config().temperature
    assert at.selectbox(key="lab_method").value == Config().method
    assert at.slider(key="lab_alpha").value == 0.3  # the good value is kept
    assert at.selectbox(key="lab_batch").value == 128  # not offered: the nearest one
    shown = " ".join(warnings(at))
    assert "temperature='-1'" in shown and "method='nonsense'" in shown and "batch_size=100" in shown
    assert "temperature" not in at.query_params and "T" not in at.query_params  # the URL says what is really set
    # the notices are for the link only: they are gone after the next interaction
    at.slider(key="lab_alpha").set_value(0.5).run()
    assert not warnings(at)


def test_the_lab_writes_its_settings_to_the_url():
    at = open_page("app_pages/lab.py", {})
    assert not any(k in at.query_params for k in ("method", "temperature", "alpha"))
    at.selectbox(key="lab_method").set_value("fitnets").run()
    at.slider(key="lab_alpha").set_value(0.5).run()
    q = dict(at.query_params)
    assert q["method"] == "fitnets" and q["alpha"] == "0.5" and "pairs" not in q  # the default pair
    cfg, notices = Config.from_query(q)
    assert not notices and cfg.method == "fitnets" and cfg.alpha == 0.5


def test_lab_query_round_trips():
    cfg = Config(
        dataset="digits",
        teacher="cnn-32-64",
        student="mlp-32",
        method="rkd",
        temperature=2.0,
        alpha=0.5,
        params={"distance_weight": 25.0, "angle_weight": 10.0},
        epochs=3,
        omit_class=4,
        baseline=False,
    )
    q = links.lab_query(cfg)
    assert "teacher" not in q and "student" not in q  # the dataset's presets
    assert "p.distance_weight" not in q and q["p.angle_weight"] == "10"
    back, notices = Config.from_query(q)
    assert not notices
    assert back.resolved().to_dict() | {"params": {}} == cfg.resolved().to_dict() | {"params": {}}
    assert back.method_params() == cfg.method_params()


# ------------------------------------------------------------------ the Lesson and the language
def test_a_lesson_link_restores_its_sliders_and_language():
    at = open_page(None, {"T": "10", "loss_alpha": "0.5", "digit": "2", "tau": "0.5", "lang": "zh"})
    assert at.title[0].value.startswith("🎓 知识蒸馏")
    assert at.select_slider(key="lesson_T").value == 10.0
    assert at.slider(key="lesson_alpha").value == 0.5
    assert at.selectbox(key="lesson_digit").value == 2
    assert at.select_slider(key="lesson_tau").value == 0.5
    assert not warnings(at)
    assert at.query_params["lang"] == "zh" and at.query_params["T"] == "10"


def test_bad_lesson_values_fall_back_with_a_notice():
    at = open_page(None, {"T": "hot", "loss_alpha": "3", "digit": "12", "labels": "0.07", "lang": "fr"})
    assert at.select_slider(key="lesson_T").value == 4.0
    assert at.slider(key="lesson_alpha").value == 0.9
    assert at.selectbox(key="lesson_digit").value == 4  # the default
    assert at.select_slider(key="lesson_fraction").value == 0.05  # not offered: the nearest
    shown = " ".join(warnings(at))
    for piece in ("T=hot", "loss_alpha=3", "digit=12", "labels=0.07", "'fr'"):
        assert piece in shown, piece
    assert at.title[0].value == "🎓 Knowledge distillation, step by step"  # English, the default
    assert "lang" not in at.query_params and "T" not in at.query_params


@pytest.mark.parametrize("raw,value,note", [("2", 2.0, False), ("2.5", 2.0, True), ("1e9", None, None)])
def test_number_fields_validate(raw, value, note):
    f = links.number("T", "k", 4.0, options=[1.0, 2.0, 4.0])
    if value is None:
        with pytest.raises(ValueError):
            f.parse(raw)
    else:
        v, n = f.parse(raw)
        assert v == value and bool(n) == note
    assert links.choice("d", "k", [0, 1, 2], 0).parse("2") == (2, None)
    assert links.flag("f", "k", False).parse("yes") == (True, None)


VIEW_LINKS = [
    (
        "app_pages/relations.py",
        {"dataset": "digits", "n": "24", "batch": "7", "relation": "angle", "map": "tsne"},
        {"rel_dataset": "digits", "rel_n": 24, "rel_seed": 7, "rel_kind": "angle", "rel_map": "tsne"},
    ),
    (
        "app_pages/contrastive.py",
        {"dataset": "digits", "n": "16", "batch": "3", "tau": "0.2"},
        {"ct_dataset": "digits", "ct_n": 16, "ct_seed": 3, "ct_tau": 0.2},
    ),
    (
        "app_pages/feature_maps.py",
        {"dataset": "digits", "channels": "9", "opacity": "0.3", "measure": "attention", "all_layers": "true"},
        {"fm_dataset": "digits", "fm_channels": 9, "fm_opacity": 0.3, "fm_metric": "attention", "fm_all_layers": True},
    ),
    (
        "app_pages/compare.py",
        {
            "dataset": "digits",
            "method": "dkd",
            "T": "2,4",
            "alpha": "0.25,1",
            "labels": "0.5",
            "seeds": "1",
            "epochs": "3",
            "scratch": "false",
            "train": "cells",
        },
        {
            "cmp_sw_dataset": "digits",
            "cmp_sw_method": "dkd",
            "cmp_sw_T": [2.0, 4.0],
            "cmp_sw_alpha": [0.25, 1.0],
            "cmp_sw_fraction": 0.5,
            "cmp_sw_seeds": 1,
            "cmp_sw_epochs": 3,
            "cmp_sw_scratch": False,
            "cmp_sw_train": "cells",
        },
    ),
    (
        "app_pages/beyond.py",
        {
            "dataset": "digits",
            "teachers": "2",
            "weighting": "confidence",
            "T": "2.5",
            "method": "dml",
            "students": "3",
            "epochs": "1",
        },
        {
            "by_dataset": "digits",
            "by_k": 2,
            "by_weighting": "confidence",
            "by_T": 2.5,
            "by_method": "dml",
            "by_students": 3,
            "by_epochs": 1,
        },
    ),
]


@pytest.mark.parametrize("page,query,expected", VIEW_LINKS, ids=[p.split("/")[1] for p, _, _ in VIEW_LINKS])
def test_the_view_pages_restore_a_link_and_write_it_back(page, query, expected):
    at = open_page(page, query)
    for key, value in expected.items():
        assert at.session_state[key] == value, key
    assert not at.warning  # nothing was refused
    assert all(at.query_params[k] in (v, [v]) for k, v in query.items())  # the URL still holds the view
    number = next(k for k in ("channels", "teachers", "n", "seeds") if k in query)  # 7 is none of its values
    bad = open_page(page, {"dataset": "imagenet", number: "7"})
    notices = " ".join(w.value for w in bad.warning)
    assert "imagenet" in notices and "7" in notices


def test_several_values_parse_by_value_and_refuse_strangers():
    f = links.several("T", "k", [1.0, 2.0, 4.0], [1.0])
    assert f.parse("4,1,4") == ([4.0, 1.0], None)
    assert f.fmt([2.0, 4.0]) == "2,4"
    for raw in ("", "3", "2,x", ","):
        with pytest.raises(ValueError):
            f.parse(raw)

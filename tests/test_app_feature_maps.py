"""The Feature maps page driven with AppTest: without a Lab run it shows the teacher's maps
and points to the Lab; the layer and image pickers change the figures' data; a bad pick
(a vector layer for attention) is an error, not an exception; the quick button starts an
AT run as the session's Lab job; and after a finished AT run the distilled student is
closer to the teacher than the scratch one, layer by layer. The runs are real (mnist-mini,
one epoch) and the teacher comes from the shared test cache."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from kd_core.config import Config

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def open_page(owner: str | None = None, job_id: int | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    if owner is not None:
        at.session_state["kd_session_id"] = owner
    if job_id is not None:
        at.session_state["kd_lab_job_id"] = job_id
    at.run()
    at.switch_page("app_pages/feature_maps.py")
    at.run()
    assert not at.exception, at.exception
    return at


def chart(at: AppTest, key: str) -> dict:
    for c in at.get("plotly_chart"):
        if c.proto.id.endswith(key):
            return json.loads(c.proto.spec)
    raise AssertionError(f"no chart {key}; charts: {[c.proto.id[-24:] for c in at.get('plotly_chart')]}")


def has_chart(at: AppTest, key: str) -> bool:
    return any(c.proto.id.endswith(key) for c in at.get("plotly_chart"))


def z(spec: dict, trace: int = 0) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in spec["data"][trace]["z"]], dtype=float)


def run_job(method: str, owner: str, **kw):
    from kd_app import state

    job = state.job_manager().submit(Config(dataset="mnist-mini", method=method, epochs=1, **kw), owner=owner)
    deadline = time.time() + 150
    while not job.done and time.time() < deadline:
        time.sleep(0.2)
    assert job.status == "finished", job.message
    return job


@pytest.fixture(scope="module")
def no_run() -> AppTest:
    return open_page()


def test_without_a_run_the_page_shows_the_teacher_and_points_to_the_lab(no_run):
    at = no_run
    assert at.title[0].value.endswith("Feature maps")
    assert any("No Lab run" in i.value for i in at.info)
    assert any("lab" in link.proto.page for link in at.page_link)
    assert at.button(key="fm_quick_train").label.startswith("🚀 Train a quick AT student")
    assert has_chart(at, "fm_grid_teacher") and has_chart(at, "fm_att_teacher")
    assert not has_chart(at, "fm_grid_distilled") and not has_chart(at, "fm_similarity")
    grid = z(chart(at, "fm_grid_teacher"))
    assert grid.shape == (4 * 8 - 1, 4 * 8 - 1)  # 16 channels of 7x7 (stage2), one-cell gaps
    assert np.nanmax(grid) == pytest.approx(1.0) and np.nanmin(grid) >= 0
    att = chart(at, "fm_att_teacher")
    assert [t["name"] for t in att["data"]] == ["image", "attention"]
    assert z(att, 1).shape == (28, 28) and np.nanmax(z(att, 1)) == pytest.approx(1.0)
    for w in list(at.selectbox) + list(at.slider) + list(at.select_slider) + list(at.number_input) + list(at.toggle):
        assert w.help, w.label


def test_layer_image_and_channel_pickers_change_the_figures(no_run):
    at = no_run
    before_grid = z(chart(at, "fm_grid_teacher"))
    before_att = z(chart(at, "fm_att_teacher"), 1)
    at.selectbox(key="fm_tl").set_value("stage1").run()
    assert not at.exception
    grid = z(chart(at, "fm_grid_teacher"))
    assert grid.shape == (4 * 15 - 1, 4 * 15 - 1)  # stage1: 14x14 maps
    assert not np.allclose(z(chart(at, "fm_att_teacher"), 1), before_att)
    at.select_slider(key="fm_channels").set_value(4).run()
    assert z(chart(at, "fm_grid_teacher")).shape == (2 * 15 - 1, 2 * 15 - 1)
    image_before = z(chart(at, "fm_att_teacher"), 0)
    at.number_input(key="fm_image").set_value(7).run()
    assert not at.exception
    assert not np.allclose(z(chart(at, "fm_att_teacher"), 0), image_before)  # another digit underneath
    # a vector layer: the grid shows its units; attention maps are refused with an error, not a crash
    at.selectbox(key="fm_tl").set_value("embed").run()
    assert not at.exception
    assert any("need spatial feature maps" in e.value and "embed" in e.value for e in at.error)
    assert z(chart(at, "fm_grid_teacher")).size >= 128
    at.selectbox(key="fm_tl").set_value("stage2").run()
    assert not at.exception and not at.error
    assert z(chart(at, "fm_grid_teacher")).shape != before_grid.shape  # still 4 channels


def test_the_quick_button_starts_an_at_run_for_this_session():
    from kd_app import state

    at = open_page(owner="fm-quick")
    at.button(key="fm_quick_train").click().run()
    assert not at.exception
    job_id = at.session_state["kd_lab_job_id"]
    job = state.job_manager().get(job_id, owner="fm-quick")
    try:
        assert job is not None and job.config.method == "at" and job.config.epochs == 2
        assert job.config.dataset == "mnist-mini"
        assert at.button(key="fm_quick_train").disabled  # one run at a time
    finally:
        job.stop()


@pytest.fixture(scope="module")
def at_run():
    return run_job("at", "fm-at")


def test_after_an_at_run_the_distilled_student_is_closer_to_the_teacher(at_run):
    at = open_page("fm-at", at_run.id)
    assert not at.exception and not at.error
    for key in ("fm_grid_teacher", "fm_grid_scratch", "fm_grid_distilled", "fm_att_scratch", "fm_att_distilled"):
        assert has_chart(at, key), key
    assert z(chart(at, "fm_grid_distilled")).shape == (4 * 8 - 1, 4 * 8 - 1)  # student stage2: 16 x 7x7
    assert not has_chart(at, "fm_fit_error")  # no regressor in AT
    sim = chart(at, "fm_similarity")
    bars = {t["name"]: dict(zip(t["x"], t["y"])) for t in sim["data"] if t["type"] == "bar"}
    assert set(bars) == {"scratch student", "distilled student"}
    trained = "★ stage2 ↔ stage2"
    assert trained in bars["distilled student"]
    for _pair, d in bars["distilled student"].items():
        assert 0 < d <= 1 + 1e-9
    assert bars["distilled student"][trained] > bars["scratch student"][trained] + 0.02
    assert sum(bars["distilled student"][p] > bars["scratch student"][p] for p in bars["scratch student"]) >= 3
    # the attention measure, on the spatial pairs only: AT makes the student look where the teacher looks
    at.radio(key="fm_metric").set_value("attention").run()
    assert not at.exception
    att = {t["name"]: dict(zip(t["x"], t["y"])) for t in chart(at, "fm_similarity")["data"] if t["type"] == "bar"}
    assert set(att["distilled student"]) == {"stage1 ↔ stage1", trained}
    assert att["distilled student"][trained] > att["scratch student"][trained] + 0.02
    # per image: the distilled student's attention loss is reported beside the scratch one's
    losses = {m.label: float(m.value) for m in at.metric if m.label.startswith("Attention loss")}
    assert len(losses) == 2 and all(v >= 0 for v in losses.values())


def test_after_a_fitnets_run_the_regressed_hint_and_its_error_map_show():
    job = run_job("fitnets", "fm-fitnets", baseline=False)
    at = open_page("fm-fitnets", job.id)
    assert not at.exception
    assert any("no scratch student" in i.value for i in at.info)
    target, regressed, err = (chart(at, k) for k in ("fm_fit_target", "fm_fit_regressed", "fm_fit_error"))
    assert z(target).shape == z(regressed).shape == (31, 31)  # 16 of the teacher's 64 channels of 7x7
    e = z(err)
    assert e.shape == (7, 7) and (e >= 0).all()
    hint = next(float(m.value) for m in at.metric if m.label == "Hint loss on this image")
    assert e.mean() == pytest.approx(hint, rel=1e-3, abs=1e-4)  # the error map averages to the hint loss
    # the regressor exists only for the trained pair
    at.selectbox(key="fm_tl").set_value("stage1").run()
    assert not at.exception and not has_chart(at, "fm_fit_error")
    assert any("only for the pairs the run trained on" in i.value for i in at.info)
    at.button(key="fm_pair_0").click().run()
    assert at.selectbox(key="fm_tl").value == "stage2" and has_chart(at, "fm_fit_error")


def page_texts(at: AppTest) -> list[str]:
    """Everything a user reads on the page: texts, widget labels, help texts and options."""
    out = [
        e.value
        for kind in ("title", "header", "subheader", "markdown", "caption", "info", "success", "error", "warning")
        for e in at.get(kind)
        if isinstance(getattr(e, "value", None), str)
    ]
    for kind in ("selectbox", "select_slider", "slider", "number_input", "toggle", "radio", "button"):
        for w in at.get(kind):
            out += [w.label, w.help or ""] + [str(o) for o in getattr(w, "options", None) or []]
    out += [m.label for m in at.metric] + [link.label for link in at.page_link]
    return [s for s in out if s]


def test_in_chinese_every_text_comes_from_the_catalogue_and_the_pickers_work():
    import re

    from kd_app import i18n

    zh = lambda key, **kw: i18n.text(key, "zh", **kw)  # noqa: E731
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["lang"] = "zh"
    at.run()
    at.switch_page("app_pages/feature_maps.py")
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "🗺️ " + zh("feature_maps.title")
    assert zh("feature_maps.intro") in [c.value for c in at.caption]
    assert zh("feature_maps.no_run") in [i.value for i in at.info]
    subheaders = [h.value for h in at.subheader]
    for key in ("feature_maps.feature_header", "feature_maps.att_header", "feature_maps.sim_header"):
        assert zh(key) in subheaders, key
    assert at.selectbox(key="fm_tl").label == zh("feature_maps.teacher_layer")
    assert at.selectbox(key="fm_dataset").options[0].endswith(i18n.text("datasets.mnist-mini", "zh"))
    assert at.button(key="fm_quick_train").label == zh("feature_maps.quick", epochs=2)
    assert at.select_slider(key="fm_channels").help == zh("feature_maps.channels_help")
    # the engine's figure texts are relabelled: the overlay's traces, the figure titles
    att = chart(at, "fm_att_teacher")
    assert [t["name"] for t in att["data"]] == [zh("feature_maps.figure.image"), zh("feature_maps.figure.attention")]
    assert zh("feature_maps.role_title.teacher") in chart(at, "fm_grid_teacher")["layout"]["title"]["text"]
    assert "channel" not in json.dumps(chart(at, "fm_grid_teacher")["data"][0]["hovertemplate"])
    # no raw catalogue key anywhere, and the page reads in Chinese
    shown = page_texts(at)
    keys = set(i18n.catalogue("zh"))
    assert not [s for s in shown if s in keys or re.search(r"\bfeature_maps\.[a-z_]", s)]
    cjk = re.compile(r"[\u4e00-\u9fff]")
    assert sum(bool(cjk.search(s)) for s in shown) > 25
    # the pickers still drive the figures, in Chinese
    at.selectbox(key="fm_tl").set_value("stage1").run()
    assert not at.exception
    assert z(chart(at, "fm_grid_teacher")).shape == (4 * 15 - 1, 4 * 15 - 1)
    at.select_slider(key="fm_channels").set_value(4).run()
    assert not at.exception
    assert z(chart(at, "fm_grid_teacher")).shape == (2 * 15 - 1, 2 * 15 - 1)
    at.selectbox(key="fm_tl").set_value("embed").run()
    assert not at.exception
    bad = zh("feature_maps.bad_teacher", layer="embed", n=128)
    assert any(
        e.value.startswith(zh("feature_maps.need_spatial", bad="").split("，")[0]) and "embed" in e.value
        for e in at.error
    ), [e.value for e in at.error]
    assert bad.split("“")[0] in " ".join(e.value for e in at.error)
    assert at.query_params.get("lang") == "zh"

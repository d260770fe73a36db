"""The Soft targets page (the app's default page), driven like a user would with AppTest:
it names the teacher and its accuracy, the temperature slider reshapes the probabilities
and moves the entropy marker, the gallery picks images, the dark-knowledge rows are
distributions, a dataset without its files gives an error (not a crash), and without a
Lab run the page points to the Lab. The teacher (mnist-mini) trains once and is then
cached in the shared test home."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from kd_app import i18n

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("app_pages/soft_targets.py")
    at.run()
    assert not at.exception, at.exception
    return at


def _chart(at: AppTest, key: str) -> dict:
    for c in at.get("plotly_chart"):
        if c.proto.id.endswith(key):
            return json.loads(c.proto.spec)
    raise AssertionError(f"no chart with key {key}; charts: {[c.proto.id for c in at.get('plotly_chart')]}")


def _bars(at: AppTest) -> dict[str, list[float]]:
    return {t["name"]: t["y"] for t in _chart(at, "st_chart_probs")["data"] if t["type"] == "bar"}


def _current_bars(at: AppTest, T: str) -> np.ndarray:
    return np.array(_bars(at)[f"teacher at T = {T}"])


def _entropy_marker(at: AppTest) -> tuple[float, float]:
    markers = [t for t in _chart(at, "st_chart_entropy")["data"] if t.get("mode") == "markers"]
    assert len(markers) == 1
    return markers[0]["x"][0], markers[0]["y"][0]


def _texts(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


@pytest.fixture(scope="module")
def first_run() -> AppTest:
    return _app()


def test_page_renders_and_names_the_teacher(first_run):
    at = first_run
    assert at.title[0].value.endswith("Soft targets")
    assert not at.warning
    text = _texts(at).replace("**", "")
    assert re.search(r"Teacher \S+ trained on mnist-mini for \d+ epochs — \d+\.\d% test accuracy", text), text
    assert at.selectbox(key="st_dataset").value == "mnist-mini"
    assert at.select_slider(key="st_T").value == 4.0
    assert any("exp(z_i / T)" in x.value for x in at.latex)
    bars = _bars(at)
    assert set(bars) == {"teacher at T = 1 (plain softmax)", "teacher at T = 4"}
    for y in bars.values():
        assert len(y) == 10 and abs(sum(y) - 1) < 1e-6


def test_temperature_changes_probabilities_and_entropy_marker():
    at = _app()
    p4 = _current_bars(at, "4")
    x4, h4 = _entropy_marker(at)
    assert x4 == 4.0

    at.select_slider(key="st_T").set_value(1.0).run()
    assert not at.exception
    p1 = _current_bars(at, "1")
    assert np.allclose(p1, _bars(at)["teacher at T = 1 (plain softmax)"])
    x1, h1 = _entropy_marker(at)

    at.select_slider(key="st_T").set_value(20.0).run()
    assert not at.exception
    p20 = _current_bars(at, "20")
    x20, h20 = _entropy_marker(at)

    assert not np.allclose(p1, p4) and not np.allclose(p4, p20)
    assert p20.max() < p4.max() < p1.max()  # flatter as T grows
    assert p20.max() < 0.5 and p20.min() > 0.02  # nearly uniform at T = 20
    assert (x1, x20) == (1.0, 20.0)
    assert h1 < h4 < h20 <= np.log2(10) + 1e-9
    # the argmax survives any temperature
    assert p1.argmax() == p20.argmax()


def test_picking_another_image_changes_image_and_label():
    at = _app()
    before = (at.number_input(key="st_class").value, at.number_input(key="st_index").value, _bars(at))
    images_before = [i.proto.imgs[0].url for i in at.get("image")]
    at.button(key="st_pick_clear_3").click().run()
    assert not at.exception
    assert at.number_input(key="st_class").value == 3
    assert "True label: 3" in _texts(at)
    after = (at.number_input(key="st_class").value, at.number_input(key="st_index").value, _bars(at))
    assert after != before
    images_after = [i.proto.imgs[0].url for i in at.get("image")]
    assert images_after[-1] != images_before[-1]  # the large image is the last one on the page

    at.button(key="st_pick_ambiguous_7").click().run()
    assert "True label: 7" in _texts(at)
    at.number_input(key="st_index").set_value(5).run()
    assert not at.exception
    assert at.number_input(key="st_index").value == 5 and "True label: 7" in _texts(at)


def test_dark_knowledge_rows_are_distributions_and_pairs_are_named():
    at = _app()
    for T in (1.0, 4.0, 20.0):
        at.select_slider(key="st_T").set_value(T).run()
        z = np.array(_chart(at, "st_chart_dark")["data"][0]["z"], dtype=float)
        assert z.shape == (10, 10)
        assert np.allclose(z.sum(axis=1), 1.0, atol=1e-6)
        assert (np.diag(z) > z.max(axis=1) - 1e-12).all() if T <= 4 else True
    captions = "\n".join(c.value for c in at.caption)
    assert "Most confused pairs at T = 20:" in captions and "↔" in captions
    at.toggle(key="st_hide_diag").set_value(True).run()
    z = np.array(_chart(at, "st_chart_dark")["data"][0]["z"], dtype=float)
    assert np.isnan(np.diag(z)).all()


def test_dataset_without_files_shows_an_error_and_the_page_stays_usable():
    at = _app()
    at.selectbox(key="st_dataset").set_value("mnist").run()
    assert not at.exception
    # the picker says why and where its files go (issue 16): a warning, no raw exception or server path
    assert any("mnist is not on this server" in w.value and "MNIST/raw/" in w.value for w in at.warning)
    assert not any("/tmp" in w.value or "Error" in w.value for w in at.warning)
    assert "mnist-mini" in _texts(at)  # still showing the last good dataset's teacher
    at.select_slider(key="st_T").set_value(10.0).run()  # still usable
    assert not at.exception and _entropy_marker(at)[0] == 10.0
    at.selectbox(key="st_dataset").set_value("mnist-mini").run()
    assert not at.exception and not at.error


def test_without_a_lab_run_the_page_points_to_the_lab(first_run):
    at = first_run
    assert any("Distillation lab" in i.value for i in at.info)
    assert any(link.proto.page.endswith("lab.py") or "lab" in link.proto.page for link in at.page_link)


def test_choices_survive_a_visit_to_the_lab():
    at = _app()
    at.select_slider(key="st_T").set_value(10.0).run()
    at.button(key="st_pick_clear_3").click().run()
    at.toggle(key="st_log").set_value(True).run()
    at.switch_page("app_pages/lab.py").run()
    at.switch_page("app_pages/soft_targets.py").run()
    assert not at.exception
    assert at.select_slider(key="st_T").value == 10.0
    assert at.number_input(key="st_class").value == 3 and "True label: 3" in _texts(at)
    assert at.toggle(key="st_log").value is True
    assert _chart(at, "st_chart_probs")["layout"]["yaxis"]["type"] == "log"


@pytest.mark.slow
def test_distilled_student_is_compared_with_the_teacher():
    from kd_app import state
    from kd_core.config import Config

    owner = "soft-targets-test"
    job = state.job_manager().submit(
        Config(dataset="mnist-mini", epochs=1, batch_size=256, labeled_fraction=0.1), owner=owner
    )
    deadline = time.time() + 120
    while not job.done and time.time() < deadline:
        time.sleep(0.2)
    assert job.status == "finished", job.message

    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["kd_session_id"] = owner
    at.session_state["kd_lab_job_id"] = job.id
    at.run()
    at.switch_page("app_pages/soft_targets.py")
    at.run()
    assert not at.exception
    spec = _chart(at, "st_chart_student")
    names = [t["name"] for t in spec["data"] if t["type"] == "bar"]
    assert names == ["teacher at T = 4", "distilled student at T = 4", "scratch student at T = 4"]
    kls = [m for m in at.metric if "KL" in m.label]
    assert len(kls) == 2 and all(float(m.value.split()[0]) >= 0 for m in kls)
    at.select_slider(key="st_T").set_value(1.0).run()
    assert [t["name"] for t in _chart(at, "st_chart_student")["data"]][0] == "teacher at T = 1"
    at.radio(key="st_own_source").set_value("upload").run()  # an own digit: the students' soft targets too
    at.file_uploader(key="st_upload").set_value(("one.png", _png_of_a_one(), "image/png")).run()
    assert not at.exception and not at.error
    own = _own_bars(at)
    assert list(own) == [
        "teacher at T = 1 (plain softmax)",
        "teacher at T = 1",
        "distilled student at T = 1",
        "scratch student at T = 1",
    ]
    assert all(abs(sum(y) - 1) < 1e-6 for y in own.values())


# ------------------------------------------------------------------ in Chinese
CJK = re.compile(r"[\u4e00-\u9fff]")


def _everything_shown(at: AppTest) -> list[str]:
    """Every text a user can read: elements, widget labels and help texts, options, metrics
    and the figures' titles, series, axis titles and annotations."""
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
    for kind in ("selectbox", "select_slider", "toggle", "number_input", "button", "radio", "slider"):
        for w in at.get(kind):
            out += [w.label, w.help or ""]
            out += [str(o) for o in getattr(w, "options", None) or []]
    out += [x for m in at.metric for x in (m.label, str(m.value))]
    out += [link.proto.label for link in at.get("page_link")]
    for c in at.get("plotly_chart"):
        spec = json.loads(c.proto.spec)
        lay = spec["layout"]
        out.append(lay.get("title", {}).get("text", ""))
        out += [tr.get("name", "") for tr in spec["data"]] + [tr.get("hovertemplate", "") for tr in spec["data"]]
        out += [lay[k].get("title", {}).get("text", "") for k in lay if k.startswith(("xaxis", "yaxis"))]
        out += [a.get("text", "") for a in lay.get("annotations", [])]
    return [s for s in out if s]


def test_the_page_in_chinese():
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["lang"] = "zh"
    at.run()
    at.switch_page("app_pages/soft_targets.py")
    at.run()
    assert not at.exception, at.exception
    zh = i18n.catalogue("zh")

    def z(key, **fmt):
        return i18n.text(key, "zh", **fmt)

    assert at.title[0].value == "🌡️ " + z("soft_targets.title")
    assert [h.value for h in at.subheader] == [
        z("soft_targets.own.header"),
        z("soft_targets.student_header"),
        z("soft_targets.dark_header"),
    ]
    captions = [c.value for c in at.caption]
    markdown = _texts(at)
    assert z("soft_targets.intro") in captions and z("soft_targets.formula_caption") in captions
    assert z("soft_targets.gallery") in markdown and z("soft_targets.dark_text", T=4.0) in markdown
    assert "教师 **" in markdown  # the teacher's caption (chrome.teacher_caption)
    assert z("soft_targets.true_label", c=at.number_input(key="st_class").value) in markdown
    assert z("soft_targets.pairs_header") in markdown
    assert [i.value for i in at.info] == [z("soft_targets.no_student")]
    # widget labels, help texts and option labels
    assert at.selectbox(key="st_dataset").label == z("soft_targets.dataset")
    assert f"mnist-mini — {z('datasets.mnist-mini')}" in at.selectbox(key="st_dataset").options
    assert at.select_slider(key="st_T").label == z("soft_targets.T")
    assert at.select_slider(key="st_T").help == z("soft_targets.T_help")
    assert at.toggle(key="st_log").label == z("soft_targets.log")
    assert at.toggle(key="st_hide_diag").label == z("soft_targets.hide_diag")
    assert at.number_input(key="st_class").label == z("soft_targets.true_class")
    assert at.button(key="st_random").label == z("soft_targets.random")
    assert at.button(key="st_pick_clear_3").help == z("soft_targets.pick_help.clear", c="3")
    # the figures: titles, series, axes and the engine's own texts
    probs = _chart(at, "st_chart_probs")
    assert [tr["name"] for tr in probs["data"]] == [
        z("soft_targets.series_t1"),
        z("soft_targets.series_at", who=z("roles.teacher"), T=4.0),
    ]
    assert probs["layout"]["title"]["text"] == z("soft_targets.probs_title")
    assert probs["layout"]["xaxis"]["title"]["text"] == z("axes.class")
    assert probs["layout"]["yaxis"]["title"]["text"] == z("axes.probability")
    assert probs["data"][1]["marker"]["color"] == "#0072B2"  # still the teacher's colour
    ent = _chart(at, "st_chart_entropy")
    assert ent["layout"]["xaxis"]["title"]["text"] == z("axes.temperature")
    assert ent["layout"]["yaxis"]["title"]["text"] == z("soft_targets.figure.entropy_bits")
    assert [a["text"] for a in ent["layout"]["annotations"]] == [z("soft_targets.figure.uniform")]
    dark = _chart(at, "st_chart_dark")
    assert dark["layout"]["title"]["text"] == z("soft_targets.dark_title", T=4.0)
    assert dark["layout"]["xaxis"]["title"]["text"] == z("soft_targets.dark_x")
    # everything readable is Chinese or language-neutral, and no raw key shows
    shown = _everything_shown(at)
    keys = set(zh)
    assert not [s for s in shown if s in keys or re.search(r"\b(soft_targets|roles|axes|datasets)\.[a-z]", s)]
    english = (
        "Soft targets",
        "Pick a test image",
        "Temperature",
        "Teacher's",
        "teacher at",
        "Dark knowledge",
        "Most confused",
        "Hide the",
        "Log scale",
        "True label",
        "entropy (bits)",
        "uniform",
        "class the",
    )
    assert not [s for s in shown for w in english if w in s]
    assert sum(bool(CJK.search(s)) for s in shown) > 30

    # the widgets still work in Chinese
    at.select_slider(key="st_T").set_value(20.0).run()
    assert not at.exception, at.exception
    assert _chart(at, "st_chart_probs")["data"][1]["name"] == z(
        "soft_targets.series_at", who=z("roles.teacher"), T=20.0
    )
    assert z("soft_targets.dark_text", T=20.0) in _texts(at)
    assert any(c.value.startswith(z("soft_targets.pairs_caption", T=20.0, pairs="")[:-1]) for c in at.caption)
    at.button(key="st_pick_clear_3").click().run()
    assert not at.exception and z("soft_targets.true_label", c="3") in _texts(at)
    at.toggle(key="st_hide_diag").set_value(True).run()
    at.select_slider(key="st_T").set_value(1.0).run()
    assert not at.exception
    assert z("soft_targets.tip_low_T") in [c.value for c in at.caption]
    assert np.isnan(np.diag(np.array(_chart(at, "st_chart_dark")["data"][0]["z"], dtype=float))).all()
    at.selectbox(key="st_dataset").set_value("mnist").run()  # a dataset without its files: a Chinese error
    assert not at.exception
    assert any("本服务器上没有 mnist" in w.value and "MNIST/raw/" in w.value for w in at.warning)
    assert z("soft_targets.showing_meanwhile", name="mnist-mini") in [c.value for c in at.caption]
    assert at.query_params["lang"] == "zh"


@pytest.mark.slow
def test_distilled_student_in_chinese():
    from kd_app import state
    from kd_core.config import Config

    owner = "soft-targets-test-zh"
    job = state.job_manager().submit(
        Config(dataset="mnist-mini", epochs=1, batch_size=256, labeled_fraction=0.1), owner=owner
    )
    deadline = time.time() + 120
    while not job.done and time.time() < deadline:
        time.sleep(0.2)
    assert job.status == "finished", job.message

    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["lang"] = "zh"
    at.session_state["kd_session_id"] = owner
    at.session_state["kd_lab_job_id"] = job.id
    at.run()
    at.switch_page("app_pages/soft_targets.py")
    at.run()
    assert not at.exception, at.exception

    def z(key, **fmt):
        return i18n.text(key, "zh", **fmt)

    spec = _chart(at, "st_chart_student")
    bars = [tr for tr in spec["data"] if tr["type"] == "bar"]
    assert [tr["name"] for tr in bars] == [
        z("soft_targets.series_at", who=z(r), T=4.0) for r in ("roles.teacher", "roles.distilled", "roles.scratch")
    ]
    assert [tr["marker"]["color"] for tr in bars] == ["#0072B2", "#D55E00", "#999999"]  # the role colours stay
    assert spec["layout"]["title"]["text"] == z("soft_targets.student_title", T=4.0)
    assert [m.label for m in at.metric] == [
        z("soft_targets.kl_label", T=4.0, who=z(r)) for r in ("roles.distilled", "roles.scratch")
    ]
    assert all(m.value.endswith(" 奈特") and float(m.value.split()[0]) >= 0 for m in at.metric)
    assert not at.info  # no "train a student first"
    at.select_slider(key="st_T").set_value(1.0).run()
    assert not at.exception
    assert _chart(at, "st_chart_student")["data"][0]["name"] == z(
        "soft_targets.series_at", who=z("roles.teacher"), T=1.0
    )


# ------------------------------------------------------------------ your own digit (draw / upload)
def _png_of_a_one(paper: int = 0, ink: int = 255) -> bytes:
    """A thick "1", small and off-centre in a 300x300 picture, as PNG bytes."""
    import io

    from PIL import Image, ImageDraw

    img = Image.new("L", (300, 300), paper)
    d = ImageDraw.Draw(img)
    d.line([(220, 30), (232, 110)], fill=ink, width=9)
    d.line([(220, 30), (206, 44)], fill=ink, width=7)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _own_bars(at: AppTest) -> dict[str, list[float]]:
    return {t["name"]: t["y"] for t in _chart(at, "st_chart_own")["data"] if t["type"] == "bar"}


def test_own_digit_controls_render_and_wait_for_a_drawing(first_run):
    at = first_run
    source = at.radio(key="st_own_source")
    assert source.value == "draw" and list(source.options) == ["✏️ Draw", "📁 Upload"]
    assert "✏️ Your own digit" in [h.value for h in at.subheader]
    assert i18n.text("soft_targets.own.waiting.draw", "en") in [c.value for c in at.caption]
    assert not [c for c in at.get("plotly_chart") if c.proto.id.endswith("st_chart_own")]  # nothing drawn yet
    assert not at.error and not at.exception


def test_an_uploaded_digit_gets_soft_targets_that_follow_T():
    at = _app()
    at.radio(key="st_own_source").set_value("upload").run()
    up = at.file_uploader(key="st_upload")
    assert set(up.allowed_type) >= {".png", ".jpg", ".jpeg"} or set(up.allowed_type) >= {"png", "jpg", "jpeg"}
    assert i18n.text("soft_targets.own.waiting.upload", "en") in [c.value for c in at.caption]
    up.set_value(("one.png", _png_of_a_one(paper=255, ink=0), "image/png")).run()  # dark ink on white paper
    assert not at.exception and not at.error
    bars = _own_bars(at)
    assert set(bars) == {"teacher at T = 1 (plain softmax)", "teacher at T = 4"}
    for y in bars.values():
        assert len(y) == 10 and abs(sum(y) - 1) < 1e-6
    assert int(np.argmax(bars["teacher at T = 1 (plain softmax)"])) == 1
    assert "The teacher reads **1**" in _texts(at)
    assert "**What the model sees** (28×28)" in _texts(at)
    at.select_slider(key="st_T").set_value(20.0).run()  # the temperature above drives this chart too
    hot = _own_bars(at)["teacher at T = 20"]
    assert max(hot) < max(bars["teacher at T = 4"])
    assert _chart(at, "st_chart_own")["layout"]["title"]["text"] == "Soft targets of your image at T = 20"


@pytest.mark.parametrize(
    "name,content,words",
    [
        ("notes.png", b"these are not pixels", "not an image that can be read"),
        ("big.png", b"\x89PNG\r\n\x1a\n" + bytes(2 * 1024 * 1024 + 1), "the limit is 2 MB"),
        ("blank.png", None, "The image is empty"),
    ],
)
def test_bad_uploads_are_refused_and_the_page_stays_usable(name, content, words):
    if content is None:  # an all-black picture: an empty canvas
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.new("L", (280, 280), 0).save(buf, "PNG")
        content = buf.getvalue()
    at = _app()
    at.radio(key="st_own_source").set_value("upload").run()
    at.file_uploader(key="st_upload").set_value((name, content, "image/png")).run()
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith("Cannot use this image:"), [e.value for e in at.error]
    assert words in at.error[0].value
    assert not [c for c in at.get("plotly_chart") if c.proto.id.endswith("st_chart_own")]
    at.select_slider(key="st_T").set_value(10.0).run()  # the rest of the page still works
    assert not at.exception and _entropy_marker(at)[0] == 10.0
    at.file_uploader(key="st_upload").set_value(("one.png", _png_of_a_one(), "image/png")).run()
    assert not at.exception and not at.error and _own_bars(at)


def test_a_refused_upload_is_explained_in_chinese():
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["lang"] = "zh"
    at.run()
    at.switch_page("app_pages/soft_targets.py")
    at.run()
    at.radio(key="st_own_source").set_value("upload").run()
    assert at.file_uploader(key="st_upload").label == i18n.text("soft_targets.own.upload", "zh")
    at.file_uploader(key="st_upload").set_value(("坏.png", b"not a picture", "image/png")).run()
    assert not at.exception
    assert at.error[0].value == i18n.text(
        "soft_targets.own.refused",
        "zh",
        error=i18n.text("soft_targets.own.errors.not_image", "zh", name="坏.png", formats="PNG, JPEG, GIF, BMP, WebP"),
    )


def test_a_shared_link_opens_the_same_view_and_bad_values_fall_back_with_a_notice():
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()  # AppTest opens a page only after the app registered its navigation
    at.switch_page("app_pages/soft_targets.py")  # the link opens this page directly
    at.query_params.clear()  # then the link's own parameters
    at.query_params["T"] = "10"
    at.query_params["log"] = "true"
    at.query_params["hide_diagonal"] = "yes"
    at.run()
    assert not at.exception
    assert at.select_slider(key="st_T").value == 10.0
    assert at.toggle(key="st_log").value is True and at.toggle(key="st_hide_diag").value is True
    assert _current_bars(at, "10").sum() == pytest.approx(1.0, abs=1e-4)
    # moving T writes it back to the address bar
    at.select_slider(key="st_T").set_value(2.0).run()
    assert at.query_params["T"] == ["2"] or at.query_params["T"] == "2"

    bad = AppTest.from_file(APP, default_timeout=180)
    bad.run()  # AppTest opens a page only after the app registered its navigation
    bad.switch_page("app_pages/soft_targets.py")
    bad.query_params.clear()  # then the link's own parameters
    bad.query_params["T"] = "hot"
    bad.query_params["dataset"] = "imagenet"
    bad.run()
    assert not bad.exception
    assert bad.select_slider(key="st_T").value == 4.0 and bad.selectbox(key="st_dataset").value == "mnist-mini"
    warnings = " ".join(w.value for w in bad.warning)
    assert "hot" in warnings and "imagenet" in warnings

"""The Relations and Contrastive pages driven with AppTest: without a Lab run they show the
teacher and point to the Lab; N, the anchor, the relation, the map and tau change the
figures' data; the quick buttons start runs for the session; and after real one-epoch
runs on mnist-mini the distilled student's relations are closer to the teacher's than
the scratch student's (RKD), and its embeddings find their teacher counterparts more often
(in-batch contrastive). The teacher comes from the shared test cache."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from kd_app import i18n
from kd_core.config import Config

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def open_page(page: str, owner: str | None = None, job_id: int | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    if owner is not None:
        at.session_state["kd_session_id"] = owner
    if job_id is not None:
        at.session_state["kd_lab_job_id"] = job_id
    at.run()
    at.switch_page(f"app_pages/{page}.py")
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


def arr(v) -> np.ndarray:
    """A plotly array from the chart's JSON: a list, or a typed array {dtype, bdata, shape}."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        shape = v.get("shape")
        if isinstance(shape, str):
            shape = [int(s) for s in shape.split(",")]
        return (a.reshape(shape) if shape else a).astype(float)
    return np.array(v, dtype=float)


def z(spec: dict, trace: int = 0) -> np.ndarray:
    return arr(spec["data"][trace]["z"])


def helps_everywhere(at: AppTest) -> None:
    widgets = (
        list(at.selectbox)
        + list(at.slider)
        + list(at.select_slider)
        + list(at.number_input)
        + list(at.radio)
        + list(at.button)
    )
    for w in widgets:
        if w.key in ("kd_lang",) or (w.key or "").startswith(("rel_", "ct_")):
            assert w.help, w.label


def submit(method: str, owner: str):
    from kd_app import state

    return state.job_manager().submit(Config(dataset="mnist-mini", method=method, epochs=1), owner=owner)


@pytest.fixture(scope="module")
def runs():
    """One-epoch RKD and in-batch contrastive runs, trained side by side while the
    teacher-only tests run."""
    jobs = {"rkd": submit("rkd", "rel-rkd"), "contrastive": submit("contrastive", "rel-nce")}
    yield jobs
    for j in jobs.values():
        j.stop()


def wait(job):
    deadline = time.time() + 170
    while not job.done and time.time() < deadline:
        time.sleep(0.2)
    assert job.status == "finished", job.message
    return job


def test_relations_without_a_run_shows_the_teacher_and_its_controls_work(runs):
    at = open_page("relations")
    assert at.title[0].value.endswith("Relations")
    assert any("No Lab run" in i.value for i in at.info)
    assert any("lab" in link.proto.page for link in at.page_link)
    assert at.button(key="rel_quick_train").label.startswith("🚀 Train a quick RKD student")
    assert has_chart(at, "rel_mat_teacher") and has_chart(at, "rel_map_teacher")
    assert not has_chart(at, "rel_mat_distilled") and not has_chart(at, "rel_diff_distilled")
    helps_everywhere(at)
    m = z(chart(at, "rel_mat_teacher"))
    n = at.slider(key="rel_n").value
    assert m.shape == (n, n) and np.allclose(np.diag(m), 0) and np.allclose(m, m.T, atol=1e-5)
    ticks = chart(at, "rel_mat_teacher")["layout"]["xaxis"]["ticktext"]
    assert ticks == [str(c) for c in range(10)]  # class blocks, in order
    at.slider(key="rel_n").set_value(64).run()
    assert not at.exception and z(chart(at, "rel_mat_teacher")).shape == (64, 64)
    at.radio(key="rel_kind").set_value("angle").run()
    before = z(chart(at, "rel_mat_teacher"))
    assert np.nanmax(before) <= 1 + 1e-6 and np.nanmin(before) >= -1 - 1e-6
    at.number_input(key="rel_anchor").set_value(5).run()
    assert not at.exception and not np.allclose(z(chart(at, "rel_mat_teacher")), before)
    for kind in ("sp", "pkt"):
        at.radio(key="rel_kind").set_value(kind).run()
        assert not at.exception and z(chart(at, "rel_mat_teacher")).shape == (64, 64)
    assert np.allclose(z(chart(at, "rel_mat_teacher")).sum(1), 1.0, atol=1e-4)  # PKT rows are distributions
    pca = chart(at, "rel_map_teacher")["data"]
    assert len(pca) == 10 and sum(len(arr(t["x"])) for t in pca) == 1000  # the pool, one trace per class
    at.radio(key="rel_map").set_value("tsne").run()
    assert not at.exception
    assert not np.allclose(arr(chart(at, "rel_map_teacher")["data"][0]["x"]), arr(pca[0]["x"]))
    at.button(key="rel_new_batch").click().run()
    assert not at.exception


def test_contrastive_without_a_run_matches_the_teacher_with_itself(runs):
    at = open_page("contrastive")
    assert at.title[0].value.endswith("Contrastive")
    assert any("No Lab run" in i.value for i in at.info)
    helps_everywhere(at)
    for key in ("ct_sim_teacher", "ct_soft_teacher", "ct_anchor_bars", "ct_nce"):
        assert has_chart(at, key), key
    sim = z(chart(at, "ct_sim_teacher"))
    assert np.allclose(np.diag(sim), 1.0, atol=1e-5)  # positives on the diagonal
    retrieval = {m.label: m.value for m in at.metric}
    assert any(v == "100.0%" for k, v in retrieval.items() if k.startswith("Retrieval"))
    soft = z(chart(at, "ct_soft_teacher"))
    at.select_slider(key="ct_tau").set_value(0.5).run()
    assert not at.exception
    softer = z(chart(at, "ct_soft_teacher"))
    assert softer.max(1).mean() < soft.max(1).mean()  # a larger tau spreads each row's softmax
    bars = arr(chart(at, "ct_anchor_bars")["data"][0]["y"])
    at.number_input(key="ct_anchor").set_value(3).run()
    assert not np.allclose(arr(chart(at, "ct_anchor_bars")["data"][0]["y"]), bars)
    at.slider(key="ct_n").set_value(16).run()
    assert not at.exception and z(chart(at, "ct_sim_teacher")).shape == (16, 16)


def test_the_quick_buttons_start_runs_for_this_session(runs):
    from kd_app import state

    for page, key, method in (("relations", "rel_quick_train", "rkd"), ("contrastive", "ct_quick_crd", "crd")):
        at = open_page(page, owner=f"quick-{method}")
        at.button(key=key).click().run()
        assert not at.exception
        job = state.job_manager().get(at.session_state["kd_lab_job_id"], owner=f"quick-{method}")
        try:
            assert job is not None and job.config.method == method and job.config.epochs == 2
            assert at.button(key=key).disabled  # one run at a time
        finally:
            job.stop()


def test_after_an_rkd_run_the_distilled_relations_are_closer_to_the_teachers(runs):
    job = wait(runs["rkd"])
    at = open_page("relations", "rel-rkd", job.id)
    assert not at.error
    for key in ("rel_mat_scratch", "rel_mat_distilled", "rel_diff_scratch", "rel_diff_distilled", "rel_map_distilled"):
        assert has_chart(at, key), key
    gap = {who: np.abs(z(chart(at, f"rel_diff_{who}"))).mean() for who in ("scratch", "distilled")}
    assert gap["distilled"] < 0.8 * gap["scratch"], gap
    teacher, distilled = z(chart(at, "rel_mat_teacher")), z(chart(at, "rel_mat_distilled"))
    assert np.allclose(distilled - teacher, z(chart(at, "rel_diff_distilled")), atol=1e-4)
    metrics = {m.label: float(m.value) for m in at.metric}
    assert metrics["Distilled student: mean |difference|"] < metrics["Scratch student: mean |difference|"]
    table = at.dataframe[0].value
    assert list(table["loss"]) == ["RKD distance", "RKD angle", "SP", "PKT"]
    assert table.loc[0, "distilled / scratch"] < 1  # the loss RKD trained went down
    at.radio(key="rel_kind").set_value("angle").run()
    assert not at.exception and has_chart(at, "rel_diff_distilled")


def test_after_a_contrastive_run_the_distilled_student_finds_its_teacher_embeddings(runs):
    job = wait(runs["contrastive"])
    at = open_page("contrastive", "rel-nce", job.id)
    assert not at.error
    for key in ("ct_sim_scratch", "ct_sim_distilled", "ct_soft_scratch", "ct_soft_distilled", "ct_nce"):
        assert has_chart(at, key), key
    assert at.radio(key="ct_space").options == [
        "A linear map into the teacher's features",
        "The run's projection heads",
    ]

    def retrieval(who):
        return float(next(m.value for m in at.metric if m.label.startswith("Retrieval, 1,000") and who in m.label)[:-1])

    assert retrieval("distilled") > retrieval("scratch") + 5
    diag = {w: np.diag(z(chart(at, f"ct_sim_{w}"))).mean() for w in ("scratch", "distilled")}
    assert diag["distilled"] > diag["scratch"]
    at.radio(key="ct_space").set_value("heads").run()
    assert not at.exception and not at.error
    assert retrieval("distilled") > 10  # the heads InfoNCE trained align sample with sample


# ------------------------------------------------------------------ in Chinese
CJK = re.compile(r"[\u4e00-\u9fff]")
KEY_LIKE = re.compile(r"\b(relations|contrastive|roles|axes|datasets|status|methods)\.[a-z_]")


def everything_shown(at: AppTest) -> list[str]:
    """Every text a user can read: elements, widget labels, help texts and options, metrics,
    links, and the figures' titles, series, hover texts, axis titles and annotations."""
    out = [
        e.value
        for kind in ("title", "header", "subheader", "markdown", "caption", "info", "success", "warning", "error")
        for e in at.get(kind)
        if isinstance(getattr(e, "value", None), str)
    ]
    for kind in ("selectbox", "select_slider", "number_input", "button", "radio", "slider"):
        for w in at.get(kind):
            out += [w.label, w.help or ""] + [str(o) for o in getattr(w, "options", None) or []]
    out += [x for m in at.metric for x in (m.label, str(m.value), m.proto.help)]
    out += [x for link in at.page_link for x in (link.proto.label, link.proto.help)]
    for c in at.get("plotly_chart"):
        spec = json.loads(c.proto.spec)
        lay = spec["layout"]
        out.append(lay.get("title", {}).get("text", ""))
        out.append(lay.get("legend", {}).get("title", {}).get("text", ""))
        out += [tr.get("name", "") for tr in spec["data"]] + [tr.get("hovertemplate", "") for tr in spec["data"]]
        out += [lay[k].get("title", {}).get("text", "") or "" for k in lay if k.startswith(("xaxis", "yaxis"))]
        out += [a.get("text", "") for a in lay.get("annotations", [])]
    return [s for s in out if s]


def open_in_chinese(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["lang"] = "zh"
    at.run()
    at.switch_page(f"app_pages/{page}.py")
    at.run()
    assert not at.exception, at.exception
    return at


def check_all_chinese(at: AppTest, english: tuple[str, ...]) -> None:
    shown = everything_shown(at)
    assert not [s for s in shown if s in set(i18n.catalogue("zh")) or KEY_LIKE.search(s)]  # no raw key
    assert not [s for s in shown for w in english if w in s]
    assert sum(bool(CJK.search(s)) for s in shown) > 25


@pytest.mark.parametrize("page", ["relations", "contrastive"])
def test_the_page_in_chinese(page):
    def zh(key, **fmt):
        return i18n.text(key, "zh", **fmt)

    at = open_in_chinese(page)
    markdown = [m.value for m in at.markdown]
    captions = [c.value for c in at.caption]
    assert at.query_params["lang"] == "zh"
    if page == "relations":
        assert at.title[0].value == "🕸️ " + zh("relations.title")
        assert zh("relations.intro") in captions
        assert [i.value for i in at.info][0] == zh("relations.no_run")
        assert zh("relations.explain.distance") in markdown
        assert [h.value for h in at.subheader] == [
            zh("relations.matrices_header", kind=zh("relations.kinds.distance"), n=40),
            zh("relations.maps_header"),
        ]
        box = at.selectbox(key="rel_dataset")
        assert box.label == zh("relations.dataset") and box.help == zh("relations.dataset_help")
        assert f"mnist-mini — {zh('datasets.mnist-mini')}" in box.options
        kinds = ("distance", "angle", "sp", "pkt")
        assert at.radio(key="rel_kind").options == [zh(f"relations.kinds.{k}") for k in kinds]
        assert at.slider(key="rel_n").label == zh("relations.n")
        assert at.button(key="rel_quick_train").label == zh("relations.quick", epochs=2)
        mat = chart(at, "rel_mat_teacher")
        assert zh("relations.role.teacher") in mat["layout"]["title"]["text"]
        assert mat["data"][0]["hovertemplate"].startswith(zh("relations.hover.row"))
        assert mat["layout"]["xaxis"]["ticktext"] == [str(c) for c in range(10)]
        scatter = chart(at, "rel_map_teacher")
        assert scatter["layout"]["legend"]["title"]["text"].strip() == zh("axes.class")
        check_all_chinese(
            at,
            (
                "Relations",
                "Relational",
                "No Lab run",
                "Dataset",
                "Batch size",
                "Anchor",
                "Teacher",
                "teacher",
                "Distances",
                "test images",
                "embeddings",
                "class ",
                "row ",
            ),
        )
        # the controls still work, in Chinese
        at.radio(key="rel_kind").set_value("angle").run()
        at.slider(key="rel_n").set_value(64).run()
        assert not at.exception, at.exception
        assert zh("relations.explain.angle") in [m.value for m in at.markdown]
        assert at.subheader[0].value == zh("relations.matrices_header", kind=zh("relations.kinds.angle"), n=64)
        assert z(chart(at, "rel_mat_teacher")).shape == (64, 64)
        at.number_input(key="rel_anchor").set_value(5).run()
        assert not at.exception
        assert zh("relations.anchor_text", pos=5, image="", cls="").split("#")[0] in " ".join(
            m.value for m in at.markdown
        )
        check_all_chinese(at, ("Angles", "Anchor", "test image", "teacher"))
    else:
        assert at.title[0].value == "🧲 " + zh("contrastive.title")
        assert zh("contrastive.intro") in captions
        assert [i.value for i in at.info] == [zh("contrastive.no_run")]
        assert (
            zh("contrastive.nce_caption") in captions
            and zh("contrastive.layers", t_layer="embed", s_layer="embed") in captions
        )
        assert at.select_slider(key="ct_tau").label == zh("contrastive.tau")
        assert at.radio(key="ct_space").options == [zh("contrastive.spaces.linear")]
        itself = zh("contrastive.teacher_itself")
        labels = [m.label for m in at.metric]
        assert zh("contrastive.retrieval_pool", n=1000, who=itself) in labels
        assert zh("contrastive.mean_nce", tau=0.07, who=itself) in labels
        bars = chart(at, "ct_anchor_bars")
        assert [tr["name"] for tr in bars["data"]] == [itself]
        assert bars["data"][0]["marker"]["color"] == "#0072B2"  # still the teacher's colour
        assert bars["layout"]["xaxis"]["title"]["text"] == zh("contrastive.figure.teacher_j")
        assert bars["layout"]["yaxis"]["title"]["text"] == zh("contrastive.softmax_at", tau=0.07)
        assert [a["text"] for a in bars["layout"]["annotations"]] == [zh("contrastive.figure.positive")]
        nce = chart(at, "ct_nce")
        assert nce["layout"]["yaxis"]["title"]["text"] == zh("contrastive.nce_axis")
        assert nce["layout"]["xaxis"]["title"]["text"] == zh("contrastive.figure.anchor_i")
        check_all_chinese(
            at,
            (
                "Contrastive",
                "No Lab run",
                "Dataset",
                "Temperature",
                "Anchor",
                "Retrieval",
                "teacher",
                "positive",
                "Similarity",
                "softmax at",
                "class ",
            ),
        )
        # the controls still work, in Chinese
        soft = z(chart(at, "ct_soft_teacher"))
        at.select_slider(key="ct_tau").set_value(0.5).run()
        assert not at.exception, at.exception
        assert z(chart(at, "ct_soft_teacher")).max(1).mean() < soft.max(1).mean()
        assert zh("contrastive.mean_nce", tau=0.5, who=itself) in [m.label for m in at.metric]
        at.number_input(key="ct_anchor").set_value(3).run()
        at.slider(key="ct_n").set_value(16).run()
        assert not at.exception, at.exception
        head = zh("contrastive.anchor_title", anchor=3, cls="@").split("@")[0]
        assert chart(at, "ct_anchor_bars")["layout"]["title"]["text"].startswith(head)
        check_all_chinese(at, ("Anchor", "teacher", "softmax at", "InfoNCE of"))

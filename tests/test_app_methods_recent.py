"""The methods of 2022-2024 in the app, driven headless by AppTest: the Soft targets page's
logit-standardisation switch (the teacher's probabilities with and without z-scored logits
at the same T), and the Lab's live curve of CTKD's learned temperature."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from kd_app import i18n
from kd_core import losses, viz

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _page(page: str, lang: str = "en", query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    if lang != "en":
        at.query_params["lang"] = lang
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    at.switch_page(page)
    at.run()
    assert not at.exception, at.exception
    return at


def _chart(at: AppTest, key: str) -> dict:
    for c in at.get("plotly_chart"):
        if c.proto.id.endswith(key):
            return json.loads(c.proto.spec)
    raise AssertionError(f"no chart with key {key}")


def _bars(at: AppTest) -> dict[str, list[float]]:
    return {t["name"]: t["y"] for t in _chart(at, "st_chart_probs")["data"] if t["type"] == "bar"}


def softmax(z, T):
    z = np.asarray(z, dtype=np.float64) / T
    e = np.exp(z - z.max())
    return e / e.sum()


# ---------------------------------------------------------------- Soft targets


def test_the_standardisation_switch_shows_z_scored_probabilities_at_the_same_t():
    at = _page("app_pages/soft_targets.py")
    at.select_slider(key="st_T").set_value(2.0).run()
    plain = _bars(at)
    assert len(plain) == 2  # off by default: T = 1 and T = 2 only
    assert at.toggle(key="st_zscore").help
    at.toggle(key="st_zscore").set_value(True).run()
    assert not at.exception
    bars = _bars(at)
    name = "teacher at T = 2, standardised logits"
    assert list(bars)[:2] == list(plain) and name in bars
    # the new bars are softmax(zscore(z) / 2) of the teacher's logits on the image shown
    p1, p2, pz = (np.array(v) for v in bars.values())
    assert np.allclose(p2, list(plain.values())[1])
    # recover the logits' ranking from the plain bars: log p1 = z - const
    z = np.log(p1)
    zs = losses.zscore(torch.tensor(z)[None])[0].numpy()
    assert np.allclose(pz, softmax(zs, 2.0), atol=1e-4)
    assert np.argmax(pz) == np.argmax(p2)  # the same ranking...
    assert not np.allclose(pz, p2, atol=1e-3)  # ...another softness
    text = "\n".join(m.value for m in at.markdown)
    assert "Standardised logits" in text and "T·σ" in text
    # mirrored in the address bar, and a shared link opens with it on
    assert at.query_params.get("zscore") in ("1", ["1"], "true", ["true"])
    again = AppTest.from_file(APP, default_timeout=180)
    again.run()  # AppTest opens a page only after the app registered its navigation
    again.switch_page("app_pages/soft_targets.py")  # the shared link opens this page directly
    again.query_params.clear()  # then the link's own parameters
    again.query_params["zscore"] = "true"
    again.query_params["T"] = "2"
    again.run()
    assert not again.exception
    assert again.toggle(key="st_zscore").value and len(_bars(again)) == 3


def test_the_standardisation_switch_in_chinese():
    zh = i18n.catalogue("zh")
    at = _page("app_pages/soft_targets.py", lang="zh")
    at.toggle(key="st_zscore").set_value(True).run()
    assert not at.exception
    assert at.toggle(key="st_zscore").label == zh["soft_targets.zscore"]
    assert any("标准化" in n for n in _bars(at))
    assert any("σ" in m.value and "标准化" in m.value for m in at.markdown)


# ---------------------------------------------------------------- the Lab: CTKD's learned T


def test_learned_temperature_figure_draws_t_and_lambda_per_step():
    steps = [{"step": i, "losses": {"kd": 1.0}, "tracked": {"T": 15.0 - 0.1 * i, "lambda": 0.02 * i}} for i in range(5)]
    fig = viz.learned_temperature_curve(steps, "Learned T")
    assert [tr.name for tr in fig.data] == ["learned temperature T", "reversal weight λ"]
    assert list(fig.data[0].y) == [15.0 - 0.1 * i for i in range(5)]
    assert fig.data[1].yaxis == "y2"
    assert len(viz.learned_temperature_curve([{"step": 1, "losses": {}}]).data[0].x) == 0


def _poll(at: AppTest, until, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.5)
        at.run()
        assert not at.exception
        if until(at):
            return
    pytest.fail("the run did not reach the expected state in time")


def _has_chart(at: AppTest, key: str) -> bool:
    return any(c.proto.id.endswith(key) for c in at.get("plotly_chart"))


def test_the_lab_draws_ctkds_learned_temperature_live_and_reports_the_final_t():
    at = _page("app_pages/lab.py")
    at.selectbox(key="lab_dataset").set_value("digits").run()
    at.selectbox(key="lab_method").set_value("ctkd").run()
    assert not at.exception
    assert at.select_slider(key="lab_T").disabled  # the temperature is learned, not set
    assert "sigma" in " ".join(e.value for e in at.get("latex") if hasattr(e, "value"))
    at.number_input(key="lab_epochs").set_value(3).run()
    at.button(key="lab_train").click().run()
    _poll(at, lambda a: _has_chart(a, "lab_T_chart"))  # live, while the loss curves grow
    _poll(at, lambda a: len(a.get("dataframe")) > 0)
    spec = _chart(at, "lab_T_chart")
    T = [y for tr in spec["data"] if tr["name"] == "learned temperature T" for y in tr["y"]]
    assert len(T) > 20 and abs(T[-1] - T[0]) > 0.05
    assert any(f"{T[-1]:.2f}" in c.value for c in at.caption)  # the final T, in words
    assert _has_chart(at, "lab_loss_chart")


@pytest.mark.parametrize("name,symbol", [("dist", r"\rho"), ("ls-kd", r"\mathcal{Z}")])
def test_dist_and_ls_kd_run_from_the_lab(name, symbol):
    at = _page("app_pages/lab.py")
    at.selectbox(key="lab_dataset").set_value("digits").run()
    at.selectbox(key="lab_method").set_value(name).run()
    assert not at.exception and not at.error
    assert symbol in " ".join(e.value for e in at.get("latex") if hasattr(e, "value"))
    assert at.slider(key="lab_alpha").disabled == (name == "dist")  # DIST keeps the full CE
    at.number_input(key="lab_epochs").set_value(1).run()
    at.button(key="lab_train").click().run()
    _poll(at, lambda a: len(a.get("dataframe")) > 0)
    table = at.get("dataframe")[0].value
    assert table.loc["distilled student", "test accuracy"] > 0.3
    assert not _has_chart(at, "lab_T_chart")  # only CTKD learns a temperature

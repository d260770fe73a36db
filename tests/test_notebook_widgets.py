"""The tour's interactive cells (kd_notebook), driven as a reader drives them: set a slider's
value, press a button (``Button.click()`` calls its handlers), and check that the figures and
numbers change as they should — and that they are the engine's numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kd_core import losses, methods
from kd_notebook import Experiments, LossDecomposition, SoftTargets, TrainPanel

CLASSES = [str(c) for c in range(10)]


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 10, generator=g) * 4
    return z, z.argmax(1)


def test_temperature_slider_flattens_the_bars_and_moves_the_entropy_marker(logits):
    z, y = logits
    view = SoftTargets(z.numpy(), y.numpy(), CLASSES, index=5, temperature=1.0)
    bars_before = np.array(view.bars.data[0].y)
    h_before = view.entropy_now
    marker_before = view.entropy.data[1].x[0]  # the current-T marker of "this image"
    view.temperature.value = 20.0
    bars_after = np.array(view.bars.data[0].y)
    assert bars_after.max() < bars_before.max() and bars_after.min() > bars_before.min()
    assert view.entropy_now > h_before
    assert view.entropy.data[1].x[0] == pytest.approx(20.0) != marker_before
    # the bars are the engine's softmax(z / T) of the chosen image
    expected = losses.softmax_t(z[5:6].double(), 20.0)[0].numpy()
    np.testing.assert_allclose(bars_after, expected, rtol=1e-9)
    assert "T = 20.00" in view.readout.value and f"{view.entropy_now:.2f} bits" in view.readout.value
    # another image, and the log scale
    view.image.value = 7
    np.testing.assert_allclose(view.bars.data[0].y, losses.softmax_t(z[7:8].double(), 20.0)[0].numpy(), rtol=1e-9)
    view.log.value = True
    assert view.bars.layout.yaxis.type == "log"
    # entropy is bounded by the uniform's
    view.temperature.value = 40.0
    assert view.entropy_now <= math.log2(10) + 1e-9


def test_alpha_and_t_sliders_recompute_the_loss_terms_with_the_engine(logits):
    z, y = logits
    zs = torch.randn(64, 10, generator=torch.Generator().manual_seed(1))
    view = LossDecomposition(zs, z, y, temperature=4.0, alpha=0.9)
    ce = F.cross_entropy(zs, y).item()
    for alpha, T in ((0.9, 4.0), (0.0, 4.0), (1.0, 2.0), (0.3, 10.0)):
        view.alpha.value, view.temperature.value = alpha, T
        kd = losses.kd_loss(zs, z, view.temperature.value).item()
        terms = view.terms()
        assert terms["(1 - alpha) CE"] == pytest.approx((1 - alpha) * ce, rel=1e-6)
        assert terms["alpha T^2 KL"] == pytest.approx(alpha * kd, rel=1e-6)
        assert list(view.figure.data[0].y) == pytest.approx(list(terms.values()))
        assert (
            view.formula.value
            == "$$" + methods.get("kd").formula_latex(temperature=round(view.temperature.value, 2), alpha=alpha) + "$$"
        )
    view.alpha.value = 0.0
    assert view.terms()["total L"] == pytest.approx(ce, rel=1e-6)  # alpha = 0: the labels alone


def test_method_picker_is_the_registry_and_shows_each_methods_parameters():
    panel = TrainPanel(dataset="digits")
    assert [v for _, v in panel.method.options] == list(methods.METHODS)
    for name, m in methods.METHODS.items():
        panel.method.value = name
        assert list(panel.param_sliders) == [p.name for p in m.params]
        assert panel.alpha.disabled == (not m.uses_alpha)
        for p in m.params:
            assert panel.param_sliders[p.name].value == pytest.approx(p.default)
    panel.method.value = "dkd"
    panel.param_sliders["nckd_weight"].value = 2.0
    assert panel.config().params["nckd_weight"] == pytest.approx(2.0)


def test_bad_settings_are_refused_in_the_panel_without_a_run():
    panel = TrainPanel(dataset="no-such-dataset")
    panel.train_button.click()
    assert panel.thread is None and "Cannot train" in panel.status.value and "no-such-dataset" in panel.status.value
    assert not panel.train_button.disabled  # still usable


@pytest.mark.slow
def test_train_button_runs_in_the_background_with_live_curves_and_stop_keeps_what_was_done():
    panel = TrainPanel(dataset="digits", method="kd", epochs=2, labeled_fraction=0.1)
    panel.train_button.click()
    assert panel.running or panel.result is not None  # the click returns at once: the run is in a thread
    res = panel.wait(600)
    assert res["status"] == "finished"
    assert panel.progress.value == panel.progress.max > 0
    assert list(panel.accuracy.data[0].x) == [1, 2]  # one point per epoch, in place
    assert len(panel.losses.data) >= 2  # the student's terms and the scratch baseline's CE
    assert res["student"]["test_accuracy"] > 0.3  # well above chance (10%) after 2 epochs on digits
    assert "finished" in panel.status.value and "gain" in panel.status.value
    assert not panel.train_button.disabled and panel.stop_button.disabled

    panel.epochs.value = 20
    panel.train_button.click()
    while panel.progress.value < 3 and panel.running:
        panel.thread.join(0.05)
    panel.stop_button.click()
    res = panel.wait(600)
    assert res["status"] == "stopped"
    assert 3 <= res["steps"] < res["total_steps"] == panel.progress.max  # ended early, the steps done kept
    assert res["student"]["test_accuracy"] > 0  # the partial student is evaluated
    assert "stopped" in panel.status.value


@pytest.mark.slow
def test_experiment_buttons_show_their_results_when_they_finish():
    ex = Experiments(dataset="digits", epochs=2, missing=3)
    ex.fraction.value = 0.1
    ex.few_button.click()
    ex.wait(600)
    res = ex.results["few_labels"]
    s, b = res["student"]["test_accuracy"], res["baseline"]["test_accuracy"]
    assert f"{s:.1%}" in ex.status.value and f"{b:.1%}" in ex.status.value
    assert len(ex.figure.data) == 2  # distilled and scratch curves
    ex.missing_button.click()
    ex.wait(600)
    runs = ex.results["missing_class"]
    assert set(runs) == {2.0, 20.0}
    assert runs[2.0]["baseline"]["per_class_accuracy"][3] == 0.0  # never saw a 3: never answers 3
    assert len(ex.figure.data) == 3 and "Never-seen class 3" in ex.status.value

"""Config: validation with clear messages, and exact round trips through dict, JSON and
URL query parameters (the shareable link)."""

import pytest

from kd_core import methods
from kd_core.config import Config
from kd_core.errors import ConfigError


def test_defaults_are_valid_and_resolve_presets():
    cfg = Config().resolved().validate()
    assert cfg.teacher and cfg.student and cfg.teacher != cfg.student
    assert cfg.teacher_epochs > 0


def test_round_trips():
    cfg = Config(
        dataset="digits",
        method="dkd",
        temperature=2.5,
        alpha=0.3,
        params={"nckd_weight": 4.0},
        epochs=7,
        seed=11,
        labeled_fraction=0.25,
        omit_class=3,
        baseline=False,
    )
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_json(cfg.to_json()) == cfg
    back, notices = Config.from_query(cfg.to_query())
    assert notices == [] and back == cfg


def test_query_only_carries_changes_and_bad_values_fall_back_with_a_notice():
    assert Config().to_query() == {}
    cfg, notices = Config.from_query({"temperature": "-3", "alpha": "0.5", "epochs": "many", "omit_class": "42"})
    assert cfg.temperature == Config().temperature and cfg.alpha == 0.5
    assert cfg.epochs == Config().epochs and cfg.omit_class is None
    assert len(notices) == 3 and any("temperature" in n for n in notices)


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("temperature", 0.0, "T must be > 0"),
        ("temperature", float("nan"), "must be a number"),
        ("alpha", 2.0, "alpha must be in [0, 1]"),
        ("epochs", 0, "epochs must be in"),
        ("epochs", 2.5, "whole number"),
        ("labeled_fraction", 0.0, "labelled fraction"),
        ("omit_class", -1, "omit_class must be in"),
        ("dataset", "nope", "unknown dataset"),
        ("method", "nope", "unknown method"),
        ("batch_size", 0, "batch_size"),
    ],
)
def test_validation_messages(field, value, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        Config(**{field: value}).validate()


def test_every_method_has_what_the_ui_needs():
    for m in methods.METHODS.values():
        # the formula defines L (on one line, or the first of aligned lines)
        assert m.title and m.summary and m.formula.removeprefix(r"\begin{aligned}").startswith(r"\mathcal{L}")
        latex = m.formula_latex(4.0, 0.9, m.defaults())
        assert "<" not in latex.replace(r"\langle", ""), (m.name, latex)  # every placeholder filled
        for p in m.params:
            assert p.low <= p.default <= p.high and p.help
    kd = methods.get("kd").formula_latex(2.0, 0.25)
    assert "0.75" in kd and "0.25" in kd and "2^2" in kd

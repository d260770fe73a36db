"""The text catalogues: English and Simplified Chinese hold the same keys with the same
placeholders, every key the source asks for exists, and t() falls back sensibly."""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pytest

from kd_app import i18n

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "app.py", *sorted((ROOT / "app_pages").glob("*.py")), *sorted((ROOT / "kd_app").glob("*.py"))]


def _placeholders(text: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name}
    except ValueError:  # LaTeX braces in a text that is never formatted
        return set()


def _used_keys() -> tuple[set[str], set[str]]:
    """(exact keys, key prefixes) that the source passes to t(): literal first arguments,
    the literal start of f-strings and of "prefix." + name concatenations, and string
    literals that are catalogue keys chosen in a variable (e.g. key = "lesson.s5.result")."""
    sections = {k.split(".")[0] for k in i18n.catalogue("en")}
    exact, prefixes = set(), set()
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_fstrings = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "t"
                and node.args
            ):
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    exact.add(arg.value)
                elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                    prefixes.add(arg.values[0].value)
                elif isinstance(arg, ast.BinOp) and isinstance(arg.left, ast.Constant):
                    prefixes.add(arg.left.value)
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in in_fstrings
                and re.fullmatch(r"[a-z0-9_-]+(\.[a-z0-9_-]+)+", node.value)
                and node.value.split(".")[0] in sections
                and not node.value.endswith(".py")
            ):
                exact.add(node.value)
    return exact, prefixes


def test_both_catalogues_have_every_key():
    en, zh = i18n.catalogue("en"), i18n.catalogue("zh")
    assert set(en) - set(zh) == set(), "missing in zh.json"
    assert set(zh) - set(en) == set(), "missing in en.json"
    assert all(v.strip() for v in en.values()) and all(v.strip() for v in zh.values())


def test_placeholders_match_between_languages():
    en, zh = i18n.catalogue("en"), i18n.catalogue("zh")
    bad = {k: (_placeholders(en[k]), _placeholders(zh[k])) for k in en if _placeholders(en[k]) != _placeholders(zh[k])}
    assert not bad


def test_chinese_texts_are_translated():
    en, zh = i18n.catalogue("en"), i18n.catalogue("zh")
    cjk = re.compile(r"[\u4e00-\u9fff]")
    long_untranslated = [
        k
        for k in en
        if len(en[k]) > 25 and not cjk.search(zh[k]) and not k.startswith(("lesson.s3.col_", "lesson.s3.grad_"))
    ]
    assert not long_untranslated


def test_every_key_used_in_the_source_exists():
    en, zh = i18n.catalogue("en"), i18n.catalogue("zh")
    exact, prefixes = _used_keys()
    assert exact, "no t() calls found"
    missing = sorted(k for k in exact if k not in en or k not in zh)
    assert not missing
    dangling = sorted(p for p in prefixes if not any(k.startswith(p) for k in en))
    assert not dangling


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_formatted_texts_format(lang):
    """Every text with placeholders formats with dummy values (no stray braces)."""
    cat = i18n.catalogue(lang)
    for _key, text in cat.items():
        names = _placeholders(text)
        if names:
            text.format(**{n: 1 for n in names})


def test_t_falls_back_to_english_then_to_the_key():
    assert i18n.text("lesson.title", "zh") != i18n.text("lesson.title", "en")
    assert i18n.text("no.such.key", "zh") == "no.such.key"
    assert i18n.text("roles.teacher_line", "zh", acc=97.25) == "教师 97.2%"
    assert i18n.t("lesson.title") == i18n.text("lesson.title", "en")  # outside a Streamlit run: English


def test_figures_from_the_engine_are_relabelled_in_chinese():
    from kd_core import viz

    epochs = [
        {"epoch": 1, "student_acc": 0.5, "baseline_acc": 0.4},
        {"epoch": 2, "student_acc": 0.7, "baseline_acc": 0.5},
    ]
    fig = i18n.localise_figure(viz.accuracy_curves(epochs, 0.98, 2, "t"), "zh")
    zh = i18n.catalogue("zh")
    assert [tr.name for tr in fig.data] == [zh["roles.distilled"], zh["roles.scratch"]]
    assert fig.layout.xaxis.title.text == zh["axes.epoch"] and fig.layout.yaxis.title.text == zh["axes.test_accuracy"]
    same = i18n.localise_figure(viz.accuracy_curves(epochs, 0.98, 2, "t"), "en")
    assert [tr.name for tr in same.data] == ["distilled student", "scratch student"]


def test_per_page_catalogues_may_not_redefine_a_key(tmp_path, monkeypatch):
    import json

    (tmp_path / "en").mkdir()
    (tmp_path / "en.json").write_text(json.dumps({"a": {"b": "x"}}), encoding="utf-8")
    (tmp_path / "en" / "page.json").write_text(json.dumps({"a": {"b": "y"}}), encoding="utf-8")
    monkeypatch.setattr(i18n, "LOCALES", tmp_path)
    i18n.catalogue.cache_clear()
    try:
        with pytest.raises(ValueError, match="a.b"):
            i18n.catalogue("en")
    finally:
        monkeypatch.undo()
        i18n.catalogue.cache_clear()


# Streamlit calls whose first argument (or label/help/body/text) is text a user reads
_TEXT_CALLS = {
    "markdown",
    "caption",
    "info",
    "warning",
    "error",
    "success",
    "header",
    "subheader",
    "title",
    "write",
    "button",
    "toggle",
    "checkbox",
    "slider",
    "select_slider",
    "selectbox",
    "radio",
    "multiselect",
    "number_input",
    "text_input",
    "text_area",
    "metric",
    "expander",
    "tabs",
    "download_button",
    "page_link",
    "progress",
    "spinner",
    "status",
    "form_submit_button",
    "popover",
    "file_uploader",
    "toast",
}
_WORD = re.compile(r"[A-Za-z]{3,}")
_NOT_PROSE = re.compile(r"\$[^$]*\$|:[a-z_]+:|\*\*|KD Playground")  # LaTeX, icons, markup, the product's name


def _prose(node) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return not node.value.endswith(".py") and bool(_WORD.search(_NOT_PROSE.sub("", node.value)))
    if isinstance(node, ast.JoinedStr):
        parts = [v.value for v in node.values if isinstance(v, ast.Constant)]
        return not (parts and parts[0].startswith("app_pages/")) and any(
            _WORD.search(_NOT_PROSE.sub("", p)) for p in parts
        )
    return False


def test_pages_take_their_words_from_the_catalogues():
    """No English sentence typed straight into a Streamlit call: it would stay English in
    Chinese. (Page paths, formulas and the product's name are not prose.)"""
    literals = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _TEXT_CALLS:
                texts = node.args[:1] + [k.value for k in node.keywords if k.arg in ("label", "help", "body", "text")]
                literals += [f"{path.name}:{node.lineno}: {ast.unparse(a)[:60]}" for a in texts if _prose(a)]
    assert not literals


def test_method_texts_live_in_the_registry_and_every_one_has_chinese():
    """The English of each method's title, summary and parameters is the registry's
    (kd_core/methods.py), never a copy in the English catalogue; Chinese translates each of
    them, keyed by method and parameter name, so a new method without Chinese fails here."""
    from kd_core import methods

    en, zh = i18n.catalogue("en"), i18n.catalogue("zh")
    missing = []
    for m in methods.all_methods().values():
        keys = {f"methods.{m.name}": m.title, f"lab.methods.{m.name}.summary": m.summary}
        for p in m.params:
            keys[f"lab.params.{m.name}.{p.name}.label"] = getattr(p, "label", "") or p.name
            keys[f"lab.params.{m.name}.{p.name}.help"] = p.help
        for key, english in keys.items():
            assert en[key] == english, key
            if not zh.get(key, "").strip() or key.endswith(".help") and zh[key] == english:
                missing.append(key)
    assert not missing, f"registered methods or parameters without Chinese text: {missing}"
    # and no Chinese text for a method or parameter that is not registered (a stale translation)
    registered = set(i18n.registry_texts())
    stale = [k for k in zh if k.startswith(("lab.methods.", "lab.params.", "methods.")) and k not in registered]
    assert not stale


def test_the_english_files_hold_no_copy_of_a_method_text(tmp_path, monkeypatch):
    import json
    import shutil

    shutil.copytree(i18n.LOCALES, tmp_path / "locales")
    page = tmp_path / "locales" / "en" / "lab.json"
    d = json.loads(page.read_text(encoding="utf-8"))
    d["lab"]["methods"] = {"kd": {"summary": "a copy"}}
    page.write_text(json.dumps(d), encoding="utf-8")
    monkeypatch.setattr(i18n, "LOCALES", tmp_path / "locales")
    i18n.catalogue.cache_clear()
    try:
        with pytest.raises(ValueError, match="lab.methods.kd.summary"):
            i18n.catalogue("en")
    finally:
        monkeypatch.undo()
        i18n.catalogue.cache_clear()

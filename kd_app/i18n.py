"""UI text in English and Simplified Chinese, from per-language catalogues.

``t("lesson.title")`` returns the text of a key in the session's language; keyword
arguments fill ``{placeholders}`` (``t("x", acc=97.1)`` with ``"{acc:.1f}%"``). A key
missing from the current language falls back to English, then to the key itself, so a
forgotten translation shows up as readable English rather than a crash.

The catalogues are ``kd_app/locales/<lang>.json`` plus one file per page in
``kd_app/locales/<lang>/<page>.json``, merged: nested objects whose paths are the keys
(``{"lesson": {"title": ...}}`` holds ``lesson.title``); two files may not define the same key. ``tests/test_i18n.py``
checks that both have the same keys and that every ``t("...")`` in the source exists.

The language is chosen in the sidebar (``language_selector``), kept in
``st.session_state["kd_lang"]`` and mirrored in the URL (``?lang=zh``), so it survives page
switches and a shared link opens in the same language.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import streamlit as st

LANGUAGES = {"en": "English", "zh": "简体中文"}
DEFAULT = "en"
KEY = "kd_lang"  # session_state key (and the selector's widget key)
SHADOW = "_kd_lang"  # a copy that outlives the widget's state
PARAM = "lang"  # query parameter
DRAWN = "_kd_lang_drawn"  # the language the last run drew its widgets in
LOCALES = Path(__file__).resolve().parent / "locales"


def _flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, path + "."))
        else:
            out[path] = str(v)
    return out


def registry_texts() -> dict[str, str]:
    """The English texts of every registered method, read from the registry
    (``kd_core.methods``), the one place they are written: ``methods.<name>`` (title),
    ``lab.methods.<name>.summary`` and ``lab.params.<name>.<param>.label`` / ``.help``.
    The English catalogue is built on them; other languages translate the same keys
    (Chinese: all in ``zh/lab.json``, so a new method's Chinese goes in that one file)."""
    from kd_core import methods

    out: dict[str, str] = {}
    for m in methods.all_methods().values():
        out[f"methods.{m.name}"] = m.title
        out[f"lab.methods.{m.name}.summary"] = m.summary
        for p in m.params:
            out[f"lab.params.{m.name}.{p.name}.label"] = getattr(p, "label", "") or p.name
            out[f"lab.params.{m.name}.{p.name}.help"] = p.help
    return out


@cache
def catalogue(lang: str) -> dict[str, str]:
    """The flattened catalogue of ``lang`` (``{"lesson.title": "..."}``), from its main file
    and its per-page files; English also from the method registry (``registry_texts``),
    which its files may not repeat."""
    out: dict[str, str] = registry_texts() if lang == DEFAULT else {}
    for path in [LOCALES / f"{lang}.json", *sorted((LOCALES / lang).glob("*.json"))]:
        with open(path, encoding="utf-8") as fh:
            part = _flatten(json.load(fh))
        clash = sorted(set(part) & set(out))
        if clash:
            raise ValueError(
                f"{path.name} defines keys already defined elsewhere (method texts live in kd_core/methods.py): "
                f"{clash[:5]}"
            )
        out.update(part)
    return out


@cache
def _figure_texts(lang: str) -> dict[str, str]:
    """English text -> this language, for the ``roles`` and ``axes`` sections and any
    ``figure`` section (top level, or a page's: ``relations.figure.*``)."""
    en, here = catalogue(DEFAULT), catalogue(lang)

    def wanted(key: str) -> bool:
        parts = key.split(".")
        return parts[0] in ("roles", "axes", "figure") or (len(parts) > 2 and parts[1] == "figure")

    return {en[k]: here[k] for k in en if wanted(k) and "{" not in en[k]}


def localise_figure(fig, language: str | None = None):
    """Translate the English texts that ``kd_core.viz`` writes into a figure (trace names,
    axis titles, annotations) when they are in the ``roles``, ``axes`` or a ``figure``
    section; ``kd_core`` stays free of the UI's languages. Returns the figure."""
    language = language or lang()
    if language == DEFAULT:
        return fig
    table = _figure_texts(language)

    def tr(value):
        return table.get(value, value) if isinstance(value, str) else value

    for trace in fig.data:
        if getattr(trace, "name", None):
            trace.name = tr(trace.name)
    layout = fig.layout
    for name in dir(layout):
        if name.startswith(("xaxis", "yaxis")):
            axis = getattr(layout, name, None)
            if axis is not None and getattr(axis, "title", None) is not None and axis.title.text:
                axis.title.text = tr(axis.title.text)
    for ann in layout.annotations or ():
        ann.text = tr(ann.text)
    return fig


def lang() -> str:
    """The session's language: the selector's value (or its shadow copy), else the link's ``?lang=``, else English."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    if get_script_run_ctx() is None:  # outside a script run (plain import, notebook, a format_func called later)
        return DEFAULT
    ss = st.session_state
    value = ss.get(KEY)
    if value in LANGUAGES:
        ss[SHADOW] = value
        return value
    # The selector's widget state is gone when a run did not draw it (Streamlit drops the
    # state of widgets it does not draw): the shadow copy keeps the choice.
    if ss.get(SHADOW) in LANGUAGES:
        return ss[SHADOW]
    q = st.query_params.get(PARAM)  # a new session: the link's language
    if q in LANGUAGES:
        ss[SHADOW] = q
        return q
    return DEFAULT


def text(key: str, language: str, **fmt) -> str:
    """``t`` for an explicit language."""
    raw = catalogue(language).get(key)
    if raw is None:
        raw = catalogue(DEFAULT).get(key, key)
    if not fmt:
        return raw
    try:
        return raw.format(**fmt)
    except (KeyError, IndexError, ValueError):
        return catalogue(DEFAULT).get(key, key).format(**fmt)


def t(key: str, **fmt) -> str:
    """The text of ``key`` in the session's language, ``{placeholders}`` filled from ``fmt``."""
    return text(key, lang(), **fmt)


def localise_pages(pages: list) -> list:
    """Give the navigation's pages their titles in the session's language, from the keys
    ``nav.<url_path>`` (pages without a key keep their title)."""
    for page in pages:
        key = f"nav.{getattr(page, '_url_path', '')}"
        if key in catalogue(DEFAULT) and hasattr(page, "_title"):
            page._title = t(key)
    return pages


def language_selector() -> str:
    """The sidebar's language switch. The choice lives in session_state (every page's run
    draws this widget, so it persists across pages) and in the URL's ``lang`` parameter."""
    bad = st.query_params.get(PARAM)
    first = "_kd_lang_checked" not in st.session_state
    st.session_state["_kd_lang_checked"] = True
    if KEY not in st.session_state or st.session_state[KEY] not in LANGUAGES:
        st.session_state[KEY] = lang()
    choice = st.radio(
        t("sidebar.language"),
        list(LANGUAGES),
        key=KEY,
        horizontal=True,
        format_func=LANGUAGES.get,
        help=t("sidebar.language_help"),
    )
    if st.session_state.get(DRAWN, choice) != choice:
        relabel_widgets()
    st.session_state[DRAWN] = choice
    if first and bad is not None and bad not in LANGUAGES:
        st.warning(t("sidebar.bad_language", value=bad, default=LANGUAGES[DEFAULT]))
    want = None if choice == DEFAULT else choice
    if st.query_params.get(PARAM) != want:
        if want is None:
            del st.query_params[PARAM]
        else:
            st.query_params[PARAM] = want
    return choice


def relabel_widgets() -> None:
    """After a language switch, give every choice widget its value again so that the browser
    shows the option's label in the new language.

    Streamlit's browser side keeps a selectbox's (radio's, select slider's, multiselect's)
    value as the *label* of the chosen option and sends that label back on every rerun. After
    a switch the labels are translated: the old English label matches no option any more and
    came back as the value itself (the Lab's method fell to the student alone, its dataset
    became "mnist-mini — MNIST mini (...)"). Setting the value through session_state makes
    the server send the new label. Called on the switch's run, before the page draws its
    widgets; the values read here are still decoded with the labels of the previous run.
    Buttons and switches (True/False), uploads and tables are left alone: their values are not
    labels, and some of them may not be set."""
    ss = st.session_state
    for key in list(ss.keys()):
        if not isinstance(key, str) or key.startswith("_") or key in (KEY, SHADOW):
            continue
        try:
            value = ss[key]
        except KeyError:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float, list, tuple)):
            continue
        if isinstance(value, (list, tuple)) and not all(isinstance(v, (str, int, float)) for v in value):
            continue
        ss[key] = value

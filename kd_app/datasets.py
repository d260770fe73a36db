"""The one dataset picker every page uses: datasets that cannot load here (no files, no
network) are marked in the list, and choosing one shows why and where its files go —
translated, without raw exception text or a server path (``kd_core.data.availability``)."""

from __future__ import annotations

import streamlit as st

from kd_core import data

from . import i18n
from .i18n import t


def title(name: str, language: str | None = None) -> str:
    key = "datasets." + name
    if key in i18n.catalogue(i18n.DEFAULT):
        return i18n.text(key, language or i18n.lang())
    return data.DATASETS[name].title


def availability(name: str) -> data.Availability:
    return data.availability(name)


def labels(language: str | None = None) -> dict[str, str]:
    """Option labels, fixed now (Streamlit may call a ``format_func`` outside this run):
    ``name — title``, and a mark on those that cannot load here."""
    language = language or i18n.lang()
    out = {}
    for name in data.DATASETS:
        av = availability(name)
        label = f"{name} — {title(name, language)}"
        if not av.available:
            label += " — " + i18n.text("picker.unavailable_mark", language)
        elif av.why == "download":
            label += " — " + i18n.text("picker.download_mark", language)
        out[name] = label
    return out


def reason(av: data.Availability) -> str:
    """Why a dataset cannot be used here and how to make it available, in the session's
    language (markdown; the folder relative to the data folder, never the server's path)."""
    text = t("picker.why_offline", name=av.name, files=av.files, sub=av.subfolder)
    if av.package:
        text += " " + t("picker.why_package", package=av.package)
    return text


def unreadable(name: str) -> str:
    """The message for files that are there but could not be read (no raw exception text)."""
    av = availability(name)
    return t("picker.unreadable", name=name, sub=av.subfolder or "")


def picker(label: str, key: str, *, where=None, help: str | None = None, **kwargs) -> str:
    """A selectbox of every dataset (keyed ``key``) with the unavailable ones marked;
    ``where`` is the container (default: the current one). Returns the chosen name; call
    :func:`usable` or :func:`notice` to handle a choice that cannot load."""
    where = where if where is not None else st
    names = list(data.DATASETS)
    if st.session_state.get(key) not in names:
        st.session_state.pop(key, None)
    return where.selectbox(label, names, key=key, format_func=labels().get, help=help, **kwargs)


def notice(name: str, where=None) -> bool:
    """Draw a warning when ``name`` cannot load here; True when it can."""
    av = availability(name)
    if av.available:
        return True
    (where if where is not None else st).warning(reason(av), icon="📦")
    return False


def load(name: str, where=None):
    """``state.dataset(name)``, or None after a translated notice (files missing or
    unreadable): the page falls back or stops, and stays usable."""
    from kd_core.errors import KDError

    from . import state

    if not notice(name, where):
        return None
    try:
        return state.dataset(name)
    except KDError:
        (where if where is not None else st).warning(unreadable(name), icon="📦")
        return None

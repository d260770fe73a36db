"""Shareable links: a page's settings mirrored in the URL's query parameters.

Like TensorFlow Playground, the address bar always holds the page's current settings
(only those that differ from the defaults), so a lecturer can copy it and everyone who
opens it sees the same page with the same settings. On a page's first run in a session
the values in the link are restored into the widgets' session_state keys, before the
widgets are created; a bad value falls back to its default with a visible notice.

A page with simple widgets adopts it in a few lines, before its widgets::

    from kd_app import links
    links.sync("soft-targets", [
        links.choice("dataset", "st_dataset", list(data.DATASETS), "mnist-mini"),
        links.number("T", "st_T", 4.0, options=TEMPERATURES),
        links.flag("log", "st_log", False),
    ])

The Lab goes through ``Config.to_query`` / ``Config.from_query`` instead
(``restore_lab`` before its widgets, ``write_lab(cfg)`` after them), so its links are the
same as the CLI's config and validated by the same rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import streamlit as st

from . import i18n
from .i18n import t

_DONE = "_kd_links_restored_"
_SHADOW = "_kd_links_keep_"


# ------------------------------------------------------------------ generic fields
@dataclass(frozen=True)
class Field:
    """One setting: query parameter ``name`` <-> session_state (widget) ``key``."""

    name: str
    key: str
    default: Any
    parse: Callable[[str], tuple[Any, str | None]]  # raw -> (value, notice or None); ValueError if bad
    fmt: Callable[[Any], str] = str


def _fmt_num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def number(
    name: str,
    key: str,
    default: float | int,
    low: float | None = None,
    high: float | None = None,
    integer: bool = False,
    options: Sequence[float] | None = None,
) -> Field:
    """A number in [low, high]; with ``options`` (a select_slider's values), a value in
    their range snaps to the nearest one (with a notice)."""
    if options is not None:
        low = min(options) if low is None else low
        high = max(options) if high is None else high

    def parse(raw: str):
        v = float(raw)
        if math.isnan(v) or (low is not None and v < low) or (high is not None and v > high):
            raise ValueError(t("links.out_of_range", low=_fmt_num(low), high=_fmt_num(high)))
        if integer:
            if v != int(v):
                raise ValueError(t("links.not_whole"))
            v = int(v)
        if options is not None and v not in options:
            near = min(options, key=lambda o: abs(math.log(o / v)) if o > 0 and v > 0 else abs(o - v))
            return near, t("links.snapped", name=name, value=raw, near=_fmt_num(near))
        return (type(default)(v) if not integer and isinstance(default, float) else v), None

    return Field(name, key, default, parse, _fmt_num)


def choice(name: str, key: str, options: Sequence, default) -> Field:
    """One of ``options`` (compared by their text, so 3 matches "3")."""
    by_text = {str(o): o for o in options}

    def parse(raw: str):
        if raw not in by_text:
            raise ValueError(t("links.not_a_choice", options=", ".join(by_text)))
        return by_text[raw], None

    return Field(name, key, default, parse, str)


def several(name: str, key: str, options: Sequence, default: list) -> Field:
    """Several of ``options`` (a multiselect), comma-separated in the link ("1,2,4");
    numbers are compared by value, so "4" matches 4.0."""

    def value_of(raw: str):
        if isinstance(options[0], (int, float)):
            try:
                return type(options[0])(float(raw))
            except ValueError:
                return None
        return raw

    def parse(raw: str):
        values = [value_of(r.strip()) for r in raw.split(",") if r.strip()]
        if not values or any(v not in options for v in values):
            raise ValueError(t("links.not_a_choice", options=", ".join(_fmt_num(o) for o in options)))
        return list(dict.fromkeys(values)), None

    return Field(name, key, list(default), parse, lambda vs: ",".join(_fmt_num(v) for v in vs))


def flag(name: str, key: str, default: bool) -> Field:
    def parse(raw: str):
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True, None
        if low in ("0", "false", "no", "off"):
            return False, None
        raise ValueError(t("links.not_a_flag"))

    return Field(name, key, default, parse, lambda v: "true" if v else "false")


def restore(fields: Sequence[Field], query: dict | None = None) -> list[str]:
    """Set each field's session_state key from the link; returns the notices."""
    query = _query() if query is None else query
    notices = []
    for f in fields:
        if f.name not in query:
            continue
        raw = query[f.name]
        try:
            value, note = f.parse(raw)
        except (ValueError, TypeError, ZeroDivisionError) as e:
            notices.append(t("links.ignored", name=f.name, value=raw, reason=str(e) or type(e).__name__))
            st.session_state[f.key] = f.default
            continue
        if note:
            notices.append(note)
        st.session_state[f.key] = value
    return notices


def current(fields: Sequence[Field]) -> dict[str, str]:
    """The query parameters of the fields whose value differs from the default."""
    q = {}
    for f in fields:
        v = st.session_state.get(f.key, f.default)
        if v != f.default:
            q[f.name] = f.fmt(v)
    return q


def sync(page: str, fields: Sequence[Field]) -> list[str]:
    """Call before the page's widgets: on the page's first run in this session, restore
    the link's values (warning about bad ones); on every run, bring back values Streamlit
    dropped while another page was open, and write the current values to the URL. Returns
    the notices shown."""
    notices = []
    if _DONE + page not in st.session_state:
        st.session_state[_DONE + page] = True
        notices = restore(fields)
    ss = st.session_state
    for f in fields:
        # Streamlit drops the state of widgets it did not draw (another page was open): a
        # shadow copy brings the value back; widgets take it from session_state, never from
        # a default argument.
        if f.key not in ss:
            ss[f.key] = ss.get(_SHADOW + f.key, f.default)
        ss[_SHADOW + f.key] = ss[f.key]
    show(notices)
    write(current(fields))
    return notices


def show(notices: Sequence[str]) -> None:
    for n in notices:
        st.warning(n, icon="🔗")


def write(params: dict[str, str]) -> None:
    """Replace the URL's query parameters by ``params`` (plus the language)."""
    params = dict(params)
    if i18n.lang() != i18n.DEFAULT:
        params[i18n.PARAM] = i18n.lang()
    if st.query_params.get("present") == "1":  # presentation mode stays in every page's link
        params["present"] = "1"
    if _query() != params:
        st.query_params.from_dict(params)


def _query() -> dict[str, str]:
    return {k: st.query_params.get(k) for k in st.query_params.keys()}


# ------------------------------------------------------------------ the Lab
LAB_KEYS = {
    "dataset": "lab_dataset",
    "method": "lab_method",
    "temperature": "lab_T",
    "alpha": "lab_alpha",
    "epochs": "lab_epochs",
    "lr": "lab_lr",
    "batch_size": "lab_batch",
    "labeled_fraction": "lab_fraction",
    "seed": "lab_seed",
    "baseline": "lab_baseline",
}


def _is_config_param(name: str) -> bool:
    from dataclasses import fields

    from kd_core.config import Config

    return name.startswith("p.") or name in {f.name for f in fields(Config)}


def restore_lab(options: dict[str, Sequence], limits: dict[str, tuple[int, int]], no_class="none") -> list[str]:
    """On the Lab's first run in this session, set its ``lab_*`` session_state keys from a
    link's ``Config`` query parameters (``Config.from_query``: each bad value falls back to
    its default with a notice). ``options``: the values each select_slider/selectbox offers
    (key -> values; others snap to the nearest, with a notice); ``limits``: number inputs'
    ranges (key -> (low, high); others are clamped, with a notice). Shows and returns the
    notices."""
    from kd_core import data, methods, models
    from kd_core.config import Config
    from kd_core.errors import KDError

    if _DONE + "lab" in st.session_state:
        return []
    st.session_state[_DONE + "lab"] = True
    query = _query()
    if not any(_is_config_param(k) for k in query):
        return []
    cfg, notices = Config.from_query(query)
    notices = [t("links.lab_notice", detail=n) for n in notices]
    ss = st.session_state
    for fname, key in LAB_KEYS.items():
        value = getattr(cfg, fname)
        if key in options and value not in options[key]:
            opts = options[key]
            near = min(opts, key=lambda o: abs(math.log(o / value)) if o > 0 and value > 0 else abs(o - value))
            notices.append(t("links.snapped", name=fname, value=_fmt_num(value), near=_fmt_num(near)))
            value = near
        if key in limits:
            lo, hi = limits[key]
            if not lo <= value <= hi:
                clamped = min(max(value, lo), hi)
                notices.append(t("links.clamped", name=fname, value=_fmt_num(value), near=_fmt_num(clamped)))
                value = clamped
        ss[key] = value
    ss["lab_omit"] = no_class if cfg.omit_class is None else cfg.omit_class
    ds = cfg.dataset
    teacher, student = models.preset(ds)
    choices = models.suggested_models(ds)
    for role, arch, _default in (("teacher", cfg.teacher, teacher), ("student", cfg.student, student)):
        if arch and arch in choices:
            ss[f"lab_{role}_{ds}"] = arch
        elif arch:
            notices.append(
                t("links.lab_notice", detail=t("links.not_offered", name=role, value=arch, options=", ".join(choices)))
            )
    method = methods.get(cfg.method)
    for p in method.params:
        if p.name in cfg.params:
            ss[f"lab_p_{method.name}_{p.name}"] = float(cfg.params[p.name])
    if cfg.pairs and method.needs_features:
        res = cfg.resolved()
        try:
            from kd_core.train import resolve_pairs

            info = data.DATASETS[ds]
            tm = models.build(res.teacher, info.in_shape, info.num_classes)
            sm = models.build(res.student, info.in_shape, info.num_classes)
            pairs = cfg.parsed_pairs()
            if len(pairs) > 4:
                raise KDError(t("links.too_many_pairs"))
            resolve_pairs(method, tm, sm, info.in_shape, pairs)
            if any(a not in tm.tap_names or b not in sm.tap_names for a, b in pairs):
                ss["lab_all_layers"] = True
            if method.multi_pair:
                ss[f"lab_npairs_{method.name}"] = len(pairs)
            for i, (a, b) in enumerate(pairs):
                suffix = f"_{i + 1}" if i else ""
                ss[f"lab_tl_{method.name}_{res.teacher}{suffix}"] = a
                ss[f"lab_sl_{method.name}_{res.student}{suffix}"] = b
        except KDError as e:
            notices.append(
                t("links.lab_notice", detail=t("links.ignored", name="pairs", value=",".join(cfg.pairs), reason=str(e)))
            )
    show(notices)
    return notices


@lru_cache(maxsize=64)
def _default_pair(method_name: str, teacher: str, student: str, dataset: str) -> str | None:
    from kd_core import data, methods, models, train
    from kd_core.errors import KDError

    method = methods.get(method_name)
    info = data.DATASETS[dataset]
    try:
        tm = models.build(teacher, info.in_shape, info.num_classes)
        sm = models.build(student, info.in_shape, info.num_classes)
        a, b = train.default_pair(method, tm, sm, info.in_shape, strict=False)
    except KDError:
        return None
    return f"{a}:{b}"


def lab_query(cfg) -> dict[str, str]:
    """The Lab's link for ``cfg``: ``Config.to_query`` without what equals the defaults
    (the dataset's preset models, the method's default parameters, its default layer pair)."""
    from kd_core import methods, models

    q = cfg.to_query()
    teacher, student = models.preset(cfg.dataset) if cfg.dataset in models.PRESETS else ("", "")
    if q.get("teacher") == teacher:
        q.pop("teacher")
    if q.get("student") == student:
        q.pop("student")
    if cfg.method in methods.METHODS:
        m = methods.get(cfg.method)
        for p in m.params:
            if f"p.{p.name}" in q and float(cfg.params.get(p.name, p.default)) == float(p.default):
                q.pop(f"p.{p.name}")
        if "pairs" in q and len(cfg.pairs) == 1:
            res = cfg.resolved()
            if cfg.pairs[0] == _default_pair(cfg.method, res.teacher, res.student, cfg.dataset):
                q.pop("pairs")
    return q


def write_lab(cfg) -> None:
    """Mirror the Lab's settings in the URL (call after its widgets)."""
    write(lab_query(cfg))

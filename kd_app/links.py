"""Shareable links: a page's settings mirrored in the URL's query parameters.

Like TensorFlow Playground, the address bar always holds the page's current settings
(only those that differ from the defaults), so a lecturer can copy it and everyone who
opens it sees the same page with the same settings. On a page's first run in a session
the values in the link are restored into the widgets' session_state keys, before the
widgets are created; a bad value falls back to its default with a visible notice.

It is also the one place a page's settings survive a visit to another page (Streamlit
drops the state of widgets it does not draw): a page lists its settings once, as fields,
and never calls anything else to keep them::

    from kd_app import links
    FIELDS = [
        links.choice("dataset", "st_dataset", list(data.DATASETS), "mnist-mini"),
        links.number("T", "st_T", 4.0, options=TEMPERATURES).also("temperature"),  # old name still opens
        links.flag("log", "st_log", False),
        links.kept("st_anchor", 0),  # kept across visits, not in the link
    ]
    links.sync("soft-targets", FIELDS)   # before the widgets (widgets take no default arguments)
    ...                                  # the widgets, keyed by the fields' keys
    links.settle(FIELDS)                 # after them, when the page changed values itself

One name per concept across pages: ``T`` (temperature), ``alpha``, ``dataset``, ``method``.
A parameter a page does not know, and a bad value, get a visible notice.

The Lab's fields are generated from ``Config``'s fields and the method registry's
parameters (``lab_settings``: one property table, every Lab widget key built here), and
validated by ``Config.from_query``, the CLI's rules (``restore_lab`` before its widgets,
``write_lab(cfg)`` after them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import streamlit as st

from . import i18n
from .i18n import t

_DONE = "_kd_links_restored_"
PRESENT = "present"  # presentation mode (kd_app.chrome), in every page's link
STEP = "step"  # presentation mode's screen of a long page (kd_app.chrome.Screens), kept beside it
_SHADOW = "_kd_links_keep_"


# ------------------------------------------------------------------ generic fields
@dataclass(frozen=True)
class Field:
    """One setting: query parameter ``name`` <-> session_state (widget) ``key``. A field
    without a name is kept across page visits but not written into the link (a view's
    anchor, a layer picker whose default depends on the run); ``aliases`` are older names
    a link may still use."""

    name: str | None
    key: str
    default: Any
    parse: Callable[[str], tuple[Any, str | None]]  # raw -> (value, notice or None); ValueError if bad
    fmt: Callable[[Any], str] = str
    aliases: tuple[str, ...] = ()

    def also(self, *aliases: str) -> Field:
        """This field, also read from the older names ``aliases`` (old links still open)."""
        return replace(self, aliases=self.aliases + aliases)


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


def kept(key: str, default) -> Field:
    """A setting kept across page visits but not in the link."""

    def parse(raw: str):
        raise ValueError(raw)

    return Field(None, key, default, parse)


def restore(fields: Sequence[Field], query: dict | None = None) -> list[str]:
    """Set each field's session_state key from the link; returns the notices."""
    query = _query() if query is None else query
    notices = []
    for f in fields:
        name = next((n for n in (f.name, *f.aliases) if n is not None and n in query), None)
        if name is None:
            continue
        raw = query[name]
        try:
            value, note = f.parse(raw)
        except (ValueError, TypeError, ZeroDivisionError) as e:
            notices.append(t("links.ignored", name=name, value=raw, reason=str(e) or type(e).__name__))
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
        if f.name is not None and v != f.default:
            q[f.name] = f.fmt(v)
    return q


def sync(page: str, fields: Sequence[Field], extra: Sequence[str] = ()) -> list[str]:
    """The one place a page's settings live. Call before the page's widgets: on the page's
    first run in this session, restore the link's values (warning about bad ones and about
    parameters the page does not know; ``extra``: other parameters the page reads itself);
    on every run, bring back values Streamlit dropped while another page was open, and
    write the current values to the URL. Call ``settle`` after the widgets when the page
    changes values itself. Returns the notices shown."""
    notices = []
    if _DONE + page not in st.session_state:
        st.session_state[_DONE + page] = True
        notices = restore(fields)
        notices += unknown(fields, extra)
    bring_back(fields)
    show(notices)
    write(current(fields))
    return notices


def restored(page: str) -> bool:
    """Whether the page's link was already read in this session (False on its first visit)."""
    return _DONE + page in st.session_state


def bring_back(fields: Sequence[Field]) -> None:
    """Streamlit drops the state of widgets it did not draw (another page was open): a
    shadow copy brings each value back; widgets take it from session_state, never from a
    default argument."""
    ss = st.session_state
    for f in fields:
        if f.key not in ss:
            ss[f.key] = ss.get(_SHADOW + f.key, f.default)
        ss[_SHADOW + f.key] = ss[f.key]


def settle(fields: Sequence[Field]) -> None:
    """Call after the widgets: keep the values as the page left them (for the next visit)
    and write them to the URL."""
    ss = st.session_state
    for f in fields:
        if f.key in ss:
            ss[_SHADOW + f.key] = ss[f.key]
    write(current(fields))


_SETTING = (bool, int, float, str, type(None))


def keep_lab() -> None:
    """``bring_back`` for every Lab setting ``remember_lab`` kept (the Lab's controls are
    many and keyed per method and dataset)."""
    ss = st.session_state
    for k in [k for k in ss if isinstance(k, str) and k.startswith(_SHADOW) and is_lab_key(k[len(_SHADOW) :])]:
        key = k[len(_SHADOW) :]
        if key not in ss:
            ss[key] = ss[k]


def remember_lab() -> None:
    """Keep every Lab setting (a key of its property table or of its layer pickers) for the next visit."""
    ss = st.session_state
    for key in [k for k in ss if isinstance(k, str) and is_lab_key(k)]:
        if isinstance(ss[key], _SETTING):
            ss[_SHADOW + key] = ss[key]


def forget(keys: Sequence[str]) -> None:
    """Drop settings and their kept copies: they start again from their defaults."""
    for k in keys:
        st.session_state.pop(k, None)
        st.session_state.pop(_SHADOW + k, None)


def unknown(fields: Sequence[Field], extra: Sequence[str] = ()) -> list[str]:
    """A notice for each parameter of the link that the page does not read."""
    names = {n for f in fields for n in (f.name, *f.aliases) if n is not None}
    names |= set(extra) | {i18n.PARAM, PRESENT, STEP}
    return [t("links.unknown", name=k, value=v) for k, v in _query().items() if k not in names]


def show(notices: Sequence[str]) -> None:
    for n in notices:
        st.warning(n, icon="🔗")


def write(params: dict[str, str]) -> None:
    """Replace the URL's query parameters by ``params`` (plus the language)."""
    params = dict(params)
    if i18n.lang() != i18n.DEFAULT:
        params[i18n.PARAM] = i18n.lang()
    if st.query_params.get(PRESENT) == "1":  # presentation mode stays in every page's link
        params[PRESENT] = "1"
        if STEP in st.query_params:  # and the step it shows (chrome.Screens writes it)
            params[STEP] = st.query_params.get(STEP)
    if _query() != params:
        st.query_params.from_dict(params)


def _query() -> dict[str, str]:
    return {k: st.query_params.get(k) for k in st.query_params.keys()}


# ------------------------------------------------------------------ the Lab
# The Lab's settings are a Config (validated by the same rules as the CLI's): one row per
# setting, generated from Config's fields and the chosen method's registry parameters
# (TensorFlow Playground's property table). Every Lab widget key is built here, and the
# page draws its widgets with these keys.
TEMPERATURES = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0]
LEARNING_RATES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1]
FRACTIONS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
BATCHES = [16, 32, 64, 128, 256, 512]
EPOCHS = (1, 50)
SEEDS = (0, 10_000)
NO_CLASS = "none"  # the "omit a class" picker's "no class"
RUN = "run"  # ?run=<id>: a saved run, reopened


@dataclass(frozen=True)
class LabSetting:
    """One row of the Lab's property table: a ``Config`` field (``p.<param>`` for a method
    parameter), its name in the link (and older ``aliases``), its widget key, and the values
    its widget offers (``options``: others snap to the nearest; ``limits``: others are clamped)."""

    config: str
    name: str
    key: str
    aliases: tuple[str, ...] = ()
    options: Sequence | None = None
    limits: tuple[float, float] | None = None


# Config field -> (name in the link, widget key, older names, options, limits); one name per
# concept across pages: T is the temperature everywhere (the Lab's old "temperature" still opens)
_LAB_ROWS = {
    "dataset": ("dataset", "lab_dataset", (), None, None),
    "method": ("method", "lab_method", (), None, None),
    "temperature": ("T", "lab_T", ("temperature",), TEMPERATURES, None),
    "alpha": ("alpha", "lab_alpha", (), None, None),
    "epochs": ("epochs", "lab_epochs", (), None, EPOCHS),
    "lr": ("lr", "lab_lr", (), LEARNING_RATES, None),
    "batch_size": ("batch_size", "lab_batch", (), BATCHES, None),
    "labeled_fraction": ("labeled_fraction", "lab_fraction", (), FRACTIONS, None),
    "seed": ("seed", "lab_seed", (), None, SEEDS),
    "baseline": ("baseline", "lab_baseline", (), None, None),
    "omit_class": ("omit_class", "lab_omit", (), None, None),
}


def lab_model_key(role: str, dataset: str) -> str:
    """The teacher's / student's architecture picker (one per dataset: each has its own models)."""
    return f"lab_{role}_{dataset}"


def lab_param_key(method: str, param: str) -> str:
    """A method parameter's widget (one per method: switching method keeps each one's values)."""
    return f"lab_p_{method}_{param}"


def lab_npairs_key(method: str) -> str:
    return f"lab_npairs_{method}"


def lab_layer_key(role: str, method: str, arch: str, i: int = 0) -> str:
    """Layer pair ``i``'s teacher or student layer (per method and architecture: switching
    method starts from that method's sensible pair)."""
    return f"lab_{'tl' if role == 'teacher' else 'sl'}_{method}_{arch}" + (f"_{i + 1}" if i else "")


LAB_ALL_LAYERS = "lab_all_layers"
_LAB_PREFIXES = ("lab_teacher_", "lab_student_", "lab_p_", "lab_npairs_", "lab_tl_", "lab_sl_")


def is_lab_key(key: str) -> bool:
    """Whether ``key`` is one of the Lab's setting widgets (built by the functions above)."""
    return key in {r[1] for r in _LAB_ROWS.values()} or key == LAB_ALL_LAYERS or key.startswith(_LAB_PREFIXES)


def lab_settings(dataset: str, method_name: str) -> list[LabSetting]:
    """The Lab's property table for a dataset and method: Config's fields, the dataset's
    teacher and student pickers, and the method's parameters from the registry."""
    from dataclasses import fields

    from kd_core import methods
    from kd_core.config import Config

    rows = [LabSetting(f.name, *_LAB_ROWS[f.name]) for f in fields(Config) if f.name in _LAB_ROWS]
    rows += [LabSetting(role, role, lab_model_key(role, dataset)) for role in ("teacher", "student")]
    if method_name in methods.METHODS:
        m = methods.get(method_name)
        rows += [
            LabSetting(f"p.{p.name}", f"p.{p.name}", lab_param_key(m.name, p.name), limits=(p.low, p.high))
            for p in m.params
        ]
    return rows


def _renamed(query: dict[str, str], rows: Sequence[LabSetting]) -> tuple[dict[str, str], dict[str, str]]:
    """(the link in Config's names, Config name -> the name the link used)."""
    by_name = {n: r.config for r in rows for n in (r.name, *r.aliases)}
    out, used = {}, {}
    for k, v in query.items():
        c = by_name.get(k, k)
        if c in out and k != rows_name(rows, c):
            continue  # an old alias beside the new name: the new name wins
        out[c], used[c] = v, k
    return out, used


def rows_name(rows: Sequence[LabSetting], config_name: str) -> str:
    return next((r.name for r in rows if r.config == config_name), config_name)


def restore_lab() -> list[str]:
    """On the Lab's first run in this session, set its widgets' session_state keys from a
    link (``Config.from_query``: each bad value falls back to its default with a notice; a
    value the widget does not offer snaps to the nearest, or is clamped, with a notice; a
    parameter the Lab does not know is ignored with a notice). Shows and returns the notices."""
    from kd_core import data, methods, models
    from kd_core.config import Config
    from kd_core.errors import KDError

    if _DONE + "lab" in st.session_state:
        return []
    st.session_state[_DONE + "lab"] = True
    query = _query()
    base = lab_settings("", "")
    renamed, used = _renamed(query, base)
    if not renamed:
        return []
    cfg, raw_notices = Config.from_query(renamed)
    notices = []
    for n in raw_notices:
        for c, k in used.items():
            n = n.replace(f"ignored {c}=", f"ignored {k}=")
        notices.append(t("links.lab_notice", detail=n))
    rows = lab_settings(cfg.dataset, cfg.method)
    known = {n for r in rows for n in (r.name, *r.aliases)} | {"pairs", RUN, i18n.PARAM, PRESENT, STEP}
    known |= {f"p.{p.name}" for m in methods.METHODS.values() for p in m.params}
    notices += [t("links.unknown", name=k, value=v) for k, v in query.items() if k not in known]
    ss = st.session_state
    choices = models.suggested_models(cfg.dataset)
    for r in rows:
        name = used.get(r.config, r.name)
        if r.config.startswith("p."):
            if r.config[2:] not in cfg.params:
                continue
            value = float(cfg.params[r.config[2:]])
        elif r.config in ("teacher", "student"):
            arch = getattr(cfg, r.config)
            if arch and arch not in choices:
                detail = t("links.not_offered", name=r.config, value=arch, options=", ".join(choices))
                notices.append(t("links.lab_notice", detail=detail))
            if not arch or arch not in choices:
                continue
            value = arch
        elif r.config == "omit_class":
            value = NO_CLASS if cfg.omit_class is None else cfg.omit_class
        else:
            value = getattr(cfg, r.config)
        if r.options is not None and value not in r.options:
            near = min(r.options, key=lambda o: abs(math.log(o / value)) if o > 0 and value > 0 else abs(o - value))
            notices.append(t("links.snapped", name=name, value=_fmt_num(value), near=_fmt_num(near)))
            value = near
        if r.limits is not None and not r.limits[0] <= value <= r.limits[1]:
            clamped = min(max(value, r.limits[0]), r.limits[1])
            if not r.config.startswith("p."):
                notices.append(t("links.clamped", name=name, value=_fmt_num(value), near=_fmt_num(clamped)))
            value = clamped
        ss[r.key] = value
    method = methods.get(cfg.method)
    if cfg.pairs and method.needs_features:
        res = cfg.resolved()
        try:
            from kd_core.train import resolve_pairs

            info = data.DATASETS[cfg.dataset]
            tm = models.build(res.teacher, info.in_shape, info.num_classes)
            sm = models.build(res.student, info.in_shape, info.num_classes)
            pairs = cfg.parsed_pairs()
            if len(pairs) > 4:
                raise KDError(t("links.too_many_pairs"))
            resolve_pairs(method, tm, sm, info.in_shape, pairs)
            if any(a not in tm.tap_names or b not in sm.tap_names for a, b in pairs):
                ss[LAB_ALL_LAYERS] = True
            if method.multi_pair:
                ss[lab_npairs_key(method.name)] = len(pairs)
            for i, (a, b) in enumerate(pairs):
                ss[lab_layer_key("teacher", method.name, res.teacher, i)] = a
                ss[lab_layer_key("student", method.name, res.student, i)] = b
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


def write_lab(cfg, run_id: str | None = None) -> None:
    """Mirror the Lab's settings in the URL, by their names in the property table (call after
    its widgets); ``run_id``: the saved run the Lab shows, reopened by a reload."""
    rows = lab_settings(cfg.dataset, cfg.method)
    q = {rows_name(rows, k): v for k, v in lab_query(cfg).items()}
    if run_id:
        q[RUN] = run_id
    write(q)

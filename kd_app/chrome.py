"""What every page shares: the sidebar (language, data status, the running job) and small widgets."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from kd_core import data

from . import i18n, links, state
from .i18n import t

PRESENT = "present"  # query parameter (?present=1) and the sidebar switch's key
STEP = links.STEP  # query parameter (?present=1&step=3): the screen a long page shows in presentation mode
# every page: long formulas scroll inside their own box instead of being clipped at the
# window's edge (the Lab's DKD formula at 1280 px); a button's or a page link's label wraps onto
# a second line in a narrow column instead of being cut short ("▶ Tr…" at 1024 px), and so does
# a widget's label (a checkbox's "Compare with …")
WRAP_REM = (8, 11, 15, 20)  # the narrowest a column of ``columns`` may be, in rem: one of these
BASE_CSS = """
.katex-display { overflow-x: auto; overflow-y: hidden; padding-bottom: 0.2rem; }
[data-testid="stMain"] button [data-testid="stMarkdownContainer"] {
  overflow: visible; text-overflow: clip; white-space: normal; }
[data-testid="stMain"] button [data-testid="stMarkdownContainer"] p { white-space: normal; overflow-wrap: anywhere; }
[data-testid="stMain"] [data-testid="stPageLink-NavLink"] span:has(> [data-testid="stMarkdownContainer"]),
[data-testid="stMain"] [data-testid="stPageLink-NavLink"] [data-testid="stMarkdownContainer"],
[data-testid="stMain"] [data-testid="stPageLink-NavLink"] p {
  overflow: visible; text-overflow: clip; white-space: normal; overflow-wrap: anywhere; }
[data-testid="stMain"] [data-testid="stWidgetLabel"] .stMarkdownEllipsis,
[data-testid="stMain"] [data-testid="stWidgetLabel"] .stMarkdownEllipsis p {
  overflow: visible; text-overflow: clip; white-space: normal; }
""" + "".join(
    f'[class*="st-key-kdwrap{rem}_"] > [data-testid="stLayoutWrapper"] > [data-testid="stHorizontalBlock"]'
    f' > [data-testid="stColumn"]'
    f" {{ min-width: min(100%, {rem}rem); }}\n"
    for rem in WRAP_REM
)
# presentation mode: type large enough for the back of a lecture hall, no toolbar
PRESENT_CSS = """
html { font-size: 20px; }
[data-testid="stAppViewContainer"] .main .block-container,
[data-testid="stMainBlockContainer"] { padding-top: 1.5rem; max-width: 100%; }
[data-testid="stHeader"] { display: none; }
.katex { font-size: 1.25em; }
"""


def columns(key: str, spec, min_rem: int = 15, **kwargs) -> list:
    """``st.columns(spec, **kwargs)`` whose columns wrap onto a row of their own, full width,
    where the page is too narrow for each to keep ``min_rem`` rem (one of WRAP_REM): two charts
    side by side at 1280 px are one above the other at 1024 px with the sidebar open, instead of
    two squeezed charts with their titles cut. ``key`` names the row (unique on its page)."""
    if min_rem not in WRAP_REM:
        raise ValueError(f"min_rem must be one of {WRAP_REM}")
    return st.container(key=f"kdwrap{min_rem}_{key}").columns(spec, **kwargs)


def presenting() -> bool:
    """Presentation mode: the sidebar switch, or ``?present=1`` in a shared link."""
    if PRESENT in st.session_state:
        return bool(st.session_state[PRESENT])
    return st.query_params.get(PRESENT) == "1"


# every page: a formula wider than its column is set in smaller type until it fits (down to
# FIT_FLOOR of its size; below that it scrolls in its box), again whenever its column is resized
# (a window joined to a projector, the sidebar closed); a chart's title or axis title longer
# than the chart likewise (down to TITLE_FLOOR). Installed once per browser tab.
FIT_FLOOR = 0.6
TITLE_FLOOR = 0.7  # a chart's title: below 70 % of its size, the layout has to give it room
FIT_JS = """
(() => {
  if (window.kdFitFormulas) return;
  window.kdFitFormulas = true;
  const seen = new WeakSet();
  const fit = (box) => {
    const k = box.querySelector(':scope > .katex');
    if (!k) return;
    k.style.fontSize = '';
    const have = box.clientWidth, need = box.scrollWidth;
    if (have > 0 && need > have) {
      const size = parseFloat(getComputedStyle(k).fontSize);
      k.style.fontSize = (size * Math.max(FLOOR, (have - 2) / need)).toFixed(2) + 'px';
    }
  };
  // a chart's title or axis title longer than the chart: the same, about the title's anchor
  // (Plotly draws them as single SVG lines, and draws them again on every resize)
  const fitTitles = (chart) => {
    const box = chart.getBoundingClientRect();
    if (!box.width) return;
    for (const el of chart.querySelectorAll('.gtitle, .xtitle, .ytitle')) {
      const now = parseFloat(el.style.fontSize);
      if (!now) continue;
      if (el.dataset.kdSet !== String(now)) el.dataset.kdBase = String(now);  // Plotly's own size
      const base = parseFloat(el.dataset.kdBase);
      el.style.fontSize = base + 'px';
      const r = el.getBoundingClientRect();
      const vertical = el.classList.contains('ytitle');
      const [lo, hi, from, to] = vertical ? [box.top, box.bottom, r.top, r.bottom] : [box.left, box.right, r.left, r.right];
      const anchor = el.getAttribute('text-anchor');
      const at = vertical || anchor === 'middle' ? (from + to) / 2 : anchor === 'end' ? to : from;
      let k = 1;
      if (to > hi && to > at) k = Math.min(k, (hi - at) / (to - at));
      if (from < lo && from < at) k = Math.min(k, (at - lo) / (at - from));
      const size = (k < 1 ? base * Math.max(TITLE_FLOOR, k * 0.98) : base).toFixed(2);  // a title that fits keeps its size
      el.dataset.kdSet = String(parseFloat(size));
      el.style.fontSize = size + 'px';
    }
  };
  const sizes = new ResizeObserver((entries) =>
    entries.forEach((e) => (e.target.classList.contains('js-plotly-plot') ? fitTitles : fit)(e.target)));
  let queued = false;
  const scan = () => {
    queued = false;
    for (const box of document.querySelectorAll('.katex-display')) {
      if (!seen.has(box)) { seen.add(box); sizes.observe(box); }
      fit(box);
    }
    for (const chart of document.querySelectorAll('.js-plotly-plot')) {
      if (!seen.has(chart)) { seen.add(chart); sizes.observe(chart); }
      fitTitles(chart);
    }
  };
  new MutationObserver(() => { if (!queued) { queued = true; requestAnimationFrame(scan); } })
    .observe(document.body, {childList: true, subtree: true, characterData: true});
  scan();
})();
""".replace("TITLE_FLOOR", str(TITLE_FLOOR)).replace("FLOOR", str(FIT_FLOOR))


def page_style() -> None:
    css = BASE_CSS + (PRESENT_CSS if presenting() else "")
    st.html(f"<style>{css}</style><script>{FIT_JS}</script>", unsafe_allow_javascript=True)


def presentation_switch() -> None:
    """The sidebar switch; kept in the link so a projected set-up can be shared."""
    if PRESENT not in st.session_state:
        st.session_state[PRESENT] = presenting()
    on = st.toggle(t("sidebar.present"), key=PRESENT, help=t("sidebar.present_help"))
    if on and st.query_params.get(PRESENT) != "1":
        st.query_params[PRESENT] = "1"
    elif not on and PRESENT in st.query_params:
        del st.query_params[PRESENT]


class Screens:
    """One thing per screen where a page is long. In presentation mode the page shows one of
    its steps at a time, with Previous / Next and a picker saying "step i of n" above it (and
    Previous / Next again below); the step is kept in the link (``?present=1&step=3``) and
    across visits to other pages. Outside presentation mode the page shows every step::

        screens = chrome.Screens("lesson", [t("lesson.s1.title"), ...])
        screens.header()  # the picker, Previous and Next (only in presentation mode)
        if screens.shows(1):
            step_1()
        ...
        screens.footer()  # Previous and Next again

    A bad step in the link (0, 99, "abc") falls back to step 1 with a notice."""

    def __init__(self, page: str, titles: Sequence[str]):
        self.page, self.titles = page, list(titles)
        self.key = f"kd_screen_{page}"  # a plain session_state key: it outlives the page's widgets
        self.current: int | None = None
        self._notices: list[str] = []
        if presenting() and self.titles:
            self.current = self._restore()
            self._write()

    @property
    def count(self) -> int:
        return len(self.titles)

    def shows(self, i: int) -> bool:
        """Whether step ``i`` (from 1) is drawn in this run: all of them outside presentation mode."""
        return self.current is None or self.current == i

    def go(self, i: int) -> None:
        """Show step ``i`` from the next run on (e.g. after Train, the step that shows the run)."""
        _go(self.key, i)

    def header(self) -> None:
        """The notice about a bad step in the link, the picker, Previous and Next (presentation mode only)."""
        if self.current is not None:
            links.show(self._notices)
            self._nav("top")

    def footer(self) -> None:
        """Previous / Next again under the step (presentation mode only)."""
        if self.current is not None:
            self._nav("bottom")

    def _restore(self) -> int:
        ss = st.session_state
        field = links.choice(STEP, self.key, list(range(1, self.count + 1)), 1)
        if _READ + self.page not in ss:  # the link's step, read once per session (the first projected run)
            ss[_READ + self.page] = True
            raw = st.query_params.get(STEP)
            if raw is not None:
                self._notices = links.restore([field], {STEP: raw})
        i = ss.get(self.key, 1)
        if not isinstance(i, int) or not 1 <= i <= self.count:
            i = ss[self.key] = 1
        return i

    def _write(self) -> None:
        """The step into the link (step 1, the default, is left out)."""
        want = [] if self.current == 1 else [str(self.current)]
        if st.query_params.get_all(STEP) != want:  # also a step given twice (&step=3&step=4)
            if want:
                st.query_params[STEP] = want[0]
            else:
                del st.query_params[STEP]

    def _nav(self, where: str) -> None:
        i, n = self.current, self.count
        prev, middle, nxt = st.columns([1, 3, 1], vertical_alignment="bottom")
        prev.button(
            "◀ " + t("present.previous"),
            key=f"kd_screen_prev_{where}_{self.page}",
            disabled=i <= 1,
            on_click=_go,
            args=(self.key, i - 1),
            help=t("present.previous_help"),
            width="stretch",
        )
        if where == "top":
            pick = _PICK + self.page
            st.session_state[pick] = i  # before the widget: it always shows the current step
            titles = {k: f"{k} · {title}" for k, title in enumerate(self.titles, 1)}
            middle.selectbox(
                t("present.step_of", i=i, n=n),
                list(titles),
                key=pick,
                format_func=titles.get,
                on_change=_picked,
                args=(self.key, pick),
                help=t("present.picker_help"),
            )
        else:
            middle.markdown(t("present.step_of", i=i, n=n), text_alignment="center")
        nxt.button(
            t("present.next") + " ▶",
            key=f"kd_screen_next_{where}_{self.page}",
            type="primary",
            disabled=i >= n,
            on_click=_go,
            args=(self.key, i + 1),
            help=t("present.next_help"),
            width="stretch",
        )


_READ = "_kd_screen_read_"
_PICK = "kd_screen_pick_"


def _go(key: str, i: int) -> None:
    st.session_state[key] = i


def _picked(key: str, pick: str) -> None:
    st.session_state[key] = st.session_state[pick]


def sidebar() -> None:
    page_style()
    with st.sidebar:
        st.markdown("### 🎓 KD Playground")
        st.caption(t("sidebar.tagline"))
        i18n.language_selector()
        presentation_switch()
        jobs = [j for j in state.job_manager().jobs_of(state.session_id()) if not j.done]
        if jobs:
            j = jobs[-1]
            st.info(t("sidebar.training", status=t(f"status.{j.status}"), step=j.step, total=j.total_steps or "?"))
        with st.expander(t("sidebar.data_models"), expanded=False):
            for info in data.DATASETS.values():
                mark = t("sidebar.embedded") if info.embedded else t("sidebar.downloads")
                st.markdown(f"- **{info.name}** — {t('datasets.' + info.name)} ({mark})")
            st.caption(t("sidebar.cache_folder", path=_home()))
        lecturer_box()


def lecturer_box() -> None:
    """Lecturer mode, shown only when the server set a password."""
    if state.lecturer_password() is None:
        return
    with st.expander(t("sidebar.lecturer"), expanded=False):
        if state.is_lecturer():
            st.success(t("sidebar.lecturer_on"))
            if st.button(t("sidebar.lecturer_lock"), key="kd_lecturer_lock"):
                st.session_state[state.LECTURER] = False
                st.rerun()
            return
        given = st.text_input(
            t("sidebar.lecturer_password"), type="password", key="kd_lecturer_password", help=t("sidebar.lecturer_help")
        )
        if st.button(t("sidebar.lecturer_unlock"), key="kd_lecturer_unlock"):
            st.session_state.pop("kd_lecturer_password", None)  # the password is not kept in the session
            if state.unlock_lecturer(given):
                st.rerun()
            st.error(t("sidebar.lecturer_wrong"))


def _home() -> str:
    from kd_core import paths

    return str(paths.home())


def teacher_caption(t_) -> str:
    return t(
        "chrome.teacher_caption", arch=t_.arch, dataset=t_.dataset, epochs=t_.epochs, acc=100 * t_.test_accuracy
    ) + (t("chrome.from_cache") if t_.from_cache else "")

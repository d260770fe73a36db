"""What every page shares: the sidebar (language, data status, the running job) and small widgets."""

from __future__ import annotations

import streamlit as st

from kd_core import data

from . import i18n, state
from .i18n import t

PRESENT = "present"  # query parameter (?present=1) and the sidebar switch's key
# every page: long formulas scroll inside their own box instead of being clipped at the
# window's edge (the Lab's DKD formula at 1280 px)
BASE_CSS = """
.katex-display { overflow-x: auto; overflow-y: hidden; padding-bottom: 0.2rem; }
"""
# presentation mode: type large enough for the back of a lecture hall, no toolbar
PRESENT_CSS = """
html { font-size: 20px; }
[data-testid="stAppViewContainer"] .main .block-container,
[data-testid="stMainBlockContainer"] { padding-top: 1.5rem; max-width: 100%; }
[data-testid="stHeader"] { display: none; }
.katex { font-size: 1.25em; }
"""


def presenting() -> bool:
    """Presentation mode: the sidebar switch, or ``?present=1`` in a shared link."""
    if PRESENT in st.session_state:
        return bool(st.session_state[PRESENT])
    return st.query_params.get(PRESENT) == "1"


def page_style() -> None:
    css = BASE_CSS + (PRESENT_CSS if presenting() else "")
    st.html(f"<style>{css}</style>")


def presentation_switch() -> None:
    """The sidebar switch; kept in the link so a projected set-up can be shared."""
    if PRESENT not in st.session_state:
        st.session_state[PRESENT] = presenting()
    on = st.toggle(t("sidebar.present"), key=PRESENT, help=t("sidebar.present_help"))
    if on and st.query_params.get(PRESENT) != "1":
        st.query_params[PRESENT] = "1"
    elif not on and PRESENT in st.query_params:
        del st.query_params[PRESENT]


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

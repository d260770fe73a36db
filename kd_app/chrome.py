"""What every page shares: the sidebar (language, data status, the running job) and small widgets."""

from __future__ import annotations

import streamlit as st

from kd_core import data

from . import i18n, state
from .i18n import t


def sidebar() -> None:
    with st.sidebar:
        st.markdown("### 🎓 KD Playground")
        st.caption(t("sidebar.tagline"))
        i18n.language_selector()
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

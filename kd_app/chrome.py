"""What every page shares: the sidebar (data status, the running job) and small widgets."""

from __future__ import annotations

import streamlit as st

from kd_core import data, models
from kd_core.config import TEACHER_EPOCHS

from . import state


def sidebar() -> None:
    with st.sidebar:
        st.markdown("### 🎓 KD Playground")
        st.caption("Knowledge distillation you can see: a big teacher, a small student, real digits, live training.")
        jobs = [j for j in state.job_manager().jobs_of(state.session_id()) if not j.done]
        if jobs:
            j = jobs[-1]
            st.info(f"Training in the Lab: {j.status} ({j.step}/{j.total_steps or '?'} steps)")
        with st.expander("Data and models", expanded=False):
            for info in data.DATASETS.values():
                mark = "embedded" if info.embedded else "downloads on first use"
                st.markdown(f"- **{info.name}** — {info.title} ({mark})")
            st.caption(f"Cache folder: `{_home()}`")


def _home() -> str:
    from kd_core import paths

    return str(paths.home())


def teacher_caption(t) -> str:
    return (f"Teacher **{t.arch}** trained on **{t.dataset}** for {t.epochs} epochs — "
            f"**{100 * t.test_accuracy:.1f}%** test accuracy"
            + (" (loaded from cache)" if t.from_cache else ""))

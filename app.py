"""KD Playground: `streamlit run app.py` (or `make run`)."""

import streamlit as st

st.set_page_config(page_title="KD Playground", page_icon="🎓", layout="wide")

from kd_app import chrome  # noqa: E402  (after set_page_config)

pages = [
    st.Page("pages/soft_targets.py", title="Soft targets", icon="🌡️", url_path="soft-targets", default=True),
    st.Page("pages/lab.py", title="Distillation lab", icon="🧪", url_path="lab"),
    st.Page("pages/feature_maps.py", title="Feature maps", icon="🗺️", url_path="feature-maps"),
]
nav = st.navigation(pages)
chrome.sidebar()
nav.run()

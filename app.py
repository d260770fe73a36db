"""KD Playground: `streamlit run app.py` (or `make run`)."""

import streamlit as st

# a projected link (?present=1) opens with the sidebar closed
present = st.query_params.get("present") == "1"
st.set_page_config(
    page_title="KD Playground",
    page_icon="🎓",
    layout="wide",
    initial_sidebar_state="collapsed" if present else "auto",
)

from kd_app import chrome, i18n  # noqa: E402  (after set_page_config)

LESSON = "app_pages/lesson.py"
pages = [
    st.Page(LESSON, title="Lesson", icon="🎓", url_path="home", default=True),  # at /
    # the same Lesson at /lesson (a default page has no path of its own: /lesson was "Page not found")
    st.Page(LESSON, title="Lesson", icon="🎓", url_path="lesson", visibility="hidden"),
    st.Page("app_pages/soft_targets.py", title="Soft targets", icon="🌡️", url_path="soft-targets"),
    st.Page("app_pages/lab.py", title="Distillation lab", icon="🧪", url_path="lab"),
    st.Page("app_pages/feature_maps.py", title="Feature maps", icon="🗺️", url_path="feature-maps"),
    st.Page("app_pages/relations.py", title="Relations", icon="🕸️", url_path="relations"),
    st.Page("app_pages/contrastive.py", title="Contrastive", icon="🧲", url_path="contrastive"),
    st.Page("app_pages/compare.py", title="Compare & sweep", icon="📊", url_path="compare"),
    st.Page("app_pages/beyond.py", title="Beyond one teacher", icon="👥", url_path="beyond"),
    st.Page("app_pages/no_data.py", title="No data", icon="🌙", url_path="no-data"),
    st.Page("app_pages/speech.py", title="Image → speech", icon="🔊", url_path="speech"),
    st.Page("app_pages/language_models.py", title="Language models", icon="💬", url_path="language-models"),
]
nav = st.navigation(i18n.localise_pages(pages))
chrome.sidebar()
nav.run()

"""The Streamlit side of KD Playground: shared state and widgets used by the pages.

Only this package and ``app_pages/`` import streamlit; the engine (``kd_core``) never does.
"""

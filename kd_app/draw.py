"""A drawing canvas for Streamlit: a tiny bidirectional component (plain HTML canvas + JS in
``kd_app/components/draw/index.html``, no libraries, no network).

``canvas(key=...)`` shows a large black square to draw on with thick white strokes and a
Clear button; it returns the drawing as a PNG data URL after each stroke, or None before
the first stroke and after Clear. (AppTest cannot render custom components: there it
returns None.)
"""

from __future__ import annotations

from pathlib import Path

import streamlit.components.v1 as components

_FRONTEND = Path(__file__).resolve().parent / "components" / "draw"
_component = components.declare_component("kd_draw_canvas", path=str(_FRONTEND))


def canvas(*, key: str, size: int = 336, stroke: int = 0, clear_label: str = "Clear", hint: str = "") -> str | None:
    """The drawing as a ``data:image/png;base64,...`` URL, or None when the canvas is blank.
    ``stroke`` is the pen's width in px (0: a twelfth of ``size``, like an MNIST stroke)."""
    return _component(
        size=size, stroke=stroke or round(size / 12), clear_label=clear_label, hint=hint, key=key, default=None
    )

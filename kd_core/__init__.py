"""kd_core: a small engine for knowledge distillation that trains in seconds on a CPU.

The engine never imports streamlit; everything the app shows is computed here and
reused by the CLI and the notebook.
"""

# Modules that plug into the engine when kd_core is imported: beyond.py and datafree.py
# register their methods in kd_core.methods; ship.py adds the teachers shipped with the
# project as a source of the teacher store (kd_core.teachers).
from . import beyond, datafree, ship  # noqa: F401

__version__ = "0.1.0"

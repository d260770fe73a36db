"""kd_core: a small engine for knowledge distillation that trains in seconds on a CPU.

The engine never imports streamlit; everything the app shows is computed here and
reused by the CLI and the notebook.
"""

from . import beyond  # noqa: F401  (the methods beyond one teacher register themselves in kd_core.methods)

__version__ = "0.1.0"

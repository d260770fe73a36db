"""kd_core: a small engine for knowledge distillation that trains in seconds on a CPU.

The engine never imports streamlit; everything the app shows is computed here and
reused by the CLI and the notebook.
"""

# the methods beyond one teacher and the data-free / label-free ones register themselves in kd_core.methods
from . import beyond, datafree  # noqa: F401

__version__ = "0.1.0"

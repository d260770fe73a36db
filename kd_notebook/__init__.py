"""The Jupyter tour's interactive cells: ipywidgets views on the ``kd_core`` engine.

``kd_core`` never imports a UI library; the Streamlit app keeps its views in ``kd_app`` and
the notebook keeps its own here. Every figure comes from ``kd_core.viz`` and every number
from the engine: these classes only wire sliders and buttons to it. They work wherever
ipywidgets do (JupyterLab, VS Code, Colab), and each exposes its controls as attributes so
that a test can set a slider or press a button and read what changed.
"""

from .widgets import Experiments, LossDecomposition, SoftTargets, TrainPanel, entropy_bits

__all__ = ["Experiments", "LossDecomposition", "SoftTargets", "TrainPanel", "entropy_bits"]

"""Interactive views for the tour: soft targets under a temperature slider, the loss
decomposition under alpha and T, a Train panel that runs distillation in the background
with live curves, and the few-labels / missing-class experiments as buttons.

Each view has a ``view`` (an ipywidgets box, also shown when the object is the last
expression of a cell) and its controls as attributes. Figures are plotly ``FigureWidget``s
updated in place, so a slider move redraws only the traces, not the page.
"""

from __future__ import annotations

import math
import threading

import ipywidgets as w
import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from IPython.display import display

from kd_core import losses, methods, train, viz
from kd_core.config import Config
from kd_core.errors import KDError

T_MIN, T_MAX = 0.3, 40.0
T_GRID = np.geomspace(T_MIN, T_MAX, 90)
WIDE = w.Layout(width="420px")
DESCRIPTION = {"description_width": "150px"}


def refresh(target: go.FigureWidget, fig: go.Figure) -> None:
    """Show ``fig`` in ``target``: traces updated in place when their number and types are
    unchanged (a smooth redraw), replaced otherwise; the layout always replaced."""
    with target.batch_update():
        same = len(target.data) == len(fig.data) and all(a.type == b.type for a, b in zip(target.data, fig.data))
        if same:
            for old, new in zip(target.data, fig.data):
                old.update(new.to_plotly_json())
        else:
            target.data = ()
            target.add_traces(list(fig.data))
        target.layout = fig.layout


def entropy_bits(p: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of probability rows (the last axis)."""
    return -(p * torch.log2(p.clamp_min(1e-300))).sum(-1)


def _t_slider(value: float, description: str) -> w.FloatLogSlider:
    return w.FloatLogSlider(
        value=value,
        base=10,
        min=math.log10(T_MIN),
        max=math.log10(T_MAX),
        step=0.01,
        description=description,
        readout_format=".2f",
        continuous_update=False,
        layout=WIDE,
        style=DESCRIPTION,
    )


class _View:
    view: w.Widget

    def _ipython_display_(self):
        display(self.view)


# ---------------------------------------------------------------- soft targets


class SoftTargets(_View):
    """One image's soft targets ``softmax(z / T)`` as bars, and the entropy of the soft
    targets against T (this image and the mean over the set), with the current T marked.

    ``logits``: the teacher's logits (N, K); ``labels``: the true classes (N,)."""

    def __init__(self, logits, labels, classes: list[str], index: int = 0, temperature: float = 4.0):
        self.logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
        self.labels = np.asarray(labels)
        self.classes = list(classes)
        self.max_entropy = math.log2(len(self.classes))
        # mean entropy over the whole set for every T of the grid, computed once
        self._mean_curve = np.array([entropy_bits(losses.softmax_t(self.logits, T)).mean().item() for T in T_GRID])
        self.temperature = _t_slider(temperature, "temperature T")
        self.image = w.IntSlider(
            value=index,
            min=0,
            max=len(self.labels) - 1,
            description="image",
            continuous_update=False,
            layout=WIDE,
            style=DESCRIPTION,
        )
        self.log = w.Checkbox(value=False, description="log scale", indent=False)
        self.readout = w.HTML()
        self.bars = go.FigureWidget()
        self.entropy = go.FigureWidget()
        for control in (self.temperature, self.image, self.log):
            control.observe(lambda _change: self.redraw(), names="value")
        self.view = w.VBox([w.HBox([self.temperature, self.image]), self.log, self.readout, self.bars, self.entropy])
        self.redraw()

    def probabilities(self) -> np.ndarray:
        """The chosen image's soft targets at the slider's T."""
        z = self.logits[self.image.value : self.image.value + 1]
        return losses.softmax_t(z, float(self.temperature.value))[0].numpy()

    @property
    def entropy_now(self) -> float:
        """Entropy (bits) of the chosen image's soft targets at the slider's T."""
        return float(entropy_bits(torch.as_tensor(self.probabilities())))

    def redraw(self) -> None:
        T, i = float(self.temperature.value), int(self.image.value)
        p = self.probabilities()
        label = int(self.labels[i])
        refresh(
            self.bars,
            viz.prob_bars(
                {"teacher": p},
                self.classes,
                title=f"Teacher's soft targets for image {i} (a {self.classes[label]}) at T = {T:.2f}",
                highlight=label,
                log=bool(self.log.value),
            ),
        )
        image_curve = np.array([entropy_bits(losses.softmax_t(self.logits[i : i + 1], t))[0].item() for t in T_GRID])
        refresh(
            self.entropy,
            viz.entropy_curve(
                T_GRID,
                {"this image": image_curve, "mean over the set": self._mean_curve},
                current=T,
                max_entropy=self.max_entropy,
                title="Entropy of the soft targets against T",
            ),
        )
        self.readout.value = (
            f"<b>T = {T:.2f}</b>: the teacher gives the true class {p[label]:.1%}; "
            f"the soft targets carry <b>{self.entropy_now:.2f} bits</b> "
            f"(0 = certain, {self.max_entropy:.2f} = uniform)."
        )


# ---------------------------------------------------------------- the loss


class LossDecomposition(_View):
    """The two terms of ``L = (1 - alpha) CE + alpha T^2 KL`` on a batch, under alpha and T
    sliders, with the formula written with the current values (from the method registry)."""

    def __init__(self, student_logits, teacher_logits, labels, temperature: float = 4.0, alpha: float = 0.9):
        self.zs = torch.as_tensor(student_logits, dtype=torch.float32)
        self.zt = torch.as_tensor(teacher_logits, dtype=torch.float32)
        self.y = torch.as_tensor(labels, dtype=torch.long)
        self.ce = float(F.cross_entropy(self.zs, self.y))
        self.alpha = w.FloatSlider(
            value=alpha,
            min=0.0,
            max=1.0,
            step=0.05,
            description="alpha",
            continuous_update=False,
            layout=WIDE,
            style=DESCRIPTION,
        )
        self.temperature = _t_slider(temperature, "temperature T")
        self.formula = w.HTMLMath()
        self.figure = go.FigureWidget()
        for control in (self.alpha, self.temperature):
            control.observe(lambda _change: self.redraw(), names="value")
        self.view = w.VBox([w.HBox([self.alpha, self.temperature]), self.formula, self.figure])
        self.redraw()

    def terms(self) -> dict[str, float]:
        """The weighted terms and their sum at the sliders' values (engine losses)."""
        a, T = float(self.alpha.value), float(self.temperature.value)
        kd = float(losses.kd_loss(self.zs, self.zt, T))  # already T^2 KL
        return {"(1 - alpha) CE": (1 - a) * self.ce, "alpha T^2 KL": a * kd, "total L": (1 - a) * self.ce + a * kd}

    def redraw(self) -> None:
        a, T = float(self.alpha.value), float(self.temperature.value)
        self.formula.value = "$$" + methods.get("kd").formula_latex(temperature=round(T, 2), alpha=a) + "$$"
        refresh(
            self.figure,
            viz.loss_terms_bars(self.terms(), title=f"The loss on {len(self.y)} images at T = {T:.2f}, alpha = {a:g}"),
        )


# ---------------------------------------------------------------- training


def _param_slider(p: methods.Param) -> w.Widget:
    if p.integer:
        return w.IntSlider(
            value=int(p.default),
            min=int(p.low),
            max=int(p.high),
            description=p.name,
            layout=WIDE,
            style=DESCRIPTION,
            tooltip=p.help,
        )
    if p.log and p.low > 0:
        return w.FloatLogSlider(
            value=p.default,
            base=10,
            min=math.log10(p.low),
            max=math.log10(p.high),
            description=p.name,
            layout=WIDE,
            style=DESCRIPTION,
            tooltip=p.help,
        )
    return w.FloatSlider(
        value=p.default,
        min=p.low,
        max=p.high,
        step=(p.high - p.low) / 100,
        description=p.name,
        layout=WIDE,
        style=DESCRIPTION,
        tooltip=p.help,
    )


class TrainPanel(_View):
    """Pick a method (from the registry the app uses), T, alpha, its own parameters, the
    share of labels and the epochs; Train runs the distilled student and the scratch
    student in a background thread, with a progress bar and accuracy and loss curves that
    update in place; Stop ends the run at the next step and keeps what was done."""

    REDRAW_EVERY = 10  # steps between loss-curve redraws

    def __init__(self, dataset: str = "mnist-mini", method: str = "kd", epochs: int = 3, labeled_fraction: float = 0.1):
        self.dataset = dataset
        options = [(f"{m.title} ({name})", name) for name, m in methods.METHODS.items()]
        self.method = w.Dropdown(options=options, value=method, description="method", layout=WIDE, style=DESCRIPTION)
        self.temperature = _t_slider(4.0, "temperature T")
        self.alpha = w.FloatSlider(
            value=0.9, min=0.0, max=1.0, step=0.05, description="alpha", layout=WIDE, style=DESCRIPTION
        )
        self.labeled_fraction = w.FloatSlider(
            value=labeled_fraction,
            min=0.01,
            max=1.0,
            step=0.01,
            description="labelled share",
            layout=WIDE,
            style=DESCRIPTION,
        )
        self.epochs = w.IntSlider(value=epochs, min=1, max=20, description="epochs", layout=WIDE, style=DESCRIPTION)
        self.summary = w.HTML()
        self.params_box = w.VBox()
        self.param_sliders: dict[str, w.Widget] = {}
        self.train_button = w.Button(description="▶ Train", button_style="primary")
        self.stop_button = w.Button(description="■ Stop", disabled=True)
        self.progress = w.IntProgress(value=0, min=0, max=1, description="progress", layout=WIDE, style=DESCRIPTION)
        self.status = w.HTML("Press Train to start.")
        self.accuracy = go.FigureWidget()
        self.losses = go.FigureWidget()
        self.trainer: train.Trainer | None = None
        self.result: dict | None = None
        self.thread: threading.Thread | None = None
        self._steps: list[dict] = []
        self._epochs: list[dict] = []
        self._teacher_acc: float | None = None
        self.method.observe(lambda _change: self._method_changed(), names="value")
        self.train_button.on_click(lambda _b: self.start())
        self.stop_button.on_click(lambda _b: self.stop())
        self.view = w.VBox(
            [
                self.method,
                self.summary,
                w.HBox([self.temperature, self.alpha]),
                self.params_box,
                w.HBox([self.labeled_fraction, self.epochs]),
                w.HBox([self.train_button, self.stop_button, self.progress]),
                self.status,
                self.accuracy,
                self.losses,
            ]
        )
        self._method_changed()

    def _method_changed(self) -> None:
        m = methods.get(self.method.value)
        self.summary.value = f"<i>{m.summary}</i><br><small>{m.paper}</small>"
        self.param_sliders = {p.name: _param_slider(p) for p in m.params}
        self.params_box.children = list(self.param_sliders.values())
        self.alpha.disabled = not m.uses_alpha
        self.temperature.disabled = not m.uses_temperature

    def config(self) -> Config:
        """The run's configuration from the controls (validated: ConfigError when bad)."""
        return Config(
            dataset=self.dataset,
            method=self.method.value,
            temperature=float(self.temperature.value),
            alpha=float(self.alpha.value),
            params={k: s.value for k, s in self.param_sliders.items()},
            epochs=int(self.epochs.value),
            labeled_fraction=float(self.labeled_fraction.value),
        ).validate()

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        try:
            cfg = self.config()
        except KDError as e:
            self.status.value = f"<span style='color:#b00'>Cannot train: {e}</span>"
            return
        self.result, self._steps, self._epochs = None, [], []
        self.progress.value = 0  # a new run starts from zero, not from the last run's end
        self.trainer = train.Trainer(cfg)
        self.train_button.disabled, self.stop_button.disabled = True, False
        self.status.value = "Preparing the teacher and the data…"
        self.thread = threading.Thread(target=self._run, args=(self.trainer,), daemon=True, name="kd-notebook-train")
        self.thread.start()

    def stop(self) -> None:
        if self.trainer is not None:
            self.trainer.stop()

    def wait(self, timeout: float | None = None) -> dict | None:
        """Block until the run ends (for scripts and tests); returns its summary."""
        if self.thread is not None:
            self.thread.join(timeout)
        return self.result

    def _run(self, trainer: train.Trainer) -> None:
        try:
            for ev in trainer.events():
                self._on_event(ev)
        except Exception as e:  # shown in the panel, never lost in a thread
            self.status.value = f"<span style='color:#b00'>The run failed: {type(e).__name__}: {e}</span>"
        finally:
            self.train_button.disabled, self.stop_button.disabled = False, True

    def _on_event(self, ev: dict) -> None:
        kind = ev["kind"]
        if kind == "start":
            self.progress.max = max(1, ev["total_steps"])
            self.progress.value = 0
            self._teacher_acc = ev["teacher_acc"]
            self.status.value = (
                f"Training on {ev['transfer_set']:,} images ({ev['labelled']:,} with labels); "
                f"teacher {ev['teacher_acc']:.1%}."
            )
            self._draw_accuracy(ev["epochs"])
        elif kind == "step":
            self._steps.append(ev)
            self.progress.value = ev["step"]
            if ev["step"] % self.REDRAW_EVERY == 0:
                refresh(self.losses, viz.loss_curves(self._steps, title="Loss terms per step"))
        elif kind == "epoch":
            self._epochs.append(ev)
            self._draw_accuracy(self.epochs.value)
            base = f", scratch {ev['baseline_acc']:.1%}" if ev.get("baseline_acc") is not None else ""
            self.status.value = f"Epoch {ev['epoch']}: distilled {ev['student_acc']:.1%}{base}."
        elif kind == "end":
            self.result = ev["result"]
            refresh(self.losses, viz.loss_curves(self._steps, title="Loss terms per step"))
            res = ev["result"]
            student = res["student"]["test_accuracy"]
            base = res.get("baseline") or {}
            gain = (
                f"; scratch {base['test_accuracy']:.1%}, gain {100 * (student - base['test_accuracy']):+.1f} points"
                if base.get("test_accuracy") is not None
                else ""
            )
            self.status.value = f"<b>{ev['status']}</b>: distilled student {student:.1%}{gain}. {ev['message']}"

    def _draw_accuracy(self, total_epochs: int) -> None:
        refresh(
            self.accuracy,
            viz.accuracy_curves(self._epochs, self._teacher_acc, total_epochs, title="Test accuracy per epoch"),
        )


# ---------------------------------------------------------------- experiments


class Experiments(_View):
    """The lesson's two experiments as buttons: few labels (distilled vs scratch at a share
    of labels) and the missing class (a class removed from the student's data, distilled at
    a low and a high T). Each runs in the background; its result appears when it finishes."""

    def __init__(self, dataset: str = "mnist-mini", epochs: int = 3, missing: int = 3):
        self.dataset, self.epochs_n, self.missing = dataset, epochs, missing
        self.fraction = w.FloatSlider(
            value=0.1, min=0.01, max=1.0, step=0.01, description="labelled share", layout=WIDE, style=DESCRIPTION
        )
        self.few_button = w.Button(description="Few labels: distilled vs scratch", layout=w.Layout(width="300px"))
        self.missing_button = w.Button(
            description=f"Missing class {missing}: T = 2 vs T = 20", layout=w.Layout(width="300px")
        )
        self.status = w.HTML()
        self.figure = go.FigureWidget()
        self.results: dict[str, dict] = {}
        self.thread: threading.Thread | None = None
        self.few_button.on_click(lambda _b: self._start(self._few_labels))
        self.missing_button.on_click(lambda _b: self._start(self._missing_class))
        self.view = w.VBox([w.HBox([self.fraction, self.few_button]), self.missing_button, self.status, self.figure])

    def _start(self, job) -> None:
        if self.thread is not None and self.thread.is_alive():
            self.status.value = "An experiment is already running; wait for it to finish."
            return
        self.few_button.disabled = self.missing_button.disabled = True
        self.thread = threading.Thread(target=self._guarded, args=(job,), daemon=True, name="kd-notebook-experiment")
        self.thread.start()

    def wait(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def _guarded(self, job) -> None:
        try:
            job()
        except Exception as e:
            self.status.value = f"<span style='color:#b00'>The experiment failed: {type(e).__name__}: {e}</span>"
        finally:
            self.few_button.disabled = self.missing_button.disabled = False

    def _few_labels(self) -> None:
        frac = float(self.fraction.value)
        self.status.value = f"Training a distilled and a scratch student with {frac:.0%} of the labels…"
        res = train.distil(Config(dataset=self.dataset, labeled_fraction=frac, epochs=self.epochs_n).validate())
        self.results["few_labels"] = res
        refresh(
            self.figure,
            viz.accuracy_curves(
                res["epochs"],
                res["teacher"]["test_accuracy"],
                self.epochs_n,
                title=f"{frac:.0%} of the labels: distilled vs scratch",
            ),
        )
        s, b = res["student"]["test_accuracy"], res["baseline"]["test_accuracy"]
        self.status.value = f"{frac:.0%} of the labels: distilled <b>{s:.1%}</b> vs scratch <b>{b:.1%}</b>."

    def _missing_class(self) -> None:
        runs = {}
        for T in (2.0, 20.0):
            self.status.value = f"Class {self.missing} removed: distilling at T = {T:g}…"
            cfg = Config(
                dataset=self.dataset,
                labeled_fraction=1.0,
                epochs=self.epochs_n,
                omit_class=self.missing,
                temperature=T,
                baseline=T == 2.0,
            )
            runs[T] = train.distil(cfg.validate())
        self.results["missing_class"] = runs
        per_class = {f"distilled, T = {T:g}": r["student"]["per_class_accuracy"] for T, r in runs.items()}
        per_class["scratch"] = runs[2.0]["baseline"]["per_class_accuracy"]
        classes = [str(c) for c in range(len(per_class["scratch"]))]
        refresh(
            self.figure,
            viz.per_class_bars(per_class, classes, title=f"Per-class accuracy, class {self.missing} never seen"),
        )
        m = self.missing
        self.status.value = (
            f"Never-seen class {m}: distilled at T = 2: <b>{runs[2.0]['student']['per_class_accuracy'][m]:.0%}</b>, "
            f"at T = 20: <b>{runs[20.0]['student']['per_class_accuracy'][m]:.0%}</b>, "
            f"scratch: <b>{runs[2.0]['baseline']['per_class_accuracy'][m]:.0%}</b>."
        )

"""The Jupyter tour (notebooks/kd_tour.ipynb) runs top to bottom on the embedded data, prints
what a reader would check, and is committed without outputs.

The notebook runs in a kernel started from this interpreter (a kernel spec written to a
temporary folder), so it sees the same packages as the tests and nothing installed elsewhere;
the kernel inherits the environment set by conftest.py (KD_PLAYGROUND_HOME, offline, CPU)
and starts in notebooks/, as it would for a reader: the notebook finds kd_core itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "kd_tour.ipynb"
KERNEL = "kd-playground-tests"
PLOTLY = "application/vnd.plotly.v1+json"


def _code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _assert_clean(nb: dict, where: str) -> None:
    for i, cell in enumerate(_code_cells(nb)):
        assert cell.get("outputs") == [], f"{where}: code cell {i} has outputs; clear them before committing"
        assert cell.get("execution_count") is None, f"{where}: code cell {i} has an execution count"
    assert "widgets" not in nb.get("metadata", {}), f"{where}: widget state is stored in the metadata"


def test_notebook_is_stored_without_outputs():
    _assert_clean(json.loads(NOTEBOOK.read_text(encoding="utf-8")), str(NOTEBOOK.relative_to(ROOT)))
    # the versions git holds (staged and committed), where git knows the file
    rel = NOTEBOOK.relative_to(ROOT).as_posix()
    for rev in (f":{rel}", f"HEAD:{rel}"):
        try:
            shown = subprocess.run(["git", "show", rev], cwd=ROOT, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return  # no git here
        if shown.returncode == 0:
            _assert_clean(json.loads(shown.stdout), f"git {rev}")


def _headings(nb: dict) -> list[str]:
    return [
        line
        for c in nb["cells"]
        if c["cell_type"] == "markdown"
        for line in "".join(c["source"]).splitlines()
        if line.startswith("## ")
    ]


def test_notebook_follows_the_lesson_section_by_section():
    """The tour and the app's Lesson tell the same story: the same numbered sections with the
    same titles, in the same order (the Lesson's titles from its English catalogue)."""
    from kd_app import i18n

    cat = i18n.catalogue("en")
    lesson = []
    while f"lesson.s{len(lesson) + 1}.title" in cat:
        lesson.append(f"{len(lesson) + 1} · {cat[f'lesson.s{len(lesson) + 1}.title']}")
    tour = [h.removeprefix("## ").strip() for h in _headings(json.loads(NOTEBOOK.read_text(encoding="utf-8")))]
    assert len(lesson) >= 8 and tour == lesson


def test_notebook_source_is_paired_with_a_readable_py_file():
    """The .py (jupytext percent format) is the reviewable source; the .ipynb holds the same
    cells, so neither can drift from the other."""
    import jupytext

    py = NOTEBOOK.with_suffix(".py")
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert nb["metadata"]["jupytext"]["formats"] == "ipynb,py:percent"
    paired = jupytext.read(py)
    ours = [(c["cell_type"], "".join(c["source"])) for c in nb["cells"]]
    theirs = [(c.cell_type, c.source) for c in paired.cells]
    assert ours == theirs, "notebooks/kd_tour.py and kd_tour.ipynb differ: run `jupytext --sync notebooks/kd_tour.py`"


def test_notebook_tells_the_lessons_story_in_order():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    headings = _headings(nb)
    assert [h.split("·")[0].strip("# ").strip() for h in headings] == [str(n) for n in range(1, 9)], headings
    text = "\n".join("".join(c["source"]) for c in nb["cells"])
    assert "<details>" in text and "</details>" in text  # the quiz's answers fold away
    for needed in (
        "get_teacher",
        "models.profile",
        "viz.prob_bars",
        "viz.entropy_curve",
        "viz.accuracy_curves",
        "omit_class=MISSING",
        "formula_latex",
        "losses.attention_map",
        "losses.normalised_distances",
        "losses.contrastive_logits",
        "DistilBERT",
        "TinyBERT",
        "kd_notebook.SoftTargets",
        "kd_notebook.LossDecomposition",
        "kd_notebook.TrainPanel",
        "kd_notebook.Experiments",
    ):
        assert needed in text, needed


# appended to the tour when the test runs it: moves the notebook's widgets and reads what changed
DRIVE_WIDGETS = """
h0, top0 = soft.entropy_now, soft.probabilities().max()
soft.temperature.value = 20.0
print(f"soft targets: H {h0:.4f} -> {soft.entropy_now:.4f} bits, top bar {top0:.4f} -> {max(soft.bars.data[0].y):.4f}")
before = loss_view.terms()["total L"]
loss_view.alpha.value = 0.1
after = loss_view.terms()["total L"]
engine = 0.9 * F.cross_entropy(loss_view.zs, loss_view.y).item() + 0.1 * losses.kd_loss(loss_view.zs, loss_view.zt, 4.0).item()
print(f"loss: total {before:.6f} at alpha 0.9 -> {after:.6f} at alpha 0.1; engine {engine:.6f}")
panel.epochs.value = 1
panel.train_button.click()
res = panel.wait(600)
print(f"panel: {res['status']}, student {res['student']['test_accuracy']:.4f}, "
      f"progress {panel.progress.value}/{panel.progress.max}, {len(panel.accuracy.data[0].x)} accuracy points")
experiments.epochs_n = 1
experiments.fraction.value = 0.05
experiments.few_button.click()
experiments.wait(600)
r = experiments.results["few_labels"]
print(f"experiment: distilled {r['student']['test_accuracy']:.4f} vs scratch {r['baseline']['test_accuracy']:.4f}")
"""


def _kernel_spec(folder: Path) -> None:
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True)
    spec.joinpath("kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "KD Playground (tests)",
                "language": "python",
            }
        )
    )


def _texts(cell: dict) -> str:
    """What a reader sees of a cell as text: its printed lines and the plain text of its results."""
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream" and o.get("name") == "stdout":
            out.append(o["text"])
        elif o["output_type"] in ("execute_result", "display_data"):
            out.append(str(o["data"].get("text/plain", "")))
    return "".join(out)


def _number(pattern: str, text: str) -> tuple[float, ...]:
    m = re.search(pattern, text)
    assert m, f"expected a line matching {pattern!r} in the notebook's output:\n{text[-3000:]}"
    return tuple(float(g.replace(",", "")) for g in m.groups())


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    _kernel_spec(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))  # searched before the user's kernels
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # no user profile or start-up scripts
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the notebook must find kd_core on its own

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(DRIVE_WIDGETS))  # move the notebook's own widgets, as a reader would
    client = NotebookClient(
        nb, timeout=300, kernel_name=KERNEL, allow_errors=False, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails
    seconds = time.perf_counter() - t0
    print(f"kd_tour.ipynb executed in {seconds:.0f} s")

    cells = _code_cells(nb)
    assert not [o for c in cells for o in c["outputs"] if o["output_type"] == "error"]
    text = "\n".join(_texts(c) for c in cells)

    # 1. the measured table: the student is smaller and cheaper
    params, flops = _number(r"The student has (\d+)x fewer parameters and needs (\d+)x fewer FLOPs", text)
    assert params > 1 and flops > 1

    # 3. on real logits: the plain KL gradient shrinks like 1/T^2 and T^2 KL tends to logit matching
    shrink, predicted = _number(
        r"the gradient shrinks x([\d.,]+) from T = 32 to T = 128 \(1/T\^2 predicts x(\d+)\)", text
    )
    assert predicted == 16 and 10 < shrink < 25
    cosine, ratio = _number(
        r"at T = 128 the T\^2 KL gradient vs logit matching: cosine ([\d.]+), norm ratio ([\d.]+)", text
    )
    assert cosine > 0.99 and 0.9 < ratio < 1.1

    # 4. few labels: the distilled student beats the scratch student
    distilled, scratch = _number(r"distilled (\d\.\d+) vs scratch (\d\.\d+)", text)
    assert distilled > scratch, f"distilled {distilled} is not above scratch {scratch}"

    # 5. the missing 3: never seen, so the scratch student never answers 3; soft targets at T = 20 teach it
    lo, hi, never = _number(
        r"never-seen digit 3: distilled at T = 2: ([\d.]+)%, distilled at T = 20: ([\d.]+)%, "
        r"scratch: ([\d.]+)%",
        text,
    )
    assert never == 0.0
    assert hi > lo, f"T = 20 ({hi}%) should recognise more 3s than T = 2 ({lo}%)"

    # the interactive cells answer their controls (the appended cell moved them in the kernel)
    h_lo, h_hi, bar_lo, bar_hi = _number(
        r"soft targets: H ([\d.]+) -> ([\d.]+) bits, top bar ([\d.]+) -> ([\d.]+)", text
    )
    assert h_hi > h_lo and bar_hi < bar_lo  # a higher T flattens the bars
    t_lo, t_hi, check = _number(r"loss: total ([\d.]+) at alpha 0.9 -> ([\d.]+) at alpha 0.1; engine ([\d.]+)", text)
    assert t_lo != t_hi and abs(t_hi - check) < 1e-6
    # 7. language models: forward KL covers both modes, reverse KL seeks one (lower entropy)
    h_fwd = _number(r"forward KL: .*?entropy ([\d.]+) nats", text)[0]
    h_rev = _number(r"reverse KL: .*?entropy ([\d.]+) nats", text)[0]
    assert h_rev < h_fwd
    acc, steps, total, points = _number(
        r"panel: finished, student ([\d.]+), progress (\d+)/(\d+), (\d+) accuracy points", text
    )
    assert acc > 0.5 and steps == total > 0 and points == 1
    s_few, b_few = _number(r"experiment: distilled ([\d.]+) vs scratch ([\d.]+)", text)
    assert 0 < b_few <= 1 and 0 < s_few <= 1

    # figures are real plotly figures, one per fig.show()
    figures = sum(PLOTLY in o.get("data", {}) for c in cells for o in c["outputs"])
    shows = sum("".join(c["source"]).count(".show()") for c in cells)
    assert figures == shows >= 10

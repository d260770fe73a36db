"""The leaderboard at full scale runs long: it goes seed by seed (stopped early, it still has
every method), logs each finished run as a JSON line, and shows the seconds per run."""

from __future__ import annotations

import json

from kd_core import sweep
from kd_core.__main__ import main
from kd_core.config import Config


def test_leaderboard_tasks_go_seed_by_seed_and_grids_stay_cell_by_cell():
    lb = sweep.Sweep.leaderboard(Config(dataset="digits", epochs=1), seeds=[0, 1], methods=["none", "kd", "dkd"])
    order = [(t["seed"], t["cell"]["method"]) for t in lb.tasks()]
    assert order == [(0, "none"), (0, "kd"), (0, "dkd"), (1, "none"), (1, "kd"), (1, "dkd")]
    assert [t["index"] for t in lb.tasks()] == list(range(6))
    grid = sweep.Sweep.grid(Config(dataset="digits", epochs=1), [2.0, 4.0], [0.9], seeds=[0, 1])
    assert [(t["cell"]["temperature"], t["seed"]) for t in grid.tasks()] == [(2.0, 0), (2.0, 1), (4.0, 0), (4.0, 1)]


def test_each_finished_run_is_logged_and_the_table_shows_seconds(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep, "leaderboard_dir", lambda: tmp_path)
    args = ["leaderboard", "--dataset", "digits", "--methods", "none,kd", "--seeds", "0,1", "--epochs", "1"]
    assert main(args + ["--n-jobs", "1"]) == 0
    out = capsys.readouterr().out
    runs = [json.loads(line) for line in (tmp_path / "digits.runs.jsonl").read_text().splitlines()]
    assert sorted((r["cell"]["method"], r["seed"]) for r in runs) == [("kd", 0), ("kd", 1), ("none", 0), ("none", 1)]
    assert all(r["status"] == "finished" and r["seconds"] > 0 and len(r["history"]) == 1 for r in runs)
    head = next(line for line in out.splitlines() if line.startswith("method"))
    assert "s / run" in head and "wall time" in out
    # the table's mean is over the logged runs' last-epoch accuracies
    kd = [r["history"][-1] for r in runs if r["cell"]["method"] == "kd"]
    row = next(line for line in out.splitlines() if line.startswith("KD "))
    assert f"{100 * sum(kd) / 2:.2f}" in row

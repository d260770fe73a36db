"""Sweeps: a 2x2 T x alpha grid on joblib worker processes and on a local Dask cluster
(the same numbers), the command line, its one-line errors, and the leaderboard."""

from __future__ import annotations

import csv
import io
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from kd_core import sweep, viz
from kd_core.__main__ import main
from kd_core.config import Config

ROOT = Path(__file__).resolve().parents[1]
BASE = Config(dataset="digits", epochs=1)


def check_grid(res: sweep.SweepResult) -> dict:
    rows = res.rows()
    cells = [r for r in rows if not r["reference"]]
    assert len(cells) == 4
    assert {(r["temperature"], r["alpha"]) for r in cells} == {(2.0, 0.5), (2.0, 0.9), (4.0, 0.5), (4.0, 0.9)}
    for r in cells:
        assert r["n"] == 2 and len(r["accs"]) == 2
        assert 0.0 < r["acc_mean"] <= 1.0 and 0.0 < r["agree_mean"] <= 1.0
        assert r["acc_std"] == pytest.approx(abs(r["accs"][0] - r["accs"][1]) / math.sqrt(2))
    best = res.best(rows=rows)
    assert best["acc_mean"] == max(r["acc_mean"] for r in cells)
    assert not res.errors()
    return {(r["temperature"], r["alpha"]): r["accs"] for r in cells}


@pytest.fixture(scope="module")
def joblib_run():
    sw = sweep.Sweep.grid(BASE, [2, 4], [0.5, 0.9], seeds=[0, 1], scratch=True)
    assert sw.total == 10
    seen = []
    res = sw.run(backend="joblib", n_jobs=2, on_result=lambda r, res: seen.append(res.done))
    return sw, res, seen


def test_a_2x2_sweep_runs_on_parallel_worker_processes(joblib_run):
    sw, res, seen = joblib_run
    check_grid(res)
    assert seen == list(range(1, 11))  # results arrive one by one as they finish
    assert {r["worker"] for r in res.items} - {os.getpid()}, "the cells ran in worker processes"
    assert all(r["worker"] != os.getpid() for r in res.items)
    assert all(r["threads"] == 1 for r in res.items)  # one torch thread per worker
    ref = next(r for r in res.rows() if r["reference"])
    assert ref["method"] == "none" and ref["n"] == 2
    table = sweep.grid_table(res)
    assert "T=2" in table and "T=4" in table and "best cell" in table and "scratch student" in table
    text = res.to_csv()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 5 and sum(r["best"] == "True" for r in rows) == 1
    fig = viz.heatmap_figure(res, "kd", 0.1, "acc", best=res.best())
    assert len(fig.layout.shapes) == 1  # the best cell outlined


@pytest.fixture
def spawnable_main(monkeypatch):
    """Dask's local workers start by multiprocessing's spawn, which re-runs the parent's
    ``__main__`` file in the child; under pytest-xdist that is execnet's bootstrap, which
    cannot run alone. Without a main file the child imports only what it unpickles."""
    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "__file__", None, raising=False)
    monkeypatch.setattr(main, "__spec__", None, raising=False)


@pytest.mark.slow
@pytest.mark.usefixtures("spawnable_main")
def test_the_same_sweep_on_a_local_dask_cluster(joblib_run):
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    _, res_joblib, _ = joblib_run
    sw = sweep.Sweep.grid(BASE, [2, 4], [0.5, 0.9], seeds=[0, 1])
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        res = sw.run(backend="dask", address=cluster.scheduler_address)
    got = check_grid(res)
    assert all(r["threads"] == 1 for r in res.items)
    # seeds make runs reproducible: the cluster's numbers are joblib's
    assert got == check_grid(res_joblib)


@pytest.mark.slow
def test_the_cli_writes_a_csv(tmp_path):
    out = tmp_path / "sweep.csv"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "kd_core",
            "sweep",
            "--dataset",
            "digits",
            "--temperatures",
            "2,4",
            "--alphas",
            "0.5,0.9",
            "--seeds",
            "0",
            "--epochs",
            "1",
            "--csv",
            str(out),
        ],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and {r["temperature"] for r in rows} == {"2.000000", "4.000000"}
    assert all(r["n"] == "1" and 0 < float(r["acc_mean"]) <= 1 for r in rows)
    assert "best cell" in p.stdout and str(out) in p.stdout


BAD = [
    (["--temperatures", "2,x"], "--temperatures must be numbers"),
    (["--temperatures", "0,2"], "T must be > 0"),
    (["--alphas", "0.5,1.5"], "alpha must be in [0, 1]"),
    (["--seeds", "a"], "--seeds must be whole numbers"),
    (["--seeds", ","], "at least one value"),
    (["--methods", "kd,magic"], "unknown method 'magic'"),
    (["--fractions", "0"], "labelled fraction"),
    (["--backend", "spark"], "invalid choice: 'spark'"),
    (["--n-jobs", "0"], "--n-jobs: must be at least 1"),
    (["--address", "tcp://x:1"], "needs a cluster backend"),
    (["--epochs", "0"], "epochs must be in"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_values_exit_2_with_one_line(args, needle, capsys):
    try:
        rc = main(["sweep", "--dataset", "digits", *args])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], err


def test_ray_backend_says_how_to_install_ray(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    rc = main(["sweep", "--dataset", "digits", "--backend", "ray", "--temperatures", "2", "--alphas", "0.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "pip install ray" in err[0]


def test_leaderboard(tmp_path, monkeypatch, capsys):
    full = sweep.Sweep.leaderboard(BASE, seeds=[0, 1, 2])
    from kd_core import methods

    assert [c["method"] for c in full.cells] == ["none"] + [m for m in methods.METHODS if m != "none"]
    assert full.total == 3 * len(methods.METHODS)
    alphas = {c["method"]: cfgs[0].alpha for c, cfgs in zip(full.cells, full.configs)}
    assert alphas["kd"] == BASE.alpha and alphas["fitnets"] == 0.0 and alphas["crd"] == 0.0
    monkeypatch.setattr(sweep, "leaderboard_dir", lambda: tmp_path)
    rc = main(
        [
            "leaderboard",
            "--dataset",
            "digits",
            "--methods",
            "none,kd",
            "--seeds",
            "0",
            "--epochs",
            "1",
            "--n-jobs",
            "1",
            "--csv",
            str(tmp_path / "copy.csv"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "Student (scratch)" in out and "KD" in out and "Teacher (cnn-32-64)" in out
    rows = list(csv.DictReader((tmp_path / "digits.csv").open()))
    assert [r["method"] for r in rows] == ["teacher", "none", "kd"]
    assert (tmp_path / "copy.csv").read_text() == (tmp_path / "digits.csv").read_text()
    assert sweep.latest_leaderboard() in (tmp_path / "digits.csv", tmp_path / "copy.csv")


def test_a_background_sweep_job_can_be_stopped():
    sw = sweep.Sweep.grid(BASE, [1, 2, 4, 8], [0.5, 0.9], seeds=[0])
    job = sweep.SweepJob(sw, backend="joblib", n_jobs=1)
    job.stop()  # before it starts: nothing runs
    job.start().join(60)
    assert job.status == "stopped" and job.result.done == 0


@pytest.mark.slow
@pytest.mark.usefixtures("spawnable_main")
def test_dask_workers_train_groups_of_cells_as_one_batch(joblib_run):
    """``--group 4`` on a cluster: each worker trains four cells as one batch of students;
    the numbers are those of one cell per process, to float tolerance."""
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    _, res_joblib, _ = joblib_run
    sw = sweep.Sweep.grid(BASE, [2, 4], [0.5, 0.9], seeds=[0, 1])
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        res = sw.run(backend="dask", address=cluster.scheduler_address, group=4)
    assert res.done == 8 and not res.errors()
    assert all(r["batched"] == 4 for r in res.items)
    got, want = check_grid(res), check_grid(res_joblib)
    for cell, accs in want.items():
        assert got[cell] == pytest.approx(accs, abs=3e-3)


def test_a_batch_stopped_part_way_is_a_stopped_sweep():
    """Every run of a batch ends when it is stopped (status "stopped", its epochs so far): the
    sweep is stopped, not finished, though every run has a record."""
    sw = sweep.Sweep.grid(replace(BASE, epochs=20), [1, 2], [0.5], seeds=[0])
    job = sweep.SweepJob(sw, backend="batched", is_alive=lambda: False)  # nobody watches: it stops at once
    job.start().join(300)
    assert job.status == "stopped" and job.message == "stopped: the browser session closed"
    assert job.result.done == 2 and all(r["status"] == "stopped" for r in job.result.items)
    assert all(0 < len(r["history"]) < 20 for r in job.result.items)

"""Many students at once (kd_core/batched.py): member k of a batch must train exactly as
it would alone — same losses step by step, same weights, same BatchNorm statistics (eval
mode), same result — for every per-step method family; a member that diverges or a stop
leaves the others as they would be; groups follow the memory budget."""

from __future__ import annotations

import pytest
import torch

from kd_core import batched, losses, methods, metrics, train
from kd_core.config import Config
from kd_core.errors import ConfigError


def pair(method: str, **kw) -> list[Config]:
    """Two runs of one method that differ in everything a member may own: seed (so the
    initial weights, labelled mask and batch order), T, alpha, learning rate and labelled
    fraction; the first also trains a scratch baseline (one more member)."""
    base = dict(dataset="digits", student="cnn-8-16", method=method, epochs=2) | kw
    return [
        Config(**base, temperature=4.0, alpha=0.9, seed=0, baseline=True),
        Config(**base, temperature=2.0, alpha=0.5, seed=1, lr=1e-3, labeled_fraction=0.5, baseline=False),
    ]


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-6)


def assert_same_as_alone(cfgs: list[Config], run: batched.BatchedRun, results: list[dict]) -> None:
    for cfg, r, tr in zip(cfgs, results, run.trainers):
        alone = train.Trainer(cfg)
        ref = alone.run()
        assert r["status"] == ref["status"] == "finished"
        assert r["steps"] == ref["steps"]
        # every step's loss, term by term
        for a, b in zip(r["step_losses"], ref["step_losses"]):
            assert set(a["losses"]) == set(b["losses"])
            assert rel(a["loss"], b["loss"]) < 1e-4, (a, b)
        # the trained student in eval mode (BatchNorm's running statistics included)
        mine = metrics.predict_logits(tr.student, tr.x_test)
        theirs = metrics.predict_logits(alone.student, alone.x_test)
        assert torch.allclose(mine, theirs, atol=1e-4), (mine - theirs).abs().max()
        for name, buf in tr.student.named_buffers():
            assert torch.allclose(buf.float(), dict(alone.student.named_buffers())[name].float(), atol=1e-5), name
        assert r["student"]["test_accuracy"] == pytest.approx(ref["student"]["test_accuracy"], abs=2e-3)
        if cfg.baseline:
            b_mine = metrics.predict_logits(tr.baseline, tr.x_test)
            b_theirs = metrics.predict_logits(alone.baseline, alone.x_test)
            assert torch.allclose(b_mine, b_theirs, atol=1e-4)
            assert r["baseline"]["test_accuracy"] == pytest.approx(ref["baseline"]["test_accuracy"], abs=2e-3)


# one method per family first (fast), then the others (slow)
FAMILY = {"kd": "logits", "fitnets": "feature", "rkd": "relational", "crd": "contrastive"}
OTHERS = [m.name for m in methods.all_methods().values() if m.pipeline is None and m.name not in FAMILY]


@pytest.mark.parametrize("method", list(FAMILY))
def test_each_family_trains_as_if_alone(method):
    cfgs = pair(method)
    run = batched.BatchedRun(cfgs)
    results = run.run()
    assert len(run.members) == 3  # two students and one scratch baseline
    assert all(r["batched"] == {"members": 3, "runs": 2} for r in results)
    assert_same_as_alone(cfgs, run, results)


@pytest.mark.slow
@pytest.mark.parametrize("method", OTHERS)
def test_every_other_method_trains_as_if_alone(method):
    cfgs = pair(method)
    run = batched.BatchedRun(cfgs)
    assert_same_as_alone(cfgs, run, run.run())


@pytest.mark.slow
def test_a_t_by_alpha_grid_of_members_each_as_if_alone():
    """Four cells of a sweep in one batch, on the default mnist-mini pair, one epoch."""
    cfgs = [
        Config(dataset="mnist-mini", method="kd", temperature=t, alpha=a, epochs=1, seed=0, baseline=False)
        for t in (1.0, 4.0)
        for a in (0.25, 1.0)
    ]
    run = batched.BatchedRun(cfgs)
    results = run.run()
    for cfg, r in zip(cfgs, results):
        ref = train.distil(cfg)
        assert r["config"]["temperature"] == cfg.temperature and r["config"]["alpha"] == cfg.alpha
        assert rel(r["step_losses"][-1]["loss"], ref["step_losses"][-1]["loss"]) < 1e-3
        assert r["student"]["test_accuracy"] == pytest.approx(ref["student"]["test_accuracy"], abs=3e-3)
    # the teacher's outputs were computed once and shared by every member
    assert len({id(tr.t_logits) for tr in run.trainers}) == 1


def test_one_config_gives_exactly_a_trainers_events():
    """The Lab's distilled + scratch pair: two members, the events of a lone Trainer."""
    cfg = pair("kd")[0]
    run = batched.BatchedRun([cfg])
    evs = list(run.events())
    ref = list(train.Trainer(cfg).events())
    assert [e["kind"] for e in evs] == [e["kind"] for e in ref]
    assert all("member" not in e for e in evs)
    assert run.trainer is run.trainers[0] and run.result is evs[-1]["result"]
    assert run.trainer.snapshot()["student"] is not None  # what the Lab's pages draw from


def test_several_configs_tag_their_events_and_end_with_all_results():
    cfgs = pair("kd")
    evs = list(batched.BatchedRun(cfgs).events())
    assert {e.get("member") for e in evs if e["kind"] == "step"} == {0, 1}
    epochs = [e for e in evs if e["kind"] == "epoch"]
    assert [(e["member"], e["epoch"]) for e in epochs] == [(0, 1), (1, 1), (0, 2), (1, 2)]  # all advance together
    assert evs[-1]["kind"] == "end" and len(evs[-1]["results"]) == 2


def test_a_member_that_diverges_ends_alone(monkeypatch):
    real = losses.kd_loss
    calls = {"n": 0}

    def flaky(s, t, temperature):
        out = real(s, t, temperature)
        if temperature == 3.0:
            calls["n"] += 1
            if calls["n"] >= 4:
                return out * float("nan")
        return out

    monkeypatch.setattr(losses, "kd_loss", flaky)
    cfgs = [
        Config(dataset="digits", method="kd", temperature=3.0, epochs=2, seed=0, baseline=False),
        Config(dataset="digits", method="kd", temperature=4.0, epochs=2, seed=1, baseline=False),
    ]
    run = batched.BatchedRun(cfgs)
    bad, good = run.run()
    assert bad["status"] == "diverged" and "step 4" in bad["message"]
    assert bad["steps"] == 3
    assert good["status"] == "finished"
    ref = train.distil(cfgs[1])
    assert good["steps"] == ref["steps"]
    assert rel(good["step_losses"][-1]["loss"], ref["step_losses"][-1]["loss"]) < 1e-4


def test_stop_keeps_what_every_member_did():
    cfgs = pair("kd", epochs=3)
    run = batched.BatchedRun(cfgs)
    steps = 0
    for ev in run.events():
        if ev["kind"] == "step" and ev["member"] == 1:
            steps += 1
            if steps == 5:
                run.stop()
    for r in run.results:
        assert r["status"] == "stopped" and r["steps"] == 5
        assert r["epochs"][-1]["partial"]
        assert r["student"]["test_accuracy"] > 0.1


def test_what_cannot_batch_says_why_and_groups_follow_the_memory_budget():
    kd = Config(dataset="digits", method="kd")
    assert batched.why_not([kd, Config(dataset="digits", method="dkd", temperature=2)]) is None
    assert "student" in batched.why_not([kd, Config(dataset="digits", method="kd", student="mlp-64")])
    assert "dataset" in batched.why_not([kd, Config(dataset="mnist-mini", method="kd")])
    assert "chains" in batched.why_not([Config(dataset="digits", method="born-again")])
    with pytest.raises(ConfigError, match="cannot train as one batch"):
        batched.BatchedRun([kd, Config(dataset="digits", method="kd", epochs=kd.epochs + 1)])
    assert batched.group_key(Config(dataset="digits", method="born-again")) is None
    per = batched.member_bytes("cnn-8-16", (1, 28, 28), 10, 64)
    assert 10_000 < per < 100 * 2**20
    cfg = Config(dataset="mnist-mini", method="kd")
    assert batched.group_size(cfg, budget=3 * per) == 3
    assert batched.group_size(cfg, budget=1) == 1
    assert batched.group_size(cfg, budget=10**15) == batched.MAX_GROUP


def test_the_memory_budget_comes_from_the_server(monkeypatch):
    monkeypatch.setenv("KD_PLAYGROUND_BATCH_MEMORY", "2e6")
    assert batched.memory_budget() == 2_000_000
    monkeypatch.setenv("KD_PLAYGROUND_BATCH_MEMORY", "lots")
    with pytest.raises(ConfigError, match="KD_PLAYGROUND_BATCH_MEMORY"):
        batched.memory_budget()


def test_distil_many_batches_what_it_can_and_runs_the_rest_alone():
    cfgs = [
        Config(dataset="digits", method="kd", epochs=1, seed=0, baseline=False),
        Config(dataset="digits", method="kd", epochs=1, seed=0, student="mlp-64", baseline=False),
        Config(dataset="digits", method="dkd", epochs=1, seed=1, baseline=False),
    ]
    out = batched.distil_many(cfgs)
    assert [r["config"]["seed"] for r in out] == [0, 0, 1]
    assert out[0]["batched"] == {"members": 2, "runs": 2} and out[2]["batched"] == out[0]["batched"]
    assert out[1]["batched"] == {"members": 1, "runs": 1}
    assert out[1]["student"]["arch"] == "mlp-64"


# ---------------------------------------------------------------- sweeps, leaderboards


def test_a_batched_sweep_fills_every_cell_together_and_matches_runs_alone():
    from kd_core import sweep

    base = Config(dataset="digits", method="kd", epochs=2, labeled_fraction=0.5)
    sw = sweep.Sweep.grid(base, [1.0, 4.0], [0.5, 1.0], seeds=(0,))
    records = list(sw.results(backend="batched"))
    live = [r for r in records if r["status"] == "running"]
    final = [r for r in records if r["status"] != "running"]
    # every cell reports epoch 1 before any reports epoch 2, and all before any ends
    assert [r["epoch"] for r in live] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert records.index(final[0]) > records.index(live[-1])
    assert len(final) == 4 and all(r["status"] == "finished" and r["batched"] == 4 for r in final)
    for r in final:
        alone = train.distil(sw.configs[r["cell_index"]][0])
        assert r["student_acc"] == pytest.approx(alone["student"]["test_accuracy"], abs=3e-3)
        assert r["history"] == pytest.approx([h["test_accuracy"] for h in alone["student"]["history"]], abs=3e-3)
    # the result table while the batch trains: every cell shows its accuracy so far
    res = sweep.SweepResult(sw)
    for r in live[:4]:
        res.add(r)
    rows = res.rows()
    assert all(row["live"] == 1 and row["epoch"] == 1 and row["n"] == 0 for row in rows)
    assert res.done == 0 and res.progress() == pytest.approx(4 * 0.5) and res.training() == (1, 2)
    fig = viz_heatmap(res)
    assert all("epoch 1/2" in cell for row in fig.data[-1].text for cell in row)
    for r in final:
        res.add(r)
    assert res.done == 4 and res.training() is None and all(row["n"] == 1 for row in res.rows())


def viz_heatmap(res):
    from kd_core import viz

    return viz.heatmap_figure(res, "kd", 0.5, "acc")


def test_auto_picks_the_batch_where_it_is_faster_and_says_why():
    from kd_core import sweep

    mlp = sweep.Sweep.grid(Config(dataset="digits", method="kd"), [1.0, 2.0], [0.5, 1.0])
    cnn = sweep.Sweep.grid(Config(dataset="mnist-mini", method="kd"), [1.0, 2.0], [0.5, 1.0])
    backend, why = mlp.choose_backend()
    assert backend == "batched" and "4 mlp-32 students" in why
    if not torch.cuda.is_available():
        backend, why = cnn.choose_backend()
        assert backend == "joblib" and "convolutions" in why
        two = sweep.Sweep.grid(Config(dataset="digits", method="kd"), [1.0, 2.0], [0.5])
        backend, why = two.choose_backend()
        assert backend == "joblib" and "2 mlp-32 students is no faster" in why


def test_workers_train_groups_of_cells_as_one_batch():
    from kd_core import sweep

    sw = sweep.Sweep.grid(Config(dataset="digits", method="kd", epochs=1), [1.0, 2.0, 4.0], [0.5], seeds=(0, 1))
    res = sw.run(backend="joblib", n_jobs=2, group=3)
    assert res.done == 6 and not res.errors()
    assert sorted(r["batched"] for r in res.items) == [3] * 6
    with pytest.raises(ConfigError, match="group must be"):
        list(sw.results(backend="batched", group=0))


def test_a_leaderboard_batches_its_methods_and_runs_chained_ones_alone():
    from kd_core import sweep

    base = Config(dataset="digits", epochs=1)
    sw = sweep.Sweep.leaderboard(base, seeds=(0, 1), methods=["none", "kd", "rkd", "born-again"])
    res = sw.run(backend="batched")
    assert res.done == 8 and not res.errors()
    by_method = {}
    for r in res.items:
        by_method.setdefault(r["cell"]["method"], set()).add(r.get("batched"))
    assert by_method["kd"] == by_method["rkd"] == by_method["none"] == {6}  # 3 methods x 2 seeds, one batch
    assert by_method["born-again"] == {None}  # chains runs: each alone


def test_the_cli_sweep_runs_batched_and_says_what_auto_chose(capsys):
    from kd_core.__main__ import main

    rc = main(["sweep", "--dataset", "digits", "--temperatures", "1,4", "--alphas", "0.5,1", "--epochs", "1"])
    out = capsys.readouterr()
    assert rc == 0
    assert "backend: batched" in out.err
    assert "best cell" in out.out
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--dataset", "digits", "--temperatures", "2", "--alphas", "0.5", "--group", "0"])
    assert e.value.code == 2 and "--group: must be at least 1" in capsys.readouterr().err


def test_dml_students_trained_together_match_them_trained_one_by_one():
    from kd_core import beyond

    cfg = Config(dataset="digits", method="dml", epochs=2, baseline=True, params={"students": 3})
    apart = [e for e in beyond.dml_events(cfg, together=False) if e["kind"] == "end"][0]["result"]
    joint = [e for e in beyond.dml_events(cfg, together=True) if e["kind"] == "end"][0]["result"]
    assert joint["status"] == apart["status"] == "finished"
    for a, b in zip(joint["step_losses"], apart["step_losses"]):
        assert a["losses"] == pytest.approx(b["losses"], rel=1e-4)
        assert a["baseline_loss"] == pytest.approx(b["baseline_loss"], rel=1e-4)
    for a, b in zip(joint["students"], apart["students"]):
        assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=3e-3)
    assert joint["baseline"]["test_accuracy"] == pytest.approx(apart["baseline"]["test_accuracy"], abs=3e-3)


def test_the_lab_pair_trains_as_a_batch_of_two_where_that_is_faster(monkeypatch):
    from kd_core.jobs import JobManager

    cfg = Config(dataset="digits", method="kd", epochs=2, baseline=True)
    if not torch.cuda.is_available():  # measured: on a CPU a batch of two is no faster, so a Trainer
        assert isinstance(batched.make_run(cfg), train.Trainer)
        assert isinstance(batched.make_run(Config(dataset="mnist-mini", baseline=True)), train.Trainer)
    # where a batch is faster (a GPU), the job system's default run is the batch of two
    monkeypatch.setattr(batched, "faster_together", lambda config, k, device=None: (k >= 2, "test"))
    manager = JobManager(max_running=1)
    job = manager.submit(cfg, owner="lab")
    job.join(120)
    assert job.status == "finished"
    assert isinstance(job.run, batched.BatchedRun)
    assert job.result["batched"] == {"members": 2, "runs": 1}
    assert job.trainer.snapshot()["baseline"] is not None  # what the pages draw from
    alone = train.distil(cfg)
    assert job.result["student"]["test_accuracy"] == pytest.approx(alone["student"]["test_accuracy"], abs=3e-3)
    assert job.result["baseline"]["test_accuracy"] == pytest.approx(alone["baseline"]["test_accuracy"], abs=3e-3)
    assert len(job.steps) == alone["steps"] and len(job.epochs) == 2
    assert isinstance(batched.make_run(Config(dataset="digits", method="born-again", baseline=True)), train.ChainedRun)

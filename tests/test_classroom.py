"""A class on one server: runs belong to the session that made them, a lecturer (password set
by the server, never in the repository) manages every run, and per-session and classroom
limits refuse with a message that says which limit was reached."""

from __future__ import annotations

import pytest

from kd_core import classroom, runs
from kd_core.classroom import LimitReached, Limits
from kd_core.config import Config
from kd_core.jobs import JobManager
from kd_core.runs import RunError


def _fake_run(tmp_path, monkeypatch, owner: str, name: str = "run") -> runs.Run:
    """A real saved run (weights and run.json through save_run) of a tiny untrained student."""
    from kd_core import models

    monkeypatch.setenv("KD_PLAYGROUND_HOME", str(tmp_path))
    cfg = Config(dataset="digits", epochs=1).resolved()
    student = models.build(cfg.student, (1, 8, 8), 10)
    result = {"config": cfg.to_dict(), "status": "finished", "student": {"test_accuracy": 0.5}, "steps": 3}
    return runs.save_run(result, student, name=name, owner=owner)


def test_only_the_owner_may_rename_or_delete_and_others_can_copy(tmp_path, monkeypatch):
    mine = _fake_run(tmp_path, monkeypatch, owner="alice", name="alice's run")
    with pytest.raises(RunError, match="belongs to another session"):
        runs.rename(mine.id, "hijacked", by="bob")
    with pytest.raises(RunError, match="belongs to another session"):
        runs.delete(mine.id, by="bob")
    assert runs.load_run(mine.id).name == "alice's run"  # nothing written
    assert runs.rename(mine.id, "renamed", by="alice").name == "renamed"

    theirs = runs.copy(mine.id, owner="bob")
    assert theirs.owner == "bob" and theirs.id != mine.id and theirs.name == "copy of renamed"
    assert theirs.result == runs.load_run(mine.id).result
    assert runs.load_run(theirs.id).load_student()  # the weights came along and load
    runs.rename(theirs.id, "bob's copy", by="bob")
    runs.delete(theirs.id, by="bob")
    assert [r.id for r in runs.list_runs()[0]] == [mine.id]
    runs.delete(mine.id, by="alice")
    assert runs.list_runs()[0] == []


def test_runs_without_an_owner_are_read_only_for_sessions_but_not_for_the_lecturer(tmp_path, monkeypatch):
    cli = _fake_run(tmp_path, monkeypatch, owner="")
    with pytest.raises(RunError):
        runs.rename(cli.id, "x", by="alice")
    assert runs.rename(cli.id, "kept by the lecturer", by="lecturer-session", lecturer=True).name
    assert runs.rename(cli.id, "the CLI itself", by=None).name == "the CLI itself"  # the engine's own callers


def test_only_a_lecturer_clears_a_class(tmp_path, monkeypatch):
    for owner in ("a", "b", "b"):
        _fake_run(tmp_path, monkeypatch, owner=owner)
    with pytest.raises(RunError, match="only the lecturer"):
        runs.clear(lecturer=False)
    assert runs.clear(lecturer=True, owner="b") == 2
    assert [r.owner for r in runs.list_runs()[0]] == ["a"]
    assert runs.clear(lecturer=True) == 1 and runs.list_runs()[0] == []


def test_lecturer_password_comes_from_the_server_and_none_means_no_lecturer(monkeypatch):
    monkeypatch.delenv(classroom.PASSWORD_ENV, raising=False)
    assert classroom.lecturer_password() is None
    assert classroom.lecturer_password({}) is None
    assert not classroom.check_password("", None) and not classroom.check_password("anything", None)
    assert classroom.lecturer_password({"lecturer_password": "s3cret"}) == "s3cret"
    monkeypatch.setenv(classroom.PASSWORD_ENV, "from-env")
    expected = classroom.lecturer_password({"lecturer_password": "s3cret"})
    assert expected == "from-env"  # the environment wins
    assert classroom.check_password("from-env", expected)
    assert not classroom.check_password("from-en", expected) and not classroom.check_password("", expected)


def test_limits_from_the_environment(monkeypatch):
    for k in ("KD_PLAYGROUND_SESSION_JOBS", "KD_PLAYGROUND_CLASSROOM", "KD_PLAYGROUND_MAX_EPOCHS"):
        monkeypatch.delenv(k, raising=False)
    assert Limits.from_env() == Limits()
    monkeypatch.setenv("KD_PLAYGROUND_SESSION_JOBS", "2")
    monkeypatch.setenv("KD_PLAYGROUND_CLASSROOM", "yes")
    monkeypatch.setenv("KD_PLAYGROUND_MAX_EPOCHS", "not a number")  # ignored: the default stays
    lim = Limits.from_env()
    assert lim.session_jobs == 2 and lim.classroom and lim.max_epochs == Limits().max_epochs


def test_classroom_caps_refuse_big_runs_with_the_limit_named():
    lim = Limits(classroom=True, max_epochs=5, max_train_images=10_000)
    lim.check_run(Config(dataset="digits", epochs=5))
    with pytest.raises(LimitReached, match="at most 5 epochs"):
        lim.check_run(Config(dataset="digits", epochs=6))
    with pytest.raises(LimitReached, match="at most 10,000 images"):
        lim.check_run(Config(dataset="fashion-mnist", epochs=1))
    lim.check_run(Config(dataset="fashion-mnist", epochs=1, train_subset=5000))
    Limits(classroom=False, max_epochs=1).check_run(Config(dataset="fashion-mnist", epochs=50))  # off: no caps


def test_a_session_cannot_queue_more_than_its_share(monkeypatch):
    """The job manager refuses a session's job over its limit, before anything trains, and
    counts per session: another session still gets its runs."""
    mgr = JobManager(max_running=1, limits=Limits(session_jobs=2))
    gate = []
    # jobs that wait in the queue behind a slot held here, so none finishes during the test
    mgr._slots.acquire()
    try:
        cfg = Config(dataset="digits", epochs=1)
        mgr.submit(cfg, owner="alice")
        mgr.submit(cfg, owner="alice")
        with pytest.raises(LimitReached, match="at most 2 per session"):
            mgr.submit(cfg, owner="alice")
        gate.append(mgr.submit(cfg, owner="bob"))
        assert len([j for j in mgr.jobs_of("alice")]) == 2
        for j in mgr.jobs_of("alice") + gate:
            j.stop()
    finally:
        mgr._slots.release()


def test_presentation_mode_switch_follows_the_link_and_stays_in_it():
    """?present=1 turns the sidebar switch on and every page keeps it in its link; switching
    it off removes it."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    app = str(Path(__file__).resolve().parents[1] / "app.py")
    at = AppTest.from_file(app, default_timeout=300)
    at.query_params["present"] = "1"
    at.run()
    assert not at.exception and at.toggle(key="present").value is True
    at.switch_page("app_pages/lab.py")
    at.run()
    assert at.query_params.get("present") in ("1", ["1"])  # the Lab wrote its own link and kept it
    # the switch alone (AppTest reruns the page, not the app's sidebar, after the first run)
    plain = AppTest.from_function(_presentation_switch, default_timeout=60)
    plain.run()
    assert plain.toggle(key="present").value is False and "present" not in plain.query_params
    plain.toggle(key="present").set_value(True).run()
    assert plain.query_params.get("present") in ("1", ["1"])
    plain.toggle(key="present").set_value(False).run()
    assert "present" not in plain.query_params


def _presentation_switch():
    from kd_app import chrome

    chrome.presentation_switch()

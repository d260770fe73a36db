"""The job manager shared by all sessions: a concurrency limit with a queue, owners see only
their own jobs, closed sessions lose their jobs after a grace period, no thread left behind."""

import threading
import time

from kd_core.config import Config
from kd_core.jobs import JobManager


def wait(pred, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    raise AssertionError("timed out")


def cfg(epochs=1, **kw):
    return Config(dataset="digits", epochs=epochs, labeled_fraction=1.0, **kw)


def test_limit_queue_and_ownership():
    jm = JobManager(max_running=1)
    a = jm.submit(cfg(epochs=30), owner="alice")
    wait(lambda: a.status == "running")
    b = jm.submit(cfg(), owner="bob")
    c = jm.submit(cfg(), owner="bob")
    time.sleep(0.3)
    assert b.status == "queued" and jm.queue_position(b) == 1 and jm.queue_position(c) == 2
    assert len(jm.running()) == 1
    assert jm.jobs_of("bob") == [b, c] and jm.jobs_of("alice") == [a]
    assert jm.get(a.id, owner="bob") is None  # bob cannot reach alice's job
    a.stop()
    wait(lambda: a.done and b.done and c.done)
    assert a.status == "stopped" and a.result is not None  # kept what it learned
    assert b.status == "finished" and c.status == "finished"


def test_a_closed_session_loses_its_jobs_after_the_grace_period():
    alive = {"alice": True, "bob": True}
    jm = JobManager(max_running=1, is_alive=lambda o: alive[o], grace_seconds=0.5, watch_every=0.1)
    a = jm.submit(cfg(epochs=50), owner="alice")
    b = jm.submit(cfg(), owner="alice")
    c = jm.submit(cfg(), owner="bob")
    wait(lambda: a.status == "running")
    alive["alice"] = False  # the tab was closed
    wait(lambda: a.done and b.done, timeout=60)
    assert a.status == "stopped" and a.result is not None  # partial results kept
    assert b.status == "stopped" and b.result is None  # dropped from the queue
    wait(lambda: c.done)
    assert c.status == "finished"  # bob is unaffected
    time.sleep(0.3)
    assert not [t for t in threading.enumerate() if t.name.startswith("kd-job-") and t.name != "kd-job-watchdog"]


def test_a_bad_config_is_refused_in_the_callers_thread():
    import pytest

    from kd_core.errors import ConfigError

    jm = JobManager(max_running=1)
    with pytest.raises(ConfigError):
        jm.submit(Config(temperature=-1), owner="x")
    assert jm.jobs_of("x") == []


def test_finished_jobs_are_forgotten_after_a_while():
    jm = JobManager(max_running=1, keep_seconds=0.0)
    j = jm.submit(cfg(), owner="x")
    wait(lambda: j.done)
    jm.reap(now=time.time() + 1)
    assert jm.jobs_of("x") == []


def test_training_threads_run_niced_and_the_callers_priority_is_untouched():
    import os

    import pytest

    if not hasattr(os, "getpriority"):
        pytest.skip("no per-thread priorities on this platform")
    seen = {}

    def record(job):  # on_end runs in the job's worker thread
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    jm = JobManager(max_running=1, nice=3)
    job = jm.submit(cfg(), owner="alice", on_end=record)
    wait(lambda: job.done)
    assert job.status == "finished"
    assert seen["nice"] == min(19, before + 3)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before

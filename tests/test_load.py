"""A classroom on one server: the real app server, N concurrent browser sessions (20 by
default) each opening the Lab from a shared link (the lecturer's set-up: digits, one epoch;
each student's own seed) and pressing Train. Every run finishes (some after waiting in
the queue), the health endpoint answers within a second throughout, and every session sees
its own run (each uses its own seed, shown in its results).

What fails the test is what a class would lose: a run that never finishes, an exception on a
page, a session shown someone else's run, a health probe with no answer within
HEALTH_BOUND_S. Latency figures are measured and printed, never asserted: this machine is
shared and noisy, and a slow answer is not a broken one.

Longer mode: KD_LOAD_SESSIONS=30 KD_LOAD_EPOCHS=3 .venv/bin/python -m pytest tests/test_load.py -s
"""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.request

import pytest
from test_browser import _open

SESSIONS = int(os.environ.get("KD_LOAD_SESSIONS", "20"))
EPOCHS = int(os.environ.get("KD_LOAD_EPOCHS", "1"))
HEALTH_BOUND_S = 10.0  # no answer within this is a failure (a hung server), not a slow one

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _health_probe(url: str, stop: threading.Event, worst: list[float], failures: list[str]):
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=HEALTH_BOUND_S) as r:
                r.read()
            worst.append(time.perf_counter() - t0)
            if worst[-1] > 0.3:
                print(f"slow health answer {worst[-1]:.2f} s at {time.strftime('%H:%M:%S')}", flush=True)
        except OSError as e:
            failures.append(repr(e))
        stop.wait(0.25)


def test_twenty_sessions_train_at_once(server, browser):
    stop = threading.Event()
    latencies: list[float] = []
    failures: list[str] = []
    probe = threading.Thread(target=_health_probe, args=(server, stop, latencies, failures), daemon=True)
    contexts = []
    try:
        probe.start()
        pages = []
        t_start = time.time()
        for i in range(SESSIONS):
            contexts.append(browser.new_context())  # a browser session of its own, as a student's
            page = contexts[-1].new_page()
            _open(page, f"{server}/lab?dataset=digits&epochs={EPOCHS}&seed={100 + i}")
            page.get_by_role("button", name="▶ Train").click()
            pages.append(page)
            print(f"session {i + 1} started at {time.time() - t_start:.0f} s", flush=True)
        for i, page in enumerate(pages):
            page.get_by_text("Results").first.wait_for(timeout=600_000)
            page.wait_for_timeout(500)
            caption = page.get_by_text(re.compile(r"^Run #\d+:")).first.inner_text()
            assert f"seed {100 + i}." in caption, caption  # its own run, nobody else's
            assert page.locator("[data-testid='stException']").count() == 0
        elapsed = time.time() - t_start
    finally:
        stop.set()
        for c in contexts:
            c.close()
    probe.join(5)
    assert not failures, failures[:3]
    assert latencies, "the health probe never got an answer"
    print(
        f"\n{SESSIONS} sessions x {EPOCHS} epoch(s): all finished in {elapsed:.0f} s; "
        f"health p50 {sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms "
        f"over {len(latencies)} probes"
    )

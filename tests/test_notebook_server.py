"""`make notebook` starts JupyterLab on the tour: started here headless, as the README says,
on a free local port with a token; the server answers and serves the tour with its interactive
cells, and JupyterLab's page loads."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "kd-notebook-test"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def test_make_notebook_serves_the_tour(tmp_path):
    port = _free_port()
    env = os.environ | {
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),  # no user configuration
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
    }
    args = f"--no-browser --IdentityProvider.token={TOKEN} --ServerApp.allow_remote_access=False"
    proc = subprocess.Popen(
        ["make", "-s", "notebook", f"NOTEBOOK_PORT={port}", "ADDRESS=127.0.0.1", f"NOTEBOOK_ARGS={args}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a generous bound for a busy machine: not a timing assertion
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, _ = _get(f"{base}/api/status?token={TOKEN}")
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert status == 200, f"JupyterLab did not answer (exit code {proc.poll()})"

        code, body = _get(f"{base}/api/contents/kd_tour.ipynb?token={TOKEN}")
        assert code == 200
        nb = json.loads(body)["content"]
        text = "\n".join(c["source"] for c in nb["cells"])
        assert "## 2 · Soft targets and temperature" in text and "kd_notebook.TrainPanel" in text

        code, page = _get(f"{base}/lab/tree/kd_tour.ipynb?token={TOKEN}")
        assert code == 200 and b"JupyterLab" in page
        # the widget front-ends the interactive cells need are installed in JupyterLab
        code, ext = _get(f"{base}/lab/api/extensions?token={TOKEN}")
        assert code == 200
        names = {e["name"] for e in json.loads(ext)}
        assert "jupyter-widgets-jupyterlab-manager" in names and "anywidget" in names, names
        # without the token, nothing is served
        assert _get(f"{base}/api/contents/kd_tour.ipynb")[0] == 403
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

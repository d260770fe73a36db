"""The command line as a user meets it: a real subprocess, exit codes, one-line errors (the
table of bad values calls the same ``main`` in this process, one case goes through a real one)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kd_core.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, timeout=300):
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "kd_core", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


BAD = [
    (["--temperature", "0"], "T must be > 0"),
    (["--temperature", "-1"], "T must be > 0"),
    (["--temperature", "abc"], "temperature must be a number"),
    (["--alpha", "1.5"], "alpha must be in [0, 1]"),
    (["--alpha", "-0.1"], "alpha must be in [0, 1]"),
    (["--lr", "0"], "learning rate"),
    (["--lr", "50"], "learning rate"),
    (["--epochs", "0"], "epochs must be in"),
    (["--batch-size", "0"], "batch_size must be in"),
    (["--batch-size", "2000"], "batch_size 2000 is larger than the 1,437 training images of digits"),
    (["--batch-size", "1400", "--omit-class", "3"], "larger than the 1,291 training images of digits without class 3"),
    (["--labeled-fraction", "0"], "labelled fraction"),
    (["--labeled-fraction", "1.2"], "labelled fraction"),
    (["--omit-class", "10"], "omit_class must be in [0, 9]"),
    (["--omit-class", "x"], "omit-class must be a whole number"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--method", "magic"], "unknown method 'magic'"),
    (["--student", "transformer-9"], "transformer-9"),
    (["--method", "kd", "--param", "beta=3"], "has no parameter 'beta'"),
    (["--method", "dkd", "--param", "nckd_weight=99"], "nckd_weight must be in"),
    (["--param", "oops"], "NAME=VALUE"),
    (["--method", "at", "--pair", "stage2"], "TEACHER_LAYER:STUDENT_LAYER"),
    (["--method", "kd", "--pair", "stage2:stage2"], "uses no layer pairs"),
]


def run_main(args, capsys) -> tuple[int, str]:
    """``python -m kd_core ARGS`` without starting an interpreter: the same ``main`` and
    its exit code (argparse's errors exit directly, the others are returned)."""
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(list(args)))
    return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_values_exit_2_with_one_line(args, needle, capsys):
    where = ["--dataset", "digits"] if "--dataset" not in args else ["--seed", "0"]
    rc, err = run_main(["train", *args, *where], capsys)
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err


def test_a_bad_value_exits_2_from_a_real_process():
    """The table above runs ``main`` in this process; one case through the interpreter."""
    p = cli("train", "--dataset", "digits", "--temperature", "0")
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "T must be > 0" in p.stderr


def test_train_writes_the_json_the_docs_promise(tmp_path):
    out = tmp_path / "run.json"
    p = cli("train", "--dataset", "digits", "--epochs", "2", "--labeled-fraction", "0.5", "--json", str(out))
    assert p.returncode == 0, p.stderr
    assert "student" in p.stdout and "scratch" in p.stdout  # the results table
    r = json.loads(out.read_text())
    assert r["config"]["dataset"] == "digits" and r["config"]["method"] == "kd"
    assert 0.8 < r["teacher"]["test_accuracy"] <= 1
    for role in ("student", "baseline"):
        for key in (
            "test_accuracy",
            "per_class_accuracy",
            "agreement",
            "params",
            "train_seconds",
            "samples_per_second",
            "history",
        ):
            assert key in r[role]
        assert len(r[role]["per_class_accuracy"]) == 10
        assert len(r[role]["history"]) == 2


@pytest.mark.slow
def test_no_baseline_and_methods_listing(tmp_path):
    out = tmp_path / "run.json"
    p = cli("train", "--dataset", "digits", "--epochs", "1", "--no-baseline", "--method", "dkd", "--json", str(out))
    assert p.returncode == 0, p.stderr
    assert "baseline" not in json.loads(out.read_text())
    p = cli("methods")
    assert p.returncode == 0
    for name in ("none", "kd", "dkd", "fitnets", "at", "rkd", "sp", "pkt", "contrastive"):
        assert name in p.stdout

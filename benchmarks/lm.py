"""Training throughput of each LM distillation method against the student alone (the floor):
``python -m benchmarks.lm [--steps N] [--json FILE]`` (a tool outside the engine, like the
rest of benchmarks/).

Each method runs ``steps`` training steps of the default student (no scratch twin, no final
evaluation) with the default teacher (cached, or trained first); reported: characters per
second of wall time and of this process's CPU time (the CPU figure is what a quiet machine
would give on one core, however busy this one is), and the slowdown against ``scratch``.
"""

from __future__ import annotations

import argparse
import json
import time

from kd_core import paths
from kd_core.lm.methods import METHODS
from kd_core.lm.train import LMConfig, LMTrainer


def measure(method: str, steps: int = 60, **overrides) -> dict:
    cfg = LMConfig(method=method, steps=steps, baseline=False, eval_every=200000, **overrides)
    tr = LMTrainer(cfg)
    events = tr.events()
    next(events)  # start (seq-kd has generated its teacher text by now: timed apart)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for ev in events:
        if ev["kind"] == "step" and ev["step"] == steps:
            break
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    events.close()
    chars = steps * cfg.batch_size * tr.teacher.model.block_size
    return {
        "method": method,
        "steps": steps,
        "chars_per_s_wall": chars / wall,
        "chars_per_s_cpu": chars / cpu,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.lm")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    rows = [measure(m, a.steps) for m in METHODS]
    floor = next(r for r in rows if r["method"] == "scratch")
    print(f"{'method':11s} {'chars/s (wall)':>15s} {'chars/s (CPU)':>14s} {'x student alone (CPU)':>22s}")
    for r in rows:
        r["slowdown_cpu"] = floor["chars_per_s_cpu"] / r["chars_per_s_cpu"]
        print(
            f"{r['method']:11s} {r['chars_per_s_wall']:15,.0f} {r['chars_per_s_cpu']:14,.0f} {r['slowdown_cpu']:22.2f}"
        )
    if a.json:
        paths.atomic_write_text(a.json, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The benchmark's report: tables for PERFORMANCE.md and the targets met or missed."""

from __future__ import annotations

from .common import LIVE_COST_TARGET, SPEEDUP_TARGET

# ---------------------------------------------------------------- the report


def _fmt_ratio(r: dict) -> str:
    return f"{r['ratio']:.2f} ({r['ratio_q1']:.2f}-{r['ratio_q3']:.2f})"


def _table(rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _yes(met) -> str:
    return "—" if met is None else ("yes" if met else "NO")


def report(res: dict) -> str:
    env = res["environment"]
    lines = [
        f"KD Playground benchmark ({res['mode']} mode, {res['rounds']} round(s), {res['seconds']:.0f} s)",
        f"  torch {env['torch']}, {env['torch_threads']} thread(s) (KD_PLAYGROUND_THREADS={env['KD_PLAYGROUND_THREADS']}), "
        f"device {env['device']}",
        f"  CPU: {env['cpu']}, {env['usable_cpus']} usable core(s) of {env['cpu_count']}, {env['memory_gb']} GB; "
        f"python {env['python']}; {env['platform']}",
        f"  load average at start {env['load_average_start']}, at end {env.get('load_average_end')}; git {env['git']}",
        "",
    ]
    for _key, suite in res["training"].items():
        lines.append(
            f"== {suite['dataset']}: teacher {suite['teacher']} -> student {suite['student']}, batch "
            f"{suite['batch_size']}, {suite['transfer_set']} images, {suite['steps_per_measurement']} steps "
            f"per measurement"
        )
        rows = [
            (
                "variant",
                "family",
                "teacher feats",
                "samples/s",
                "ms/step",
                "x floor (quartiles)",
                "target",
                "met",
                "setup s",
            )
        ]
        f = suite["floor"]
        rows.append(
            (
                "floor: student alone, minimal loop",
                "",
                "",
                f"{f['samples_per_s']:.0f}",
                f"{f['step_ms']:.2f}",
                "1.00",
                "",
                "",
                "",
            )
        )
        for name, r in list(suite["methods"].items()) + list(suite["per_step"].items()):
            rows.append(
                (
                    name,
                    r["family"],
                    r.get("teacher_features") or "",
                    f"{r['samples_per_s']:.0f}",
                    f"{r['step_ms']:.2f}",
                    _fmt_ratio(r),
                    f"<= {r['target']}" if r.get("target") else "",
                    _yes(r.get("met")),
                    f"{r.get('setup_s', 0):.2f}",
                )
            )
        if "conventional" in suite:
            c = suite["conventional"]
            rows.append(
                (
                    "conventional KD (DataLoader + teacher)",
                    "logits",
                    "per step",
                    f"{c['samples_per_s']:.0f}",
                    f"{c['step_ms']:.2f}",
                    _fmt_ratio(c),
                    "",
                    "",
                    "",
                )
            )
        lines.append(_table(rows))
        if "conventional" in suite:
            c = suite["conventional"]
            lines.append(
                f"  engine KD is {c['engine_kd_speedup']:.2f}x faster than the conventional loop "
                f"(quartiles {c['speedup_q1']:.2f}-{c['speedup_q3']:.2f}, "
                f"range {c['speedup_min']:.2f}-{c['speedup_max']:.2f})"
            )
        if suite.get("teacher_forward_ms"):
            lines.append(
                f"  one teacher forward pass ({suite['teacher']}, batch {suite['batch_size']}): "
                f"{suite['teacher_forward_ms']:.1f} ms"
            )
        if suite["errors"]:
            for k, v in suite["errors"].items():
                lines.append(f"  {k}: could not run: {v}")
        lines.append("")
    for t in res.get("threads") or []:
        lines.append(
            f"== threads on {t['dataset']} (ms per step, {t['steps']} steps): "
            f"kd {t['threads_1']['kd']:.2f} at 1 thread vs {t['threads_2']['kd']:.2f} at 2 "
            f"({t['kd_2_over_1']:.2f}x); floor {t['threads_1']['floor']:.2f} vs {t['threads_2']['floor']:.2f} "
            f"({t['floor_2_over_1']:.2f}x); load average then {t['load_average']}"
        )
    if res.get("softmax_micro"):
        m = res["softmax_micro"]
        lines.append(f"== softmax of 64x10: {m['threads_1_us']:.1f} µs at 1 thread, {m['threads_2_us']:.1f} µs at 2")
    if res.get("threads") or res.get("softmax_micro"):
        lines.append("")
    live = res["live_app"]
    lines.append(
        f"== live app: {live['config']['epochs']}-epoch Lab run (defaults) in the JobManager's worker, polled "
        f"and redrawn, vs headless Trainer.run()"
    )
    rows = [
        (
            "variant",
            "steps/s",
            "cost",
            "wall s",
            "cost (wall)",
            "samples/s in steps",
            "cost (in steps)",
            "render ms (median/max)",
        )
    ]
    h = live["headless"]
    rows.append(
        ("headless", f"{h['steps_per_s']:.1f}", "", f"{h['wall_s']:.2f}", "", f"{h['samples_per_s']:.0f}", "", "")
    )
    for k, v in live.items():
        if k.startswith("poll_"):
            label = f"job, poll every {v['interval_s']:g} s" + (
                f", GIL switch interval {1000 * v['switch_interval_s']:g} ms" if "switch" in k else ""
            )
            rows.append(
                (
                    label,
                    f"{v['steps_per_s']:.1f}",
                    f"{100 * v['cost']:+.1f}%",
                    f"{v['wall_s']:.2f}",
                    f"{100 * v['cost_wall']:+.1f}%",
                    f"{v['samples_per_s']:.0f}",
                    f"{100 * v['cost_throughput']:+.1f}%",
                    f"{v['render_ms_median']:.1f}/{v['render_ms_max']:.1f}",
                )
            )
    lines.append(_table(rows))
    lines.append(
        f"  cost: training steps/s after epoch 1 (evaluations included) with the page's 1 s polling vs headless: "
        f"{100 * live['cost']:.1f}% (target <= {100 * LIVE_COST_TARGET:.0f}%): {_yes(live['met'])}"
    )
    lines.append("")
    rd = res["redraw"]
    lines.append("== redraws (server time)")
    rows = [("redraw", "median ms", "max ms", "samples through a model per redraw", "< 100 ms")]
    for k, v in rd.items():
        if "median_ms" in v:
            fwd = v.get("samples_forwarded_per_call", v.get("samples_forwarded", 0) / max(v.get("reruns", 1), 1))
            rows.append((k, f"{v['median_ms']:.1f}", f"{v['max_ms']:.1f}", f"{fwd:g}", _yes(v.get("met"))))
        elif "error" in v:
            rows.append((k, "error", " ".join(v["error"]), "", ""))
    lines.append(_table(rows))
    lines.append("")
    mem = res["memory"]
    lr = mem["lab_run"]
    lines.append(
        f"== memory: a Lab run ({lr['config']}): peak RSS {lr['peak_rss_mb']:.0f} MiB "
        f"(before the run {lr['rss_before_run_mb']:.0f} MiB)"
    )
    app = mem.get("app")
    if app and "skipped" not in app:
        lines.append(
            f"   the app (streamlit run app.py): {app['rss_no_session_mb']:.0f} MiB with no session, "
            f"{app['rss_one_session_mb']:.0f} with one, {app['rss_idle_sessions_mb']:.0f} with {app['sessions']} "
            f"idle sessions ({app['per_extra_session_mb']:.1f} MiB per extra session); peak {app['peak_rss_mb']:.0f} MiB"
        )
    elif app:
        lines.append(f"   the app with ten idle sessions: skipped ({app['skipped']})")
    lines.append("")
    lines.append("== targets")
    rows = [("target", "measured", "met")]
    for t in res["targets"]:
        rows.append((t["target"], t["measured"], _yes(t["met"])))
    lines.append(_table(rows))
    return "\n".join(lines)


def targets(res: dict) -> list[dict]:
    out = []
    for suite in res["training"].values():
        for fam, limit in (("logits", 1.15), ("feature/relational/contrastive", 1.6)):
            fams = fam.split("/")
            rows = {k: v for k, v in suite["methods"].items() if v["family"] in fams}
            if rows:
                worst = max(rows, key=lambda k: rows[k]["ratio"])
                out.append(
                    {
                        "target": f"{suite['dataset']}: {fam} methods <= {limit}x floor",
                        "measured": f"worst {worst} {rows[worst]['ratio']:.2f}x",
                        "met": all(v["met"] for v in rows.values()),
                    }
                )
    mini = res["training"].get("mnist-mini", {})
    if "conventional" in mini:
        c = mini["conventional"]
        out.append(
            {
                "target": f"mnist-mini: >= {SPEEDUP_TARGET:g}x faster than the conventional loop",
                "measured": f"{c['engine_kd_speedup']:.2f}x",
                "met": bool(c["engine_kd_speedup"] >= SPEEDUP_TARGET),
            }
        )
    live = res["live_app"]
    out.append(
        {
            "target": "live app costs <= 10% of headless throughput",
            "measured": f"{100 * live['cost']:.1f}%",
            "met": live["met"],
        }
    )
    for k, v in res["redraw"].items():
        if "median_ms" in v:
            out.append(
                {"target": f"redraw {k} < 100 ms", "measured": f"{v['median_ms']:.1f} ms (median)", "met": v["met"]}
            )
    st = res["redraw"].get("soft_target_slider_app")
    if st and "samples_forwarded" in st:
        out.append(
            {
                "target": "no slider redraw retrains or re-runs a model over the dataset",
                "measured": f"{st['samples_forwarded']} samples forwarded, {st['optimizer_steps']} optimiser steps "
                f"in {st['reruns']} reruns",
                "met": st["samples_forwarded"] == 0 and st["optimizer_steps"] == 0,
            }
        )
    return out

"""Command line: ``python -m kd_core train | methods | sweep | leaderboard | ship-teachers | lm | crossmodal``
(the benchmark: ``python -m benchmarks``).

Any bad value exits with status 2 and one line on stderr saying what is wrong and what is
allowed; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from tqdm import tqdm

from . import audio, batched, data, methods, paths, ship, sweep, train
from .config import STUDENT_EPOCHS, Config
from .errors import KDError
from .lm import cli as lm_cli  # `lm train | sample | methods`

PROG = "python -m kd_core"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _float(name):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got '{text}'") from None
        if math.isnan(v) or math.isinf(v):
            raise argparse.ArgumentTypeError(f"{name} must be a finite number, got '{text}'")
        return v

    return parse


def _int(name):
    def parse(text):
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got '{text}'") from None

    return parse


def _param(text):
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--param takes NAME=VALUE, got '{text}'")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--param {name} must be a number, got '{value}'") from None


def _add_run_args(p: argparse.ArgumentParser) -> None:
    d = Config()
    p.add_argument("--dataset", default=d.dataset, help="mnist-mini (default), digits, mnist, fashion-mnist, cifar10")
    p.add_argument("--teacher", default="", help="teacher architecture (default: the dataset's preset)")
    p.add_argument("--student", default="", help="student architecture (default: the dataset's preset)")
    p.add_argument("--method", default=d.method, help="distillation method; see 'methods'")
    p.add_argument(
        "--temperature", "-T", type=_float("temperature"), default=d.temperature, help="softmax temperature T > 0"
    )
    p.add_argument("--alpha", type=_float("alpha"), default=d.alpha, help="weight of the KD term in [0, 1]")
    p.add_argument(
        "--param",
        action="append",
        type=_param,
        default=[],
        metavar="NAME=VALUE",
        help="a method's own hyper-parameter (repeatable)",
    )
    p.add_argument(
        "--pair",
        action="append",
        default=[],
        metavar="T_LAYER:S_LAYER",
        help="teacher:student layer pair for feature methods (repeatable)",
    )
    p.add_argument(
        "--epochs",
        type=_int("epochs"),
        default=None,
        help=f"student epochs (default: {d.epochs}; 2 on the full mnist and fashion-mnist)",
    )
    p.add_argument("--teacher-epochs", type=_int("teacher-epochs"), default=0, help="0: the dataset's recipe")
    p.add_argument("--lr", type=_float("lr"), default=d.lr, help="learning rate (Adam)")
    p.add_argument("--batch-size", type=_int("batch-size"), default=d.batch_size)
    p.add_argument("--seed", type=_int("seed"), default=d.seed)
    p.add_argument(
        "--labeled-fraction",
        type=_float("labeled-fraction"),
        default=d.labeled_fraction,
        help="fraction of the transfer set whose labels the student sees, in [0, 1]; 0 (no label) for label-free methods or alpha 1",
    )
    p.add_argument(
        "--omit-class", type=_int("omit-class"), default=None, help="remove this class from the student's data"
    )
    p.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=d.baseline,
        help="also train the same student from scratch, side by side",
    )
    p.add_argument(
        "--train-subset", type=_int("train-subset"), default=None, help="keep only this many training images"
    )
    p.add_argument(
        "--generations",
        type=_int("generations"),
        default=None,
        metavar="G",
        help="born-again: generations of students (same as --param generations=G)",
    )
    p.add_argument(
        "--assistant",
        default="",
        metavar="ARCH",
        help="ta: the teacher assistant's architecture (default: an intermediate CNN)",
    )


def config_from_args(a) -> Config:
    params = {}
    for name, value in a.param:
        params[name] = value
    if getattr(a, "generations", None) is not None:
        params["generations"] = a.generations
    return Config(
        dataset=a.dataset,
        teacher=a.teacher,
        student=a.student,
        method=a.method,
        temperature=a.temperature,
        alpha=a.alpha,
        params=params,
        pairs=list(a.pair),
        epochs=a.epochs if a.epochs is not None else STUDENT_EPOCHS.get(a.dataset, Config().epochs),
        teacher_epochs=a.teacher_epochs,
        lr=a.lr,
        batch_size=a.batch_size,
        seed=a.seed,
        labeled_fraction=a.labeled_fraction,
        omit_class=a.omit_class,
        baseline=a.baseline,
        train_subset=a.train_subset,
        assistant=getattr(a, "assistant", "") or "",
    )


_SOURCE_WORDS = {"shipped": "shipped with the project", "cache": "from the cache", "trained": "trained now"}


def _pct(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def results_table(result: dict) -> str:
    rows = [("model", "arch", "test acc", "agree", "ECE", "params", "MFLOPs", "latency ms")]
    for role in ("teacher", "student", "baseline"):
        r = result.get(role)
        if r is None:
            continue
        rows.append(
            (
                role if role != "baseline" else "scratch",
                r["arch"],
                _pct(r["test_accuracy"]),
                _pct(r.get("agreement")) if role != "teacher" else "—",
                f"{r['ece']:.3f}",
                f"{r['params']:,}",
                f"{r['flops'] / 1e6:.2f}",
                f"{r['latency_ms']:.3f}",
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    cfg = result["config"]
    if cfg.get("omit_class") is not None:
        c = cfg["omit_class"]
        extra = [f"omitted class {c}: student {_pct(result['student']['per_class_accuracy'][c])}"]
        if "baseline" in result:
            extra.append(f"scratch {_pct(result['baseline']['per_class_accuracy'][c])}")
        lines.append(", ".join(extra))
    if result.get("tracked"):  # what a method learns or schedules besides the weights (CTKD: its T)
        lines.append("at the last step: " + ", ".join(f"{k} = {v:.4g}" for k, v in result["tracked"].items()))
    return "\n".join(lines)


def beyond_table(result: dict) -> str:
    """The extra rows of the methods beyond one teacher: ensemble members, generations,
    the assistant chain, the mutual learners ('' for the other methods)."""
    lines = []
    if result.get("teachers"):
        e = result["ensemble"]
        lines.append(
            f"ensemble of {len(result['teachers'])} ({e['weighting']} blend at T={e['temperature']:g}): "
            f"{_pct(e['test_accuracy'])} (at T=1: {_pct(e['test_accuracy_at_T1'])}); "
            f"mean member {_pct(e['mean_member_accuracy'])}"
        )
        lines += [f"  teacher {m['arch']} seed {m['seed']}: {_pct(m['test_accuracy'])}" for m in result["teachers"]]
    for g in result.get("generations") or []:
        lines.append(
            f"generation {g['generation']} ({g['arch']}{', the teacher' if g['generation'] == 0 else ''}): "
            f"{_pct(g['test_accuracy'])}"
        )
    for c in result.get("chain") or []:
        lines.append(f"{c['role']} ({c['arch']}): {_pct(c['test_accuracy'])}")
    for k, s in enumerate(result.get("students") or []):
        lines.append(f"mutual learner {k + 1} ({s['arch']}): {_pct(s['test_accuracy'])}")
    return "\n".join(lines)


def cmd_train(a) -> int:
    cfg = config_from_args(a).resolved().validate()
    train.check_batch_fits(cfg, data.load(cfg.dataset))  # before any teacher is trained
    bar = {"teacher": None}

    def teacher_progress(epoch, epochs, acc):
        if bar["teacher"] is not None and epoch == 1:  # the next teacher of an ensemble
            bar["teacher"].close()
            bar["teacher"] = None
        if bar["teacher"] is None:
            bar["teacher"] = tqdm(total=epochs, desc=f"teacher {cfg.teacher}", file=sys.stderr, unit="epoch")
        bar["teacher"].set_postfix(acc=f"{acc:.3f}")
        bar["teacher"].update(1)

    run = batched.make_run(cfg, teacher_progress=teacher_progress)  # a Trainer loads its teacher here
    if bar["teacher"] is not None:
        bar["teacher"].close()
    teacher = getattr(run, "teacher", None)  # a chained method's teachers come with its stages
    if teacher is not None:
        print(
            f"teacher {teacher.arch}: test accuracy {_pct(teacher.test_accuracy)}"
            f" ({_SOURCE_WORDS.get(teacher.source, teacher.source)})",
            file=sys.stderr,
        )
    pbar = None
    for ev in run.events():
        if ev["kind"] == "start" and "total_steps" in ev:
            desc = f"{cfg.method} {ev.get('stage') or f'student {cfg.student}'}"
            pbar = tqdm(total=ev["total_steps"], desc=desc, file=sys.stderr, unit="step")
        elif ev["kind"] == "step" and pbar is not None:
            pbar.update(1)
        elif ev["kind"] == "epoch" and pbar is not None:
            post = {}
            if ev.get("student_acc") is not None:  # a synthesis snapshot has none
                post["student"] = f"{ev['student_acc']:.3f}"
            elif ev.get("confidence") is not None:
                post["teacher confidence"] = f"{ev['confidence']:.3f}"
            if ev.get("baseline_acc") is not None:
                post["scratch"] = f"{ev['baseline_acc']:.3f}"
            pbar.set_postfix(post)
        elif ev["kind"] in ("stage_end", "end") and pbar is not None:
            pbar.close()
            pbar = None
        if ev["kind"] == "end" and ev["status"] != "finished":
            print(f"run {ev['status']}: {ev['message']}", file=sys.stderr)
    result = run.result
    print(results_table(result))
    extra = beyond_table(result)
    if extra:
        print(extra)
    for line in result.get("report") or []:  # a method's own summary lines (data-free, label-free)
        print(line)
    if a.json:
        out = {k: v for k, v in result.items() if k != "step_losses"}
        paths.atomic_write_text(a.json, json.dumps(out, indent=1))
    return 0 if result["status"] != "diverged" else 3


def cmd_methods(a) -> int:
    for m in methods.all_methods().values():
        ps = ", ".join(f"{p.name}={p.default:g}" for p in m.params)
        print(f"{m.name:12s} {m.title}" + (f"  [{ps}]" if ps else ""))
    return 0


def _add_sweep_commands(sub) -> None:
    """``sweep`` and ``leaderboard`` (kd_core/sweep.py runs them)."""
    s = sub.add_parser(
        "sweep",
        help="T x alpha grid (x methods x labelled fractions), several seeds per cell, "
        "in parallel; prints the grid and writes a CSV",
    )
    _add_run_args(s)
    s.add_argument(
        "--temperatures", default="1,2,4,8", metavar="T1,T2", help="temperatures to sweep (default: 1,2,4,8)"
    )
    s.add_argument("--alphas", default="0.5,0.9", metavar="A1,A2", help="alpha values to sweep (default: 0.5,0.9)")
    s.add_argument("--methods", default="", metavar="M1,M2", help="methods to sweep (default: --method)")
    s.add_argument(
        "--fractions", default="", metavar="F1,F2", help="labelled fractions to sweep (default: --labeled-fraction)"
    )
    s.add_argument("--seeds", default="0", metavar="S1,S2", help="seeds per cell (default: 0)")
    s.add_argument("--scratch", action="store_true", help="also train the student alone per fraction, as a reference")
    _add_backend_args(s)
    s.add_argument(
        "--csv",
        metavar="FILE",
        default="",
        help="write the per-cell results here (default: <KD_PLAYGROUND_HOME>/sweeps/<time>.csv)",
    )
    s.set_defaults(func=cmd_sweep)
    lb = sub.add_parser(
        "leaderboard",
        help="every method on one teacher/student pair, several seeds: "
        "a table like the CRD paper's Table 1, also saved as CSV",
    )
    _add_run_args(lb)
    lb.add_argument("--seeds", default="0,1,2", metavar="S1,S2", help="seeds per method (default: 0,1,2)")
    lb.add_argument("--methods", default="", metavar="M1,M2", help="only these methods (default: the whole registry)")
    lb.add_argument(
        "--beyond",
        action="store_true",
        help="also the methods beyond one teacher: ensemble, born-again, ta, dml (slower: several "
        "teachers or chained runs)",
    )
    lb.add_argument(
        "--kd-on-all",
        action="store_true",
        help="add the KD term (--alpha) to every method; by default feature, relational and contrastive "
        "methods train on CE plus their own loss, as in the CRD paper's Table 1",
    )
    _add_backend_args(lb)
    lb.add_argument(
        "--csv",
        metavar="FILE",
        default="",
        help="also write the table here (it is always saved in <KD_PLAYGROUND_HOME>/leaderboards)",
    )
    lb.set_defaults(func=cmd_leaderboard)


def _add_backend_args(p) -> None:
    p.add_argument(
        "--backend",
        default="auto",
        choices=sweep.BACKENDS,
        help="batched: the runs that share an architecture train together as one batch of students, "
        "in this process; joblib: one local process per run; dask or ray: a cluster (see --address); "
        "auto (default): batched where that is faster (a GPU, or MLP students), else joblib",
    )
    p.add_argument(
        "--group",
        type=_positive_int,
        default=None,
        metavar="N",
        help="runs per batch of students (batched: default as many as KD_PLAYGROUND_BATCH_MEMORY "
        "allows; joblib, dask, ray: default 1, and N > 1 makes each worker train N runs as one batch)",
    )
    p.add_argument(
        "--address",
        default="",
        help="scheduler address of a Dask cluster (tcp://host:8786) or a Ray "
        "cluster (host:6379 or ray://host:10001); empty: a local cluster",
    )
    p.add_argument(
        "--n-jobs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="parallel workers for local runs (default: one per CPU core)",
    )


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got '{text}'") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _say_backend(sw, a) -> str:
    """The backend a sweep will use; for auto, said on stderr with the reason."""
    if a.backend != "auto" or a.address:
        return a.backend
    backend, why = sw.choose_backend()
    print(f"backend: {backend} ({why})", file=sys.stderr)
    return backend


def _bars(total: int, label: str):
    state = {"teacher": None}

    def teacher_progress(epoch, epochs, acc):
        if state["teacher"] is None:
            state["teacher"] = tqdm(total=epochs, desc="teacher", file=sys.stderr, unit="epoch")
        state["teacher"].set_postfix(acc=f"{acc:.3f}")
        state["teacher"].update(1)
        if epoch == epochs:
            state["teacher"].close()

    bar = {"b": None}

    def on_result(r, res):
        if bar["b"] is None:
            bar["b"] = tqdm(total=total, desc=label, file=sys.stderr, unit="run")
        bar["b"].update(1)
        if r["status"] not in ("finished", "stopped"):
            bar["b"].write(f"cell {r['cell']} seed {r['seed']}: {r['status']}: {r['message']}", file=sys.stderr)
        if bar["b"].n >= total:
            bar["b"].close()

    return teacher_progress, on_result


def cmd_sweep(a) -> int:
    base = config_from_args(a)
    sw = sweep.Sweep.grid(
        base,
        sweep.parse_list(a.temperatures, float, "--temperatures"),
        sweep.parse_list(a.alphas, float, "--alphas"),
        seeds=sweep.parse_list(a.seeds, int, "--seeds"),
        methods=sweep.parse_list(a.methods, str, "--methods") if a.methods else None,
        fractions=sweep.parse_list(a.fractions, float, "--fractions") if a.fractions else None,
        scratch=a.scratch,
    )
    teacher_progress, on_result = _bars(sw.total, f"sweep ({len(sw.cells)} cells x {len(sw.seeds)} seeds)")
    res = sw.run(
        backend=_say_backend(sw, a),
        n_jobs=a.n_jobs,
        address=a.address,
        on_result=on_result,
        teacher_progress=teacher_progress,
        group=a.group,
    )
    print(sweep.grid_table(res))
    path = Path(a.csv) if a.csv else paths.subdir("sweeps") / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}.csv"
    res.to_csv(path)
    print(f"wrote {path}")
    return 0 if not res.errors() else 3


def cmd_leaderboard(a) -> int:
    t0 = time.perf_counter()
    base = config_from_args(a)
    seeds = sweep.parse_list(a.seeds, int, "--seeds")
    methods = sweep.parse_list(a.methods, str, "--methods") if a.methods else None
    sw = sweep.Sweep.leaderboard(
        base.resolved(), seeds=seeds, methods=methods, kd_on_all=a.kd_on_all, beyond=a.beyond
    )  # refuse bad values first
    teacher_progress, on_result = _bars(sw.total, f"leaderboard ({len(sw.cells)} methods x {len(seeds)} seeds)")
    res, text, saved = sweep.leaderboard(
        base.dataset,
        seeds=seeds,
        methods=methods,
        base=base,
        backend=_say_backend(sw, a),
        n_jobs=a.n_jobs,
        address=a.address,
        group=a.group,
        kd_on_all=a.kd_on_all,
        csv_path=a.csv or None,
        on_result=on_result,
        teacher_progress=teacher_progress,
        beyond=a.beyond,
    )
    print(text)
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    print(f"wrote {saved}" + (f" and {a.csv}" if a.csv else ""))
    return 0 if not res.errors() else 3


def cmd_crossmodal(a) -> int:
    return audio.cli_train(a)


def main(argv=None) -> int:
    parser = _Parser(prog=PROG, description="KD Playground engine: train teachers and distil students.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="distil a student from a (cached) teacher and print a results table")
    _add_run_args(t)
    t.add_argument("--json", metavar="FILE", help="write the run's results as JSON")
    t.set_defaults(func=cmd_train)
    m = sub.add_parser("methods", help="list the distillation methods and their parameters")
    m.set_defaults(func=cmd_methods)
    _add_sweep_commands(sub)
    ship.add_subcommand(sub)
    lm_cli.add_subcommands(sub, _float, _int, _param)
    cm = sub.add_parser("crossmodal", help="image -> speech: an image teacher trains an audio student, no audio labels")
    cm_sub = cm.add_subparsers(dest="action", required=True, parser_class=_Parser)
    audio.add_cli_args(
        cm_sub.add_parser("train", help="train the audio students on spoken digits (espeak-ng)"), _float, _int
    )
    cm.set_defaults(func=cmd_crossmodal)
    a = parser.parse_args(argv)
    try:
        return a.func(a)
    except KDError as e:
        sys.stderr.write(f"{PROG} {a.command}: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

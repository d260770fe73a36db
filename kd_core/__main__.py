"""Command line: ``python -m kd_core train | methods | sweep | leaderboard | ship-teachers | bench | lm | crossmodal``.

Any bad value exits with status 2 and one line on stderr saying what is wrong and what is
allowed; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from . import paths
from .config import STUDENT_EPOCHS, Config
from .errors import KDError

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


def _train_pipeline(cfg: Config, a) -> int:
    from tqdm import tqdm

    from . import train

    pbar = None
    for ev in train.method_events(cfg):
        if ev["kind"] == "start" and "total_steps" in ev:
            pbar = tqdm(
                total=ev["total_steps"],
                desc=f"{cfg.method} {ev.get('stage', '')}".strip(),
                file=sys.stderr,
                unit="step",
            )
        elif ev["kind"] == "step" and pbar is not None:
            pbar.update(1)
        elif ev["kind"] == "epoch" and pbar is not None:
            if ev.get("student_acc") is not None:  # a synthesis snapshot has none
                pbar.set_postfix({"student": f"{ev['student_acc']:.3f}"})
            elif ev.get("confidence") is not None:
                pbar.set_postfix({"teacher confidence": f"{ev['confidence']:.3f}"})
        elif ev["kind"] in ("stage_end", "end") and pbar is not None:
            pbar.close()
            pbar = None
        if ev["kind"] == "end" and ev["status"] != "finished":
            print(f"run {ev['status']}: {ev['message']}", file=sys.stderr)
    result = ev["result"]
    print(results_table(result))
    print(beyond_table(result))
    for line in result.get("report") or []:  # a method's own summary lines (data-free, label-free)
        print(line)
    if a.json:
        out = {k: v for k, v in result.items() if k != "step_losses"}
        paths.atomic_write_text(a.json, json.dumps(out, indent=1))
    return 0 if result["status"] != "diverged" else 3


def cmd_train(a) -> int:
    from tqdm import tqdm

    from . import train

    cfg = config_from_args(a).resolved().validate()
    from . import data

    train.check_batch_fits(cfg, data.load(cfg.dataset))  # before any teacher is trained
    if cfg.method_obj.pipeline is not None:
        return _train_pipeline(cfg, a)
    bar = {"teacher": None}

    def teacher_progress(epoch, epochs, acc):
        if bar["teacher"] is not None and epoch == 1:  # the next teacher of an ensemble
            bar["teacher"].close()
            bar["teacher"] = None
        if bar["teacher"] is None:
            bar["teacher"] = tqdm(total=epochs, desc=f"teacher {cfg.teacher}", file=sys.stderr, unit="epoch")
        bar["teacher"].set_postfix(acc=f"{acc:.3f}")
        bar["teacher"].update(1)

    trainer = train.Trainer(cfg, teacher_progress=teacher_progress)
    if bar["teacher"] is not None:
        bar["teacher"].close()
    print(
        f"teacher {trainer.teacher.arch}: test accuracy {_pct(trainer.teacher.test_accuracy)}"
        f" ({_SOURCE_WORDS.get(trainer.teacher.source, trainer.teacher.source)})",
        file=sys.stderr,
    )
    pbar = None
    for ev in trainer.events():
        if ev["kind"] == "start":
            pbar = tqdm(
                total=ev["total_steps"], desc=f"{cfg.method} student {cfg.student}", file=sys.stderr, unit="step"
            )
        elif ev["kind"] == "step":
            pbar.update(1)
        elif ev["kind"] == "epoch":
            post = {"student": f"{ev['student_acc']:.3f}"}
            if "baseline_acc" in ev:
                post["scratch"] = f"{ev['baseline_acc']:.3f}"
            pbar.set_postfix(post)
        elif ev["kind"] == "end":
            pbar.close()
            if ev["status"] != "finished":
                print(f"run {ev['status']}: {ev['message']}", file=sys.stderr)
    result = trainer.result
    print(results_table(result))
    if result.get("teachers"):
        print(beyond_table(result))
    if a.json:
        out = {k: v for k, v in result.items() if k != "step_losses"}
        paths.atomic_write_text(a.json, json.dumps(out, indent=1))
    return 0 if result["status"] != "diverged" else 3


def cmd_methods(a) -> int:
    from . import methods

    for m in methods.all_methods().values():
        ps = ", ".join(f"{p.name}={p.default:g}" for p in m.params)
        print(f"{m.name:12s} {m.title}" + (f"  [{ps}]" if ps else ""))
    return 0


def cmd_bench(a) -> int:
    from . import bench

    names = [n.strip() for n in a.methods.split(",") if n.strip()] if a.methods else None
    if a.repeats is not None and a.repeats < 1:
        raise KDError(f"--repeats must be at least 1, got {a.repeats}")
    return bench.main(quick=a.quick, json_path=a.json or None, repeats=a.repeats, method_names=names)


def cmd_crossmodal(a) -> int:
    from . import audio

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
    from . import sweep as sweep_mod  # `sweep` and `leaderboard` (their commands live in kd_core/sweep.py)

    sweep_mod.add_subcommands(sub, _add_run_args, config_from_args)
    from . import ship  # `ship-teachers` (kd_core/ship.py)

    ship.add_subcommand(sub)
    from .lm import cli as lm_cli  # `lm train | sample | methods` (kd_core/lm/cli.py)

    lm_cli.add_subcommands(sub, _float, _int, _param)
    b = sub.add_parser(
        "bench", help="measure the engine against the student alone and the conventional loop (see PERFORMANCE.md)"
    )
    b.add_argument("--quick", action="store_true", help="a few steps of 2-3 methods: checks that it works (tests)")
    b.add_argument(
        "--json",
        metavar="FILE",
        default="artifacts/bench.json",
        help="write the results as JSON (default: artifacts/bench.json; '' for none)",
    )
    b.add_argument(
        "--repeats",
        type=_int("repeats"),
        default=None,
        metavar="N",
        help="interleaved rounds per measurement (default: 3; quick: 1)",
    )
    b.add_argument("--methods", default="", metavar="A,B", help="only these methods (default: the whole registry)")
    b.set_defaults(func=cmd_bench)
    cm = sub.add_parser("crossmodal", help="image -> speech: an image teacher trains an audio student, no audio labels")
    cm_sub = cm.add_subparsers(dest="action", required=True, parser_class=_Parser)
    from . import audio

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

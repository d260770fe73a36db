"""``python -m kd_core lm train | sample | methods``: the language-model commands.

Bad values exit 2 with one line (argparse types and ``KDError`` through ``kd_core.__main__``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from .. import paths
from ..errors import ConfigError


def _params(pairs) -> dict:
    return {name: value for name, value in pairs}


def add_subcommands(sub, float_type, int_type, param_type) -> None:
    """Add ``lm`` with its own sub-commands to the main parser's ``sub``."""
    from . import corpus, methods, models
    from .train import LMConfig

    d = LMConfig()
    lm = sub.add_parser("lm", help="language models: distil a character-level transformer (see 'lm train -h')")
    lsub = lm.add_subparsers(dest="lm_command", required=True, parser_class=type(lm))
    t = lsub.add_parser("train", help="distil a student LM from a (cached) teacher LM, beside a scratch student")
    t.add_argument("--method", default=d.method, help=f"one of {', '.join(methods.METHODS)} (default {d.method})")
    t.add_argument("--temperature", "-T", type=float_type("temperature"), default=d.temperature)
    t.add_argument(
        "--alpha", type=float_type("alpha"), default=d.alpha, help="weight of the distillation term in [0, 1]"
    )
    t.add_argument(
        "--param", action="append", type=param_type, default=[], metavar="NAME=VALUE", help="a method's own parameter"
    )
    t.add_argument("--corpus", default=d.corpus, help=f"{', '.join(corpus.CORPORA)} or file:PATH (default {d.corpus})")
    t.add_argument(
        "--train-fraction",
        type=float_type("train-fraction"),
        default=d.train_fraction,
        help="share of the training text the student sees, in (0, 1]; the teacher sees all of it",
    )
    t.add_argument("--teacher", default=d.teacher, help=f"one of {', '.join(models.ARCHS)}")
    t.add_argument("--student", default=d.student, help=f"one of {', '.join(models.ARCHS)}")
    t.add_argument("--steps", type=int_type("steps"), default=d.steps)
    t.add_argument("--teacher-steps", type=int_type("teacher-steps"), default=d.teacher_steps)
    t.add_argument("--batch-size", type=int_type("batch-size"), default=d.batch_size)
    t.add_argument("--lr", type=float_type("lr"), default=d.lr)
    t.add_argument("--seed", type=int_type("seed"), default=d.seed)
    t.add_argument("--eval-every", type=int_type("eval-every"), default=d.eval_every)
    t.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=d.baseline)
    t.add_argument("--json", metavar="FILE", help="write the run's results as JSON")
    t.set_defaults(func=cmd_train)
    s = lsub.add_parser("sample", help="text sampled from the (cached) teacher LM")
    s.add_argument("--prompt", default="\n", help="text to continue")
    s.add_argument("--chars", type=int_type("chars"), default=300)
    s.add_argument("--temperature", "-T", type=float_type("temperature"), default=0.8)
    s.add_argument("--corpus", default=d.corpus)
    s.add_argument("--teacher", default=d.teacher)
    s.add_argument("--teacher-steps", type=int_type("teacher-steps"), default=d.teacher_steps)
    s.add_argument("--seed", type=int_type("seed"), default=0)
    s.set_defaults(func=cmd_sample)
    m = lsub.add_parser("methods", help="list the LM distillation methods and their parameters")
    m.set_defaults(func=cmd_methods)


def _teacher_bar(desc: str):
    from tqdm import tqdm

    bar = {"b": None}

    def progress(step, steps, loss):
        if bar["b"] is None:
            bar["b"] = tqdm(total=steps, desc=desc, file=sys.stderr, unit="step")
        bar["b"].update(step - bar["b"].n)
        bar["b"].set_postfix(loss=f"{loss:.3f}")
        if step == steps:
            bar["b"].close()

    return progress


def table(result: dict) -> str:
    rows = [("model", "arch", "test ppl", "bits/char", "entropy", "top-1", "agree", "params", "kFLOPs/tok", "tok/s")]
    for role in ("teacher", "student", "baseline"):
        r = result.get(role)
        if r is None:
            continue
        rows.append(
            (
                "scratch" if role == "baseline" else role,
                r["arch"],
                f"{r['test_perplexity']:.3f}",
                f"{r['bits_per_char']:.3f}",
                f"{r['mean_entropy']:.3f}",
                f"{100 * r['top1_accuracy']:.1f}%",
                "—" if role == "teacher" else f"{100 * r['agreement']:.1f}%",
                f"{r['params']:,}",
                f"{r['flops_per_token'] / 1e3:.0f}",
                f"{r['tokens_per_s']:,.0f}",
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    if "baseline" in result:
        gain = 1 - result["student"]["test_perplexity"] / result["baseline"]["test_perplexity"]
        lines.append(f"distilled vs scratch: {100 * gain:+.1f}% lower test perplexity")
    return "\n".join(lines)


def cmd_train(a) -> int:
    from tqdm import tqdm

    from .train import LMConfig, LMTrainer

    cfg = LMConfig(
        method=a.method,
        corpus=a.corpus,
        teacher=a.teacher,
        student=a.student,
        temperature=a.temperature,
        alpha=a.alpha,
        params=_params(a.param),
        train_fraction=a.train_fraction,
        steps=a.steps,
        batch_size=a.batch_size,
        lr=a.lr,
        seed=a.seed,
        baseline=a.baseline,
        teacher_steps=a.teacher_steps,
        eval_every=a.eval_every,
    ).validate()
    trainer = LMTrainer(cfg, teacher_progress=_teacher_bar(f"teacher {cfg.teacher}"))
    t = trainer.teacher
    print(
        f"teacher {t.arch} on {cfg.corpus}: validation perplexity {t.val_perplexity:.3f}"
        f" ({'cached' if t.from_cache else f'trained now in {t.train_seconds:.0f} s'})",
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
        elif ev["kind"] == "eval":
            post = {"student ppl": f"{ev['student_perplexity']:.2f}"}
            if "baseline_perplexity" in ev:
                post["scratch ppl"] = f"{ev['baseline_perplexity']:.2f}"
            pbar.set_postfix(post)
        elif ev["kind"] == "end":
            pbar.close()
            if ev["status"] != "finished":
                print(f"run {ev['status']}: {ev['message']}", file=sys.stderr)
    result = trainer.result
    print(table(result))
    if a.json:
        paths.atomic_write_text(a.json, json.dumps(result, indent=1, ensure_ascii=False))
    return 0 if result["status"] != "diverged" else 3


def cmd_sample(a) -> int:
    from . import corpus as corpus_mod
    from .train import get_teacher, sample_text

    if a.chars < 1 or a.chars > 100000:
        raise ConfigError(f"chars must be in [1, 100000], got {a.chars}")
    if not (0.01 <= a.temperature <= 10) or math.isnan(a.temperature):
        raise ConfigError(f"temperature must be in [0.01, 10], got {a.temperature:g}")
    from .models import check_arch

    check_arch(a.teacher)
    c = corpus_mod.load(a.corpus)
    unknown = c.unknown(a.prompt)
    if unknown:
        print(f"note: {''.join(unknown)!r} not in the {a.corpus} vocabulary; read as spaces", file=sys.stderr)
    teacher = get_teacher(a.corpus, a.teacher, a.teacher_steps, progress=_teacher_bar(f"teacher {a.teacher}"))
    print(a.prompt + sample_text(teacher.model, c, a.prompt, a.chars, a.temperature, a.seed))
    return 0


def cmd_methods(a) -> int:
    from .methods import METHODS

    for m in METHODS.values():
        ps = ", ".join(f"{p.name}={p.default:g}" for p in m.params)
        print(f"{m.name:11s} {m.title}" + (f"  [{ps}]" if ps else ""))
    return 0

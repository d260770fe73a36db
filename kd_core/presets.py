"""A method's own effect: comparison presets and their summary over seeds.

Most feature, relational and contrastive methods add their term *on top of* logit KD at
the default alpha = 0.9, so their runs land within a point or two of plain KD and look
interchangeable. The presets pull the parts apart, each trained over several seeds:

* ``scratch``    — the student alone on the labels (method ``none``);
* ``kd``         — logit KD alone (Hinton et al.) at the chosen alpha and T;
* ``method``     — the method's own term alone: alpha = 0, so CE on the labels plus its term;
* ``method+kd``  — the method and the KD term together (what the Lab trains by default).

``summarise`` turns per-run accuracies into mean ± std per preset and compares the pairs
that answer "what does the method add?" — each with a flag saying whether the difference
is within seed noise: ``|Δmean| < 2 · pooled std`` (pooled std = sqrt((s_a² + s_b²) / 2),
sample std over seeds). With one seed there is no noise estimate and no claim is made.

Plain functions of plain data: the app (kd_app.method_effect) runs the configs as
background jobs, ``run`` runs them here one after another (CLI, notebook, tests).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from . import methods, train, viz
from .config import Config
from .errors import ConfigError

PRESETS = ("scratch", "kd", "method", "method+kd")
# (a, b): "a minus b" is what the comparison says
COMPARISONS = (("method", "scratch"), ("method+kd", "kd"), ("kd", "scratch"), ("method+kd", "method"))
NOISE_FACTOR = 2.0


def presets_for(method: str) -> tuple[str, ...]:
    """The presets that make sense for ``method``: all four for a method that adds its own
    term to KD; scratch / method / kd for one that replaces the KD term (DKD, DIST; LS-KD and
    CTKD, whose term alpha weighs in place of KD's, so their ``method`` keeps alpha); scratch and
    KD for KD itself. Methods that chain runs or bring their own teachers are refused."""
    m = methods.get(method)
    if m.pipeline is not None or m.make_teacher is not None:
        raise ConfigError(
            f"method '{method}' trains several models in a chain or its own teachers; "
            "the comparison presets take a single-student method"
        )
    if method in ("none", "kd"):
        return ("scratch", "kd")
    if not m.uses_alpha or m.kd_term is not None:  # replaces the KD term (DKD; LS-KD, CTKD at alpha)
        return ("scratch", "kd", "method")
    return PRESETS


def configs(base: Config, method: str | None = None, seeds: Iterable[int] = (0, 1, 2)) -> list[tuple[str, int, Config]]:
    """``(preset, seed, config)`` for every preset of ``method`` (default: ``base.method``)
    and seed. Everything else (data, models, T, epochs, labelled fraction, ...) is the
    base's; no scratch baseline is trained inside a run (the ``scratch`` preset is it)."""
    method = method or base.method
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("the comparison needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"the seeds must differ; got {seeds}")
    m = methods.get(method)
    kd_alpha = base.alpha if (m.uses_alpha and base.method != "none" and base.alpha > 0) else Config().alpha
    own = dict(base.params) if base.method == method else {}
    pairs = list(base.pairs) if base.method == method else []
    common = dict(baseline=False)
    out = []
    for preset in presets_for(method):
        if preset == "scratch":
            cfg = replace(base, method="none", alpha=0.0, params={}, pairs=[], **common)
        elif preset == "kd":
            cfg = replace(base, method="kd", alpha=kd_alpha, params={}, pairs=[], **common)
        elif preset == "method":
            # a method whose own term is the alpha-weighted logit term (LS-KD, CTKD) keeps alpha
            alpha = kd_alpha if m.kd_term is not None else 0.0
            cfg = replace(base, method=method, alpha=alpha, params=own, pairs=pairs, **common)
        else:
            cfg = replace(base, method=method, alpha=kd_alpha, params=own, pairs=pairs, **common)
        for seed in seeds:
            c = replace(cfg, seed=seed, params=dict(cfg.params), pairs=list(cfg.pairs))
            c.validate()
            out.append((preset, seed, c))
    return out


@dataclass(frozen=True)
class PresetSummary:
    preset: str
    accuracies: tuple[float, ...]  # one per finished seed, in [0, 1]
    failed: int  # seeds that diverged or failed

    @property
    def n(self) -> int:
        return len(self.accuracies)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies) if self.accuracies else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (nan with fewer than two)."""
        return statistics.stdev(self.accuracies) if self.n >= 2 else math.nan


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    delta: float  # mean(a) - mean(b)
    pooled_std: float  # sqrt((std_a^2 + std_b^2) / 2); nan without two seeds on each side
    within_noise: bool | None  # None: no noise estimate (one seed), no claim

    @property
    def verdict(self) -> str:
        """``"noise"``, ``"better"``, ``"worse"`` or ``"unknown"`` (a is compared with b)."""
        if self.within_noise is None:
            return "unknown"
        if self.within_noise:
            return "noise"
        return "better" if self.delta > 0 else "worse"


def within_noise(delta: float, std_a: float, std_b: float, factor: float = NOISE_FACTOR) -> tuple[float, bool | None]:
    """(pooled std, whether ``|delta| < factor * pooled std``); (nan, None) without stds."""
    if any(math.isnan(x) for x in (delta, std_a, std_b)):
        return math.nan, None
    pooled = math.sqrt((std_a**2 + std_b**2) / 2)
    return pooled, abs(delta) < factor * pooled


@dataclass(frozen=True)
class Summary:
    method: str
    presets: dict  # preset -> PresetSummary, in PRESETS order
    comparisons: list  # Comparison, for the pairs both present

    def rows(self) -> list[dict]:
        """One plain row per preset: preset, n, mean, std, failed (for tables and JSON)."""
        return [
            {"preset": p.preset, "n": p.n, "mean": p.mean, "std": p.std, "failed": p.failed}
            for p in self.presets.values()
        ]

    @property
    def all_within_noise(self) -> bool:
        """True when every comparison that could be judged is within seed noise."""
        judged = [c for c in self.comparisons if c.within_noise is not None]
        return bool(judged) and all(c.within_noise for c in judged)


def summarise(method: str, results: Sequence[dict], factor: float = NOISE_FACTOR) -> Summary:
    """``results``: dicts with ``preset``, ``seed`` and ``acc`` (test accuracy in [0, 1],
    None for a run that diverged or failed)."""
    by: dict[str, list] = {}
    for r in results:
        by.setdefault(r["preset"], []).append(r.get("acc"))
    presets = {}
    for p in PRESETS:
        if p in by:
            accs = by[p]
            ok = tuple(float(a) for a in accs if a is not None and not math.isnan(a))
            presets[p] = PresetSummary(p, ok, len(accs) - len(ok))
    comps = []
    for a, b in COMPARISONS:
        if a in presets and b in presets:
            pa, pb = presets[a], presets[b]
            delta = pa.mean - pb.mean
            pooled, noise = within_noise(delta, pa.std, pb.std, factor)
            comps.append(Comparison(a, b, delta, pooled, noise))
    return Summary(method, presets, comps)


def run(base: Config, method: str | None = None, seeds: Iterable[int] = (0, 1, 2), on_run=None) -> Summary:
    """Train every preset config here, one after another, and summarise them.
    ``on_run(preset, seed, result)`` is called after each run."""
    method = method or base.method
    results = []
    for preset, seed, cfg in configs(base, method, seeds):
        res = train.distil(cfg)
        acc = res["student"]["test_accuracy"] if res and res.get("status", "finished") != "diverged" else None
        results.append({"preset": preset, "seed": seed, "acc": acc})
        if on_run is not None:
            on_run(preset, seed, res)
    return summarise(method, results)


def figure(summary: Summary, labels: dict | None = None, title: str | None = None, xtitle: str = "test accuracy"):
    """Horizontal bars of mean test accuracy per preset with ± one std over seeds, and each
    seed's run as a dot (long preset names stay readable on the y axis). ``labels``: display
    names of the presets (default: their keys)."""
    import plotly.graph_objects as go

    labels = labels or {}
    colours = {"scratch": viz.SCRATCH, "kd": viz.TEACHER, "method": viz.EXTRA[0], "method+kd": viz.STUDENT}
    ps = list(summary.presets.values())[::-1]  # the first preset on top
    names = [labels.get(p.preset, p.preset) for p in ps]
    fig = go.Figure(
        go.Bar(
            y=names,
            x=[p.mean for p in ps],
            orientation="h",
            error_x=dict(type="data", array=[0.0 if math.isnan(p.std) else p.std for p in ps], visible=True),
            marker_color=[colours.get(p.preset, viz.EXTRA[1]) for p in ps],
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
            showlegend=False,
        )
    )
    fig.add_trace(
        go.Scatter(
            y=[n for n, p in zip(names, ps) for _ in p.accuracies],
            x=[a for p in ps for a in p.accuracies],
            mode="markers",
            marker=dict(color="#222222", size=9, symbol="circle-open", line=dict(width=2)),
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
            showlegend=False,
        )
    )
    accs = [a for p in ps for a in p.accuracies]
    low = max(0.0, min(accs) - 0.1) if accs else 0.0
    viz.style(fig, None, height=110 + 60 * len(ps))
    fig.update_layout(
        title=dict(text=title, x=0, xanchor="left", font=dict(size=viz.FONT - 2)) if title else None,
        margin=dict(l=10, r=20, t=50 if title else 10, b=50),
        xaxis=dict(title=xtitle, tickformat=".0%", range=[low, 1.0]),
        yaxis=dict(automargin=True),
    )
    return fig

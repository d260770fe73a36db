"""The method registry: one entry per distillation method, holding everything that
drives the UI, the CLI and the training loop — its loss, its hyper-parameters with
defaults, ranges and help text, the LaTeX of its formula, the features it taps and any
extra trainable module (FitNets regressors, projection heads).

Every student loss has the same outer shape (``alpha`` is the design's convention)::

    L = (1 - alpha) * CE(y, s) + alpha * T^2 * KL(p_T || p_S) + sum_k  w_k * L_k

Methods that do not use logit KD (``uses_alpha = False``) drop the KL term and keep the
full CE. Each method contributes its own weighted terms ``L_k``. Adding a method means
adding one entry to ``METHODS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import crd, losses
from .errors import ConfigError


@dataclass(frozen=True)
class Param:
    """A method's own hyper-parameter, with what a UI needs to build a control."""

    name: str
    default: float
    low: float
    high: float
    help: str
    symbol: str = ""  # LaTeX symbol used in the formula
    log: bool = False  # a log-scale slider suits it
    integer: bool = False
    label: str = ""  # a readable control label; default: from PARAM_LABELS by name, else the name

    def __post_init__(self):
        if not self.label:
            object.__setattr__(self, "label", PARAM_LABELS.get(self.name, self.name))

    def check(self, value) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.name} must be a number in [{self.low:g}, {self.high:g}], got {value!r}") from None
        if not (self.low <= v <= self.high) or v != v:
            raise ConfigError(f"{self.name} must be in [{self.low:g}, {self.high:g}], got {v:g}")
        if self.integer and v != int(v):
            raise ConfigError(f"{self.name} must be a whole number, got {v:g}")
        return int(v) if self.integer else v


# Readable labels of the parameters, by name (a Param may set its own ``label``); the UI
# adds the formula's symbol. Raw names such as "nckd_weight" meant nothing to a class.
PARAM_LABELS = {
    "tckd_weight": "Target-class weight (TCKD)",
    "nckd_weight": "Non-target-class weight (NCKD)",
    "warmup": "Warm-up epochs",
    "beta": "Weight of the method's term",
    "p": "Attention exponent",
    "distance_weight": "Distance-term weight",
    "angle_weight": "Angle-term weight",
    "tau": "Contrast temperature",
    "proj_dim": "Projection size",
    "feat_dim": "Projection size",
    "nce_k": "Negatives per sample",
    "momentum": "Memory-bank momentum",
    "other_class": "Negatives from other classes only",
    "teachers": "Number of teachers",
    "archs": "Teacher architectures",
    "weighting": "Teacher weighting",
    "generations": "Generations",
    "students": "Number of students",
    "inter_weight": "Inter-class relation weight",
    "intra_weight": "Intra-class relation weight",
}


@dataclass
class StepContext:
    """What a method sees at one training step."""

    student_logits: Tensor
    teacher_logits: Tensor
    target: Tensor  # true labels; for unlabelled samples the teacher's prediction
    labelled: Tensor  # bool mask of samples whose label the student may use
    student_feats: list[Tensor]  # one per layer pair, in pair order
    teacher_feats: list[Tensor]
    temperature: float
    params: dict
    modules: nn.Module | None
    progress: float  # epochs done so far, fractional (e.g. 1.5)
    index: Tensor  # dataset indices of the batch's samples
    # scalars a method reports per step besides its losses (CTKD's learned T): the
    # Trainer copies them into each step event's ``tracked`` and the last ones into the result
    report: dict = field(default_factory=dict)

    @property
    def epoch(self) -> int:
        """The current epoch, counted from 1 as the reference implementations do."""
        return int(self.progress) + 1


TermsFn = Callable[[StepContext], dict]
KDTermFn = Callable[[StepContext], Tensor]
ModulesFn = Callable[[list, dict], "nn.Module | None"]


@dataclass(frozen=True)
class Method:
    name: str
    title: str
    family: str  # baseline | logits | feature | relational | contrastive
    paper: str
    summary: str
    formula: str  # LaTeX; <T>, <alpha> and <param> are replaced by current values
    params: tuple[Param, ...] = ()
    uses_alpha: bool = True
    uses_temperature: bool = True
    tap_kind: str | None = None  # "spatial", "vector" or "any"; None: logits only
    prefer: str = "vector"  # default pairing for "any": "spatial" (last stages) or "vector" (embeddings)
    multi_pair: bool = False
    regresses: bool = False  # a trained map takes the student's feature onto the teacher's: pairs of one rank
    terms: TermsFn = field(default=lambda ctx: {}, repr=False)
    make_modules: ModulesFn | None = field(default=None, repr=False)
    # the logit term that alpha weighs, when it is not Hinton's KL at T (LS-KD, CTKD)
    kd_term: KDTermFn | None = field(default=None, repr=False)
    short: str = ""  # a short name for tables (the leaderboard); default: the name
    # beyond one teacher (kd_core/beyond.py): a method that brings its own teacher (an
    # ensemble) sets make_teacher(config, device, progress) -> teachers.Teacher; one that chains
    # several runs (born-again, TA) or trains without a teacher (DML) sets
    # pipeline(config, teacher_progress) -> a generator of events like Trainer.events().
    make_teacher: Callable | None = field(default=None, repr=False)
    pipeline: Callable | None = field(default=None, repr=False)
    prepare: Callable | None = field(default=None, repr=False)  # prepare(config, progress): train teachers once
    uses_labels: bool = True  # False: trains without any label (data-free, label-free); labeled_fraction 0 is valid

    @property
    def label(self) -> str:
        return self.short or self.name

    @property
    def needs_features(self) -> bool:
        return self.tap_kind is not None

    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}

    def resolve_params(self, overrides: dict | None) -> dict:
        """Defaults updated by ``overrides``; unknown names or bad values -> ConfigError."""
        overrides = dict(overrides or {})
        known = {p.name: p for p in self.params}
        for name in overrides:
            if name not in known:
                allowed = ", ".join(known) or "none"
                raise ConfigError(f"method '{self.name}' has no parameter '{name}'; its parameters: {allowed}")
        return {p.name: p.check(overrides.get(p.name, p.default)) for p in self.params}

    def formula_latex(
        self, temperature: float | None = None, alpha: float | None = None, params: dict | None = None
    ) -> str:
        """The formula with the current values substituted (symbols where a value is None)."""
        values = self.defaults() | dict(params or {})
        text = self.formula
        text = text.replace("<T>", _num(temperature) if temperature is not None else "T")
        if alpha is not None:
            text = text.replace("<1-alpha>", _num(round(1 - alpha, 6))).replace("<alpha>", _num(alpha))
        else:
            text = text.replace("<1-alpha>", r"(1-\alpha)").replace("<alpha>", r"\alpha")
        for p in self.params:
            text = text.replace(f"<{p.name}>", _num(values[p.name]) if params is not None else (p.symbol or p.name))
        return text


def _num(v: float) -> str:
    return f"{v:g}"


# ---------------------------------------------------------------- extra modules


class Regressors(nn.Module):
    """One trainable map per layer pair from the student's feature to the teacher's shape
    (FitNets): a 1x1 convolution + BatchNorm + ReLU for spatial maps, as the ``ConvReg`` of
    RepDistiller and mdistiller (the teacher's hint is taken after a ReLU, so it is never
    negative); a linear layer + ReLU for vectors (the models' embeddings are post-ReLU too)."""

    def __init__(self, shapes: list[tuple[tuple, tuple]]):
        super().__init__()
        maps = []
        for t_shape, s_shape in shapes:
            if len(s_shape) == 3:
                maps.append(nn.Sequential(nn.Conv2d(s_shape[0], t_shape[0], 1), nn.BatchNorm2d(t_shape[0]), nn.ReLU()))
            else:
                maps.append(nn.Sequential(nn.Linear(s_shape[0], t_shape[0]), nn.ReLU()))
        self.maps = nn.ModuleList(maps)

    def forward(self, i: int, x: Tensor) -> Tensor:
        return self.maps[i](x)


class Projections(nn.Module):
    """Projection heads for contrastive distillation: student and teacher features to a
    shared, L2-normalised space of ``dim`` dimensions (as in CRD)."""

    def __init__(self, s_dim: int, t_dim: int, dim: int):
        super().__init__()
        self.student = nn.Linear(s_dim, dim)
        self.teacher = nn.Linear(t_dim, dim)

    def forward(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return F.normalize(self.student(s.flatten(1)), dim=1), F.normalize(self.teacher(t.flatten(1)), dim=1)


class LearnableTemperature(nn.Module):
    """CTKD's global temperature (Li et al. 2023): one trainable scalar theta behind a
    gradient reversal, T = t_start + t_range * sigmoid(theta), theta starting at 1 as in
    the authors' ``Global_T`` (so T starts at t_start + 0.73 t_range)."""

    def __init__(self, t_start: float, t_range: float):
        super().__init__()
        self.t_start, self.t_range = float(t_start), float(t_range)
        self.theta = nn.Parameter(torch.ones(()))

    def forward(self, lam: float) -> Tensor:
        return self.t_start + self.t_range * torch.sigmoid(losses.reverse_gradient(self.theta, lam))

    @property
    def value(self) -> float:
        return self.t_start + self.t_range * torch.sigmoid(self.theta.detach()).item()


def _flat_dim(shape: tuple) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# ---------------------------------------------------------------- terms


def _kd_terms(ctx: StepContext) -> dict:
    return {}  # the KL term is added by the training loop through alpha


def _dkd_terms(ctx: StepContext) -> dict:
    p = ctx.params
    # a continuous ramp from 0 at the first step (the authors' code steps per epoch from 1 /
    # warmup: with runs of a few epochs that puts the full weight on the first epoch; see the help)
    warm = min(ctx.progress / p["warmup"], 1.0) if p["warmup"] > 0 else 1.0
    tckd, nckd = losses.dkd_parts(ctx.student_logits, ctx.teacher_logits, ctx.target, ctx.temperature)
    return {"tckd": warm * p["tckd_weight"] * tckd, "nckd": warm * p["nckd_weight"] * nckd}


def _fitnets_terms(ctx: StepContext) -> dict:
    total = 0.0
    for i, (s, t) in enumerate(zip(ctx.student_feats, ctx.teacher_feats)):
        r = ctx.modules(i, s)
        r, t = losses.pooled_pair(r, t)
        total = total + losses.hint_loss(r, t)
    return {"hint": ctx.params["beta"] * total}


def _at_terms(ctx: StepContext) -> dict:
    total = sum(losses.attention_loss(s, t, p=ctx.params["p"]) for s, t in zip(ctx.student_feats, ctx.teacher_feats))
    return {"attention": ctx.params["beta"] * total}


def _rkd_terms(ctx: StepContext) -> dict:
    s, t = ctx.student_feats[0].flatten(1), ctx.teacher_feats[0].flatten(1)
    out = {}
    if ctx.params["distance_weight"] > 0:
        out["rkd_distance"] = ctx.params["distance_weight"] * losses.rkd_distance_loss(s, t)
    if ctx.params["angle_weight"] > 0:
        out["rkd_angle"] = ctx.params["angle_weight"] * losses.rkd_angle_loss(s, t)
    return out


def _sp_terms(ctx: StepContext) -> dict:
    total = sum(losses.sp_loss(s, t) for s, t in zip(ctx.student_feats, ctx.teacher_feats))
    return {"sp": ctx.params["beta"] * total}


def _pkt_terms(ctx: StepContext) -> dict:
    return {"pkt": ctx.params["beta"] * losses.pkt_loss(ctx.student_feats[0], ctx.teacher_feats[0])}


def _contrastive_terms(ctx: StepContext) -> dict:
    s, t = ctx.modules(ctx.student_feats[0], ctx.teacher_feats[0])
    return {"info_nce": ctx.params["beta"] * losses.info_nce_loss(s, t, ctx.params["tau"])}


def _dist_terms(ctx: StepContext) -> dict:
    p = ctx.params
    loss = losses.dist_loss(
        ctx.student_logits, ctx.teacher_logits, ctx.temperature, p["inter_weight"], p["intra_weight"]
    )
    return {"dist": p["beta"] * loss}


def _ls_kd_term(ctx: StepContext) -> Tensor:
    return ctx.params["kd_scale"] * losses.ls_kd_loss(ctx.student_logits, ctx.teacher_logits, ctx.temperature)


def _ctkd_term(ctx: StepContext) -> Tensor:
    p = ctx.params
    lam = losses.cosine_curriculum(ctx.epoch, p["curriculum"], high=p["lambda_max"])
    T = ctx.modules(lam)
    ctx.report["T"] = T.detach()
    ctx.report["lambda"] = lam
    return losses.kd_loss(ctx.student_logits, ctx.teacher_logits, T)


def _temperature(shapes: list, params: dict) -> nn.Module:
    return LearnableTemperature(params["t_start"], params["t_range"])


def _regressors(shapes: list, params: dict) -> nn.Module:
    return Regressors(shapes)


def _projections(shapes: list, params: dict) -> nn.Module:
    t_shape, s_shape = shapes[0]
    return Projections(_flat_dim(s_shape), _flat_dim(t_shape), int(params["proj_dim"]))


# ---------------------------------------------------------------- registry

_CE = r"<1-alpha>\,\mathrm{CE}(y, p_S) + <alpha>\cdot <T>^2\,\mathrm{KL}\!\left(p_T^{(<T>)} \,\|\, p_S^{(<T>)}\right)"
_BETA_HELP = "Weight of the method's own loss term."


def _plus(term: str, then: str = "") -> str:
    """KD's loss with a method's own term on a second line (and a definition on a third), so the
    formula fits a narrow column: ``term`` starts with its sign; ``then`` is "Q &= ..."."""
    lines = [r"\mathcal{L} &= " + _CE, r"&\quad " + term] + ([then] if then else [])
    return r"\begin{aligned}" + r" \\ ".join(lines) + r"\end{aligned}"


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


register(
    Method(
        name="none",
        short="Student (scratch)",
        title="Student alone (no teacher)",
        family="baseline",
        paper="—",
        summary="The student learns from the hard labels only: the floor every method is measured against.",
        formula=r"\mathcal{L} = \mathrm{CE}(y, p_S)",
        uses_alpha=False,
        uses_temperature=False,
    )
)
register(
    Method(
        name="kd",
        short="KD",
        title="Vanilla KD (Hinton et al. 2015)",
        family="logits",
        paper="Hinton, Vinyals & Dean 2015, Distilling the Knowledge in a Neural Network",
        summary="Match the teacher's softened class probabilities; T reveals the 'dark knowledge' in the small ones.",
        formula=r"\mathcal{L} = " + _CE,
        terms=_kd_terms,
    )
)
register(
    Method(
        name="dkd",
        short="DKD",
        title="Decoupled KD (Zhao et al. 2022)",
        family="logits",
        paper="Zhao, Cui, Song, Qiu & Liang 2022, Decoupled Knowledge Distillation (CVPR)",
        summary="Split KD into target-class (TCKD) and non-target-class (NCKD) parts and weight them freely.",
        formula=r"\begin{aligned}\mathcal{L} &= \mathrm{CE}(y, p_S) + w\,(<tckd_weight>\,\mathrm{TCKD} + "
        r"<nckd_weight>\,\mathrm{NCKD}), \\ w &= \min(\mathrm{epochs\ done}/<warmup>, 1)\end{aligned}",
        params=(
            Param(
                "tckd_weight",
                1.0,
                0.0,
                10.0,
                "alpha of the DKD paper: weight of the target-class term (TCKD).",
                r"\alpha_{\mathrm{DKD}}",
            ),
            Param(
                "nckd_weight",
                8.0,
                0.0,
                20.0,
                "beta of the DKD paper: weight of the non-target-class term (NCKD); 8 for CIFAR-100 in the paper.",
                r"\beta_{\mathrm{DKD}}",
            ),
            Param(
                "warmup",
                1.0,
                0.0,
                20.0,
                "Warm-up epochs: the DKD term's weight is min(epochs done / warmup, 1), rising continuously "
                "from 0 at the first step. The authors' code weighs epoch e (counted from 1) by min(e / warmup, 1), "
                "so its first epoch already has 1/warmup; with our runs of a few epochs and warmup 1 that would "
                "put the full weight on the first step, hence the smooth ramp. The paper uses 20 of 240 epochs; "
                "our runs are a few epochs long, so 1.",
                r"E_w",
            ),
        ),
        uses_alpha=False,
        terms=_dkd_terms,
    )
)
register(
    Method(
        name="dist",
        short="DIST",
        title="DIST: relations of the probabilities (Huang et al. 2022)",
        family="logits",
        paper="Huang, You, Wang, Qian & Xu 2022, Knowledge Distillation from A Stronger Teacher (NeurIPS)",
        summary="Keep only the rankings: the student's softened probabilities must correlate (Pearson) with the "
        "teacher's, across the classes of each image (inter-class) and across the images of the batch for each "
        "class (intra-class). Shift and scale are free, so a much stronger teacher need not be copied exactly.",
        formula=r"\begin{aligned}\mathcal{L} &= \mathrm{CE}(y, p_S) + <beta>\cdot <T>^2\Big(<inter_weight>\big(1 - "
        r"\tfrac{1}{B}\textstyle\sum_i \rho(p^{(<T>)}_{S,i}, p^{(<T>)}_{T,i})\big) \\ &\qquad + <intra_weight>\big(1 - "
        r"\tfrac{1}{C}\textstyle\sum_c \rho(p^{(<T>)}_{S,:c}, p^{(<T>)}_{T,:c})\big)\Big)\end{aligned}",
        params=(
            Param(
                "beta",
                2.0,
                0.0,
                10.0,
                "Weight of the DIST term beside the full CE; 2 as in the authors' CIFAR-100 setting "
                "(kd_loss_weight 2, with T = 4).",
                r"\beta",
            ),
            Param(
                "inter_weight",
                1.0,
                0.0,
                5.0,
                "Weight of the inter-class relation (each image's ranking of the classes); 1 as in the paper.",
                r"w_{\mathrm{inter}}",
            ),
            Param(
                "intra_weight",
                1.0,
                0.0,
                5.0,
                "Weight of the intra-class relation (each class's ranking of the batch's images); 1 as in the paper.",
                r"w_{\mathrm{intra}}",
            ),
        ),
        uses_alpha=False,
        terms=_dist_terms,
    )
)
register(
    Method(
        name="ls-kd",
        short="KD + logit std.",
        title="KD on standardised logits (Sun et al. 2024)",
        family="logits",
        paper="Sun, Ren, Li, Wang & Cao 2024, Logit Standardization in Knowledge Distillation (CVPR)",
        summary="Z-score both networks' logits per image before the softmax, so T acts on logits of mean 0 and "
        "standard deviation 1: the student matches the teacher's logit relations, not their scale.",
        formula=r"\begin{aligned}\mathcal{L} &= <1-alpha>\,\mathrm{CE}(y, p_S) \\ &\quad + <alpha>\cdot <kd_scale>\cdot <T>^2\,"
        r"\mathrm{KL}\!\left(\tilde p_T \,\|\, \tilde p_S\right), \\ \tilde p &= \mathrm{softmax}\big(\mathcal{Z}(z)/<T>\big),"
        r" \\ \mathcal{Z}(z) &= \frac{z - \bar z}{\sigma(z) + 10^{-7}}\end{aligned}",
        params=(
            Param(
                "kd_scale",
                10.0,
                0.0,
                50.0,
                "Multiplies the standardised KD term: with alpha = 0.9 it gives the authors' 0.1 CE + 9 KD "
                "(--kd-weight 9). They use T = 2 (--base-temp 2) on the standardised logits.",
                r"\kappa",
                label="KD-term scale",
            ),
        ),
        kd_term=_ls_kd_term,
    )
)
register(
    Method(
        name="ctkd",
        short="CTKD (learned T)",
        title="CTKD: curriculum temperature (Li et al. 2023)",
        family="logits",
        paper="Li, Li, Yang, Zhao, Song, Luo, Li & Yang 2023, Curriculum Temperature for Knowledge Distillation (AAAI)",
        summary="The temperature is learned, against the student: a gradient reversal makes T climb the KD loss "
        "the student descends, with a weight lambda that rises on a cosine curriculum, so the task gets harder "
        "as the student gets better. The Lab draws the learned T at every step.",
        formula=r"\begin{aligned}\mathcal{L} &= <1-alpha>\,\mathrm{CE}(y, p_S) + <alpha>\cdot \tau^2\,\mathrm{KL}\!\left("
        r"p_T^{(\tau)} \,\|\, p_S^{(\tau)}\right), \\ \tau &= <t_start> + <t_range>\,\sigma(\theta),\quad "
        r"\theta \leftarrow \theta + \eta\,\lambda_e \nabla_\theta \mathrm{KL}, \\ \lambda_e &= <lambda_max>\,"
        r"\tfrac{1}{2}\big(1 - \cos(\pi \min(e, <curriculum>)/<curriculum>)\big)\end{aligned}",
        params=(
            Param(
                "t_start",
                1.0,
                0.1,
                10.0,
                "Lowest temperature: T = t_start + t_range * sigmoid(theta); 1 as in the authors' code.",
                r"\tau_0",
                label="Lowest temperature",
            ),
            Param(
                "t_range",
                20.0,
                1.0,
                50.0,
                "Span of the temperature (the authors' t_end, 20): T stays in (t_start, t_start + t_range); "
                "theta starts at 1, so T starts at t_start + 0.73 t_range.",
                r"\Delta\tau",
                label="Temperature span",
            ),
            Param(
                "curriculum",
                10,
                1,
                240,
                "Epochs over which lambda rises from 0 to lambda_max on a cosine, epochs counted from 1 "
                "(the authors' decay_loops, 10 of 240 epochs).",
                "E",
                integer=True,
                label="Curriculum epochs",
            ),
            Param(
                "lambda_max",
                1.0,
                0.0,
                10.0,
                "Final weight of the reversed gradient on the temperature; 1 as in the authors' code "
                "(decay_min -1). 0 freezes T.",
                r"\lambda_{\max}",
                label="Final reversal weight",
            ),
        ),
        uses_temperature=False,
        kd_term=_ctkd_term,
        make_modules=_temperature,
    )
)
register(
    Method(
        name="fitnets",
        short="FitNets",
        title="FitNets hints (Romero et al. 2015)",
        family="feature",
        paper="Romero, Ballas, Kahou, Chassang, Gatta & Bengio 2015, FitNets: Hints for Thin Deep Nets (ICLR)",
        summary="A trainable regressor (1x1 conv + BatchNorm + ReLU, as in the reference code) maps the student's "
        "guided layer onto the teacher's hint layer; match them with MSE.",
        formula=_plus(r"+ <beta>\,\frac{1}{n}\left\| F_T - r(F_S) \right\|_2^2"),
        params=(
            Param(
                "beta",
                100.0,
                0.0,
                1000.0,
                "Hint weight; 100 as in RepDistiller's FitNets setting. The hint loss is the mean squared error "
                "between r(student layer) and the teacher's layer (after its ReLU), r = 1x1 conv + BN + ReLU "
                "(a linear layer + ReLU for vector layers).",
                r"\beta",
                log=True,
            ),
        ),
        tap_kind="any",
        prefer="spatial",
        multi_pair=True,
        regresses=True,
        terms=_fitnets_terms,
        make_modules=_regressors,
    )
)
register(
    Method(
        name="at",
        short="AT",
        title="Attention transfer (Zagoruyko & Komodakis 2017)",
        family="feature",
        paper="Zagoruyko & Komodakis 2017, Paying More Attention to Attention (ICLR)",
        summary="Match where the networks look: channel-pooled |A|^p maps, L2-normalised, at one or more stages.",
        formula=_plus(
            r"+ <beta>\sum_{j}\mathrm{mean}\left(\frac{Q_S^j}{\|Q_S^j\|_2} - \frac{Q_T^j}{\|Q_T^j\|_2}\right)^2,",
            r"Q &= \mathrm{vec}\,\tfrac{1}{C}\textstyle\sum_c |A_c|^{<p>}",
        ),
        params=(
            Param(
                "beta",
                1000.0,
                0.0,
                10000.0,
                "Attention weight; 1000, as in the paper and the authors' and RepDistiller's code, on the squared "
                "differences of the normalised maps averaged over batch and positions.",
                r"\beta",
                log=True,
            ),
            Param("p", 2.0, 1.0, 4.0, "Exponent of the attention map; the paper uses 2.", "p"),
        ),
        tap_kind="spatial",
        multi_pair=True,
        terms=_at_terms,
    )
)
register(
    Method(
        name="rkd",
        short="RKD",
        title="Relational KD (Park et al. 2019)",
        family="relational",
        paper="Park, Kim, Lu & Cho 2019, Relational Knowledge Distillation (CVPR)",
        summary="Transfer the geometry of the batch: pairwise distances and triplet angles of the embeddings.",
        formula=_plus(
            r"+ <distance_weight>\,\ell_\delta(\psi_D^T, \psi_D^S) + <angle_weight>\,\ell_\delta(\psi_A^T, \psi_A^S)"
        ),
        params=(
            Param(
                "distance_weight",
                25.0,
                0.0,
                200.0,
                "Weight of the distance-wise term; 25 as in the paper.",
                r"\lambda_D",
            ),
            Param("angle_weight", 50.0, 0.0, 200.0, "Weight of the angle-wise term; 50 as in the paper.", r"\lambda_A"),
        ),
        tap_kind="any",
        terms=_rkd_terms,
    )
)
register(
    Method(
        name="sp",
        short="SP",
        title="Similarity-preserving KD (Tung & Mori 2019)",
        family="relational",
        paper="Tung & Mori 2019, Similarity-Preserving Knowledge Distillation (ICCV)",
        summary="Inputs that the teacher finds similar should look similar to the student: match batch Gram matrices.",
        formula=_plus(r"+ \frac{<beta>}{b^2}\left\|G_T - G_S\right\|_F^2"),
        params=(Param("beta", 3000.0, 0.0, 20000.0, "SP weight; 3000 as in the paper.", r"\gamma", log=True),),
        tap_kind="any",
        prefer="spatial",
        multi_pair=True,
        terms=_sp_terms,
    )
)
register(
    Method(
        name="pkt",
        short="PKT",
        title="Probabilistic KT (Passalis & Tefas 2018)",
        family="relational",
        paper="Passalis & Tefas 2018, Learning Deep Representations with Probabilistic Knowledge Transfer (ECCV)",
        summary="Match the conditional probability that sample i picks sample j as a neighbour, under a cosine kernel.",
        formula=_plus(r"+ <beta>\,\frac{1}{b^2}\sum_{i,j} p^T_{i|j}\log\frac{p^T_{i|j}}{p^S_{i|j}}"),
        params=(Param("beta", 30000.0, 0.0, 100000.0, "PKT weight; 30000 as in RepDistiller.", r"\beta", log=True),),
        tap_kind="any",
        terms=_pkt_terms,
    )
)
register(
    Method(
        name="contrastive",
        short="Contrastive",
        title="Contrastive (in-batch InfoNCE)",
        family="contrastive",
        paper="van den Oord et al. 2018 (InfoNCE); Tian, Krishnan & Isola 2020 (CRD) for the projection heads",
        summary="Student sample i must recognise teacher sample i among the batch through learned projection heads.",
        formula=_plus(
            r"- \frac{<beta>}{B}\sum_i \log\frac{e^{g_S(s_i)\cdot g_T(t_i)/<tau>}}{\sum_j e^{g_S(s_i)\cdot g_T(t_j)/<tau>}}"
        ),
        params=(
            Param("beta", 0.8, 0.0, 10.0, "Weight of the contrastive term; 0.8 as CRD's default.", r"\beta"),
            Param(
                "tau", 0.07, 0.01, 1.0, "Softmax temperature of the similarities; 0.07 as in CRD.", r"\tau", log=True
            ),
            Param(
                "proj_dim", 128, 8, 512, "Dimension of the shared projection space; 128 as in CRD.", "d", integer=True
            ),
        ),
        tap_kind="any",
        terms=_contrastive_terms,
        make_modules=_projections,
    )
)

register(
    Method(
        name="crd",
        short="CRD",
        title="Contrastive representation distillation (Tian et al. 2020)",
        family="contrastive",
        paper="Tian, Krishnan & Isola 2020, Contrastive Representation Distillation (ICLR)",
        summary="The student's embedding of an image must pick out the teacher's embedding of the same image among K "
        "others held in a memory bank, and the other way round (v → M: student anchors against the teacher's "
        "bank, teacher anchors against the student's). h = P / (P + K/N) with P = exp(v·M/τ) / Z is the "
        "probability that a pair is real rather than noise: h⁺ for the image's own row of the bank, h⁻ for the K "
        "negatives' rows. alpha = 0 gives the paper's CRD (CE + beta CRD); alpha > 0 adds the KD term as "
        "(1 - alpha) CE + alpha KD: the paper's CRD+KD (CE + KD + 0.8 CRD) is alpha = 0.5 with beta = 0.4, "
        "up to an overall factor of 1/2.",
        formula=_plus(
            r"- <beta>\sum_{v \to M}\mathbb{E}\Big[\log h^{+} + \sum_{k=1}^{<nce_k>}\log\big(1 - h^{-}_{k}\big)\Big]"
        ),
        params=(
            Param("beta", 0.8, 0.0, 10.0, "Weight of the CRD term; 0.8 as in the paper's code.", r"\beta"),
            Param(
                "nce_k",
                1024,
                16,
                16384,
                "Negatives per anchor, drawn from the memory bank (other training images). "
                "The paper uses 16384 of CIFAR-100's 50,000 images; 1024 here, for the small datasets and a CPU. "
                "Capped at the number of training images minus one.",
                "K",
                log=True,
                integer=True,
            ),
            Param(
                "tau",
                0.07,
                0.01,
                1.0,
                "Temperature of the scores exp(v·M/tau); 0.07 as in the paper.",
                r"\tau",
                log=True,
            ),
            Param(
                "momentum",
                0.5,
                0.0,
                0.99,
                "Momentum of the memory bank: a row keeps this share of its old value "
                "at each update; 0.5 as in the paper.",
                "m",
            ),
            Param(
                "feat_dim",
                128,
                8,
                512,
                "Dimension of the embedding space of the two heads; 128 as in the paper.",
                "d",
                integer=True,
            ),
            Param(
                "other_class",
                1,
                0,
                1,
                "1: negatives only from other classes, as the authors' code does ('exact' "
                "mode; an unlabelled image counts as the class the teacher predicts); 0: from any other image, as the "
                "paper's text puts it — with 10 classes, one negative in ten is then a same-class image.",
                r"\mathrm{oc}",
                integer=True,
            ),
        ),
        tap_kind="any",
        terms=crd.crd_terms,
        make_modules=crd.make_modules,
    )
)


# ---------------------------------------------------------------- beyond one teacher
# Kept apart from METHODS (the single-teacher, per-step methods that the Lab and the bench
# run through Trainer): several teachers, chains of runs and teacher-free mutual learning.
# ``get`` and ``all_methods`` see both.

BEYOND: dict[str, Method] = {}


def register_beyond(method: Method) -> Method:
    """Register a method beyond one teacher: kd_core/beyond.py (several teachers, chains of
    runs, mutual learning) and kd_core/datafree.py (no labels, no data) register their own;
    importing kd_core imports them."""
    BEYOND[method.name] = method
    return method


def all_methods() -> dict[str, Method]:
    """The per-step registry followed by the methods beyond one teacher."""
    return METHODS | BEYOND


def get(name: str) -> Method:
    try:
        return METHODS.get(name) or BEYOND[name]
    except KeyError:
        raise ConfigError(f"unknown method '{name}'; choose one of: {', '.join(all_methods())}") from None

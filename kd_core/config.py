"""A run's configuration: a validated dataclass that round-trips to a dict, to JSON and to
URL query parameters, so a lecturer can share a link to an exact setup."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace

from . import data, methods, models
from .errors import ConfigError
from .teachers import TEACHER_EPOCHS

# Student epochs when none are given on the command line (otherwise Config.epochs): the full
# 60,000-image sets take minutes per epoch on a laptop CPU.
STUDENT_EPOCHS = {"mnist": 2, "fashion-mnist": 2}
MAX_EPOCHS = 200
MAX_BATCH = 4096


@dataclass
class Config:
    dataset: str = "mnist-mini"
    teacher: str = ""  # empty: the dataset's preset
    student: str = ""
    method: str = "kd"
    temperature: float = 4.0
    alpha: float = 0.9
    params: dict = field(default_factory=dict)  # the method's own hyper-parameters (overrides)
    pairs: list = field(default_factory=list)  # "teacher_layer:student_layer"; empty: defaults
    epochs: int = 5
    teacher_epochs: int = 0  # 0: the dataset's recipe
    lr: float = 3e-3
    batch_size: int = 64
    seed: int = 0
    labeled_fraction: float = 0.1
    omit_class: int | None = None
    baseline: bool = True
    train_subset: int | None = None  # keep only this many training images (CIFAR-10 on a CPU)
    assistant: str = ""  # method 'ta': the teacher assistant's architecture; empty: a preset

    # ------------------------------------------------------------ resolution
    def resolved(self) -> Config:
        """A copy with presets filled in (teacher, student, teacher epochs)."""
        teacher, student = models.preset(self.dataset)
        return replace(
            self,
            teacher=self.teacher or teacher,
            student=self.student or student,
            teacher_epochs=self.teacher_epochs or TEACHER_EPOCHS.get(self.dataset, 10),
            params=dict(self.params),
            pairs=list(self.pairs),
        )

    @property
    def method_obj(self) -> methods.Method:
        return methods.get(self.method)

    def method_params(self) -> dict:
        return self.method_obj.resolve_params(self.params)

    def parsed_pairs(self) -> list[tuple[str, str]]:
        out = []
        for p in self.pairs:
            t, sep, s = str(p).partition(":")
            if not sep or not t or not s:
                raise ConfigError(f"a layer pair is written TEACHER_LAYER:STUDENT_LAYER, e.g. stage2:stage2; got '{p}'")
            out.append((t.strip(), s.strip()))
        return out

    # ------------------------------------------------------------ validation
    def validate(self) -> Config:
        """Raise ConfigError with one line saying what is wrong and what is allowed."""
        if self.dataset not in data.DATASETS:
            raise ConfigError(f"unknown dataset '{self.dataset}'; choose one of: {', '.join(data.DATASETS)}")
        m = methods.get(self.method)
        _check_float(
            "temperature", self.temperature, low=0.0, low_open=True, high=100.0, what="T must be > 0 and at most 100"
        )
        _check_float("alpha", self.alpha, low=0.0, high=1.0, what="alpha must be in [0, 1]")
        _check_float("lr", self.lr, low=0.0, low_open=True, high=1.0, what="the learning rate must be in (0, 1]")
        _check_int("epochs", self.epochs, 1, MAX_EPOCHS)
        _check_int("teacher_epochs", self.teacher_epochs, 0, MAX_EPOCHS)
        _check_int("batch_size", self.batch_size, 2, MAX_BATCH)
        _check_int("seed", self.seed, 0, 2**31 - 1)
        _check_float(
            "labeled_fraction",
            self.labeled_fraction,
            low=0.0,
            high=1.0,
            what="the labelled fraction must be in [0, 1]",
        )
        if self.labeled_fraction == 0:
            _check_no_labels(m, self.alpha)
        info = data.DATASETS[self.dataset]
        if self.omit_class is not None:
            _check_int("omit_class", self.omit_class, 0, info.num_classes - 1)
        if self.train_subset is not None:
            _check_int("train_subset", self.train_subset, 10, 10**7)
        m.resolve_params(self.params)
        self.parsed_pairs()
        if self.pairs and not m.needs_features:
            raise ConfigError(f"method '{self.method}' uses no layer pairs; remove --pair")
        if len(self.pairs) > 1 and not m.multi_pair:
            raise ConfigError(f"method '{self.method}' takes one layer pair, got {len(self.pairs)}")
        for role in ("teacher", "student", "assistant"):
            arch = getattr(self, role)
            if arch:
                models.check_name(arch)
        return self

    # ------------------------------------------------------------ round trips
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        cfg = cls(**d)
        cfg.params = dict(cfg.params or {})
        cfg.pairs = list(cfg.pairs or [])
        return cfg

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Config:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ConfigError("config JSON must be an object")
        return cls.from_dict(d)

    def to_query(self) -> dict[str, str]:
        """Only the fields that differ from the defaults, as strings (method params as p.NAME)."""
        default = Config()
        q: dict[str, str] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "params":
                for k, pv in sorted(v.items()):
                    q[f"p.{k}"] = f"{pv:g}" if isinstance(pv, (int, float)) else str(pv)
            elif f.name == "pairs":
                if v:
                    q["pairs"] = ",".join(v)
            elif v != getattr(default, f.name):
                q[f.name] = (
                    ""
                    if v is None
                    else (str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v))
                )
        return q

    @classmethod
    def from_query(cls, query: dict) -> tuple[Config, list[str]]:
        """Parse query parameters leniently: each bad value falls back to its default and
        adds a notice. Returns (config, notices)."""
        cfg = cls()
        notices: list[str] = []
        types = {f.name: f for f in fields(cls)}
        for key, raw in query.items():
            raw = raw[-1] if isinstance(raw, list) else raw
            try:
                if key.startswith("p."):
                    cfg.params[key[2:]] = float(raw)
                    cfg.method_obj.resolve_params(cfg.params) if cfg.method in methods.METHODS else None
                elif key == "pairs":
                    cfg.pairs = [p for p in str(raw).split(",") if p]
                    cfg.parsed_pairs()
                elif key in types:
                    setattr(cfg, key, _parse(key, raw))
                    replace(cfg).validate()
                else:
                    continue  # not ours (another page's setting)
            except (ConfigError, ValueError, TypeError) as e:
                notices.append(f"ignored {key}={raw!r}: {e}")
                default = cls()
                if key.startswith("p."):
                    cfg.params.pop(key[2:], None)
                elif key == "pairs":
                    cfg.pairs = []
                elif key in types:
                    setattr(cfg, key, getattr(default, key))
        try:
            cfg.validate()
        except ConfigError as e:  # inconsistent combination: start over from defaults
            notices.append(f"link settings did not fit together ({e}); using defaults")
            cfg = cls()
        return cfg, notices


_INT_FIELDS = {"epochs", "teacher_epochs", "batch_size", "seed", "omit_class", "train_subset"}
_FLOAT_FIELDS = {"temperature", "alpha", "lr", "labeled_fraction"}


def _parse(key: str, raw: str):
    if key in _INT_FIELDS:
        if raw in ("", "none", "None"):
            if key in ("omit_class", "train_subset"):
                return None
        f = float(raw)
        if f != int(f):
            raise ValueError(f"{key} must be a whole number")
        return int(f)
    if key in _FLOAT_FIELDS:
        return float(raw)
    if key == "baseline":
        if str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("baseline must be true or false")
    return str(raw)


def _check_no_labels(m: methods.Method, alpha: float) -> None:
    """labeled_fraction 0 (no label at all) suits a method that uses no labels, or soft targets
    alone (alpha = 1) with a method whose only label term is the (1 - alpha) CE."""
    if not m.uses_labels:
        return
    if not m.uses_alpha:
        raise ConfigError(
            f"labelled fraction 0 means no labels, but method '{m.name}' always trains on labels; "
            "use a label-free method (seed with alpha 1, deepinversion, dfad) or a fraction > 0"
        )
    if alpha != 1:
        raise ConfigError(
            f"labelled fraction 0 means no labels, but alpha {alpha:g} keeps a (1 - alpha) CE term on labels; "
            "set alpha 1 (soft targets only) or a fraction > 0"
        )


def _check_float(name, v, low, high, what, low_open=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        raise ConfigError(f"{name} must be a number; {what}; got {v!r}")
    if (v <= low if low_open else v < low) or v > high:
        raise ConfigError(f"{what}; got {v:g}")


def _check_int(name, v, low, high):
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{name} must be a whole number in [{low}, {high}]; got {v!r}")
    if not low <= v <= high:
        raise ConfigError(f"{name} must be in [{low}, {high}]; got {v}")

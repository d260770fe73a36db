"""Teachers, the distillation loop (as events) and its evaluation, for language models.

``LMTrainer(config).events()`` yields ``start``, ``step`` (losses), ``eval`` (validation
perplexity of the student and its scratch twin) and ``end`` (the result) events, like
``kd_core.train.Trainer``; ``stop()`` ends the run early and keeps what was done. The
scratch student sees exactly the same windows in the same order.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import paths
from ..errors import ConfigError, KDError
from ..models import load_weights, pick_device, save_weights
from ..teachers import set_threads
from . import corpus as corpus_mod
from . import losses
from . import methods as methods_mod
from . import models as lm_models

SAMPLE_CHARS = 240
VAL_CHARS = 16384  # validation perplexity during training: on this many characters
TEST_CHARS = 65536  # test figures: on at most this many characters of the test split


@dataclass
class LMConfig:
    method: str = methods_mod.DEFAULT_METHOD
    corpus: str = corpus_mod.DEFAULT_CORPUS
    teacher: str = lm_models.DEFAULT_TEACHER
    student: str = lm_models.DEFAULT_STUDENT
    temperature: float = 1.0
    alpha: float = 0.9
    params: dict = field(default_factory=dict)
    train_fraction: float = 0.05  # the student's share of the training text (the teacher sees all)
    steps: int = 800
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0
    baseline: bool = True
    teacher_steps: int = 1500
    eval_every: int = 100

    def validate(self) -> LMConfig:
        m = methods_mod.get(self.method)
        lm_models.check_arch(self.teacher)
        lm_models.check_arch(self.student)
        if not self.corpus.startswith("file:") and self.corpus not in corpus_mod.CORPORA:
            raise ConfigError(
                f"unknown corpus '{self.corpus}'; choose one of {', '.join(corpus_mod.CORPORA)} or file:PATH"
            )
        for name, v, lo, hi in [
            ("temperature", self.temperature, 0.05, 50.0),
            ("alpha", self.alpha, 0.0, 1.0),
            ("train-fraction", self.train_fraction, 1e-4, 1.0),
            ("lr", self.lr, 1e-6, 1.0),
        ]:
            if not isinstance(v, (int, float)) or math.isnan(v) or not lo <= v <= hi:
                raise ConfigError(f"{name} must be in [{lo:g}, {hi:g}], got {v}")
        if self.train_fraction <= 0:
            raise ConfigError(f"train-fraction must be in (0, 1], got {self.train_fraction}")
        for name, v, lo, hi in [
            ("steps", self.steps, 1, 200000),
            ("batch-size", self.batch_size, 1, 4096),
            ("teacher-steps", self.teacher_steps, 1, 200000),
            ("eval-every", self.eval_every, 1, 200000),
        ]:
            if int(v) != v or not lo <= v <= hi:
                raise ConfigError(f"{name} must be a whole number in [{lo}, {hi}], got {v}")
        self.params = m.resolve(self.params)
        return self

    @property
    def method_obj(self) -> methods_mod.LMMethod:
        return methods_mod.get(self.method)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- teachers
TEACHER_LR = 1e-3
TEACHER_BATCH = 32


@dataclass
class LMTeacher:
    model: nn.Module  # frozen, eval mode: never train it
    arch: str
    corpus: str
    steps: int
    key: str
    val_perplexity: float
    train_seconds: float
    from_cache: bool
    train_cpu_seconds: float | None = None


_teachers: dict[str, LMTeacher] = {}
_guard = threading.Lock()
_locks: dict[str, threading.Lock] = {}


def teacher_recipe(corpus: corpus_mod.Corpus, arch: str, steps: int, seed: int = 0) -> dict:
    import hashlib

    text_hash = hashlib.sha256((corpus.train + corpus.val + corpus.test).encode()).hexdigest()[:16]
    return {
        "kind": "lm-teacher",
        "corpus": corpus.name,
        "text": text_hash,
        "arch": asdict(lm_models.check_arch(arch)),
        "steps": steps,
        "lr": TEACHER_LR,
        "batch": TEACHER_BATCH,
        "seed": seed,
        "version": 1,
    }


def _windows(ids: Tensor, starts: Tensor, length: int) -> Tensor:
    return ids[starts.unsqueeze(1) + torch.arange(length)]


def _lr_at(step: int, total: int, lr: float) -> float:
    """Linear warm-up over 5% of the steps, then cosine decay to a tenth."""
    warm = max(1, total // 20)
    if step < warm:
        return lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_teacher(corpus, arch: str, steps: int, seed: int = 0, device=None, progress=None, stop=None) -> nn.Module:
    """Train a teacher on the whole training split; ``progress(step, steps, loss)`` every 10 steps."""
    set_threads()
    device = device or pick_device()
    torch.manual_seed(seed)
    model = lm_models.build(arch, corpus.vocab_size).to(device)
    ids = corpus.encode(corpus.train)
    L = model.block_size
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=TEACHER_LR, weight_decay=0.01)
    model.train()
    for step in range(steps):
        if stop is not None and stop():
            raise KDError("stopped while training the teacher")
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, TEACHER_LR)
        w = _windows(ids, torch.randint(0, len(ids) - L - 1, (TEACHER_BATCH,), generator=gen), L + 1).to(device)
        loss = F.cross_entropy(model(w[:, :-1]).reshape(-1, corpus.vocab_size), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if progress is not None and ((step + 1) % 10 == 0 or step + 1 == steps):
            progress(step + 1, steps, float(loss.detach()))
    return model.eval()


def teacher_cached(corpus_name: str, arch: str, steps: int, seed: int = 0) -> bool:
    c = corpus_mod.load(corpus_name)
    key = paths.key_of(teacher_recipe(c, arch, steps, seed))
    return key in _teachers or (paths.subdir("lm_teachers") / key / "weights.safetensors").exists()


def get_teacher(corpus_name: str, arch: str, steps: int, seed: int = 0, progress=None, stop=None) -> LMTeacher:
    """The teacher of this recipe: from memory, else from KD_PLAYGROUND_HOME/lm_teachers/<key>,
    else trained now and saved (safetensors). Two threads asking for it train it once."""
    c = corpus_mod.load(corpus_name)
    key = paths.key_of(teacher_recipe(c, arch, steps, seed))
    with _guard:
        if key in _teachers:
            return _teachers[key]
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        if key in _teachers:
            return _teachers[key]
        device = pick_device()
        folder = paths.subdir("lm_teachers") / key
        weights, meta_file = folder / "weights.safetensors", folder / "meta.json"
        model, from_cache, meta = None, False, {}
        if weights.exists() and meta_file.exists():
            try:
                meta = json.loads(meta_file.read_text())
                model = lm_models.build(arch, c.vocab_size)
                load_weights(model, weights)
                from_cache = True
            except Exception as e:  # a broken cache is retrained, with a notice
                import warnings

                warnings.warn(
                    f"LM teacher cache {folder} was unreadable ({type(e).__name__}); retraining", stacklevel=2
                )
                model = None
        if model is None:
            t0, cpu0 = time.perf_counter(), time.process_time()
            model = train_teacher(c, arch, steps, seed, device, progress, stop)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            val = evaluate(model, c, c.val, limit=VAL_CHARS)
            meta = {
                "recipe": teacher_recipe(c, arch, steps, seed),
                "train_seconds": seconds,  # wall time
                "train_cpu_seconds": cpu,  # this process's CPU time (a shared machine's wall time is longer)
                "val": val,
            }
            save_weights(model, weights)
            paths.atomic_write_text(meta_file, json.dumps(meta, indent=1))
        model = model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        teacher = LMTeacher(
            model,
            arch,
            corpus_name,
            steps,
            key,
            meta["val"]["perplexity"],
            meta["train_seconds"],
            from_cache,
            meta.get("train_cpu_seconds"),
        )
        with _guard:
            _teachers[key] = teacher
        return teacher


# ---------------------------------------------------------------- evaluation
def _eval_windows(ids: Tensor, L: int) -> tuple[Tensor, Tensor]:
    n = (len(ids) - 1) // L
    x = ids[: n * L].view(n, L)
    y = ids[1 : n * L + 1].view(n, L)
    return x, y


@torch.no_grad()
def next_char_logits(model: nn.Module, x: Tensor, batch: int = 128) -> Tensor:
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch].to(dev)).float().cpu() for i in range(0, len(x), batch)])
    model.train(was)
    return out


@torch.no_grad()
def evaluate(
    model: nn.Module, corpus, text: str, limit: int = TEST_CHARS, teacher_logits: Tensor | None = None
) -> dict:
    """Held-out figures on ``text`` cut into non-overlapping windows: perplexity per character,
    bits per character, mean entropy (nats) of the next-character distributions, top-1
    accuracy, agreement with the teacher (when its logits are given) and tokens/s of scoring."""
    x, y = _eval_windows(corpus.encode(text[: limit + 1]), model.block_size)
    t0 = time.perf_counter()
    logits = next_char_logits(model, x)
    seconds = time.perf_counter() - t0
    flat, target = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
    nll = float(F.cross_entropy(flat, target))
    out = {
        "perplexity": math.exp(nll),
        "bits_per_char": nll / math.log(2),
        "mean_entropy": float(losses.entropy(flat).mean()),
        "accuracy": float((flat.argmax(-1) == target).float().mean()),
        "tokens_per_s": target.numel() / max(seconds, 1e-9),
        "chars": int(target.numel()),
    }
    if teacher_logits is not None:
        out["agreement"] = float(
            (flat.argmax(-1) == teacher_logits.reshape(-1, flat.shape[-1]).argmax(-1)).float().mean()
        )
    return out


def sample_text(
    model: nn.Module, corpus, prompt: str, n: int = SAMPLE_CHARS, temperature: float = 0.8, seed: int = 0
) -> str:
    """``n`` characters sampled after ``prompt`` (characters outside the vocabulary read as spaces)."""
    dev = next(model.parameters()).device
    idx = corpus.encode(prompt or "\n").unsqueeze(0).to(dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    out = lm_models.generate(model, idx, n, temperature, gen)
    return corpus.decode(out[0, idx.shape[1] :].tolist())


# ---------------------------------------------------------------- the distillation loop
class LMTrainer:
    def __init__(self, config: LMConfig, teacher: LMTeacher | None = None, teacher_progress=None):
        self.config = replace(config, params=dict(config.params)).validate()
        self.method = self.config.method_obj
        self.corpus = corpus_mod.load(self.config.corpus)
        self._stop = threading.Event()
        self.teacher = teacher or get_teacher(
            self.config.corpus,
            self.config.teacher,
            self.config.teacher_steps,
            progress=teacher_progress,
            stop=self._stop.is_set,
        )
        set_threads()
        self.device = next(self.teacher.model.parameters()).device
        self.student = self.baseline = None
        self.result: dict | None = None
        self.history: list[dict] = []

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _student_ids(self) -> Tensor:
        """The student's share of the training text: its first ``train_fraction`` (the split
        already shuffled the documents, so this is a random sample of them)."""
        text = self.corpus.train
        n = max(self.teacher.model.block_size * 4, int(len(text) * self.config.train_fraction))
        return self.corpus.encode(text[:n])

    def _model(self, seed_offset: int) -> nn.Module:
        torch.manual_seed(self.config.seed * 1000 + seed_offset)
        return lm_models.build(self.config.student, self.corpus.vocab_size).to(self.device)

    def events(self):
        cfg, m, dev = self.config, self.method, self.device
        teacher = self.teacher.model
        V = self.corpus.vocab_size
        ids = self._student_ids()
        L = min(teacher.block_size, lm_models.check_arch(cfg.student).block_size)
        self.student = self._model(1)
        self.projection = None
        params = list(self.student.parameters())
        if m.needs_projection:
            self.projection = nn.Linear(self.student.hidden_dim, teacher.hidden_dim).to(dev)
            params += list(self.projection.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
        if cfg.baseline and cfg.method != "scratch":
            self.baseline = self._model(1)  # the same initial weights as the student
            self.baseline.load_state_dict(self.student.state_dict())
            opt_b = torch.optim.AdamW(self.baseline.parameters(), lr=cfg.lr, weight_decay=0.01)
        gen = torch.Generator().manual_seed(cfg.seed)  # the data order, shared by both students
        gen_extra = torch.Generator(device=dev).manual_seed(cfg.seed + 7)  # the method's own sampling
        val_x, val_y = _eval_windows(self.corpus.encode(self.corpus.val[: VAL_CHARS + 1]), L)
        pool = None
        times = {"student": 0.0, "baseline": 0.0, "prepare": 0.0}
        if cfg.method == "seq-kd":  # the teacher's own text, generated once before training
            t0 = time.perf_counter()
            pool = self._teacher_text(ids, L, gen_extra)
            times["prepare"] = time.perf_counter() - t0
        yield {"kind": "start", "total_steps": cfg.steps, "student_chars": len(ids), "teacher": self.teacher.arch}
        status, message, step = "finished", "", 0
        t_start = time.perf_counter()
        for step in range(1, cfg.steps + 1):
            if self.stopped:
                status, message, step = "stopped", f"stopped after {step - 1} of {cfg.steps} steps", step - 1
                break
            lr = _lr_at(step - 1, cfg.steps, cfg.lr)
            starts = torch.randint(0, len(ids) - L - 1, (cfg.batch_size,), generator=gen)
            w = _windows(ids, starts, L + 1).to(dev)
            x, y = w[:, :-1], w[:, 1:]
            on_policy = m.name == "gkd" and torch.rand((), generator=gen).item() < cfg.params["on_policy"]
            t0 = time.perf_counter()
            for g in opt.param_groups:
                g["lr"] = lr
            terms = self._step_terms(x, y, on_policy, pool, gen, gen_extra)
            loss = sum(terms.values())
            if not torch.isfinite(loss):
                status, message = "diverged", f"the loss became {float(loss)} at step {step}; lower the learning rate"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            times["student"] += time.perf_counter() - t0
            ev = {"kind": "step", "step": step, "total_steps": cfg.steps, "loss": float(loss.detach())}
            ev["losses"] = {k: float(v.detach()) for k, v in terms.items()}
            if self.baseline is not None:
                t0 = time.perf_counter()
                for g in opt_b.param_groups:
                    g["lr"] = lr
                loss_b = F.cross_entropy(self.baseline(x).reshape(-1, V), y.reshape(-1))
                opt_b.zero_grad(set_to_none=True)
                loss_b.backward()
                torch.nn.utils.clip_grad_norm_(self.baseline.parameters(), 1.0)
                opt_b.step()
                times["baseline"] += time.perf_counter() - t0
                ev["baseline_loss"] = float(loss_b.detach())
            ev["elapsed"] = time.perf_counter() - t_start
            yield ev
            if step % cfg.eval_every == 0 or step == cfg.steps:
                rec = self._eval_point(step, val_x, val_y)
                self.history.append(rec)
                yield {"kind": "eval", **rec}
        if not self.history or self.history[-1]["step"] != step:
            if step > 0:
                rec = self._eval_point(step, val_x, val_y)
                self.history.append(rec)
                yield {"kind": "eval", **rec}
        self.result = self._summary(status, message, step, times, time.perf_counter() - t_start, len(ids))
        yield {"kind": "end", "status": status, "message": message, "result": self.result}

    def run(self, on_event=None) -> dict:
        for ev in self.events():
            if on_event is not None:
                on_event(ev)
        return self.result

    # ------------------------------------------------------------ one step
    def _step_terms(self, x: Tensor, y: Tensor, on_policy: bool, pool, gen, gen_extra) -> dict:
        cfg, m, V = self.config, self.method, self.corpus.vocab_size
        a, T = cfg.alpha, cfg.temperature
        if m.name == "scratch":
            return {"ce": F.cross_entropy(self.student(x).reshape(-1, V), y.reshape(-1))}
        if m.name == "seq-kd":
            ce = F.cross_entropy(self.student(x).reshape(-1, V), y.reshape(-1))
            tw = pool[torch.randint(0, len(pool), (x.shape[0],), generator=gen_extra, device=pool.device)]
            seq = F.cross_entropy(self.student(tw[:, :-1]).reshape(-1, V), tw[:, 1:].reshape(-1))
            return {"ce": (1 - a) * ce, "seq": a * seq}
        if on_policy:  # GKD: the student continues the first half of the window, the teacher scores it
            half = x.shape[1] // 2
            with torch.no_grad():
                xs = lm_models.generate(self.student, x[:, :half], x.shape[1] - half, 1.0, gen_extra)
                t_logits = self.teacher.model(xs)
            s_logits = self.student(xs)
            jsd = losses.generalized_jsd(s_logits[:, half - 1 :], t_logits[:, half - 1 :], cfg.params["beta"], T)
            return {"jsd_on_policy": jsd}
        with torch.no_grad():
            t_logits, t_hidden = self.teacher.model(x, return_hidden=True)
        s_logits, s_hidden = self.student(x, return_hidden=True)
        out = {"ce": (1 - a) * F.cross_entropy(s_logits.reshape(-1, V), y.reshape(-1))}
        if m.name in ("kd", "hidden"):
            out["kl"] = a * losses.forward_kl(s_logits, t_logits, T)
        elif m.name == "reverse-kl":
            out["reverse_kl"] = a * losses.reverse_kl(s_logits, t_logits, T)
        elif m.name == "gkd":
            out["jsd"] = a * losses.generalized_jsd(s_logits, t_logits, cfg.params["beta"], T)
        elif m.name == "top-k":
            out["top_k_kl"] = a * losses.topk_kl(s_logits, t_logits, cfg.params["k"], T)
        if m.name == "hidden" and cfg.params["weight"] > 0:
            out["hidden"] = cfg.params["weight"] * losses.hidden_mse(self.projection(s_hidden), t_hidden)
        return out

    @torch.no_grad()
    def _teacher_text(self, ids: Tensor, L: int, gen_extra) -> Tensor:
        """Kim & Rush: the teacher's continuations of prompts from the student's text — as many
        windows as the student's text holds (at least 256), 8-character prompts, L + 1 long."""
        n = max(256, len(ids) // L)
        g = torch.Generator().manual_seed(self.config.seed + 11)
        prompts = _windows(ids, torch.randint(0, len(ids) - 8, (n,), generator=g), 8).to(self.device)
        out = []
        for i in range(0, n, 256):
            out.append(
                lm_models.generate(
                    self.teacher.model,
                    prompts[i : i + 256],
                    L + 1 - 8,
                    self.config.params["gen_temperature"],
                    gen_extra,
                )
            )
        return torch.cat(out)

    def _eval_point(self, step: int, val_x: Tensor, val_y: Tensor) -> dict:
        rec = {"step": step, "student_perplexity": _perplexity(self.student, val_x, val_y)}
        if self.baseline is not None:
            rec["baseline_perplexity"] = _perplexity(self.baseline, val_x, val_y)
        return rec

    def _summary(self, status, message, steps, times, seconds, student_chars) -> dict:
        cfg, c = self.config, self.corpus
        x, _ = _eval_windows(c.encode(c.test[: TEST_CHARS + 1]), self.teacher.model.block_size)
        t_logits = next_char_logits(self.teacher.model, x)
        prompt = c.test[:24]

        def block(model, arch, train_seconds=None):
            r = evaluate(model, c, c.test, teacher_logits=t_logits)
            out = {
                "arch": arch,
                "test_perplexity": r["perplexity"],
                "bits_per_char": r["bits_per_char"],
                "mean_entropy": r["mean_entropy"],
                "top1_accuracy": r["accuracy"],
                "agreement": r.get("agreement"),
                "tokens_per_s": r["tokens_per_s"],
                **lm_models.profile(model),
                "sample": sample_text(model, c, prompt, temperature=0.8, seed=cfg.seed),
            }
            if train_seconds is not None:
                out["train_seconds"] = train_seconds
                out["train_tokens_per_s"] = (
                    steps * cfg.batch_size * self.teacher.model.block_size / max(train_seconds, 1e-9)
                )
            return out

        result = {
            "status": status,
            "message": message,
            "config": cfg.to_dict(),
            "corpus": {**c.summary(), "student_train_chars": student_chars},
            "steps": steps,
            "total_steps": cfg.steps,
            "seconds": seconds,
            "prompt": prompt,
            "teacher": {
                **block(self.teacher.model, self.teacher.arch),
                "agreement": 1.0,
                "source": "cache" if self.teacher.from_cache else "trained",
                "train_steps": self.teacher.steps,
                "teacher_train_seconds": self.teacher.train_seconds,
                "teacher_train_cpu_seconds": self.teacher.train_cpu_seconds,
            },
            "student": block(self.student, cfg.student, times["student"] + times["prepare"]),
            "history": list(self.history),
        }
        if self.baseline is not None:
            result["baseline"] = block(self.baseline, cfg.student, times["baseline"])
        return result


@torch.no_grad()
def _perplexity(model: nn.Module, x: Tensor, y: Tensor) -> float:
    logits = next_char_logits(model, x)
    return math.exp(float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))))


def distil(config: LMConfig, on_event=None) -> dict:
    return LMTrainer(config).run(on_event)

"""Character-level language models: small decoder-only transformers (nanoGPT-like) and a
non-attention student (Bengio et al. 2003: an MLP over the last k characters).

Every model maps ids ``(B, L)`` to next-character logits ``(B, L, V)`` — position ``i``
predicts character ``i + 1`` from characters ``<= i`` — and, with ``return_hidden=True``,
also its last hidden states ``(B, L, hidden_dim)`` (for hidden-state matching).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError


@dataclass(frozen=True)
class Arch:
    name: str
    kind: str  # gpt | mlp
    title: str
    n_layer: int = 0
    n_head: int = 0
    n_embd: int = 0
    block_size: int = 64
    tied: bool = True  # gpt: output head shares the token embedding
    context: int = 0  # mlp: characters it sees
    hidden: int = 0  # mlp: hidden width


ARCHS = {
    "gpt-small": Arch("gpt-small", "gpt", "transformer, 3 layers × 4 heads, 96 wide", 3, 4, 96),
    "gpt-mini": Arch("gpt-mini", "gpt", "transformer, 2 layers × 2 heads, 64 wide", 2, 2, 64),
    "gpt-micro": Arch("gpt-micro", "gpt", "transformer, 1 layer × 2 heads, 48 wide, untied head", 1, 2, 48, tied=False),
    "mlp": Arch("mlp", "mlp", "MLP over the last 8 characters (no attention)", n_embd=16, context=8, hidden=192),
}
DEFAULT_TEACHER = "gpt-small"
DEFAULT_STUDENT = "gpt-micro"


def check_arch(name: str) -> Arch:
    if name not in ARCHS:
        raise ConfigError(f"unknown language model '{name}'; choose one of {', '.join(ARCHS)}")
    return ARCHS[name]


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: Tensor, cache: dict | None = None) -> Tensor:
        B, L, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (z.view(B, L, self.n_head, C // self.n_head).transpose(1, 2) for z in (q, k, v))
        if cache is not None and "k" in cache:  # decoding one new character: it sees all before it
            k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
        if cache is not None:
            cache["k"], cache["v"] = k, v
        y = F.scaled_dot_product_attention(q, k, v, is_causal=L > 1)
        return self.proj(y.transpose(1, 2).reshape(B, L, C))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x: Tensor, cache: dict | None = None) -> Tensor:
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Token + position embeddings, pre-norm causal self-attention blocks, a final norm and a
    (tied or untied) linear head."""

    def __init__(self, arch: Arch, vocab_size: int):
        super().__init__()
        self.arch, self.block_size, self.hidden_dim = arch.name, arch.block_size, arch.n_embd
        self.tok = nn.Embedding(vocab_size, arch.n_embd)
        self.pos = nn.Embedding(arch.block_size, arch.n_embd)
        self.blocks = nn.ModuleList(Block(arch.n_embd, arch.n_head) for _ in range(arch.n_layer))
        self.ln_f = nn.LayerNorm(arch.n_embd)
        self.head = nn.Linear(arch.n_embd, vocab_size, bias=False)
        if arch.tied:
            self.head.weight = self.tok.weight
        self.apply(_init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * max(1, arch.n_layer)))

    def forward(self, idx: Tensor, return_hidden: bool = False, cache: list | None = None):
        """``cache`` (a list, empty at first): keys and values per layer kept for decoding;
        later calls pass only the new characters."""
        L = idx.shape[1]
        start = cache[0]["k"].shape[2] if cache else 0
        if start + L > self.block_size:
            raise ConfigError(f"{self.arch} reads at most {self.block_size} characters, got {start + L}")
        if cache is not None and not cache:
            cache.extend({} for _ in self.blocks)
        x = self.tok(idx) + self.pos(torch.arange(start, start + L, device=idx.device))
        for i, b in enumerate(self.blocks):
            x = b(x, cache[i] if cache is not None else None)
        h = self.ln_f(x)
        logits = self.head(h)
        return (logits, h) if return_hidden else logits


class MLPLM(nn.Module):
    """Bengio et al. (2003): embed each of the last ``context`` characters, concatenate, one
    hidden layer, logits. No attention; positions before the text's start read id 0."""

    def __init__(self, arch: Arch, vocab_size: int):
        super().__init__()
        self.arch, self.block_size, self.context, self.hidden_dim = (
            arch.name,
            arch.block_size,
            arch.context,
            arch.hidden,
        )
        self.tok = nn.Embedding(vocab_size, arch.n_embd)
        self.hidden = nn.Linear(arch.context * arch.n_embd, arch.hidden)
        self.head = nn.Linear(arch.hidden, vocab_size)
        self.apply(_init)

    def forward(self, idx: Tensor, return_hidden: bool = False):
        B, L = idx.shape
        padded = F.pad(idx, (self.context - 1, 0), value=0)
        windows = padded.unfold(1, self.context, 1)  # (B, L, context): characters i-k+1 .. i
        e = self.tok(windows).reshape(B, L, -1)
        h = torch.tanh(self.hidden(e))
        logits = self.head(h)
        return (logits, h) if return_hidden else logits


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.normal_(m.weight, 0.0, 0.02)


def build(name: str, vocab_size: int) -> nn.Module:
    arch = check_arch(name)
    return (GPT if arch.kind == "gpt" else MLPLM)(arch, vocab_size)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # a tied head is counted once


@torch.no_grad()
def flops_per_token(model: nn.Module, context: int | None = None) -> int:
    """FLOPs (2 per multiply-add, PyTorch's FLOP counter) of one forward pass over a full
    context window, divided by its length: the cost of one next-character prediction."""
    from torch.utils.flop_counter import FlopCounterMode

    L = context or model.block_size
    counter = FlopCounterMode(display=False)
    was = model.training
    model.eval()
    with counter:
        model(torch.zeros(1, L, dtype=torch.long, device=next(model.parameters()).device))
    model.train(was)
    return int(counter.get_total_flops() // L)


@torch.no_grad()
def cpu_latency_ms_per_token(model: nn.Module, repeats: int = 20) -> float:
    """Median CPU wall time of one forward over a full window (batch 1), per character, in ms."""
    import copy

    m = model if next(model.parameters()).device.type == "cpu" else copy.deepcopy(model).cpu()
    was = m.training
    m.eval()
    x = torch.zeros(1, m.block_size, dtype=torch.long)
    for _ in range(3):
        m(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        m(x)
        times.append(time.perf_counter() - t0)
    m.train(was)
    return 1000 * statistics.median(times) / m.block_size


def profile(model: nn.Module) -> dict:
    return {
        "params": count_params(model),
        "flops_per_token": flops_per_token(model),
        "latency_ms_per_token": cpu_latency_ms_per_token(model),
    }


@torch.no_grad()
def generate(
    model: nn.Module, idx: Tensor, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Continue each row of ``idx`` (B, L0) by ``n`` sampled characters; returns (B, L0 + n).
    Transformers decode with a key/value cache (re-primed on the last half window when the
    window is full); the MLP reads its last ``context`` characters."""
    was = model.training
    model.eval()
    out = idx
    T = max(float(temperature), 1e-4)
    if isinstance(model, GPT):
        cache: list = []
        logits = model(out[:, -model.block_size :], cache=cache)[:, -1]
        for i in range(n):
            nxt = torch.multinomial(F.softmax(logits / T, dim=-1), 1, generator=generator)
            out = torch.cat([out, nxt], dim=1)
            if i == n - 1:
                break
            if cache[0]["k"].shape[2] >= model.block_size:
                cache = []
                logits = model(out[:, -(model.block_size // 2) :], cache=cache)[:, -1]
            else:
                logits = model(nxt, cache=cache)[:, -1]
    else:
        k = model.context
        for _ in range(n):
            logits = model(out[:, -k:])[:, -1]
            nxt = torch.multinomial(F.softmax(logits / T, dim=-1), 1, generator=generator)
            out = torch.cat([out, nxt], dim=1)
    model.train(was)
    return out

r"""Contrastive representation distillation (CRD): Tian, Krishnan & Isola 2020,
"Contrastive Representation Distillation" (ICLR).

CRD asks the student to *recognise* the teacher's view of the same image among many
views of other images, which maximises a lower bound on the mutual information between
the two representations. Unlike in-batch InfoNCE (``losses.info_nce_loss``), the negatives
come from a **memory bank**: one stored embedding per training image and per side, so
each anchor can be contrasted with K = thousands of other images, far more than a batch
holds. The pieces, as in the paper (section 3 and its reference code):

* **Embed heads** ``g_S``, ``g_T``: a linear layer and L2 normalisation, student and teacher
  features to a shared space of ``feat_dim`` = 128 dimensions (both heads are trained).
* **Memory banks** ``M_S`` and ``M_T`` of shape (N_data, feat_dim): unit rows, one per
  training image. After each step the rows of the batch's images move towards the new
  embeddings with momentum m = 0.5 and are re-normalised:
  :math:`M[i] \leftarrow \frac{m\,M[i] + (1-m)\,v_i}{\|m\,M[i] + (1-m)\,v_i\|}`.
* **Scores**: for an anchor embedding ``v`` of image i and bank rows ``M[j]`` (j = i the
  positive, K sampled negatives j != i), :math:`P(j \mid v) = \exp(v \cdot M[j] / \tau) / Z`
  with :math:`\tau = 0.07`. The normalisation constant Z is estimated once, on the first
  batch, as :math:`Z = N_{data}\cdot\mathrm{mean}\,\exp(v \cdot M[j]/\tau)`, and kept.
* **NCE loss** (eq. 18), with the uniform noise distribution :math:`P_n = 1/N_{data}`:

  .. math::
      \mathcal{L}_{NCE} = -\frac{1}{B}\sum_i \Big[\log\frac{P_{i,0}}{P_{i,0} + K P_n}
      + \sum_{k=1}^{K} \log\frac{K P_n}{P_{i,k} + K P_n}\Big]

* **Both directions**: the student's embedding as anchor against the teacher's bank, and
  the teacher's embedding as anchor against the student's bank; CRD's loss is the sum.

Negatives are other training images drawn uniformly; by default, as in the authors' code
("exact" mode), only images of *other classes* — each image's class is the label or, for
an unlabelled image, the teacher's prediction (``other_class=False``: any other image, as
the paper's text puts it). Sampling uses the module's own seeded generator, so a run is
reproducible and independent of other runs in the process. Every tensor follows the
module's device: CPU and CUDA alike.

The bank holds one row per image, updated once per epoch: the first epoch scores the
positives against rows that are still mostly random, and the heads need many epochs to
align sample with sample (the paper trains 240). What a few epochs already transfer shows
best through a linear map from the student's features to the teacher's (the Contrastive
page).

The trainer builds modules from the layer shapes only, so when the dataset size is not
given the banks grow to cover the largest image index seen; with shuffled batches the
first batch already reaches within a few rows of the end, and after one epoch the size
is fixed. ``CRD(..., n_data=N)`` allocates them at full size at once.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # the registry imports this module; no import cycle at run time
    from .methods import StepContext


class Embed(nn.Module):
    """CRD's embedding head: flatten, a linear layer, L2 normalisation."""

    def __init__(self, dim_in: int, dim_out: int = 128):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x.flatten(1)), dim=1)


def nce_loss(log_p: Tensor, n_data: int) -> Tensor:
    r"""CRD's NCE loss (eq. 18) from log-scores ``log_p`` of shape (B, K+1): column 0 holds
    the positive's :math:`\log P`, with :math:`P = \exp(v\cdot M[i]/\tau)/Z`, columns 1..K
    the negatives'. With the uniform noise :math:`P_n = 1/N_{data}`, the probability that a
    pair came from the data rather than from the noise is :math:`h = P / (P + K P_n)`, and

    .. math:: \mathcal{L} = -\frac{1}{B}\sum_i \Big[\log h_{i,0} + \sum_{k=1}^K \log(1 - h_{i,k})\Big]

    computed stably as :math:`-\log h = \mathrm{softplus}(\log K P_n - \log P)` and
    :math:`-\log(1 - h) = \mathrm{softplus}(\log P - \log K P_n)` (the reference code
    divides instead, with an epsilon of 1e-7 in the denominators)."""
    k = log_p.shape[1] - 1
    log_noise = math.log(k / float(n_data))
    return (F.softplus(log_noise - log_p[:, 0]).sum() + F.softplus(log_p[:, 1:] - log_noise).sum()) / log_p.shape[0]


@torch.no_grad()
def momentum_update(bank: Tensor, index: Tensor, emb: Tensor, momentum: float) -> None:
    r"""In place: :math:`M[i] \leftarrow \mathrm{normalise}(m\,M[i] + (1-m)\,v_i)` for
    the rows ``index`` of ``bank`` (unit rows stay unit rows)."""
    rows = bank.index_select(0, index) * momentum + emb.detach().to(bank.dtype) * (1.0 - momentum)
    bank.index_copy_(0, index, F.normalize(rows, dim=1))


def class_index(labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Rows grouped by class, for sampling other-class negatives: (order, start, count) on
    the CPU, with ``order`` the row indices sorted by label and ``start[c + 1]``,
    ``count[c + 1]`` where class c's block begins and how long it is (slot 0: label -1,
    rows whose class is not known yet)."""
    lab = labels.detach().cpu().long() + 1
    order = torch.argsort(lab, stable=True)
    count = torch.bincount(lab, minlength=int(lab.max()) + 2 if len(lab) else 1)
    return order, torch.cumsum(count, 0) - count, count


def sample_negatives(
    index: Tensor,
    k: int,
    n_data: int,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    target: Tensor | None = None,
    by_class: tuple[Tensor, Tensor, Tensor] | None = None,
) -> Tensor:
    """(B, k) indices drawn uniformly, with replacement, from ``range(n_data)`` without the
    anchor's own index, so every negative is another image. With ``labels`` (the class of
    every row, -1 where unknown; or their ``class_index`` as ``by_class``) and the anchors'
    ``target``, they are drawn from the rows of the other classes only, as the authors'
    code does. Sampling runs on the CPU; the result is on ``index``'s device."""
    if n_data < 2:
        raise ValueError("CRD needs at least two training images")
    own = index.detach().cpu().view(-1, 1)
    if target is not None and (labels is not None or by_class is not None):
        order, start, count = by_class if by_class is not None else class_index(labels)
        c = target.detach().cpu().long().view(-1) + 1
        if int(c.max()) >= len(count):  # a class no row has yet: an empty block at the end
            count = F.pad(count, (0, int(c.max()) + 1 - len(count)))
            start = torch.cumsum(count, 0) - count
        n_c, first = count[c].view(-1, 1), start[c].view(-1, 1)
        others = len(order) - n_c
        if bool((others > 0).all()):
            # uniform over the rows before and after the anchor's class block
            u = (torch.rand(len(own), k, generator=generator) * others).long().clamp_max(others - 1)
            return order[u + n_c * (u >= first).long()].to(index.device)
    draw = torch.randint(0, n_data - 1, (len(own), k), generator=generator)
    return (draw + (draw >= own).long()).to(index.device)


def _unit_rows(n: int, d: int, generator: torch.Generator) -> Tensor:
    return F.normalize(torch.randn(n, d, generator=generator), dim=1)


class CRD(nn.Module):
    """Embed heads, the two memory banks and the NCE criterion of CRD.

    ``forward(student_feat, teacher_feat, index)`` returns the loss (student anchors
    against the teacher's bank plus teacher anchors against the student's bank); in
    training mode the banks' rows ``index`` then move towards the new embeddings with
    momentum (applied before the next forward: see ``flush``). ``project`` gives the two
    normalised embeddings (for the pages)."""

    DENSE_FACTOR = 32  # score against the whole bank when it has at most this many rows per sampled one

    def __init__(
        self,
        s_dim: int,
        t_dim: int,
        feat_dim: int = 128,
        nce_k: int = 1024,
        tau: float = 0.07,
        momentum: float = 0.5,
        n_data: int | None = None,
        other_class: bool = True,
        seed: int | None = None,
    ):
        super().__init__()
        self.embed_s = Embed(s_dim, feat_dim)
        self.embed_t = Embed(t_dim, feat_dim)
        self.feat_dim, self.nce_k, self.tau, self.momentum = int(feat_dim), int(nce_k), float(tau), float(momentum)
        self.other_class = bool(other_class)
        if seed is None:  # follows torch's seed (the trainer seeds it before building modules)
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.generator = torch.Generator().manual_seed(seed)
        n = int(n_data or 0)
        self.register_buffer("memory_s", _unit_rows(n, self.feat_dim, self.generator))  # the student's bank
        self.register_buffer("memory_t", _unit_rows(n, self.feat_dim, self.generator))  # the teacher's bank
        self.register_buffer("labels", torch.full((n,), -1, dtype=torch.long))  # class of each row; -1: not seen
        self.register_buffer("z", torch.full((2,), -1.0))  # Z for student anchors, teacher anchors; -1: not set
        self._pending: tuple[Tensor, Tensor, Tensor] | None = None  # the last step's (index, v_s, v_t)
        self._by_class: tuple[Tensor, Tensor, Tensor] | None = None  # class_index(labels), while labels hold

    @property
    def n_data(self) -> int:
        return self.memory_s.shape[0]

    def project(self, student_feat: Tensor, teacher_feat: Tensor) -> tuple[Tensor, Tensor]:
        """(g_S(s), g_T(t)): unit vectors of ``feat_dim`` dimensions."""
        return self.embed_s(student_feat), self.embed_t(teacher_feat)

    def flush(self) -> None:
        """Apply the last training step's momentum update to the banks now.

        ``forward`` records the update and applies it at the start of the next call (or
        here), after the step's backward pass: the scores can then use the banks as they
        are, without a copy, and the numbers are those of updating right away, as the
        paper's code does. Read the banks after ``flush()`` (``state_dict`` flushes)."""
        if self._pending is not None:
            index, v_s, v_t = self._pending
            self._pending = None
            momentum_update(self.memory_s, index, v_s, self.momentum)
            momentum_update(self.memory_t, index, v_t, self.momentum)

    def state_dict(self, *args, **kwargs):
        self.flush()
        return super().state_dict(*args, **kwargs)

    def _apply(self, fn, *args, **kwargs):  # .to(), .cpu(), .cuda(): the banks move up to date
        self.flush()
        return super()._apply(fn, *args, **kwargs)

    def _grow(self, n: int) -> None:
        """Extend both banks with random unit rows up to ``n`` rows (never shrinks)."""
        have = self.n_data
        if n <= have:
            return
        dev = self.memory_s.device
        self.memory_s = torch.cat([self.memory_s, _unit_rows(n - have, self.feat_dim, self.generator).to(dev)])
        self.memory_t = torch.cat([self.memory_t, _unit_rows(n - have, self.feat_dim, self.generator).to(dev)])
        self.labels = torch.cat([self.labels, torch.full((n - have,), -1, dtype=torch.long, device=dev)])
        self._by_class = None

    def log_scores(self, anchor: Tensor, bank: Tensor, idx: Tensor, side: int) -> Tensor:
        r""":math:`\log P = v \cdot M[j]/\tau - \log Z` for every anchor ``v`` (B, d) and its
        rows ``idx`` (B, K+1) of ``bank``. Z (``side`` 0: student anchors, 1: teacher anchors)
        is set on first use: :math:`Z = N_{data} \cdot \mathrm{mean}\,\exp(v \cdot M[j]/\tau)`."""
        if bank.shape[0] <= self.DENSE_FACTOR * idx.shape[1]:
            # a small bank: all dot products in one matmul, then pick; the same numbers as below, faster
            dots = torch.gather(anchor @ bank.t(), 1, idx)
        else:
            weights = bank.index_select(0, idx.view(-1)).view(*idx.shape, -1)
            dots = torch.bmm(weights, anchor.unsqueeze(2)).squeeze(2)
        logits = dots / self.tau
        if self.z[side] < 0:
            self.z[side] = torch.exp(logits.detach()).mean() * self.n_data
        return logits - torch.log(self.z[side])

    def forward(
        self, student_feat: Tensor, teacher_feat: Tensor, index: Tensor, target: Tensor | None = None
    ) -> Tensor:
        """The CRD loss of a batch: features (B, ...) and the images' dataset indices (B,);
        ``target`` (their classes) lets negatives come from other classes only."""
        self.flush()
        index = index.view(-1).long()
        self._grow(int(index.max()) + 1)
        v_s, v_t = self.project(student_feat, teacher_feat)
        k = min(self.nce_k, self.n_data - 1)
        groups = None
        if self.other_class and target is not None:
            target = target.view(-1).long().to(self.labels.device)
            if self._by_class is None or bool((self.labels[index] != target).any()):  # new classes: regroup
                self.labels[index] = target
                self._by_class = class_index(self.labels)
            groups = self._by_class
        negatives = sample_negatives(
            index, k, self.n_data, self.generator, target=target if groups else None, by_class=groups
        )
        idx = torch.cat([index.view(-1, 1), negatives], dim=1)
        log_p_s = self.log_scores(v_s, self.memory_t, idx, 0)  # student anchors, the teacher's bank
        log_p_t = self.log_scores(v_t, self.memory_s, idx, 1)  # teacher anchors, the student's bank
        loss = nce_loss(log_p_s, self.n_data) + nce_loss(log_p_t, self.n_data)
        if self.training:  # the banks move towards this step's embeddings (see flush)
            self._pending = (index, v_s.detach(), v_t.detach())
        return loss

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a saved student's banks have their full size; a freshly built module may not yet
        bank = state_dict.get(prefix + "memory_s")
        if bank is not None and bank.shape[0] != self.n_data:
            self.memory_s = torch.empty_like(bank, device=self.memory_s.device)
            self.memory_t = torch.empty_like(bank, device=self.memory_t.device)
            self.labels = torch.full((bank.shape[0],), -1, dtype=torch.long, device=self.labels.device)
        self._by_class = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# ---------------------------------------------------------------- the registry's hooks


def _flat(shape) -> int:
    return int(math.prod(shape))


def make_modules(shapes: list, params: dict) -> CRD:
    """The registry's ``make_modules``: CRD for the (single) layer pair ``shapes[0]`` =
    (teacher shape, student shape)."""
    t_shape, s_shape = shapes[0]
    return CRD(
        _flat(s_shape),
        _flat(t_shape),
        feat_dim=int(params["feat_dim"]),
        nce_k=int(params["nce_k"]),
        tau=float(params["tau"]),
        momentum=float(params["momentum"]),
        other_class=bool(params.get("other_class", 1)),
    )


def crd_terms(ctx: StepContext) -> dict:
    """The registry's ``terms``: ``beta * (L_NCE(student anchors) + L_NCE(teacher anchors))``.
    ``ctx.target`` (the label, or the teacher's prediction for an unlabelled image) gives
    each image's class for the other-class negatives."""
    loss = ctx.modules(ctx.student_feats[0], ctx.teacher_feats[0], ctx.index, ctx.target)
    return {"crd": ctx.params["beta"] * loss}

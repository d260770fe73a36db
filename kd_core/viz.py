"""Plotly figure builders: arrays in, ``go.Figure`` out. Readable when projected (large
fonts) and colour-blind safe (Okabe–Ito palette), with the same colour for the teacher,
the distilled student and the scratch student on every page."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

TEACHER = "#0072B2"  # blue
STUDENT = "#D55E00"  # vermillion: the distilled student
SCRATCH = "#999999"  # grey: the same student trained from scratch
EXTRA = ["#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
ROLE_COLOURS = {"teacher": TEACHER, "student": STUDENT, "distilled": STUDENT, "scratch": SCRATCH, "baseline": SCRATCH}
FONT = 17
SEQUENTIAL = "Viridis"
DIVERGING = "RdBu"
# a small white template (plotly's "plotly_white", trimmed), registered once by name: a page
# redraws a dozen figures on every slider move and a live run once a second; passing the
# template as a dict (or "plotly_white") makes plotly validate it again for every figure,
# ~12 ms each, against ~1.5 ms for a registered name
_AXIS = dict(gridcolor="#EBF0F8", linecolor="#EBF0F8", zerolinecolor="#EBF0F8", automargin=True)
LIGHT = dict(
    layout=dict(
        paper_bgcolor="white",
        plot_bgcolor="white",
        font=dict(color="#2a3f5f"),
        xaxis=_AXIS,
        yaxis=_AXIS,
        hoverlabel=dict(align="left"),
    )
)
pio.templates["kd_light"] = go.layout.Template(LIGHT)
TEMPLATE = "kd_light"


def style(fig: go.Figure, title: str | None = None, height: int = 380) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, font=dict(size=FONT + 3)) if title else None,
        font=dict(size=FONT),
        height=height,
        # a title broken into lines ("<br>") gets room for each
        margin=dict(l=60, r=20, t=60 + 22 * title.count("<br>") if title else 20, b=110),
        legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0),
        template=TEMPLATE,
    )
    return fig


def colour(role: str, i: int = 0) -> str:
    return ROLE_COLOURS.get(role.lower().split()[0], EXTRA[i % len(EXTRA)])


def prob_bars(
    series: dict[str, np.ndarray],
    classes: list[str],
    title: str | None = None,
    highlight: int | None = None,
    log: bool = False,
) -> go.Figure:
    """Grouped bars of class probabilities, one group per class, one bar per series.
    Series names starting with teacher/student/scratch get their role colour."""
    fig = go.Figure()
    for i, (name, p) in enumerate(series.items()):
        fig.add_bar(
            x=list(classes),
            y=np.asarray(p, dtype=float).tolist(),
            name=name,
            marker_color=colour(name, i),
            hovertemplate="class %{x}: %{y:.4f}<extra>" + name + "</extra>",
        )
    fig.update_layout(barmode="group", yaxis_title="probability", xaxis_title="class", bargap=0.2)
    fig.update_xaxes(type="category")
    if log:
        fig.update_yaxes(type="log", range=[-6, 0.05])
    else:
        fig.update_yaxes(range=[0, 1.02])
    if highlight is not None:
        fig.add_vrect(x0=highlight - 0.5, x1=highlight + 0.5, fillcolor="#F0E442", opacity=0.25, line_width=0)
    return style(fig, title)


def entropy_curve(
    temperatures: np.ndarray,
    entropies: dict[str, np.ndarray],
    current: float,
    max_entropy: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """Entropy of softmax(z/T) over T (log x-axis) with the current T marked."""
    fig = go.Figure()
    for i, (name, h) in enumerate(entropies.items()):
        fig.add_scatter(
            x=np.asarray(temperatures).tolist(),
            y=np.asarray(h).tolist(),
            mode="lines",
            name=name,
            line=dict(color=colour(name, i), width=3),
        )
        y_now = float(np.interp(math.log(current), np.log(temperatures), h))
        fig.add_scatter(
            x=[current],
            y=[y_now],
            mode="markers",
            marker=dict(size=14, color=colour(name, i)),
            showlegend=False,
            hovertemplate=f"T={current:g}<br>H=%{{y:.3f}} bits<extra>{name}</extra>",
        )
    fig.add_vline(x=current, line_dash="dash", line_color="#555")
    if max_entropy is not None:
        fig.add_hline(
            y=max_entropy,
            line_dash="dot",
            line_color="#999",
            annotation_text="uniform",
            annotation_position="bottom right",
        )
    fig.update_xaxes(type="log", title="temperature T")
    fig.update_yaxes(title="entropy (bits)", rangemode="tozero")
    return style(fig, title)


def heatmap(
    matrix: np.ndarray,
    x: list,
    y: list,
    title: str | None = None,
    colorscale: str = SEQUENTIAL,
    zmin=None,
    zmax=None,
    text_fmt: str | None = ".2f",
    xtitle: str = "",
    ytitle: str = "",
    height: int = 460,
    zmid=None,
    colorbar_title: str = "",
) -> go.Figure:
    m = np.asarray(matrix, dtype=float)
    fig = go.Figure(
        go.Heatmap(
            z=m.tolist(),
            x=[str(v) for v in x],
            y=[str(v) for v in y],
            colorscale=colorscale,
            zmin=zmin,
            zmax=zmax,
            zmid=zmid,
            texttemplate=("%{z:" + text_fmt + "}") if text_fmt and m.size <= 400 else None,
            colorbar=dict(title=colorbar_title),
            hovertemplate=f"{ytitle or 'row'} %{{y}}, {xtitle or 'col'} %{{x}}: %{{z:.4f}}<extra></extra>",
        )
    )
    fig.update_xaxes(title=xtitle, type="category", side="bottom")
    fig.update_yaxes(title=ytitle, type="category", autorange="reversed")
    return style(fig, title, height)


def _live_layout(title: str | None, xaxis: dict, yaxis: dict, **kw) -> dict:
    """``style``'s layout as a plain dict: the Lab's curves are rebuilt once a second for
    every session with a live run, and one validated constructor call is ~7x cheaper than
    building a figure with add_*/update_* calls (14 ms vs 2 ms for the accuracy curves)."""
    out = dict(
        template=TEMPLATE,
        font=dict(size=FONT),
        height=380,
        title=dict(text=title, font=dict(size=FONT + 3)) if title else None,
        margin=dict(l=60, r=20, t=60 if title else 20, b=110),
        legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0),
        xaxis=xaxis,
        yaxis=yaxis,
    )
    out.update(kw)
    return out


def loss_curves(steps: list[dict], title: str | None = None, smooth: int = 5) -> go.Figure:
    """Each weighted loss term of the student over steps (moving average), plus the scratch
    baseline's cross-entropy, on a log axis."""
    data = []
    if steps:
        x = [s["step"] for s in steps]
        names = []
        for s in steps:
            for k in s["losses"]:
                if k not in names:
                    names.append(k)
        for i, k in enumerate(names):
            y = moving_average([s["losses"].get(k, float("nan")) for s in steps], smooth)
            data.append(
                dict(
                    type="scatter",
                    x=x,
                    y=y,
                    mode="lines",
                    name=f"student: {k}",
                    line=dict(width=3, color=EXTRA[i % len(EXTRA)] if k != "kd" else STUDENT),
                )
            )
        if any(s.get("baseline_loss") is not None for s in steps):
            y = moving_average(
                [s.get("baseline_loss") if s.get("baseline_loss") is not None else float("nan") for s in steps], smooth
            )
            data.append(
                dict(
                    type="scatter",
                    x=x,
                    y=y,
                    mode="lines",
                    name="scratch: ce",
                    line=dict(width=3, color=SCRATCH, dash="dot"),
                )
            )
    return go.Figure(
        data=data,
        layout=_live_layout(title, dict(title=dict(text="step")), dict(title=dict(text="loss (weighted)"), type="log")),
    )


def learned_temperature_curve(steps: list[dict], title: str | None = None) -> go.Figure:
    """CTKD's learned temperature at every step (``step["tracked"]["T"]``), with the weight
    lambda of its reversed gradient (the cosine curriculum) on a second axis: T moves
    against the student, harder as lambda rises. Empty when the run learns no temperature."""
    rows = [s for s in steps if "T" in (s.get("tracked") or {})]
    x = [s["step"] for s in rows]
    data = [
        dict(
            type="scatter",
            x=x,
            y=[s["tracked"]["T"] for s in rows],
            mode="lines",
            name="learned temperature T",
            line=dict(color=STUDENT, width=4),
        )
    ]
    if any("lambda" in s["tracked"] for s in rows):
        data.append(
            dict(
                type="scatter",
                x=x,
                y=[s["tracked"].get("lambda", float("nan")) for s in rows],
                mode="lines",
                name="reversal weight λ",
                yaxis="y2",
                line=dict(color=EXTRA[0], width=2, dash="dot", shape="hv"),
            )
        )
    y2 = dict(
        title=dict(text="λ"),
        overlaying="y",
        side="right",
        rangemode="tozero",
        tickformat=".2f",
        showgrid=False,
        automargin=True,
    )
    return go.Figure(
        data=data,
        layout=_live_layout(title, dict(title=dict(text="step")), dict(title=dict(text="temperature T")), yaxis2=y2),
    )


def moving_average(values: list[float], k: int) -> list[float]:
    if k <= 1 or len(values) < 2:
        return values
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > k:
            acc.pop(0)
        good = [a for a in acc if a == a]
        out.append(sum(good) / len(good) if good else float("nan"))
    return out


def accuracy_curves(
    epochs: list[dict],
    teacher_acc: float | None,
    total_epochs: int | None = None,
    title: str | None = None,
    key: str = "acc",
) -> go.Figure:
    """Test accuracy per epoch: distilled student, scratch student, and the teacher as a line."""
    x = [e["epoch"] for e in epochs]
    data = [
        dict(
            type="scatter",
            x=x,
            y=[e[f"student_{key}"] for e in epochs],
            mode="lines+markers",
            name="distilled student",
            line=dict(color=STUDENT, width=4),
            marker=dict(size=10),
        )
    ]
    if epochs and f"baseline_{key}" in epochs[0]:
        data.append(
            dict(
                type="scatter",
                x=x,
                y=[e[f"baseline_{key}"] for e in epochs],
                mode="lines+markers",
                name="scratch student",
                line=dict(color=SCRATCH, width=4, dash="dot"),
                marker=dict(size=10),
            )
        )
    extra = {}
    if teacher_acc is not None:  # a dashed line across the plot, labelled at its right end
        extra = dict(
            shapes=[
                dict(
                    type="line",
                    xref="x domain",
                    x0=0,
                    x1=1,
                    yref="y",
                    y0=teacher_acc,
                    y1=teacher_acc,
                    line=dict(color=TEACHER, width=3, dash="dash"),
                )
            ],
            annotations=[
                dict(
                    xref="x domain",
                    x=1,
                    yref="y",
                    y=teacher_acc,
                    xanchor="right",
                    yanchor="top",
                    showarrow=False,
                    text=f"teacher {100 * teacher_acc:.1f}%",
                    font=dict(color=TEACHER),
                )
            ],
        )
    xaxis = dict(title=dict(text="epoch"), range=[0.5, (total_epochs or max(x, default=1)) + 0.5], dtick=1)
    yaxis = dict(title=dict(text="test accuracy"), tickformat=".0%", range=[0, 1.02])
    return go.Figure(data=data, layout=_live_layout(title, xaxis, yaxis, **extra))


def agreement_curves(epochs: list[dict], total_epochs: int | None = None, title: str | None = None) -> go.Figure:
    if not (epochs and "agreement" in epochs[0]):
        return go.Figure(layout=_live_layout(title, {}, dict(title=dict(text="top-1 agreement with the teacher"))))
    fig = accuracy_curves(epochs, None, total_epochs, title, key="agreement")
    fig.layout.yaxis.title.text = "top-1 agreement with the teacher"
    return fig


def per_class_bars(
    per_class: dict[str, list[float]], classes: list[str], omitted: int | None = None, title: str | None = None
) -> go.Figure:
    fig = go.Figure()
    for i, (name, acc) in enumerate(per_class.items()):
        fig.add_bar(
            x=list(classes),
            y=[0 if a != a else a for a in acc],
            name=name,
            marker_color=colour(name, i),
            hovertemplate="class %{x}: %{y:.1%}<extra>" + name + "</extra>",
        )
    if omitted is not None:
        fig.add_vrect(
            x0=omitted - 0.5,
            x1=omitted + 0.5,
            fillcolor="#F0E442",
            opacity=0.35,
            line_width=0,
            annotation_text="omitted class",
            annotation_position="top left",
        )
    fig.update_layout(barmode="group")
    fig.update_xaxes(title="class", type="category")
    fig.update_yaxes(title="test accuracy", tickformat=".0%", range=[0, 1.05])
    return style(fig, title)


def loss_terms_bars(terms: dict[str, float], title: str | None = None, axis: str = "loss") -> go.Figure:
    """The weighted terms of a loss and their total as labelled bars: the first term in the
    scratch colour (the labels' cross-entropy), the second in the teacher's (the soft
    targets), the last (the total) in the student's."""
    names, values = list(terms), [float(v) for v in terms.values()]
    palette = [SCRATCH, TEACHER, *EXTRA][: max(0, len(values) - 1)] + [STUDENT]
    fig = go.Figure(
        go.Bar(x=names, y=values, marker_color=palette, text=[f"{v:.3f}" for v in values], textposition="outside")
    )
    style(fig, title, height=380)
    fig.update_yaxes(title=axis, rangemode="tozero")
    fig.update_layout(margin=dict(b=60))
    return fig


def image_figure(img: np.ndarray, title: str | None = None, height: int = 260) -> go.Figure:
    """A (H, W) or (H, W, 3) image in [0, 1] without axes."""
    img = np.asarray(img, dtype=float)
    if img.ndim == 2:
        fig = go.Figure(
            go.Heatmap(
                z=img.tolist(), colorscale="gray_r" if img.mean() < 0.5 else "gray", showscale=False, hoverinfo="skip"
            )
        )
        fig.update_yaxes(autorange="reversed")
    else:
        fig = go.Figure(go.Image(z=(np.clip(img, 0, 1) * 255).astype(np.uint8)))
    fig.update_xaxes(visible=False, scaleanchor="y")
    fig.update_yaxes(visible=False)
    fig = style(fig, title, height)
    fig.update_layout(margin=dict(l=5, r=5, t=40 if title else 5, b=5))
    return fig


def to_display(x: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W) for grey or (H, W, 3) for colour."""
    x = np.asarray(x)
    return x[0] if x.shape[0] == 1 else np.transpose(x, (1, 2, 0))


# ---------------------------------------------------------------- feature maps
# (the Feature maps page: channel grids, attention overlays, FitNets errors, layer similarity)


def _bare_axes(fig: go.Figure) -> go.Figure:
    fig.update_xaxes(visible=False, scaleanchor="y", constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", constrain="domain")
    return fig


def _role_title(title: str | None, role: str | None) -> dict | None:
    if not title:
        return None
    c = colour(role) if role else "#222"
    return dict(
        text=(f"<span style='color:{c}'>■</span> " if role else "") + title, font=dict(size=FONT + 1, color="#222")
    )


def map_figure(
    m: np.ndarray,
    title: str | None = None,
    role: str | None = None,
    colorscale: str = SEQUENTIAL,
    zmin=0.0,
    zmax=None,
    colorbar_title: str = "",
    hover: str = "%{z:.3f}",
    customdata=None,
    height: int = 340,
    showscale: bool = True,
) -> go.Figure:
    """A 2-D map (feature tiles, an attention map, an error map) as a square heatmap without
    axes, rows top to bottom; NaN cells (gaps between tiles) stay blank. ``role`` (teacher,
    scratch, distilled) puts the role's colour mark in the title."""
    z = np.asarray(m, dtype=float)
    fig = go.Figure(
        go.Heatmap(
            z=np.where(np.isfinite(z), z, None).tolist(),
            colorscale=colorscale,
            zmin=zmin,
            zmax=zmax,
            customdata=None if customdata is None else np.where(np.isfinite(customdata), customdata, None).tolist(),
            hovertemplate=hover + "<extra></extra>",
            showscale=showscale,
            hoverongaps=False,
            colorbar=dict(title=colorbar_title, thickness=14, len=0.85),
        )
    )
    _bare_axes(fig)
    fig = style(fig, None, height)
    fig.update_layout(
        title=_role_title(title, role), margin=dict(l=5, r=5, t=48 if title else 5, b=5), plot_bgcolor="white"
    )
    return fig


def feature_grid(
    grid: np.ndarray,
    title: str | None = None,
    role: str | None = None,
    channel_ids=None,
    height: int = 340,
    showscale: bool = True,
    signed: bool = False,
) -> go.Figure:
    """Channels of one layer tiled in a grid (see ``features.channel_grid``): |activation|
    (or the signed value) on one scale per layer, 1 = the layer's strongest shown value;
    values outside [0, 1] take the end colours (the hover shows them)."""
    a = "a" if signed else "|a|"
    hover = f"channel %{{customdata:.0f}}<br>{a} = %{{z:.2f}}" if channel_ids is not None else f"{a} = %{{z:.2f}}"
    return map_figure(
        grid,
        title,
        role,
        colorscale=SEQUENTIAL,
        zmin=0.0,
        zmax=1.0,
        colorbar_title=a,
        hover=hover,
        customdata=channel_ids,
        height=height,
        showscale=showscale,
    )


def overlay_figure(
    image: np.ndarray,
    attention: np.ndarray,
    title: str | None = None,
    role: str | None = None,
    opacity: float = 0.6,
    height: int = 340,
) -> go.Figure:
    """An attention map (H, W) in [0, 1] laid over its input image ((H, W) grey or
    (H, W, 3) colour, in [0, 1]); the attention trace is the last one."""
    img = np.asarray(image, dtype=float)
    fig = go.Figure()
    if img.ndim == 2:
        fig.add_heatmap(
            z=img.tolist(), colorscale="gray", zmin=0, zmax=1, showscale=False, hoverinfo="skip", name="image"
        )
    else:
        fig.add_trace(go.Image(z=(np.clip(img, 0, 1) * 255).astype(np.uint8), hoverinfo="skip", name="image"))
    a = np.asarray(attention, dtype=float)
    fig.add_heatmap(
        z=a.tolist(),
        colorscale="Inferno",
        zmin=0,
        zmax=1,
        opacity=opacity,
        name="attention",
        colorbar=dict(title="attention", thickness=14, len=0.85),
        hovertemplate="row %{y}, col %{x}: %{z:.2f}<extra>attention</extra>",
    )
    _bare_axes(fig)
    fig = style(fig, None, height)
    fig.update_layout(title=_role_title(title, role), margin=dict(l=5, r=5, t=48 if title else 5, b=5))
    return fig


def similarity_bars(
    labels: list[str],
    series: dict[str, list[float]],
    title: str | None = None,
    ytitle: str = "similarity to the teacher",
    marked: list[bool] | None = None,
    height: int = 420,
) -> go.Figure:
    """Grouped bars per layer pair, one bar per student (role colours), 1 = the teacher
    itself. ``marked`` pairs (e.g. the pairs a method trained on) get a star."""
    names = [f"★ {l}" if marked and marked[i] else l for i, l in enumerate(labels)]
    fig = go.Figure()
    for i, (name, vals) in enumerate(series.items()):
        fig.add_bar(
            x=names,
            y=[None if v is None or v != v else v for v in vals],
            name=name,
            marker_color=colour(name, i),
            text=[("" if v is None or v != v else f"{v:.2f}") for v in vals],
            textposition="inside",
            insidetextanchor="end",
            textfont=dict(color="white", size=FONT - 1),
            hovertemplate="%{x}: %{y:.3f}<extra>" + name + "</extra>",
        )
    fig.add_hline(
        y=1.0,
        line_color=TEACHER,
        line_dash="dash",
        line_width=2,
        annotation_text="teacher = 1",
        annotation_position="top right",
        annotation_font_color=TEACHER,
    )
    fig.update_layout(barmode="group", bargap=0.25)
    fig.update_xaxes(type="category", title="teacher layer ↔ student layer")
    fig.update_yaxes(title=ytitle, range=[0, 1.12])
    fig = style(fig, title, height)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.28, xanchor="center", x=0.5), margin=dict(b=120))
    return fig


# ---------------------------------------------------------------- relations and contrastive
# (the Relations and Contrastive pages: batch matrices with class blocks, 2-D embedding
# maps coloured by class, an anchor's softmax over the batch, per-sample losses). These
# build each figure in one go with the registered white template.

CLASS_COLOURS = [
    "#88CCEE",
    "#CC6677",
    "#DDCC77",
    "#117733",
    "#332288",
    "#AA4499",
    "#44AA99",
    "#999933",
    "#882255",
    "#661100",
    "#6699CC",
    "#888888",
]  # Paul Tol's colour-blind-safe qualitative set


def class_colour(c: int) -> str:
    return CLASS_COLOURS[int(c) % len(CLASS_COLOURS)]


def _layout(title, role, height: int, **kw) -> dict:
    out = dict(
        template=TEMPLATE,
        font=dict(size=FONT),
        height=height,
        title=_role_title(title, role),
        margin=dict(l=60, r=20, t=52 if title else 20, b=60),
        legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0),
    )
    out.update(kw)
    return out


def _class_blocks(labels) -> list[tuple[int, int, int]]:
    """(class, first position, last position) of each run of equal labels."""
    out, start = [], 0
    labels = [int(v) for v in labels]
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            out.append((labels[start], start, i - 1))
            start = i
    return out


def sample_names(labels, classes: list[str], index=None) -> list[str]:
    """'position · #test image · class' for each sample of a batch (hover texts)."""
    idx = list(range(len(labels))) if index is None else [int(v) for v in index]
    return [f"{i} · #{idx[i]} · class {classes[int(c)]}" for i, c in enumerate(labels)]


def relation_heatmap(
    m: np.ndarray,
    labels,
    classes: list[str],
    index=None,
    title: str | None = None,
    role: str | None = None,
    colorscale: str = SEQUENTIAL,
    zmin=None,
    zmax=None,
    zmid=None,
    colorbar_title: str = "",
    height: int = 420,
    showscale: bool = True,
    x_labels=None,
    x_index=None,
    highlight: int | None = None,
) -> go.Figure:
    """A batch matrix (B, B) whose rows and columns are samples sorted by class: class names
    at the blocks' centres, thin white lines between the blocks, and the hover naming both
    samples (batch position · test image number · class). ``x_labels``/``x_index`` when the
    columns are other samples than the rows; ``highlight`` outlines one row (an anchor)."""
    z = np.asarray(m, dtype=float)
    rows = [int(v) for v in labels]
    cols = rows if x_labels is None else [int(v) for v in x_labels]
    yn = sample_names(rows, classes, index)
    xn = yn if x_labels is None else sample_names(cols, classes, x_index if x_index is not None else index)
    heat = go.Heatmap(
        z=z,
        x=xn,
        y=yn,
        colorscale=colorscale,
        zmin=zmin,
        zmax=zmax,
        zmid=zmid,
        showscale=showscale,
        hovertemplate="row %{y}<br>col %{x}<br>value %{z:.4f}<extra></extra>",
        colorbar=dict(title=dict(text=colorbar_title), thickness=14, len=0.85),
    )
    shapes, axes = [], {}
    for axis, lab, nm in (("x", cols, xn), ("y", rows, yn)):
        blocks = _class_blocks(lab)
        axes[axis] = dict(
            type="category",
            tickmode="array",
            tickvals=[nm[(a + b) // 2] for _, a, b in blocks],
            ticktext=[classes[c] for c, _, _ in blocks],
            showgrid=False,
            zeroline=False,
            ticks="",
            tickangle=0,
            constrain="domain",
            title=dict(text=None),
        )
        for _, a, _b in blocks[1:]:
            line = dict(type="line", line=dict(color="white", width=1.5), layer="above")
            if axis == "x":
                shapes.append(line | dict(x0=a - 0.5, x1=a - 0.5, y0=0, y1=1, xref="x", yref="y domain"))
            else:
                shapes.append(line | dict(y0=a - 0.5, y1=a - 0.5, x0=0, x1=1, yref="y", xref="x domain"))
    if highlight is not None:
        shapes.append(
            dict(
                type="rect",
                x0=0,
                x1=1,
                xref="x domain",
                yref="y",
                y0=highlight - 0.5,
                y1=highlight + 0.5,
                line=dict(color="#000", width=2.5),
            )
        )
    axes["x"]["scaleanchor"] = "y"
    axes["y"]["autorange"] = "reversed"
    return go.Figure(
        [heat],
        _layout(
            title,
            role,
            height,
            xaxis=axes["x"],
            yaxis=axes["y"],
            shapes=shapes,
            margin=dict(l=40, r=10, t=52 if title else 10, b=30),
        ),
    )


def embedding_scatter(
    points: np.ndarray,
    labels,
    classes: list[str],
    index=None,
    title: str | None = None,
    role: str | None = None,
    height: int = 460,
    showlegend: bool = True,
) -> go.Figure:
    """A 2-D map of embeddings, one trace per class (class colours, the same on every map),
    the hover showing the test image number and its label."""
    pts = np.asarray(points, dtype=float)
    lab = np.asarray(labels).astype(int)
    idx = np.arange(len(pts)) if index is None else np.asarray(index)
    traces = []
    for c in sorted(set(lab.tolist())):
        sel = lab == c
        traces.append(
            go.Scattergl(
                x=pts[sel, 0],
                y=pts[sel, 1],
                mode="markers",
                name=classes[c],
                marker=dict(size=7, color=class_colour(c), opacity=0.85, line=dict(width=0)),
                customdata=idx[sel],
                hovertemplate=f"test image #%{{customdata}}<br>label {classes[c]}<extra></extra>",
            )
        )
    axis = dict(showticklabels=False, zeroline=False, showgrid=True, title=dict(text=None))
    return go.Figure(
        traces,
        _layout(
            title,
            role,
            height,
            showlegend=showlegend,
            xaxis=axis,
            yaxis=axis | dict(scaleanchor="x"),
            legend=dict(
                orientation="h",
                yanchor="top",
                y=-0.02,
                xanchor="center",
                x=0.5,
                itemsizing="constant",
                title=dict(text="class "),
                font=dict(size=FONT - 2),
            ),
            margin=dict(l=10, r=10, t=52 if title else 10, b=60 if showlegend else 10),
        ),
    )


_BARS_LEGEND = dict(orientation="h", yanchor="top", y=-0.33, xanchor="center", x=0.5)


def _sample_traces(series: dict[str, np.ndarray], hover, template: str) -> list[go.Bar]:
    """One bar per sample of the batch for each series (role colours); ``template`` is the
    hover text, the series' name added."""
    return [
        go.Bar(
            x=list(range(len(hover))),
            y=np.asarray(v, dtype=float),
            name=name,
            marker_color=colour(name, i),
            customdata=hover,
            hovertemplate=template + "<extra>" + name + "</extra>",
        )
        for i, (name, v) in enumerate(series.items())
    ]


def anchor_bars(
    series: dict[str, np.ndarray],
    labels,
    classes: list[str],
    positive: int,
    tau: float,
    index=None,
    title: str | None = None,
    height: int = 400,
) -> go.Figure:
    """One anchor's softmax over the batch's teacher embeddings, one bar series per student
    (role colours), the positive (its own sample) shaded."""
    n = len(labels)
    traces = _sample_traces(series, sample_names(labels, classes, index), "teacher %{customdata}<br>p = %{y:.4f}")
    shapes = [
        dict(
            type="rect",
            x0=positive - 0.5,
            x1=positive + 0.5,
            y0=0,
            y1=1,
            xref="x",
            yref="y domain",
            fillcolor="#F0E442",
            opacity=0.5,
            line=dict(width=0),
            layer="below",
        )
    ]
    ann = [
        dict(
            x=positive,
            y=1.0,
            xref="x",
            yref="y domain",
            text="positive",
            showarrow=False,
            yanchor="bottom",
            font=dict(size=FONT - 2),
        )
    ]
    return go.Figure(
        traces,
        _layout(
            title,
            None,
            height,
            barmode="group",
            bargap=0.1,
            shapes=shapes,
            annotations=ann,
            xaxis=dict(title=dict(text="teacher embedding j (batch position, sorted by class)"), range=[-0.5, n - 0.5]),
            yaxis=dict(title=dict(text=f"softmax at τ = {tau:g}"), range=[0, 1.08]),
            legend=_BARS_LEGEND,
            margin=dict(l=60, r=20, t=52 if title else 28, b=150),
        ),
    )


def sample_bars(
    series: dict[str, np.ndarray],
    labels,
    classes: list[str],
    index=None,
    title: str | None = None,
    ytitle: str = "",
    height: int = 400,
) -> go.Figure:
    """A per-sample value (e.g. the InfoNCE loss of each anchor) for each student."""
    n = len(labels)
    traces = _sample_traces(series, sample_names(labels, classes, index), "anchor %{customdata}<br>%{y:.3f}")
    return go.Figure(
        traces,
        _layout(
            title,
            None,
            height,
            barmode="group",
            bargap=0.1,
            xaxis=dict(title=dict(text="anchor i (batch position, sorted by class)"), range=[-0.5, n - 0.5]),
            yaxis=dict(title=dict(text=ytitle), rangemode="tozero"),
            legend=_BARS_LEGEND,
            margin=dict(l=60, r=20, t=52 if title else 20, b=150),
        ),
    )


# ---------------------------------------------------------------- sweeps


def heatmap_figure(
    res,
    method: str,
    fraction: float,
    metric: str = "acc",
    title: str | None = None,
    best: dict | None = None,
    epoch_word: str = "epoch",
):
    """A sweep's (``kd_core.sweep.SweepResult``) T (rows) x alpha (columns) heatmap of a cell metric's mean, with ``mean ± std`` in each
    cell, grey '…' cells while pending, a cell still training in a batch with its accuracy so
    far and ``epoch e/E``, and the best cell starred and outlined."""
    rows = [r for r in res.rows() if not r["reference"] and r["method"] == method and r["labeled_fraction"] == fraction]
    Ts, As = res.sweep.axis("temperature"), res.sweep.axis("alpha")
    is_best = best is not None and best["method"] == method and best["labeled_fraction"] == fraction
    z, text, pending = [], [], []
    for T in Ts:
        zr, tr, pr = [], [], []
        for a in As:
            r = next((r for r in rows if r["temperature"] == T and r["alpha"] == a), None)
            m = r[f"{metric}_mean"] if r else math.nan
            s = r[f"{metric}_std"] if r else math.nan
            live = r is not None and not r["n"] and r.get("live", 0) > 0
            done = r is not None and (r["n"] > 0 or live) and not math.isnan(m)
            zr.append(100 * m if done else None)
            pr.append("" if done else "…")
            if not done:
                tr.append("")
                continue
            if live:  # a batch still training: its accuracy so far, and where it is
                tr.append(f"{100 * m:.1f}<br>{epoch_word} {r['epoch']}/{r['epochs']}")
                continue
            star = "★ " if is_best and best["temperature"] == T and best["alpha"] == a else ""
            tr.append(
                f"{star}{100 * m:.1f}"
                + ("" if math.isnan(s) else f"<br>± {100 * s:.1f}")
                + (f"<br>({r['n']}/{r['seeds']} seeds)" if r["n"] < r["seeds"] else "")
            )
        z.append(zr)
        text.append(tr)
        pending.append(pr)
    xs, ys = [f"{a:g}" for a in As], [f"{T:g}" for T in Ts]
    name = "accuracy" if metric == "acc" else "agreement"
    fig = go.Figure()
    # grey cells under the data: a pending cell stays visible (with '…') until its runs finish
    fig.add_heatmap(
        z=[[0] * len(As) for _ in Ts],
        x=xs,
        y=ys,
        colorscale=[[0, "#EEEEEE"], [1, "#EEEEEE"]],
        showscale=False,
        text=pending,
        texttemplate="%{text}",
        textfont=dict(size=22, color="#888888"),
        hoverinfo="skip",
        xgap=3,
        ygap=3,
    )
    fig.add_heatmap(
        z=z,
        x=xs,
        y=ys,
        text=text,
        texttemplate="%{text}",
        textfont=dict(size=16),
        colorscale=SEQUENTIAL,
        colorbar=dict(title=dict(text=f"{name} %"), thickness=14),
        hoverongaps=False,
        xgap=3,
        ygap=3,
        hovertemplate=f"T=%{{y}}, alpha=%{{x}}: {name} %{{z:.2f}}%<extra></extra>",
    )
    if is_best:
        bx, by = As.index(best["alpha"]), Ts.index(best["temperature"])
        fig.add_shape(
            type="rect", x0=bx - 0.5, x1=bx + 0.5, y0=by - 0.5, y1=by + 0.5, line=dict(color="#000000", width=4)
        )
    fig.update_xaxes(title="alpha (weight of the KD term)", type="category", showgrid=False)
    fig.update_yaxes(title="temperature T", type="category", autorange="reversed", showgrid=False)
    style(fig, title, height=150 + 90 * len(Ts))
    fig.update_layout(margin=dict(l=70, r=20, t=60 if title else 20, b=60))
    return fig

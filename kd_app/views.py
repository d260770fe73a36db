"""Views the pages share: titles in the session's language, image helpers, and the
"follow the Lab run" view of the Feature maps, Relations and Contrastive pages.

A page that follows this session's Lab run (the maps, matrices or embeddings of its
students, live while it trains) is built from these parts, in this order::

    run = views.LabRun.of_session()                 # this session's run, or none
    links.sync("my-page", [views.dataset_field("my_dataset", run), *my_fields])
    run.follow_dataset("my_dataset")                # a new run: show its dataset, once
    left, right = views.columns()
    with left:
        views.pick_dataset(run, "my_dataset", "my_page")  # with a fallback when it cannot load
    with right:
        views.run_banner(run, "my_page", fits=lambda m: m.needs_features)
        views.quick_train(run, "my_page", [views.Quick("my_quick", "my_page.quick", "my_page.quick_help", "at")])
    ... the page's own controls (views.trained_pairs(run), views.anchor_image(...)) ...
    views.follow(run, draw)   # draw(snap, teacher_model, teacher): live in a fragment while it trains

The texts come from the page's own catalogue section (``texts``): ``no_run``,
``other_dataset``, ``run_what``, ``run_live``, ``run_done``, ``run_failed``, ``dataset``,
``dataset_help``, ``cannot_use``, ``showing_meanwhile``, ``cannot_start``, ``lab_link``,
``lab_link_help``, and the caption key given to ``run_banner``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

from kd_core import data, methods, models, train, viz
from kd_core.config import Config
from kd_core.errors import KDError

from . import chrome, datasets, i18n, links, state
from .i18n import t

DEFAULT_DATASET = "mnist-mini"
QUICK_EPOCHS = 2


# ------------------------------------------------------------------ titles
def known(key: str) -> bool:
    """Whether the catalogues hold ``key`` (names added to ``kd_core`` later fall back to
    their English text rather than to the raw key)."""
    return key in i18n.catalogue(i18n.DEFAULT)


dataset_title = datasets.title  # a dataset's title in a language; pickers: ``datasets.picker``


def method_title(method) -> str:
    """A method's title (by name or registry entry) in the session's language, its English title
    where no key exists."""
    name = method if isinstance(method, str) else method.name
    key = "methods." + name
    if known(key):
        return t(key)
    return methods.METHODS[name].title if isinstance(method, str) else method.title


def status_text(status: str) -> str:
    """A job status as shown: the raw status in English, translated otherwise."""
    return status if i18n.lang() == i18n.DEFAULT else t("status." + status)


# ------------------------------------------------------------------ images
def upscale(img: np.ndarray, px: int) -> np.ndarray:
    """Nearest-neighbour enlargement to about ``px`` pixels, so small digits stay crisp (no browser blur)."""
    f = max(1, px // img.shape[0])
    return np.repeat(np.repeat(img, f, axis=0), f, axis=1)


def test_image(ds: data.Dataset, index: int) -> np.ndarray:
    """Test image ``index`` of a dataset as an (H, W) or (H, W, 3) array in [0, 1]."""
    x = ds.x_test[index : index + 1]
    return np.clip(viz.to_display(ds.denormalise(x)[0].cpu().numpy()), 0.0, 1.0)


def anchor_image(ds: data.Dataset, index: int, text: str, px: int = 112) -> None:
    """A small test image with a line of text beside it (the anchor of a batch)."""
    c1, c2 = st.columns([1, 2], vertical_alignment="center")
    c1.image(upscale(test_image(ds, index), px), output_format="PNG", width=px)
    c2.markdown(text)


def anchor_picker(key: str, texts: str, n: int, new_batch_key: str, on_new_batch: Callable[[], None]) -> int:
    """The anchor's position in a batch of ``n`` and a 🎲 button that draws a new batch."""
    if st.session_state[key] >= n:
        st.session_state[key] = 0
    return number_and_die(
        t(f"{texts}.anchor"),
        n - 1,
        key,
        t(f"{texts}.anchor_help"),
        new_batch_key,
        on_new_batch,
        t(f"{texts}.new_batch_help"),
    )


def number_and_die(
    label: str, top: int, key: str, help: str, die_key: str, on_die: Callable, die_help: str, args: tuple = ()
) -> int:
    """A whole number from 0 to ``top`` and a 🎲 button beside it: the button as wide as its die,
    the number the rest of the row (a fixed share of a narrow column cut the die off at 1024 px)."""
    row = st.container(horizontal=True, vertical_alignment="bottom", wrap=False)
    value = int(row.number_input(label, 0, top, step=1, key=key, help=help))
    row.button("🎲", key=die_key, on_click=on_die, args=args, help=die_help)
    return value


def new_seed(key: str) -> Callable[[], None]:
    """An on_click that draws a new random batch seed into ``key``."""

    def draw() -> None:
        st.session_state[key] = int(np.random.default_rng().integers(1, 10_000))

    return draw


# ------------------------------------------------------------------ this session's Lab run
@dataclass
class LabRun:
    """This session's Lab run as a view page follows it: the job (or None), its resolved
    config, whether it still trains, and, once the page has picked its dataset
    (``pick_dataset``), that dataset and whether the run was trained on it."""

    job: Any = None
    config: Config | None = None
    running: bool = False
    dataset: str = DEFAULT_DATASET
    ds: data.Dataset | None = None
    matches: bool = False
    method: methods.Method | None = None
    new_run: bool = False  # this page run is the first since the run started

    @classmethod
    def of_session(cls) -> LabRun:
        job = state.current_run()
        if job is None:
            return cls()
        trainer = job.trainer
        cfg = trainer.config if trainer is not None else job.config.resolved()
        return cls(job=job, config=cfg, running=not job.done)

    @property
    def default_dataset(self) -> str:
        """The run's dataset, else the default one."""
        return self.config.dataset if self.config is not None else DEFAULT_DATASET

    @property
    def live(self) -> bool:
        """The run trains and the page shows its dataset: the page follows it live."""
        return self.running and self.matches

    def follow_dataset(self, key: str, seen_key: str | None = None) -> bool:
        """Call after the page's links: a valid dataset in ``key`` and, once per new run, the
        run's dataset. Returns True on that first run of a new Lab run."""
        ss = st.session_state
        if ss.get(key) not in data.DATASETS:
            ss[key] = DEFAULT_DATASET
        seen_key = seen_key or f"_{key}_seen_job"
        if self.job is not None and ss.get(seen_key) != self.job.id:
            ss[seen_key] = self.job.id
            ss[key] = self.config.dataset
            return True
        return False

    def architectures(self) -> tuple[str, str | None]:
        """(teacher, student) architectures to draw: the run's (known before any weights
        exist, so pickers stay put while it trains), else the dataset's preset teacher alone."""
        if self.matches:
            return self.config.teacher, self.config.student
        return models.preset(self.dataset)[0], None

    def source(self):
        """(snapshot, teacher model, Teacher) to draw from: the run's latest snapshot when it
        is on the page's dataset (its teacher model while it has none yet, or None while it
        trains its teacher), else the dataset's quick-run teacher."""
        if self.matches:
            tr = self.job.trainer
            teacher_ = getattr(tr, "teacher", None) if tr is not None else None
            found = state.current_run_snapshot()
            if found is not None:
                return found[0], found[0]["teacher"], teacher_
            return None, (teacher_.model if teacher_ is not None else None), teacher_
        teacher_ = state.quick_teacher(self.dataset)
        return None, teacher_.model, teacher_


def dataset_field(key: str, run: LabRun) -> links.Field:
    """The page's dataset in the link (default: the run's dataset)."""
    return links.choice("dataset", key, list(data.DATASETS), run.default_dataset)


def columns():
    """The view pages' two columns: controls on the left, the run and the figures on the right."""
    return st.columns([1, 2.3], gap="large")


@dataclass(frozen=True)
class Panel:
    """What a follow-the-run page says about the run: ``fits(method)`` tells whether the run's
    method is of the page's kind (else ``misfit_key``'s caption), ``quick`` are its quick-run
    buttons, ``widths`` the columns of those buttons and the link to the Lab."""

    fits: Callable
    misfit_key: str
    quick: Sequence[Quick]
    widths: Sequence[float]


def follow_page(
    page: str, texts: str, icon: str, dataset_key: str, fields: Sequence[links.Field], kept: dict, panel: Panel
):
    """The top of a page that follows the Lab run: its title and intro (``texts``.title,
    .intro), its settings in the link (the dataset first, then ``fields``; ``kept``: key ->
    default of settings kept across visits but not in the link), the run's dataset followed
    once per new run, the two columns, the dataset picker (left) and the run's panel
    (right: ``run_banner`` and ``quick_train``).
    Returns (run, all fields for ``links.settle``, left, right)."""
    st.title(f"{icon} " + t(f"{texts}.title"))
    st.caption(t(f"{texts}.intro"))
    run = LabRun.of_session()
    every = [dataset_field(dataset_key, run), *fields, *(links.kept(k, v) for k, v in kept.items())]
    links.sync(page, every)
    run.new_run = run.follow_dataset(dataset_key)
    left, right = columns()
    with left:
        pick_dataset(run, dataset_key, texts)
    with right:
        run_banner(run, texts, panel.fits, panel.misfit_key)
        quick_train(run, texts, panel.quick, panel.widths)
    return run, every, left, right


def students_after(run: LabRun, snap: dict | None, key: str, **fmt) -> None:
    """The line above the students' figures: after which epoch of the run they are (live or not)."""
    if snap is not None and run.matches:
        live = t(f"{key.rsplit('.', 1)[0]}.live") if run.running else ""
        st.markdown(t(key, epoch=snap["epoch"], epochs=run.config.epochs, live=live, **fmt))


def pick_dataset(run: LabRun, key: str, texts: str) -> tuple[str, data.Dataset]:
    """The dataset picker (``datasets.picker``: the unavailable ones marked). A dataset that
    cannot be loaded (e.g. offline) says why and where its files go, and the page shows the
    run's dataset (or the default one) meanwhile. Binds ``run`` to the
    dataset shown. Returns (name, Dataset)."""
    choice = datasets.picker(t(f"{texts}.dataset"), key, help=t(f"{texts}.dataset_help"))
    name = choice
    ds = datasets.load(choice)  # None after a notice saying why and where its files go
    if ds is None:
        name = run.config.dataset if run.config is not None and run.config.dataset != choice else DEFAULT_DATASET
        st.caption(t(f"{texts}.showing_meanwhile", name=name))
        ds = state.dataset(name)
    run.dataset, run.ds = name, ds
    run.matches = run.config is not None and run.config.dataset == name
    run.method = methods.get(run.config.method) if run.matches else None
    return name, ds


def run_banner(run: LabRun, texts: str, fits: Callable[[methods.Method], bool], misfit_key: str) -> None:
    """What the page shows of the run: none yet, another dataset's, or this one's (live,
    ended or failed); ``misfit_key``'s caption when the run's method is not the page's kind."""
    job, cfg = run.job, run.config
    if job is None:
        st.info(t(f"{texts}.no_run"))
        return
    if not run.matches:
        st.info(t(f"{texts}.other_dataset", id=job.id, dataset=cfg.dataset, name=run.dataset, current=run.dataset))
        return
    what = t(f"{texts}.run_what", id=job.id, method=method_title(run.method), student=cfg.student, teacher=cfg.teacher)
    if run.running:
        st.info(t(f"{texts}.run_live", what=what))
    elif job.status in ("finished", "stopped"):
        st.success(t(f"{texts}.run_done", what=what, status=status_text(job.status)))
    else:
        st.error(t(f"{texts}.run_failed", what=what, status=status_text(job.status), message=job.message))
    if not fits(run.method):
        st.caption(t(misfit_key, method=method_title(run.method)))


@dataclass(frozen=True)
class Quick:
    """A quick-run button: widget key, label and help keys, and the method it trains."""

    key: str
    label: str
    help: str
    method: str


def quick_train(run: LabRun, texts: str, buttons: Sequence[Quick], widths: Sequence[float]) -> None:
    """Buttons that start a short run of a method with its defaults on the page's dataset
    (CIFAR-10 on a subset), as this session's Lab run; beside them, a link to the Lab."""
    cols = st.columns(list(widths))
    pressed = [
        b
        for b, col in zip(buttons, cols)
        if col.button(t(b.label, epochs=QUICK_EPOCHS), key=b.key, disabled=run.running, help=t(b.help))
    ]
    cols[len(buttons)].page_link(
        "app_pages/lab.py", label=t(f"{texts}.lab_link"), icon="🧪", help=t(f"{texts}.lab_link_help")
    )
    if pressed:
        cfg = Config(
            dataset=run.dataset,
            method=pressed[0].method,
            epochs=QUICK_EPOCHS,
            train_subset=state.QUICK_SUBSET.get(run.dataset),
        )
        try:
            state.start_run(cfg)
        except KDError as e:
            st.error(t(f"{texts}.cannot_start", error=e))
        else:
            st.rerun()


def trained_pairs(run: LabRun) -> list[tuple[str, str]]:
    """The (teacher, student) layer pairs the run trains (none for a logit method, or when
    the run's pairs are refused: the run itself says so)."""
    if not run.matches or not run.method.needs_features:
        return []
    ds = run.ds
    try:
        resolved = train.resolve_pairs(
            run.method,
            models.build(run.config.teacher, ds.in_shape, ds.num_classes),
            models.build(run.config.student, ds.in_shape, ds.num_classes),
            ds.in_shape,
            run.config.parsed_pairs(),
        )
    except KDError:
        return []
    return [(p[0], p[1]) for p in resolved]


def layer_pickers(
    texts: str,
    keys: tuple[str, str],
    t_opts: list,
    s_opts: list,
    shapes: tuple[dict, dict] | None = None,
) -> tuple[str, str | None]:
    """The teacher's and the student's layer side by side (``texts``.teacher_layer, ...), one
    above the other in a narrow column (side by side there, the labels broke mid-word at
    1024 px); with ``shapes`` (name -> shape of each network), each option shows its shape.
    Without a student (no run yet) its picker is a disabled "—". Returns (teacher layer,
    student layer or None)."""

    def fmt(i: int):
        if shapes is None:
            return str
        return lambda n: f"{n}  ({'×'.join(str(v) for v in shapes[i][n])})"

    p1, p2 = chrome.columns(f"layers_{keys[0]}", 2, min_rem=8)
    t_layer = p1.selectbox(
        t(f"{texts}.teacher_layer"), t_opts, key=keys[0], format_func=fmt(0), help=t(f"{texts}.teacher_layer_help")
    )
    if not s_opts:
        p2.selectbox(
            t(f"{texts}.student_layer"),
            ["—"],
            key=keys[1] + "_none",
            disabled=True,
            help=t(f"{texts}.student_layer_none_help"),
        )
        return t_layer, None
    s_layer = p2.selectbox(
        t(f"{texts}.student_layer"), s_opts, key=keys[1], format_func=fmt(1), help=t(f"{texts}.student_layer_help")
    )
    return t_layer, s_layer


def reset_on_change(marker: str, context: Hashable, keys: Sequence[str]) -> None:
    """Forget ``keys`` (and their kept copies) when ``context`` (a run, dataset or pair of
    networks) differs from the last run's: they start again from their defaults."""
    ss = st.session_state
    if ss.get(marker) != context:
        ss[marker] = context
        links.forget(keys)


def students(snap: dict | None) -> dict:
    """The students of a snapshot by role: "scratch" (when trained) and "distilled"."""
    if snap is None:
        return {}
    out = {}
    if snap.get("baseline") is not None:
        out["scratch"] = snap["baseline"]
    out["distilled"] = snap["student"]
    return out


@dataclass
class SessionCache:
    """Values computed from models (features, embeddings), kept in this session under
    ``name`` so that the controls only slice and redraw; ``prune`` forgets older epochs."""

    name: str

    @property
    def store(self) -> dict:
        return st.session_state.setdefault(self.name, {})

    def get(self, key: tuple, compute: Callable[[], Any]):
        store = self.store
        if key not in store:
            store[key] = compute()
        return store[key]

    def prune(self, keep: Callable[[tuple], bool]) -> None:
        store = st.session_state.get(self.name, {})
        for k in [k for k in store if not keep(k)]:
            del store[k]


def follow(run: LabRun, draw: Callable[[dict | None, Any, Any], None], every: float = 2.0) -> None:
    """Draw from the run (or the quick-run teacher): its progress while it trains, the
    teacher's caption, then ``draw(snapshot, teacher_model, Teacher)``. While the run trains
    on the page's dataset this redraws in a fragment every ``every`` seconds, and the whole
    page once when it ends."""

    def show() -> None:
        if run.live:
            state.run_progress()
        snap, teacher_m, teacher_ = run.source()
        if teacher_ is not None:
            st.caption(chrome.teacher_caption(teacher_))
        if teacher_m is None:  # the run is still preparing its teacher
            return
        draw(snap, teacher_m, teacher_)

    if run.live:

        @st.fragment(run_every=every)
        def live() -> None:
            show()
            j = state.current_run()
            if j is not None and j.done:
                st.rerun()  # once: the page settles with the final models

        live()
    else:
        show()

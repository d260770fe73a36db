"""Model registry: MLPs, small CNNs and CIFAR-style ResNets built from a name, plus
feature taps by forward hooks on named modules (any ``nn.Module`` works), profiling
(parameters, FLOPs, CPU latency) and safetensors weights.

Names: ``mlp-64-32`` (hidden widths), ``cnn-8-16`` (channels per stage, optional ``-h32``
for the hidden width), ``resnet8`` / ``resnet20`` (depth 6n+2, optional ``x2`` width).
Every model built here has the taps ``stage1..stageK`` (spatial) or ``layer1..`` (vector),
``embed`` (the penultimate vector) and ``fc`` (the logits), and carries ``model.arch``
and ``model.tap_names``.

ReLUs are never in-place, so a hook on any submodule (a BatchNorm inside a stage, say)
sees that module's own output, not a later layer's overwrite of it.
"""

from __future__ import annotations

import copy
import math
import os
import re
import statistics
import threading
import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import paths
from .errors import ConfigError

FORMS = "mlp-<width>[-<width>...], cnn-<channels>[-<channels>...][-h<hidden>], resnet<6n+2>[x<width>]"

PRESETS: dict[str, dict[str, str]] = {
    "digits": {"teacher": "cnn-32-64", "student": "mlp-32"},
    "mnist-mini": {"teacher": "cnn-32-64", "student": "cnn-8-16"},
    "mnist": {"teacher": "cnn-32-64", "student": "cnn-8-16"},
    "fashion-mnist": {"teacher": "cnn-32-64", "student": "cnn-8-16"},
    "cifar10": {"teacher": "resnet20", "student": "resnet8"},
}


# ---------------------------------------------------------------- architectures


class MLP(nn.Module):
    """Flatten, then Linear+ReLU layers ``layer1..`` with the last one named ``embed``, then ``fc``."""

    def __init__(self, in_shape, num_classes: int, widths: list[int]):
        super().__init__()
        d = math.prod(in_shape)
        names = [f"layer{i + 1}" for i in range(len(widths) - 1)] + ["embed"]
        for name, w in zip(names, widths):
            self.add_module(name, nn.Sequential(nn.Linear(d, w), nn.ReLU()))
            d = w
        self.fc = nn.Linear(d, num_classes)
        self.tap_names = names

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for name in self.tap_names:
            x = getattr(self, name)(x)
        return self.fc(x)


class CNN(nn.Module):
    """Stages of Conv3x3-BN-ReLU-MaxPool2, then ``embed`` (Flatten, Linear, ReLU), then ``fc``."""

    def __init__(self, in_shape, num_classes: int, channels: list[int], hidden: int | None = None):
        super().__init__()
        c, h, w = in_shape
        names = []
        for i, out in enumerate(channels):
            layers = [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            if min(h, w) >= 2:  # a 1-pixel map cannot be pooled any further
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            self.add_module(f"stage{i + 1}", nn.Sequential(*layers))
            names.append(f"stage{i + 1}")
            c = out
        hidden = hidden or 2 * channels[-1]
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU())
        self.fc = nn.Linear(hidden, num_classes)
        self.stage_names = names
        self.tap_names = names + ["embed"]

    def forward(self, x: Tensor) -> Tensor:
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(self.embed(x))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; a 1x1 conv shortcut (option B) when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet (He et al. 2016, sec. 4.2): 3 stages of n blocks, 16/32/64 channels."""

    def __init__(self, in_shape, num_classes: int, depth: int, width: int = 1):
        super().__init__()
        n = (depth - 2) // 6
        c = 16 * width
        self.stem = nn.Sequential(nn.Conv2d(in_shape[0], c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        cin = c
        for i, (cout, stride) in enumerate([(16 * width, 1), (32 * width, 2), (64 * width, 2)]):
            blocks = [BasicBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1) for j in range(n)]
            self.add_module(f"stage{i + 1}", nn.Sequential(*blocks))
            cin = cout
        self.embed = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)
        self.tap_names = ["stage1", "stage2", "stage3", "embed"]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(self.embed(x))


# ---------------------------------------------------------------- registry

_MLP = re.compile(r"^mlp((?:-\d+)+)$")
_CNN = re.compile(r"^cnn((?:-\d+)+)(?:-h(\d+))?$")
_RESNET = re.compile(r"^resnet(\d+)(?:x(\d+))?$")


def check_name(name: str) -> None:
    """Raise ConfigError unless ``name`` is a valid architecture name."""
    _parse(name)


def _parse(name: str):
    name = str(name).strip().lower()
    if m := _MLP.match(name):
        widths = [int(v) for v in m.group(1).split("-")[1:]]
        if all(1 <= w <= 16384 for w in widths):
            return "mlp", widths, None
    elif m := _CNN.match(name):
        chans = [int(v) for v in m.group(1).split("-")[1:]]
        hidden = int(m.group(2)) if m.group(2) else None
        if all(1 <= c <= 1024 for c in chans) and len(chans) <= 6 and (hidden is None or 1 <= hidden <= 16384):
            return "cnn", chans, hidden
    elif m := _RESNET.match(name):
        depth, width = int(m.group(1)), int(m.group(2) or 1)
        if 8 <= depth <= 110 and (depth - 2) % 6 == 0 and 1 <= width <= 8:
            return "resnet", depth, width
        raise ConfigError(
            f"unknown model '{name}': ResNet depth must be 6n+2 (8, 14, 20, 32, ... 110) "
            f"and width 1-8; allowed forms: {FORMS}"
        )
    raise ConfigError(
        f"unknown model '{name}'; allowed forms: {FORMS} (widths 1-16384, 1-6 CNN stages of 1-1024 channels)"
    )


def build(name: str, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The model called ``name`` for inputs of ``in_shape`` (C, H, W); ``forward`` gives logits."""
    kind, a, b = _parse(name)
    if kind == "mlp":
        model = MLP(in_shape, num_classes, a)
    elif kind == "cnn":
        model = CNN(in_shape, num_classes, a, b)
    else:
        model = ResNet(in_shape, num_classes, a, b)
    model.arch = str(name).strip().lower()
    return model


def preset(dataset: str) -> tuple[str, str]:
    """(teacher, student) names for a dataset."""
    try:
        p = PRESETS[dataset]
    except KeyError:
        raise ConfigError(f"unknown dataset '{dataset}'; choose one of: {', '.join(PRESETS)}") from None
    return p["teacher"], p["student"]


def suggested_models(dataset: str) -> list[str]:
    """A short list for a UI picker: the presets first."""
    t, s = preset(dataset)
    extra = (
        ["resnet20", "resnet14", "resnet8", "cnn-16-32"]
        if dataset == "cifar10"
        else ["cnn-16-32", "cnn-4-8", "mlp-256-128", "mlp-64", "mlp-32", "cnn-32-64-128"]
    )
    return list(dict.fromkeys([t, s] + extra))


# ---------------------------------------------------------------- feature taps


def _named(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if n}


def _hint(model: nn.Module, modules: dict[str, nn.Module]) -> str:
    names = getattr(model, "tap_names", None) or list(modules)[:10]
    return ", ".join(names)


class FeatureTaps:
    """Forward hooks on named modules: ``with FeatureTaps(model, ["stage2"]) as taps:
    model(x); taps["stage2"]``. Hooks are removed on exit; the captured tensors stay readable.

    A module whose output a later layer overwrites in place (``ReLU(inplace=True)`` in
    torchvision models) cannot be read faithfully; reading it raises ConfigError.

    Thread-safe on a shared model: the hooks record only forward passes of the thread that
    entered the block. (Cached teachers are shared by every job and page; without this, two
    runs tapping the same teacher at once read each other's batches.)"""

    def __init__(self, model: nn.Module, names: list[str], detach: bool = False):
        modules = _named(model)
        for n in names:
            if n not in modules:
                raise ConfigError(f"the model has no layer '{n}'; try one of: {_hint(model, modules)}")
        self.model, self.names, self.detach = model, list(names), detach
        self._modules = [modules[n] for n in self.names]
        self._handles = []
        self.outputs: dict[str, Tensor] = {}
        self._versions: dict[str, int] = {}

    def __enter__(self) -> FeatureTaps:
        self.outputs.clear()
        self._versions.clear()
        self._thread = threading.get_ident()
        for name, mod in zip(self.names, self._modules):
            self._handles.append(mod.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name):
        def hook(module, inputs, output):
            if threading.get_ident() != self._thread:
                return  # another thread's forward pass through the shared model
            self.outputs[name] = output.detach() if self.detach and isinstance(output, Tensor) else output
            self._versions[name] = _version(output)

        return hook

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __getitem__(self, name: str) -> Tensor:
        out = self.outputs[name]
        if _version(out) != self._versions[name]:
            raise ConfigError(
                f"the output of layer '{name}' was overwritten in place by a later layer "
                f"(an in-place ReLU?); tap the layer after it instead"
            )
        return out

    def __contains__(self, name: str) -> bool:
        return name in self.outputs


def _version(t) -> int | None:
    """Autograd's in-place modification counter (shared with ``detach()``), if it has one."""
    try:
        return t._version if isinstance(t, Tensor) else None
    except RuntimeError:  # inference-mode tensors keep no counter
        return None


@contextmanager
def _eval_mode(model: nn.Module):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    if p is None:
        p = next(model.buffers(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def module_shapes(model: nn.Module, in_shape, names: list[str] | None = None) -> dict[str, tuple[int, ...]]:
    """Output shape (without the batch dimension) of each named module, by one dry run on
    a zero batch of 2 in eval mode; modules whose output is not a tensor are left out."""
    modules = _named(model)
    if names is None:
        names = list(modules)
    for n in names:
        if n not in modules:
            raise ConfigError(f"the model has no layer '{n}'; try one of: {_hint(model, modules)}")
    shapes: dict[str, tuple[int, ...]] = {}

    def hook_for(n):
        def hook(module, inputs, output):
            if isinstance(output, Tensor):
                shapes[n] = tuple(output.shape[1:])

        return hook

    handles = [modules[n].register_forward_hook(hook_for(n)) for n in names]
    try:
        with _eval_mode(model):
            model(torch.zeros(2, *in_shape, device=device_of(model)))
    finally:
        for h in handles:
            h.remove()
    return {n: shapes[n] for n in names if n in shapes}


def tap_kind(shape) -> str:
    """ "spatial" for a (C, H, W) feature map, "vector" otherwise (e.g. (D,))."""
    return "spatial" if len(shape) == 3 else "vector"


def default_pair(teacher: nn.Module, student: nn.Module, in_shape, kind: str) -> tuple[str, str]:
    """The natural pair: the last spatial tap of each, or both embeddings."""
    if kind not in ("spatial", "vector"):
        raise ConfigError(f"unknown kind of layer '{kind}'; choose 'spatial' or 'vector'")
    picks = []
    for role, model in (("teacher", teacher), ("student", student)):
        arch = getattr(model, "arch", type(model).__name__)
        if kind == "vector":
            if "embed" not in _named(model):
                raise ConfigError(f"the {role} ({arch}) has no 'embed' layer; name the layers to pair")
            picks.append("embed")
            continue
        taps = getattr(model, "tap_names", None) or list(_named(model))
        shapes = module_shapes(model, in_shape, taps)
        spatial = [n for n in taps if n in shapes and tap_kind(shapes[n]) == "spatial"]
        if not spatial:
            raise ConfigError(f"the {role} ({arch}) has no spatial feature maps; choose a CNN or ResNet {role}")
        picks.append(spatial[-1])
    return picks[0], picks[1]


# ---------------------------------------------------------------- profiling


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def flops_per_sample(model: nn.Module, in_shape) -> int:
    """FLOPs (2 per multiply-add) of one forward pass on one sample, by PyTorch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with _eval_mode(model), counter:
        model(torch.zeros(1, *in_shape, device=device_of(model)))
    return int(counter.get_total_flops())


@torch.no_grad()
def cpu_latency_ms(model: nn.Module, in_shape, repeats: int = 30) -> float:
    """Median wall time of a batch-1 forward on the CPU, in milliseconds, after warm-up."""
    m = model if device_of(model).type == "cpu" else copy_to_cpu(model)
    x = torch.zeros(1, *in_shape)
    with _eval_mode(m):
        for _ in range(3):
            m(x)
        times = []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            m(x)
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def copy_to_cpu(model: nn.Module) -> nn.Module:
    """A CPU copy; the model itself stays where it is."""
    return copy.deepcopy(model).cpu()


def profile(model: nn.Module, in_shape) -> dict:
    return {
        "params": count_params(model),
        "flops": flops_per_sample(model, in_shape),
        "latency_ms": cpu_latency_ms(model, in_shape),
    }


# ---------------------------------------------------------------- weights


def state_tensors(module: nn.Module, prefix: str = "") -> dict[str, Tensor]:
    """Parameters and buffers as contiguous CPU clones (safetensors refuses shared or strided ones)."""
    return {prefix + k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def save_weights(model: nn.Module, path, extra: nn.Module | None = None) -> None:
    """safetensors, never pickle; ``extra`` (e.g. FitNets regressors) is stored under 'extra.'."""
    from safetensors.torch import save

    tensors = state_tensors(model)
    if extra is not None:
        tensors.update(state_tensors(extra, "extra."))
    paths.atomic_write_bytes(path, save(tensors))


def load_weights(model: nn.Module, path, extra: nn.Module | None = None) -> None:
    """Load a file written by :func:`save_weights` into ``model`` (and ``extra``), strictly."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        tensors = load(raw)
    except SafetensorError as e:
        raise ConfigError(f"{path} is not a readable safetensors file ({e})") from e
    own = {k: v for k, v in tensors.items() if not k.startswith("extra.")}
    try:
        model.load_state_dict(own)
        if extra is not None:
            extra.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("extra.")})
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0] if first else ""
        raise ConfigError(
            f"the weights in {path} do not fit {getattr(model, 'arch', type(model).__name__)}: {detail}"
        ) from e


def pick_device() -> torch.device:
    """cuda when available, else cpu; ``KD_PLAYGROUND_DEVICE=cpu|cuda`` overrides."""
    want = os.environ.get("KD_PLAYGROUND_DEVICE", "").strip().lower()
    if want in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if want == "cpu":
        return torch.device("cpu")
    if want == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("KD_PLAYGROUND_DEVICE=cuda but no CUDA device is available; use cpu")
        return torch.device("cuda")
    raise ConfigError(f"KD_PLAYGROUND_DEVICE='{want}' is not allowed; use cpu, cuda or leave it unset")

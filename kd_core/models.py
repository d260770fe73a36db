"""Model registry: MLPs, small CNNs and CIFAR-style ResNets built from a name, plus
feature taps by forward hooks on named modules (any ``nn.Module`` works) and profiling
(parameters, FLOPs, CPU latency).

Names: ``mlp-64-32`` (hidden widths), ``cnn-8-16`` (channels per stage, optional ``-h32``
for the hidden width), ``resnet8`` / ``resnet20`` (depth 6n+2, optional ``x2`` width).
Every model here has the taps ``stage1..stageK`` (spatial) or ``layer1..`` (vector),
``embed`` (the penultimate vector) and ``fc`` (the logits).
"""

from __future__ import annotations

import io
import os
import re
import statistics
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
    def __init__(self, in_shape, num_classes: int, widths: list[int]):
        super().__init__()
        d = int(torch.tensor(in_shape).prod())
        names = [f"layer{i + 1}" for i in range(len(widths) - 1)] + ["embed"]
        for name, w in zip(names, widths):
            self.add_module(name, nn.Sequential(nn.Linear(d, w), nn.ReLU(inplace=True)))
            d = w
        self.fc = nn.Linear(d, num_classes)
        self.tap_names = names

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for name in self.tap_names:
            x = getattr(self, name)(x)
        return self.fc(x)


class CNN(nn.Module):
    def __init__(self, in_shape, num_classes: int, channels: list[int], hidden: int | None = None):
        super().__init__()
        c, h, w = in_shape
        names = []
        for i, out in enumerate(channels):
            layers = [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            self.add_module(f"stage{i + 1}", nn.Sequential(*layers))
            names.append(f"stage{i + 1}")
            c = out
        hidden = hidden or 2 * channels[-1]
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(inplace=True))
        self.fc = nn.Linear(hidden, num_classes)
        self.stage_names = names
        self.tap_names = names + ["embed"]

    def forward(self, x: Tensor) -> Tensor:
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(self.embed(x))


class BasicBlock(nn.Module):
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
        self.stem = nn.Sequential(nn.Conv2d(in_shape[0], c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        stages, cin = [], c
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
        if depth >= 8 and (depth - 2) % 6 == 0 and depth <= 110 and 1 <= width <= 8:
            return "resnet", depth, width
        raise ConfigError(f"unknown model '{name}': ResNet depth must be 6n+2 (8, 14, 20, 32, ...), width 1-8")
    raise ConfigError(f"unknown model '{name}'; allowed forms: {FORMS}")


def build(name: str, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
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
    try:
        p = PRESETS[dataset]
    except KeyError:
        raise ConfigError(f"unknown dataset '{dataset}'; choose one of: {', '.join(PRESETS)}") from None
    return p["teacher"], p["student"]


def suggested_models(dataset: str) -> list[str]:
    """A short list for a UI picker: the presets first."""
    t, s = preset(dataset)
    extra = ["resnet20", "resnet14", "resnet8", "cnn-16-32"] if dataset == "cifar10" else \
        ["cnn-16-32", "cnn-4-8", "mlp-256-128", "mlp-64", "mlp-32", "cnn-32-64-128"]
    out = []
    for n in [t, s] + extra:
        if n not in out:
            out.append(n)
    return out


# ---------------------------------------------------------------- feature taps

def _named(model: nn.Module) -> dict[str, nn.Module]:
    return dict(model.named_modules())


class FeatureTaps:
    """Forward hooks on named modules: ``with FeatureTaps(model, ["stage2"]) as taps:
    model(x); taps["stage2"]``. Hooks are removed on exit."""

    def __init__(self, model: nn.Module, names: list[str], detach: bool = False):
        modules = _named(model)
        for n in names:
            if n not in modules or n == "":
                hint = ", ".join(getattr(model, "tap_names", [k for k in modules if k][:10]))
                raise ConfigError(f"the model has no layer '{n}'; try one of: {hint}")
        self.model, self.names, self.detach = model, list(names), detach
        self._modules = [modules[n] for n in names]
        self._handles = []
        self.outputs: dict[str, Tensor] = {}

    def __enter__(self) -> "FeatureTaps":
        for name, mod in zip(self.names, self._modules):
            self._handles.append(mod.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name):
        def hook(module, inputs, output):
            self.outputs[name] = output.detach() if self.detach else output
        return hook

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __getitem__(self, name: str) -> Tensor:
        return self.outputs[name]


@contextmanager
def _eval_mode(model: nn.Module):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def module_shapes(model: nn.Module, in_shape, names: list[str] | None = None) -> dict[str, tuple[int, ...]]:
    """Output shape (without the batch dimension) of each named module, by one dry run."""
    modules = _named(model)
    if names is None:
        names = [n for n in modules if n]
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for n in names:
        if n not in modules:
            raise ConfigError(f"the model has no layer '{n}'")

        def hook(module, inputs, output, n=n):
            if isinstance(output, Tensor):
                shapes[n] = tuple(output.shape[1:])
        handles.append(modules[n].register_forward_hook(hook))
    try:
        with _eval_mode(model):
            model(torch.zeros(2, *in_shape, device=_device(model)))
    finally:
        for h in handles:
            h.remove()
    return shapes


def tap_kind(shape) -> str:
    return "spatial" if len(shape) == 3 else "vector"


def default_pair(teacher: nn.Module, student: nn.Module, in_shape, kind: str) -> tuple[str, str]:
    """The natural pair: the last spatial stage of each, or both embeddings."""
    if kind == "vector":
        return "embed", "embed"
    picks = []
    for role, model in (("teacher", teacher), ("student", student)):
        taps = getattr(model, "tap_names", None) or [n for n in _named(model) if n]
        shapes = module_shapes(model, in_shape, taps)
        spatial = [n for n in taps if n in shapes and tap_kind(shapes[n]) == "spatial"]
        if not spatial:
            raise ConfigError(f"the {role} ({getattr(model, 'arch', type(model).__name__)}) has no spatial feature maps; "
                              f"choose a CNN or ResNet {role}")
        picks.append(spatial[-1])
    return picks[0], picks[1]


# ---------------------------------------------------------------- profiling

def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def flops_per_sample(model: nn.Module, in_shape) -> int:
    """FLOPs of one forward pass on one sample, by PyTorch's own FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with _eval_mode(model), counter:
        model(torch.zeros(1, *in_shape, device=_device(model)))
    return int(counter.get_total_flops())


@torch.no_grad()
def cpu_latency_ms(model: nn.Module, in_shape, repeats: int = 30) -> float:
    """Median wall time of a batch-1 forward on the CPU, in milliseconds."""
    m = model if _device(model).type == "cpu" else copy_to_cpu(model)
    x = torch.zeros(1, *in_shape)
    with _eval_mode(m):
        for _ in range(3):
            m(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            m(x)
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def copy_to_cpu(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).cpu()


def profile(model: nn.Module, in_shape) -> dict:
    return {"params": count_params(model), "flops": flops_per_sample(model, in_shape),
            "latency_ms": cpu_latency_ms(model, in_shape)}


# ---------------------------------------------------------------- weights

def state_tensors(module: nn.Module, prefix: str = "") -> dict[str, Tensor]:
    return {prefix + k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def save_weights(model: nn.Module, path, extra: nn.Module | None = None) -> None:
    """safetensors, never pickle; ``extra`` (e.g. FitNets regressors) is stored under 'extra.'."""
    from safetensors.torch import save

    tensors = state_tensors(model)
    if extra is not None:
        tensors.update(state_tensors(extra, "extra."))
    paths.atomic_write_bytes(path, save(tensors))


def load_weights(model: nn.Module, path, extra: nn.Module | None = None) -> None:
    from safetensors.torch import load

    with open(path, "rb") as fh:
        tensors = load(fh.read())
    own = {k: v for k, v in tensors.items() if not k.startswith("extra.")}
    model.load_state_dict(own)
    if extra is not None:
        extra.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("extra.")})


def pick_device() -> torch.device:
    want = os.environ.get("KD_PLAYGROUND_DEVICE", "").lower()
    if want == "cpu":
        return torch.device("cpu")
    if want == "cuda" or (not want and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")

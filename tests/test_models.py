"""The model registry: every preset builds and gives logits, the teacher is clearly bigger
than the student, taps and shapes are the documented ones and equal a computation by hand
(on our models and on a torchvision model), FLOPs match the formula, weights round-trip
exactly through safetensors (never pickle), and bad names are refused with ConfigError."""

from __future__ import annotations

import json
import pickle
import struct

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kd_core import models
from kd_core.errors import ConfigError

SHAPES = {
    "digits": (1, 8, 8),
    "mnist-mini": (1, 28, 28),
    "mnist": (1, 28, 28),
    "fashion-mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
}


def _x(shape, n=3, seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


# ------------------------------------------------------------ presets and building


def test_presets_are_the_documented_ones():
    assert set(models.PRESETS) == set(SHAPES)
    assert models.preset("digits") == ("cnn-32-64", "mlp-32")
    for ds in ("mnist-mini", "mnist", "fashion-mnist"):
        assert models.preset(ds) == ("cnn-32-64", "cnn-8-16")
    assert models.preset("cifar10") == ("resnet20", "resnet8")
    with pytest.raises(ConfigError, match="cifar10"):
        models.preset("imagenet")


@pytest.mark.parametrize("dataset", list(SHAPES))
def test_every_preset_builds_and_gives_logits(dataset):
    shape = SHAPES[dataset]
    for name in models.preset(dataset):
        model = models.build(name, shape, 10)
        assert model.arch == name
        assert model.tap_names and model.tap_names[-1] == "embed"
        named = dict(model.named_modules())
        assert all(n in named for n in model.tap_names + ["fc"])
        for mode in (True, False):
            model.train(mode)
            out = model(_x(shape, n=4))
            assert out.shape == (4, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("dataset", ["digits", "mnist", "cifar10"])
def test_teacher_is_clearly_bigger_than_student(dataset):
    shape = SHAPES[dataset]
    t, s = (models.build(n, shape, 10) for n in models.preset(dataset))
    # resnet20 vs resnet8 is the smallest gap: 3.5x the parameters, 3.3x the FLOPs
    assert models.count_params(t) >= 3 * models.count_params(s)
    assert models.flops_per_sample(t, shape) >= 3 * models.flops_per_sample(s, shape)


def test_suggested_models_put_presets_first_and_all_build():
    for ds, _shape in SHAPES.items():
        names = models.suggested_models(ds)
        assert names[:2] == list(models.preset(ds))
        assert len(names) == len(set(names)) and 4 <= len(names) <= 10
        for n in names:
            models.check_name(n)
    assert {"mlp-64", "mlp-256-128", "cnn-16-32", "cnn-4-8"} <= set(models.suggested_models("mnist"))
    assert "resnet14" in models.suggested_models("cifar10")
    for n in models.suggested_models("cifar10"):
        assert models.build(n, (3, 32, 32), 10)(_x((3, 32, 32), 2)).shape == (2, 10)


def test_building_is_deterministic_given_the_seed():
    for name, shape in (("cnn-8-16", (1, 28, 28)), ("resnet8", (3, 32, 32)), ("mlp-64-32", (1, 8, 8))):
        torch.manual_seed(7)
        a = models.build(name, shape, 10).state_dict()
        torch.manual_seed(7)
        b = models.build(name, shape, 10).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "mlp",
        "mlp-",
        "mlp-0",
        "mlp-32-",
        "mlp-a",
        "cnn",
        "cnn-8-x",
        "cnn-8-h",
        "cnn-1-2-3-4-5-6-7",
        "resnet",
        "resnet9",
        "resnet8x0",
        "resnet8x",
        "resnet2",
        "vgg16",
        "resnet18",
    ],
)
def test_malformed_names_are_refused_with_the_allowed_forms(bad):
    with pytest.raises(ConfigError) as err:
        models.build(bad, (1, 28, 28), 10)
    msg = str(err.value)
    assert "\n" not in msg and "mlp-<width>" in msg and "cnn-<channels>" in msg and "resnet<6n+2>" in msg
    with pytest.raises(ValueError):  # ConfigError is a ValueError too
        models.check_name(bad)


# ------------------------------------------------------------ architectures and shapes


def test_mlp_layers_and_shapes():
    m = models.build("mlp-64-32", (1, 8, 8), 10)
    assert m.tap_names == ["layer1", "embed"]
    assert (m.layer1[0].in_features, m.layer1[0].out_features) == (64, 64)
    assert (m.embed[0].in_features, m.embed[0].out_features) == (64, 32)
    assert (m.fc.in_features, m.fc.out_features) == (32, 10)
    assert models.module_shapes(m, (1, 8, 8), ["layer1", "embed", "fc"]) == {
        "layer1": (64,),
        "embed": (32,),
        "fc": (10,),
    }
    one = models.build("mlp-32", (1, 8, 8), 10)
    assert one.tap_names == ["embed"] and not hasattr(one, "layer1")
    assert models.count_params(one) == 64 * 32 + 32 + 32 * 10 + 10
    three = models.build("mlp-256-128-16", (3, 4, 4), 5)
    assert three.tap_names == ["layer1", "layer2", "embed"]
    assert models.module_shapes(three, (3, 4, 4), three.tap_names + ["fc"]) == {
        "layer1": (256,),
        "layer2": (128,),
        "embed": (16,),
        "fc": (5,),
    }


def test_cnn_layers_and_shapes():
    m = models.build("cnn-8-16", (1, 28, 28), 10)
    assert m.tap_names == ["stage1", "stage2", "embed"]
    conv, bn, relu, pool = m.stage1
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.bias is None
    assert isinstance(bn, nn.BatchNorm2d) and isinstance(relu, nn.ReLU) and isinstance(pool, nn.MaxPool2d)
    assert isinstance(m.embed[0], nn.Flatten) and isinstance(m.embed[2], nn.ReLU)
    assert models.module_shapes(m, (1, 28, 28), ["stage1", "stage2", "embed", "fc"]) == {
        "stage1": (8, 14, 14),
        "stage2": (16, 7, 7),
        "embed": (32,),
        "fc": (10,),
    }
    h = models.build("cnn-8-16-h24", (1, 28, 28), 10)
    assert models.module_shapes(h, (1, 28, 28), ["embed"]) == {"embed": (24,)}
    # pooling stops at a 1x1 map: 8 -> 4 -> 2 -> 1 -> 1
    deep = models.build("cnn-4-4-4-4", (1, 8, 8), 10)
    assert [s[1:] for s in models.module_shapes(deep, (1, 8, 8), deep.tap_names[:-1]).values()] == [
        (4, 4),
        (2, 2),
        (1, 1),
        (1, 1),
    ]
    assert len(deep.stage4) == 3
    assert models.module_shapes(models.build("cnn-32-64", (1, 8, 8), 10), (1, 8, 8))["stage2"] == (64, 2, 2)


def test_resnet_layers_and_shapes():
    m = models.build("resnet20", (3, 32, 32), 10)
    assert m.tap_names == ["stage1", "stage2", "stage3", "embed"]
    assert [len(getattr(m, f"stage{i}")) for i in (1, 2, 3)] == [3, 3, 3]
    assert models.module_shapes(m, (3, 32, 32), m.tap_names + ["stem", "fc"]) == {
        "stage1": (16, 32, 32),
        "stage2": (32, 16, 16),
        "stage3": (64, 8, 8),
        "embed": (64,),
        "stem": (16, 32, 32),
        "fc": (10,),
    }
    # option B: a 1x1 conv + BN shortcut where the shape changes, identity elsewhere
    assert isinstance(m.stage1[0].shortcut, nn.Identity)
    sc = m.stage2[0].shortcut
    assert isinstance(sc[0], nn.Conv2d) and sc[0].kernel_size == (1, 1) and sc[0].stride == (2, 2)
    assert isinstance(m.stage2[1].shortcut, nn.Identity)
    # 19 convs on the main path + the fc = 20 weighted layers
    main = [n for n, mod in m.named_modules() if isinstance(mod, nn.Conv2d) and "shortcut" not in n]
    assert len(main) + 1 == 20
    assert [len(getattr(models.build("resnet8", (3, 32, 32), 10), f"stage{i}")) for i in (1, 2, 3)] == [1, 1, 1]
    wide = models.build("resnet8x2", (3, 32, 32), 10)
    assert models.module_shapes(wide, (3, 32, 32), wide.tap_names) == {
        "stage1": (32, 32, 32),
        "stage2": (64, 16, 16),
        "stage3": (128, 8, 8),
        "embed": (128,),
    }
    gray = models.build("resnet14", (1, 28, 28), 10)
    assert models.module_shapes(gray, (1, 28, 28), ["stage3", "embed"]) == {"stage3": (64, 7, 7), "embed": (64,)}


def test_module_shapes_lists_all_tensor_outputs_and_restores_mode():
    m = models.build("cnn-8-16", (1, 28, 28), 10).train()
    shapes = models.module_shapes(m, (1, 28, 28))
    assert set(shapes) == {n for n, _ in m.named_modules() if n}
    assert shapes["stage1.1"] == (8, 28, 28) and shapes["embed.1"] == (32,)
    assert m.training and _no_hooks(m)
    m.eval()
    models.module_shapes(m, (1, 28, 28))
    assert not m.training
    with pytest.raises(ConfigError, match="stage1"):
        models.module_shapes(m, (1, 28, 28), ["stage9"])


def test_tap_kind():
    assert models.tap_kind((16, 7, 7)) == "spatial"
    assert models.tap_kind((32,)) == "vector"


# ------------------------------------------------------------ feature taps


def test_taps_equal_the_submodule_chain_by_hand():
    torch.manual_seed(0)
    m = models.build("cnn-8-16", (1, 28, 28), 10).eval()
    x = _x((1, 28, 28))
    with torch.no_grad(), models.FeatureTaps(m, ["stage1", "stage2", "embed", "stage1.1"]) as taps:
        logits = m(x)
    with torch.no_grad():
        s1 = m.stage1(x)
        s2 = m.stage2(s1)
        e = m.embed(s2)
        bn = m.stage1[1](m.stage1[0](x))
        assert torch.equal(taps["stage1"], s1) and torch.equal(taps["stage2"], s2)
        assert torch.equal(taps["embed"], e) and torch.equal(logits, m.fc(e))
        # a BatchNorm inside a stage is read before the ReLU: nothing overwrites it in place
        assert torch.equal(taps["stage1.1"], bn) and (bn < 0).any()
    assert _no_hooks(m)

    r = models.build("resnet8", (3, 32, 32), 10).eval()
    x = _x((3, 32, 32), 2)
    with torch.no_grad(), models.FeatureTaps(r, ["stem", "stage2", "embed"]) as taps:
        r(x)
    with torch.no_grad():
        stem = r.stem(x)
        s2 = r.stage2(r.stage1(stem))
        assert torch.equal(taps["stem"], stem) and torch.equal(taps["stage2"], s2)
        assert torch.allclose(taps["embed"], r.stage3(s2).mean(dim=(2, 3)), atol=1e-6)

    p = models.build("mlp-64-32", (1, 8, 8), 10)
    x = _x((1, 8, 8))
    with models.FeatureTaps(p, ["layer1", "embed"]) as taps:
        p(x)
    h = F.relu(F.linear(x.flatten(1), p.layer1[0].weight, p.layer1[0].bias))
    assert torch.allclose(taps["layer1"], h) and torch.allclose(taps["embed"], p.embed(h))


def test_taps_carry_gradients_unless_detached():
    m = models.build("cnn-8-16", (1, 28, 28), 10)
    x = _x((1, 28, 28))
    with models.FeatureTaps(m, ["stage2"]) as taps:
        m(x)
        taps["stage2"].pow(2).mean().backward()
    assert m.stage1[0].weight.grad is not None and m.stage2[0].weight.grad.abs().sum() > 0
    assert m.fc.weight.grad is None
    with models.FeatureTaps(m, ["stage2"], detach=True) as taps:
        m(x)
    assert not taps["stage2"].requires_grad


def test_hooks_are_removed_on_exit_even_after_an_error():
    m = models.build("cnn-8-16", (1, 28, 28), 10)
    with pytest.raises(RuntimeError, match="boom"):
        with models.FeatureTaps(m, ["stage1", "embed"]):
            assert not _no_hooks(m)
            raise RuntimeError("boom")
    assert _no_hooks(m)


def test_unknown_tap_is_refused_with_valid_names():
    m = models.build("cnn-8-16", (1, 28, 28), 10)
    with pytest.raises(ConfigError) as err:
        models.FeatureTaps(m, ["stage3"])
    assert "stage3" in str(err.value) and "stage1" in str(err.value) and "embed" in str(err.value)
    assert _no_hooks(m)


def test_taps_work_on_a_torchvision_model():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    m = tv.models.resnet18(weights=None, num_classes=10).eval()
    x = _x((3, 64, 64), 2)
    with torch.no_grad(), models.FeatureTaps(m, ["layer2", "avgpool"]) as taps:
        logits = m(x)
    with torch.no_grad():
        y = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        l2 = m.layer2(m.layer1(y))
        assert torch.equal(taps["layer2"], l2)
        assert torch.equal(logits, m.fc(taps["avgpool"].flatten(1)))
    assert taps["layer2"].shape == (2, 128, 8, 8) and _no_hooks(m)
    assert models.module_shapes(m, (3, 64, 64), ["layer2", "fc"]) == {"layer2": (128, 8, 8), "fc": (10,)}
    with pytest.raises(ConfigError, match="layer1"):
        models.FeatureTaps(m, ["stage2"])
    # torchvision's ReLU(inplace=True) overwrites bn1's output: reading it is refused, not wrong
    with torch.no_grad(), models.FeatureTaps(m, ["bn1"]) as taps:
        m(x)
    with pytest.raises(ConfigError, match="in place"):
        taps["bn1"]


# ------------------------------------------------------------ layer pairs


def test_default_pair():
    cnn_t, cnn_s = (models.build(n, (1, 28, 28), 10) for n in models.preset("mnist"))
    assert models.default_pair(cnn_t, cnn_s, (1, 28, 28), "spatial") == ("stage2", "stage2")
    assert models.default_pair(cnn_t, cnn_s, (1, 28, 28), "vector") == ("embed", "embed")
    res_t, res_s = (models.build(n, (3, 32, 32), 10) for n in models.preset("cifar10"))
    assert models.default_pair(res_t, res_s, (3, 32, 32), "spatial") == ("stage3", "stage3")
    three = models.build("cnn-8-16-32", (1, 28, 28), 10)
    assert models.default_pair(three, cnn_s, (1, 28, 28), "spatial") == ("stage3", "stage2")

    d_t, d_s = (models.build(n, (1, 8, 8), 10) for n in models.preset("digits"))
    assert models.default_pair(d_t, d_s, (1, 8, 8), "vector") == ("embed", "embed")
    with pytest.raises(ConfigError, match=r"student \(mlp-32\) has no spatial"):
        models.default_pair(d_t, d_s, (1, 8, 8), "spatial")
    with pytest.raises(ConfigError, match=r"teacher \(mlp-32\) has no spatial"):
        models.default_pair(d_s, d_t, (1, 8, 8), "spatial")
    with pytest.raises(ConfigError):
        models.default_pair(d_t, d_s, (1, 8, 8), "logits")


# ------------------------------------------------------------ profiling


def test_flops_match_the_formula():
    mlp = models.build("mlp-32", (1, 8, 8), 10)
    assert models.flops_per_sample(mlp, (1, 8, 8)) == 2 * (64 * 32 + 32 * 10)
    cnn = models.build("cnn-8-16", (1, 28, 28), 10)
    convs = 2 * (8 * 1 * 9 * 28 * 28) + 2 * (16 * 8 * 9 * 14 * 14)
    assert models.flops_per_sample(cnn, (1, 28, 28)) == convs + 2 * (16 * 7 * 7 * 32) + 2 * (32 * 10)


def test_profile_keeps_mode_and_reports_sane_numbers():
    m = models.build("cnn-8-16", (1, 28, 28), 10).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    prof = models.profile(m, (1, 28, 28))
    assert set(prof) == {"params", "flops", "latency_ms"}
    assert prof["params"] == models.count_params(m) == 26722
    assert prof["flops"] > 0 and 0 < prof["latency_ms"] < 1000
    assert m.training and _no_hooks(m)
    # eval-mode forwards do not touch BN running statistics
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert models.cpu_latency_ms(m, (1, 28, 28), repeats=3) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_profiling_a_cuda_model_leaves_it_on_the_gpu():
    m = models.build("resnet8", (3, 32, 32), 10).cuda().train()
    assert models.cpu_latency_ms(m, (3, 32, 32), repeats=3) > 0
    assert models.flops_per_sample(m, (3, 32, 32)) == models.flops_per_sample(
        models.build("resnet8", (3, 32, 32), 10), (3, 32, 32)
    )
    assert models.module_shapes(m, (3, 32, 32), ["stage3"]) == {"stage3": (64, 8, 8)}
    assert next(m.parameters()).is_cuda and m.training


# ------------------------------------------------------------ weights


def _trained_a_little(name, shape):
    torch.manual_seed(1)
    m = models.build(name, shape, 10).train()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for seed in range(2):
        loss = F.cross_entropy(m(_x(shape, 8, seed)), torch.arange(8) % 10)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m


@pytest.mark.parametrize("name,shape", [("cnn-8-16", (1, 28, 28)), ("resnet8", (3, 32, 32)), ("mlp-64-32", (1, 8, 8))])
def test_weights_round_trip_exactly_through_safetensors(tmp_path, name, shape):
    m = _trained_a_little(name, shape)
    path = tmp_path / "w.safetensors"
    models.save_weights(m, path)
    torch.manual_seed(99)
    fresh = models.build(name, shape, 10)
    models.load_weights(fresh, path)
    a, b = m.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    if name != "mlp-64-32":  # BN running statistics and the batch counter are saved too
        assert any(k.endswith("running_mean") for k in a) and any(k.endswith("num_batches_tracked") for k in a)
        assert any(a[k].abs().sum() > 0 for k in a if k.endswith("running_mean"))
    x = _x(shape, 2)
    assert torch.equal(m.eval()(x), fresh.eval()(x))

    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert raw[8:9] == b"{" and set(json.loads(raw[8 : 8 + n])) >= set(a)
    assert not raw.startswith(b"\x80") and not raw.startswith(b"PK")  # neither pickle nor torch.save's zip
    with pytest.raises(Exception):
        pickle.loads(raw)


def test_weights_with_shared_and_strided_tensors(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4, bias=False)
            self.b = nn.Linear(4, 4, bias=False)
            self.b.weight = self.a.weight
            self.register_buffer("t", torch.arange(12.0).reshape(3, 4).t())

    m = Tied()
    assert not m.t.is_contiguous()
    models.save_weights(m, tmp_path / "t.safetensors")
    other = Tied()
    with torch.no_grad():
        other.a.weight.zero_()
        other.t.zero_()
    models.load_weights(other, tmp_path / "t.safetensors")
    assert torch.equal(other.a.weight, m.a.weight) and torch.equal(other.t, m.t)
    assert other.b.weight is other.a.weight


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    models.save_weights(models.build("mlp-32", (1, 8, 8), 10), path)
    with pytest.raises(ConfigError, match="mlp-64"):
        models.load_weights(models.build("mlp-64", (1, 8, 8), 10), path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="safetensors"):
        models.load_weights(models.build("mlp-32", (1, 8, 8), 10), bad)


def test_extra_modules_are_saved_alongside(tmp_path):
    m = models.build("cnn-8-16", (1, 28, 28), 10)
    extra = nn.ModuleList([nn.Conv2d(16, 32, 1)])
    models.save_weights(m, tmp_path / "w.safetensors", extra=extra)
    m2, extra2 = models.build("cnn-8-16", (1, 28, 28), 10), nn.ModuleList([nn.Conv2d(16, 32, 1)])
    models.load_weights(m2, tmp_path / "w.safetensors", extra=extra2)
    assert torch.equal(extra2[0].weight, extra[0].weight) and torch.equal(m2.fc.weight, m.fc.weight)


# ------------------------------------------------------------ device


def test_pick_device_honours_the_environment(monkeypatch):
    monkeypatch.setenv("KD_PLAYGROUND_DEVICE", "cpu")
    assert models.pick_device() == torch.device("cpu")
    monkeypatch.delenv("KD_PLAYGROUND_DEVICE")
    assert models.pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("KD_PLAYGROUND_DEVICE", "cuda")
    if torch.cuda.is_available():
        assert models.pick_device().type == "cuda"
    else:
        with pytest.raises(ConfigError, match="cuda"):
            models.pick_device()
    monkeypatch.setenv("KD_PLAYGROUND_DEVICE", "tpu")
    with pytest.raises(ConfigError, match="cpu, cuda"):
        models.pick_device()

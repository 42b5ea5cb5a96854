"""Backbones (dml/models): the forward pass against its definition (normalise input, features,
linear head, L2 normalisation), BatchNorm freezing against the BN running-average formula,
parameter counts against the layer arithmetic and torchvision's published figures, global
pooling against hand-computed values, ImageNet weight loading against fake official files
(right, wrong and missing hash-named files), BN-Inception's state-dict names against the Caffe
port's, each backbone's input convention, and the save/load round trip."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import GoogLeNet, GoogLeNet_Weights, ResNet50_Weights, resnet50

from dml.config import ModelConfig, parse_params
from dml.data.stats import Stats
from dml.errors import DatasetError
from dml.model_file import load_model, save_model
from dml.models import MODELS, EmbeddingModel, build_model, input_normalization, model_normalization
from dml.models.base import GlobalPool
from dml.models.bninception import BNInception, bninception_features
from dml.models.weights import hub_cache_path

MEAN1, STD1 = [120.0], [60.0]
MEAN3, STD3 = [123.7, 116.3, 103.5], [58.4, 57.1, 57.4]


def _images(b: int, c: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, c, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _bn_state(model: nn.Module) -> list[torch.Tensor]:
    return [t.clone() for bn in _bn_layers(model) for t in (bn.running_mean, bn.running_var, bn.num_batches_tracked)]


# --------------------------------------------------------------------------- small CNN


def test_small_cnn_parameter_count():
    """Reference: layer arithmetic: convs 1*32*9 + 32*64*9 + 64*128*9 + 128*256*9 = 387,360,
    BN affine 2*(32+64+128+256) = 960, head 256*128 + 128 = 32,896 -> 421,216 (and with a
    64-d head: 388,320 + 256*64 + 64 = 404,768; 3 input channels add 2*32*9 = 576)."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build_model(ModelConfig(normalize=True, name="small_cnn", embed_dim=128), 1, MEAN1, STD1)) == 421_216
    assert count(build_model(ModelConfig(normalize=True, name="small_cnn", embed_dim=64), 1, MEAN1, STD1)) == 404_768
    assert count(build_model(ModelConfig(normalize=True, name="small_cnn", embed_dim=128), 3, MEAN3, STD3)) == 421_216 + 576


@pytest.mark.parametrize("embed_dim,channels", [(128, 1), (32, 3)])
def test_small_cnn_forward_is_normalised_head_of_features(embed_dim, channels):
    """Reference: the definition written out: F.normalize(head(features((x - mean) / std))), shape
    (B, embed_dim), unit L2 norms; uint8 and float inputs give the same output."""
    torch.manual_seed(0)
    mean, std = (MEAN1, STD1) if channels == 1 else (MEAN3, STD3)
    model = build_model(ModelConfig(normalize=True, name="small_cnn", embed_dim=embed_dim), channels, mean, std).eval()
    images = _images(5, channels, 16)
    with torch.no_grad():
        out = model(images)
        x = (images.float() - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
        raw = model.head(model.features(x))
        ref = raw / raw.norm(dim=1, keepdim=True)
        out_float = model(images.float())
    assert out.shape == (5, embed_dim)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5), atol=1e-6, rtol=0)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(out_float, out, atol=0, rtol=0)


def test_unnormalised_model_returns_the_raw_head_output():
    """Reference: the definition with model.normalize false (N-pair, angular, lifted in the paper):
    head(features((x - mean) / std)), not unit length; an unresolved 'auto' is refused."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(normalize=False, name="small_cnn", embed_dim=16), 1, MEAN1, STD1).eval()
    images = _images(4, 1, 16)
    with torch.no_grad():
        raw = model.head(model.features((images.float() - torch.tensor(MEAN1).view(1, -1, 1, 1)) / torch.tensor(STD1).view(1, -1, 1, 1)))
        torch.testing.assert_close(model(images), raw, atol=0, rtol=0)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(4))
    with pytest.raises(ValueError, match="model.normalize: unresolved 'auto'"):
        build_model(ModelConfig(name="small_cnn"), 1, MEAN1, STD1)


def test_freeze_bn_keeps_bn_in_eval_mode_and_stats_fixed():
    """Reference: the frozen-BN rule (Roth et al.): after model.train() every BatchNorm is in eval
    mode (everything else in train mode), a forward pass in train mode leaves running_mean,
    running_var and num_batches_tracked bit-identical, and the output equals the eval-mode
    output. Also after eval() -> train()."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(normalize=True, name="small_cnn", freeze_bn=True), 1, MEAN1, STD1)
    images = _images(4, 1, 16)
    with torch.no_grad():
        eval_out = model.eval()(images)
    for _ in range(2):
        model.eval()
        model.train()
        assert model.training and model.head.training and model.features.training
        bns = _bn_layers(model)
        assert len(bns) == 4 and all(not bn.training for bn in bns)
        before = _bn_state(model)
        out = model(images)
        after = _bn_state(model)
        assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
        torch.testing.assert_close(out.detach(), eval_out, atol=1e-6, rtol=0)


def test_no_freeze_bn_updates_stats_by_momentum_formula():
    """Reference: BatchNorm's running-average formula for the first BN layer after one train-mode
    forward: running_mean = 0.9 * 0 + 0.1 * batch mean, running_var = 0.9 * 1 + 0.1 * unbiased
    batch variance (batch statistics of the conv output captured by a hook); num_batches_tracked
    = 1 in every BN layer."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(normalize=True, name="small_cnn", freeze_bn=False), 1, MEAN1, STD1)
    model.train()
    bns = _bn_layers(model)
    assert all(bn.training for bn in bns)
    captured = {}
    handle = bns[0].register_forward_pre_hook(lambda mod, inp: captured.__setitem__("x", inp[0].detach().clone()))
    model(_images(4, 1, 16))
    handle.remove()
    x = captured["x"].double()
    batch_mean = x.mean(dim=(0, 2, 3))
    batch_var = x.var(dim=(0, 2, 3), unbiased=True)
    torch.testing.assert_close(bns[0].running_mean.double(), 0.1 * batch_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bns[0].running_var.double(), 0.9 + 0.1 * batch_var, atol=1e-5, rtol=1e-5)
    assert all(int(bn.num_batches_tracked) == 1 for bn in bns)


# --------------------------------------------------------------------------- ImageNet backbones

PRETRAINED = ("resnet50", "googlenet", "bninception")
# Reference: the official download addresses (torchvision's model zoo; Cadene's pretrainedmodels 0.7.4).
OFFICIAL_URL = {
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "googlenet": "https://download.pytorch.org/models/googlenet-1378be20.pth",
    "bninception": "http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth",
}
FEATURE_DIM = {"small_cnn": 256, "resnet50": 2048, "googlenet": 1024, "bninception": 1024}
SIZE = 32  # the smallest side every backbone takes (BN-Inception's map before inception_3c must be a multiple of 4)


def _cfg(name: str, **kw) -> ModelConfig:
    return ModelConfig(**{"name": name, "embed_dim": 16, "normalize": True, **kw})


def _source_net(name: str) -> nn.Module:
    """The full ImageNet network as the official file's producer defined it (GoogLeNet with its
    aux heads, as torchvision's file has them), with non-trivial BN statistics."""
    torch.manual_seed(1)
    net = {
        "resnet50": lambda: resnet50(weights=None),
        "googlenet": lambda: GoogLeNet(aux_logits=True, transform_input=False, init_weights=True),
        "bninception": BNInception,
    }[name]()
    for bn in _bn_layers(net):
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.normal_(0, 0.1)
    return net


def _save_hash_named(state: dict, folder: Path, stem: str) -> tuple[Path, str]:
    """torch.hub's naming rule: <stem>-<first 8 hex digits of the file's SHA-256>.pth."""
    tmp = folder / f"{stem}.tmp"
    torch.save(state, tmp)
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = folder / f"{stem}-{sha[:8]}.pth"
    tmp.rename(path)
    return path, sha


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> dict[str, tuple[nn.Module, Path, str]]:
    """Per backbone: the source network (classifier then cut off, eval mode: its output is the
    reference feature vector with average pooling), its state dict saved under a hash-correct
    name, and that file's SHA-256."""
    folder = tmp_path_factory.mktemp("weights")
    out = {}
    for name in PRETRAINED:
        net = _source_net(name)
        path, sha = _save_hash_named(net.state_dict(), folder, Path(OFFICIAL_URL[name]).name.rsplit("-", 1)[0])
        if name == "bninception":
            net.last_linear = nn.Identity()
        else:
            net.fc = nn.Identity()
        out[name] = (net.eval(), path, sha)
    return out


def test_official_urls_and_hub_cache_layout(tmp_path, monkeypatch):
    """Reference: the official addresses above; torch.hub's documented cache layout
    $TORCH_HOME/hub/checkpoints/<file name of the URL>."""
    assert {name: MODELS[name].weights_url for name in PRETRAINED} == OFFICIAL_URL
    assert MODELS["small_cnn"].weights_url is None
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert hub_cache_path(OFFICIAL_URL["resnet50"]) == tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    assert Path(ResNet50_Weights.IMAGENET1K_V1.url).name == "resnet50-0676ba61.pth"


@pytest.mark.parametrize("name", PRETRAINED)
def test_weights_load_strictly_and_reproduce_the_source(name, official):
    """Reference: the source network that wrote the file: after build_model(pretrained, weights=
    file) the backbone's features (average pooling) equal the source's penultimate output bit for
    bit, and the model records the file's SHA-256."""
    source, path, sha = official[name]
    model = build_model(_cfg(name, pretrained=True, weights=str(path)), 3, MEAN3, STD3).eval()
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), source(x), rtol=0, atol=0)
    assert model.weights_sha256 == sha


def test_default_location_is_the_hub_cache(official, tmp_path, monkeypatch):
    """Reference: torch.hub's layout: with model.weights null the file is read from
    $TORCH_HOME/hub/checkpoints/<official name> (the official name patched to the fake file's)."""
    source, path, sha = official["bninception"]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setitem(MODELS, "bninception", dataclasses.replace(MODELS["bninception"], weights_url=f"http://x.invalid/{path.name}"))
    cached = tmp_path / "hub" / "checkpoints" / path.name
    cached.parent.mkdir(parents=True)
    cached.symlink_to(path)
    model = build_model(_cfg("bninception", pretrained=True), 3, MEAN3, STD3).eval()
    assert model.weights_sha256 == sha
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), source(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", PRETRAINED)
def test_wrong_hash_is_one_line_with_expected_and_got(name, official, tmp_path, monkeypatch):
    """Reference: torch.hub's check_hash rule (the file's SHA-256 starts with the hex digits after
    the last '-' of its name): a file under the official name with other content, and the fake
    file under a name whose prefix is off by one digit, are refused with expected and actual."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    official_path = tmp_path / "hub" / "checkpoints" / Path(OFFICIAL_URL[name]).name
    official_path.parent.mkdir(parents=True)
    official_path.write_bytes(b"an interrupted download")
    got = hashlib.sha256(b"an interrupted download").hexdigest()
    prefix = official_path.stem.rsplit("-", 1)[1]
    with pytest.raises(DatasetError) as err:
        build_model(_cfg(name, pretrained=True), 3, MEAN3, STD3)
    assert str(err.value) == (f"{official_path}: SHA-256 mismatch: the file name expects {prefix}..., got {got}; "
                              f"re-download {OFFICIAL_URL[name]}")
    _, path, sha = official[name]
    bad_prefix = format((int(sha[0], 16) + 1) % 16, "x") + sha[1:8]
    renamed = tmp_path / path.name.replace(sha[:8], bad_prefix)
    renamed.symlink_to(path)
    with pytest.raises(DatasetError, match=rf"expects {bad_prefix}\.\.\., got {sha};"):
        build_model(_cfg(name, pretrained=True, weights=str(renamed)), 3, MEAN3, STD3)


@pytest.mark.parametrize("name", PRETRAINED)
def test_missing_weights_is_one_line_naming_file_and_url(name, tmp_path, monkeypatch):
    """Reference: torch.hub's layout under TORCH_HOME; a relative model.weights is relative to the
    repository root (DVC_ROOT): the error names the absolute path to fill and the official URL."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo"))
    expected = {
        None: tmp_path / "home" / "hub" / "checkpoints" / Path(OFFICIAL_URL[name]).name,
        "weights/w.pth": tmp_path / "repo" / "weights" / "w.pth",
    }
    for weights, path in expected.items():
        with pytest.raises(FileNotFoundError) as err:
            build_model(_cfg(name, pretrained=True, weights=weights), 3, MEAN3, STD3)
        message = str(err.value)
        assert "\n" not in message and str(path) in message and OFFICIAL_URL[name] in message and "download" in message
    assert not (tmp_path / "home").exists()  # nothing downloaded or created


def test_caffe_layout_bninception_file_loads(official, tmp_path):
    """Reference: the layout of old copies of the Caffe port: BN tensors as (1, C) and no
    num_batches_tracked (pre-0.4 PyTorch): they load strictly to the same network. The file has
    no hash in its name: loaded unchecked, its SHA-256 recorded (hashlib of the bytes)."""
    source, path, _ = official["bninception"]
    state = torch.load(path, weights_only=True)
    caffe = {k: (v.unsqueeze(0) if k.rsplit(".", 1)[0].endswith("_bn") else v) for k, v in state.items()
             if not k.endswith("num_batches_tracked")}
    assert caffe["conv1_7x7_s2_bn.running_var"].shape == (1, 64)
    caffe_path = tmp_path / "bninception_caffe_layout.pth"
    torch.save(caffe, caffe_path)
    model = build_model(_cfg("bninception", pretrained=True, weights=str(caffe_path)), 3, MEAN3, STD3).eval()
    assert model.weights_sha256 == hashlib.sha256(caffe_path.read_bytes()).hexdigest()
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), source(x), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="size mismatch for conv1_7x7_s2.weight"):  # only BN's (1, C) is reshaped
        bninception_features(3, "avg", {**caffe, "conv1_7x7_s2.weight": caffe["conv1_7x7_s2.weight"][:32]})
    with pytest.raises(RuntimeError, match='Unexpected key.*"fc.weight"'):  # strict: a foreign file fails
        bninception_features(3, "avg", {**caffe, "fc.weight": torch.zeros(1)})


# Reference: Cadene's pretrainedmodels BNInception definition (bninception.py): names and shapes.
BNINCEPTION_KEYS = {
    "conv1_7x7_s2.weight": (64, 3, 7, 7),
    "conv1_7x7_s2.bias": (64,),
    "conv1_7x7_s2_bn.running_mean": (64,),
    "conv2_3x3_reduce.weight": (64, 64, 1, 1),
    "conv2_3x3.weight": (192, 64, 3, 3),
    "conv2_3x3_bn.running_var": (192,),
    "inception_3a_1x1.weight": (64, 192, 1, 1),
    "inception_3a_3x3_reduce.weight": (64, 192, 1, 1),
    "inception_3a_double_3x3_2.weight": (96, 96, 3, 3),
    "inception_3a_pool_proj.weight": (32, 192, 1, 1),
    "inception_3b_pool_proj_bn.weight": (64,),
    "inception_3c_3x3.weight": (160, 128, 3, 3),
    "inception_3c_double_3x3_reduce.weight": (64, 320, 1, 1),
    "inception_4a_1x1.weight": (224, 576, 1, 1),
    "inception_4c_double_3x3_2.weight": (160, 160, 3, 3),
    "inception_4d_3x3_reduce.weight": (128, 608, 1, 1),
    "inception_4e_double_3x3_2_bn.running_var": (256,),
    "inception_5a_1x1.weight": (352, 1056, 1, 1),
    "inception_5a_double_3x3_1.weight": (224, 160, 3, 3),
    "inception_5b_3x3.weight": (320, 192, 3, 3),
    "inception_5b_pool_proj.weight": (128, 1024, 1, 1),
    "inception_5b_pool_proj_bn.bias": (128,),
    "last_linear.weight": (1000, 1024),
}


def test_bninception_state_dict_matches_the_caffe_port():
    """Reference: Cadene's definition: the keys and shapes above; no 1x1 branch or pool projection
    in the grid-reduction modules 3c and 4e; 69 conv layers with bias, each with a BN layer: 69 * 2
    + 69 * 4 + 2 (last_linear) = 416 tensors in the file (+69 num_batches_tracked of modern
    PyTorch); 11,295,240 parameters with the ImageNet classifier (the ~11.3M usually quoted),
    10,270,240 without it, and the embedding model's backbone has exactly those."""
    state = BNInception().state_dict()
    for key, shape in BNINCEPTION_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    for block in ("inception_3c", "inception_4e"):
        assert not any(k.startswith((f"{block}_1x1", f"{block}_pool_proj")) for k in state)
    assert len([k for k in state if not k.endswith("num_batches_tracked")]) == 416
    assert sum(k.endswith("num_batches_tracked") for k in state) == 69
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(BNInception()) == 11_295_240
    model = build_model(_cfg("bninception", embed_dim=128), 3, MEAN3, STD3)
    assert count(model.features) == 10_270_240 == 11_295_240 - (1024 * 1000 + 1000)
    assert count(model.head) == 1024 * 128 + 128


# Reference: torchvision's published num_params (ResNet50 25,557,032; GoogLeNet 6,624,904 without
# aux heads) minus the ImageNet classifier (2048 * 1000 + 1000; 1024 * 1000 + 1000); BN-Inception:
# see the Caffe-port test; small_cnn: the layer arithmetic above (3 input channels).
FEATURE_PARAMS = {"small_cnn": 388_320 + 576, "resnet50": 25_557_032 - 2_049_000, "googlenet": 6_624_904 - 1_025_000,
                  "bninception": 10_270_240}


@pytest.mark.parametrize("name", ["small_cnn", *PRETRAINED])
def test_output_shapes_and_parameter_counts(name):
    """Reference: (B, embed_dim) unit vectors for 1- and 3-channel input at the smallest size;
    the head maps the backbone's documented width (2048 / 1024 / 1024 / 256) to embed_dim; the
    backbone has the parameter count above; with normalize false the raw head output."""
    assert ResNet50_Weights.IMAGENET1K_V1.meta["num_params"] == 25_557_032
    assert GoogLeNet_Weights.IMAGENET1K_V1.meta["num_params"] == 6_624_904
    for channels, (mean, std) in ((1, (MEAN1, STD1)), (3, (MEAN3, STD3))):
        torch.manual_seed(0)
        model = build_model(_cfg(name), channels, mean, std).eval()
        assert model.head.in_features == FEATURE_DIM[name]
        with torch.no_grad():
            out = model(_images(2, channels, SIZE))
        assert out.shape == (2, 16)
        torch.testing.assert_close(out.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)
    assert sum(p.numel() for p in model.features.parameters()) == FEATURE_PARAMS[name]
    model.normalize = False
    with torch.no_grad():
        assert not torch.allclose(model(_images(2, 3, SIZE)).norm(dim=1), torch.ones(2))


def test_global_pool_on_a_hand_built_map():
    """Reference: hand arithmetic on a (1, 2, 2, 3) map: channel 0 = 0..5 (mean 2.5, max 5),
    channel 1 = -(0..5) (mean -2.5, max 0); avgmax = avg + max = (7.5, -2.5)."""
    x = torch.cat([torch.arange(6.0), -torch.arange(6.0)]).view(1, 2, 2, 3)
    assert GlobalPool("avg")(x).tolist() == [[2.5, -2.5]]
    assert GlobalPool("max")(x).tolist() == [[5.0, 0.0]]
    assert GlobalPool("avgmax")(x).tolist() == [[7.5, -2.5]]
    assert GlobalPool("avgmax")(x.to(memory_format=torch.channels_last)).tolist() == [[7.5, -2.5]]


@pytest.mark.parametrize("name", ["small_cnn", *PRETRAINED])
def test_pooling_replaces_the_backbone_global_pool(name):
    """Reference: model.pooling is the one global pool of every backbone (none of the backbone's
    own left); on the same weights the features satisfy avgmax = avg + max and max >= avg (at 64
    px, where every backbone's last map is 2 x 2, so max and avg differ)."""
    torch.manual_seed(0)
    model = build_model(_cfg(name, pooling="max"), 3, MEAN3, STD3).eval()
    pools = [m for m in model.modules() if isinstance(m, GlobalPool)]
    assert len(pools) == 1 and pools[0].mode == "max"
    assert not any(isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) for m in model.modules())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = {}
    with torch.no_grad():
        for mode in ("avg", "max", "avgmax"):
            pools[0].mode = mode
            out[mode] = model.features(x)
    # relative tolerances: GoogLeNet's init (std 0.01 everywhere) leaves activations near 1e-12
    torch.testing.assert_close(out["avgmax"], out["avg"] + out["max"], atol=0, rtol=1e-5)
    assert (out["max"] >= out["avg"] * (1 - 1e-6)).all() and not torch.allclose(out["max"], out["avg"], atol=0, rtol=1e-3)


@pytest.mark.parametrize("name", PRETRAINED)
def test_frozen_bn_survives_a_training_step(name):
    """Reference: the frozen-BN rule (Roth et al.): after a forward, backward and SGD step in
    train mode every BN running statistic is bit-identical, while BN's affine parameters still
    get gradients and the convolutions change."""
    torch.manual_seed(0)
    model = build_model(_cfg(name, freeze_bn=True), 3, MEAN3, STD3).train()
    assert all(not bn.training for bn in _bn_layers(model)) and model.features.training
    before = _bn_state(model)
    convs = [m for m in model.features.modules() if isinstance(m, nn.Conv2d)]
    last_conv = convs[-1].weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(_images(2, 3, SIZE))[:, 0].sum().backward()
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, _bn_state(model), strict=True))
    assert all(bn.weight.requires_grad for bn in _bn_layers(model))
    assert any(bn.weight.grad is not None and bool(bn.weight.grad.any()) for bn in _bn_layers(model))
    assert not torch.equal(last_conv, convs[-1].weight)


def test_input_normalization_constants():
    """Reference: the weights' documented input conventions on the 0-255 scale: torchvision's
    ImageNet mean/std * 255 (ResNet50); torchvision's googlenet transform_input, (x/255 - 0.5)/0.5
    = (x - 127.5)/127.5; Cadene's BN-Inception settings: BGR, mean (104, 117, 128), std 1."""
    resnet = input_normalization("resnet50")
    torch.testing.assert_close(torch.tensor(resnet[0]), torch.tensor([123.675, 116.28, 103.53]))
    torch.testing.assert_close(torch.tensor(resnet[1]), torch.tensor([58.395, 57.12, 57.375]))
    assert resnet[2] is False
    assert input_normalization("googlenet") == ((127.5,) * 3, (127.5,) * 3, False)
    assert input_normalization("bninception") == ((104.0, 117.0, 128.0), (1.0, 1.0, 1.0), True)
    with pytest.raises(ValueError, match="model.name: 'small_cnn' has no pretrained weights"):
        input_normalization("small_cnn")


def test_googlenet_normalization_equals_torchvision_transform_input():
    """Reference: torchvision's GoogLeNet._transform_input applied to ImageNet-normalised input
    (what torchvision's pretrained googlenet does) equals our (x - 127.5) / 127.5."""
    x = _images(2, 3, 8).float()
    imagenet = (x / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    tv = GoogLeNet(aux_logits=False, transform_input=True, init_weights=False)._transform_input(imagenet)
    mean, std, _ = input_normalization("googlenet")
    torch.testing.assert_close(tv, (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1), atol=1e-5, rtol=1e-5)


def test_pretrained_models_use_their_own_normalization():
    """Reference: the constants above: with pretrained the data's mean/std are ignored; grayscale
    gets the mean of the RGB constants and no flip; without pretrained the data's statistics, RGB.
    build_model puts them in the model's buffers (the weights file is not needed: load_weights=False)."""
    for name in PRETRAINED:
        mean, std, bgr = input_normalization(name)
        assert model_normalization(_cfg(name, pretrained=True), 3, MEAN3, STD3) == (mean, std, bgr)
        gray = model_normalization(_cfg(name, pretrained=True), 1, MEAN1, STD1)
        assert gray == ((sum(mean) / 3,), (sum(std) / 3,), False)
        assert model_normalization(_cfg(name), 3, MEAN3, STD3) == (tuple(MEAN3), tuple(STD3), False)
    assert model_normalization(_cfg("small_cnn"), 1, MEAN1, STD1) == (tuple(MEAN1), tuple(STD1), False)
    model = build_model(_cfg("bninception", pretrained=True), 3, MEAN3, STD3, load_weights=False)
    assert torch.equal(model.mean.flatten(), torch.tensor([104.0, 117.0, 128.0])) and torch.equal(model.std.flatten(), torch.ones(3))
    assert model.bgr is True and model.weights_sha256 is None


def test_bninception_forward_flips_to_bgr_then_subtracts_the_mean():
    """Reference: the Caffe convention written out: x[:, ::-1] - (104, 117, 128), std 1, then
    features, head, L2 normalisation; also for channels_last input. Under CPU autocast (bfloat16)
    the same embedding within bfloat16 precision."""
    torch.manual_seed(0)
    model = build_model(_cfg("bninception", pretrained=True), 3, MEAN3, STD3, load_weights=False).eval()
    images = _images(2, 3, SIZE)
    with torch.no_grad():
        x = images.float()[:, [2, 1, 0]] - torch.tensor([104.0, 117.0, 128.0]).view(1, 3, 1, 1)
        ref = F.normalize(model.head(model.features(x)), dim=-1)
        out = model(images)
        last = model(images.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(images)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(last, ref, atol=1e-5, rtol=0)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, atol=0.05, rtol=0)


@pytest.mark.parametrize("name", PRETRAINED)
def test_grayscale_stem_sums_rgb_filters(name, official):
    """Reference: for 1 input channel the pretrained first conv becomes the sum of its RGB filters
    (the file's tensor summed over dim 1), same stride/padding/bias; the rest as in the file."""
    source, path, _ = official[name]
    stem = {"resnet50": "conv1", "googlenet": "conv1.conv", "bninception": "conv1_7x7_s2"}[name]
    model = build_model(_cfg(name, pretrained=True, weights=str(path)), 1, MEAN1, STD1)
    conv, ref = model.features.get_submodule(stem), source.get_submodule(stem)
    assert conv.in_channels == 1 and (conv.stride, conv.padding) == (ref.stride, ref.padding)
    torch.testing.assert_close(conv.weight.data, ref.weight.sum(dim=1, keepdim=True), atol=1e-6, rtol=0)
    assert (conv.bias is None) == (ref.bias is None)
    if ref.bias is not None:
        assert torch.equal(conv.bias.data, ref.bias.data)
    with torch.no_grad():
        assert model.eval()(_images(2, 1, SIZE)).shape == (2, 16)


def test_save_load_round_trip_keeps_the_pretrained_input_convention(official, tmp_path, monkeypatch):
    """Reference: the model itself: a BN-Inception started from the (fake) ImageNet file, trained
    one step, saved and loaded again embeds bit-identically; the reload never reads a weights file,
    keeps BGR and (104, 117, 128) although the data's statistics differ, and keeps the file's
    SHA-256."""
    _, path, sha = official["bninception"]
    params = parse_params({"model": {"name": "bninception", "pretrained": True, "weights": str(path), "pooling": "avgmax",
                                     "freeze_bn": True, "embed_dim": 16}})
    stats = Stats(mean=MEAN3, std=STD3, channels=3, sha256="0" * 64)
    torch.manual_seed(0)
    model = build_model(params.model, stats.channels, stats.mean, stats.std).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(_images(2, 3, SIZE))[:, 0].sum().backward()
    optimizer.step()
    model.eval()
    images = _images(3, 3, SIZE, seed=5)
    with torch.no_grad():
        expected = model(images)
    save_model(tmp_path / "model.pt", model, params, stats)

    def no_file(*args):
        raise AssertionError("load_model read an ImageNet weights file")

    monkeypatch.setattr("dml.models.registry.read_weights", no_file)
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.bgr is True and loaded.weights_sha256 == sha and not loaded.training
    assert torch.equal(loaded.mean.flatten(), torch.tensor([104.0, 117.0, 128.0]))
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), expected, rtol=0, atol=0)


def test_weights_need_pretrained_and_small_cnn_has_none():
    """Reference: the schema's one-line errors naming the key."""
    with pytest.raises(ValueError, match="model.weights: 'w.pth' is set but model.pretrained is false"):
        ModelConfig(name="resnet50", weights="w.pth")
    with pytest.raises(ValueError, match="model.pretrained: small_cnn has no pretrained weights"):
        ModelConfig(name="small_cnn", pretrained=True)
    with pytest.raises(ValueError, match="pooling"):
        ModelConfig(pooling="sum")


def test_models_registry_and_embedding_model_type():
    """Reference: the ModelConfig Literal names; build_model returns an EmbeddingModel whose head
    maps the backbone's feature width (256 for small_cnn) to embed_dim; without pretrained the
    buffers hold the data's statistics."""
    assert set(MODELS) == {"small_cnn", "resnet50", "googlenet", "bninception"}
    model = build_model(ModelConfig(normalize=True, name="small_cnn", embed_dim=24), 1, MEAN1, STD1)
    assert isinstance(model, EmbeddingModel)
    assert (model.head.in_features, model.head.out_features) == (256, 24)
    assert torch.equal(model.mean, torch.tensor(MEAN1).view(1, -1, 1, 1))
    assert torch.equal(model.std, torch.tensor(STD1).view(1, -1, 1, 1))


@pytest.mark.integration
def test_model_config_is_torch_free():
    """Reference: the schema's promise (dml/schema.py): validating params imports no torch."""
    import subprocess
    import sys

    code = "import sys, dml.config; from dml.config import ModelConfig; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})


@pytest.mark.parametrize("shape", [(3, 4, 8, 8), (2, 3, 7, 9), (1, 1, 2, 3)])
def test_eval_max_pool_equals_torch_max_pool(shape):
    """Reference: ``torch.nn.functional.max_pool2d(x, 2)``: the no-gradient path gives the same
    values (ties, NaN and odd sizes included), and with gradients the module is torch's kernel
    (the same gradients)."""
    from dml.models.base import MaxPool2x2

    x = torch.randn(*shape).relu().round(decimals=1)  # many ties
    x.view(-1)[::7] = float("nan")
    pool = MaxPool2x2()
    with torch.no_grad():
        assert torch.equal(pool(x).isnan(), F.max_pool2d(x, 2).isnan())
        assert torch.equal(pool(x).nan_to_num(-1.0), F.max_pool2d(x, 2).nan_to_num(-1.0))
    x = x.nan_to_num(0.5).requires_grad_()
    grad = torch.randn(*F.max_pool2d(x, 2).shape)
    assert torch.equal(torch.autograd.grad(pool(x), x, grad)[0], torch.autograd.grad(F.max_pool2d(x, 2), x, grad)[0])

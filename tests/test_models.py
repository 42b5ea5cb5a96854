"""Backbones (dml/models): the forward pass against its definition (normalise input, features,
linear head, L2 normalisation), BatchNorm freezing against the BN running-average formula,
parameter counts against the layer arithmetic, and ResNet50 weight loading against a fake
checkpoint with known values."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

from dml.config import ModelConfig
from dml.models import MODELS, EmbeddingModel, build_model
from dml.models.resnet import pretrained_weights_path

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


# --------------------------------------------------------------------------- ResNet50


def _expected_weights_path(torch_home: Path) -> Path:
    """torch.hub's documented layout: $TORCH_HOME/hub/checkpoints/<file name of the weights URL>."""
    return torch_home / "hub" / "checkpoints" / Path(ResNet50_Weights.IMAGENET1K_V1.url).name


@pytest.fixture(scope="module")
def fake_checkpoint(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A torchvision resnet50(weights=None) state_dict with recognisable values: conv1.weight set
    to a known pattern and layer4.2.bn3.running_mean set to the constant 0.4242, saved where the
    weights API caches the ImageNet checkpoint under a temporary TORCH_HOME."""
    home = tmp_path_factory.mktemp("torch_home")
    state = resnet50(weights=None).state_dict()
    state["conv1.weight"] = torch.linspace(-1, 1, state["conv1.weight"].numel()).view_as(state["conv1.weight"])
    state["layer4.2.bn3.running_mean"] = torch.full_like(state["layer4.2.bn3.running_mean"], 0.4242)
    path = _expected_weights_path(home)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return home, {k: state[k] for k in ("conv1.weight", "layer4.2.bn3.running_mean", "layer1.0.conv1.weight")}


def test_resnet50_missing_weights_error_names_path(tmp_path, monkeypatch):
    """Reference: torch.hub's cache layout under TORCH_HOME: the error names
    $TORCH_HOME/hub/checkpoints/resnet50-<hash>.pth and says to download it there."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = _expected_weights_path(tmp_path)
    assert pretrained_weights_path() == expected
    with pytest.raises(FileNotFoundError) as err:
        build_model(ModelConfig(normalize=True, name="resnet50", pretrained=True), 3, MEAN3, STD3)
    assert str(expected) in str(err.value) and "download" in str(err.value)


def test_resnet50_loads_weights_from_torch_hub_cache(fake_checkpoint, monkeypatch):
    """Reference: the fake checkpoint's known tensors (conv1 pattern, BN running mean 0.4242, an
    untouched conv): they are in the backbone after build_model(pretrained=True); the forward on
    a 2x3x64x64 input gives (2, 128) unit vectors."""
    home, known = fake_checkpoint
    monkeypatch.setenv("TORCH_HOME", str(home))
    model = build_model(ModelConfig(normalize=True, name="resnet50", pretrained=True, embed_dim=128), 3, MEAN3, STD3)
    feats = model.features
    assert torch.equal(feats.conv1.weight.data, known["conv1.weight"])
    assert torch.equal(feats.layer4[2].bn3.running_mean, known["layer4.2.bn3.running_mean"])
    assert torch.equal(feats.layer1[0].conv1.weight.data, known["layer1.0.conv1.weight"])
    assert isinstance(feats.fc, nn.Identity) and model.head.in_features == 2048
    with torch.no_grad():
        out = model.eval()(_images(2, 3, 64))
    assert out.shape == (2, 128)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2), atol=1e-6, rtol=0)


def test_resnet50_grayscale_conv1_sums_rgb_filters(fake_checkpoint, monkeypatch):
    """Reference: for 1 input channel the pretrained conv1 becomes the sum of its RGB filters
    (the checkpoint's pattern summed over dim 1), shape (64, 1, 7, 7), stride 2, padding 3."""
    home, known = fake_checkpoint
    monkeypatch.setenv("TORCH_HOME", str(home))
    model = build_model(ModelConfig(normalize=True, name="resnet50", pretrained=True, embed_dim=16), 1, MEAN1, STD1)
    conv = model.features.conv1
    assert conv.weight.shape == (64, 1, 7, 7) and conv.stride == (2, 2) and conv.padding == (3, 3) and conv.bias is None
    torch.testing.assert_close(conv.weight.data, known["conv1.weight"].sum(dim=1, keepdim=True), atol=1e-6, rtol=0)
    assert torch.equal(model.features.layer4[2].bn3.running_mean, known["layer4.2.bn3.running_mean"])


def test_resnet50_unpretrained_never_reads_cache(tmp_path, monkeypatch):
    """Reference: pretrained=False needs no file (empty TORCH_HOME); the forward on 2x3x64x64 gives
    (2, 32) unit vectors; freeze_bn puts all 53 BatchNorm layers of ResNet50 in eval mode."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = build_model(ModelConfig(normalize=True, name="resnet50", embed_dim=32, freeze_bn=True), 3, MEAN3, STD3).train()
    bns = _bn_layers(model)
    assert len(bns) == 53 and all(not bn.training for bn in bns)
    before = _bn_state(model)
    with torch.no_grad():
        out = model(_images(2, 3, 64))
    assert out.shape == (2, 32)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2), atol=1e-6, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip(before, _bn_state(model), strict=True))
    assert not any(tmp_path.rglob("*"))


def test_models_registry_and_embedding_model_type():
    """Reference: the ModelConfig Literal names; build_model returns an EmbeddingModel whose head
    maps the backbone's feature width (256 for small_cnn) to embed_dim."""
    assert set(MODELS) == {"small_cnn", "resnet50"}
    model = build_model(ModelConfig(normalize=True, name="small_cnn", embed_dim=24), 1, MEAN1, STD1)
    assert isinstance(model, EmbeddingModel)
    assert (model.head.in_features, model.head.out_features) == (256, 24)
    assert torch.equal(model.mean, torch.tensor(MEAN1).view(1, -1, 1, 1))
    assert torch.equal(model.std, torch.tensor(STD1).view(1, -1, 1, 1))

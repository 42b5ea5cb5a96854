"""Triplet and margin losses (dml/losses/ranking.py): hand-computed 2-D cases, closed-form
gradients, a cross-check of the triplet loss against pytorch-metric-learning, and the registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dml.losses.config import LossSection, MarginKnobs, TripletKnobs
from dml.losses.ranking import MarginLoss, TripletLoss
from dml.losses.registry import LOSSES, build_loss
from dml.miners.simple import RandomMiner
from dml.tuples import Triplets

# A 2-D configuration with exact distances (3-4-5 triangles):
#   e0 = (0, 0)     class 0
#   e1 = (0.6, 0.8) class 0   d(0,1) = 1.0
#   e2 = (0.9, 0)   class 1   d(0,2) = 0.9, d(1,2) = 0.8544
#   e3 = (0.9, 1.2) class 1   d(0,3) = 1.5, d(1,3) = 0.5, d(2,3) = 1.2
POINTS = torch.tensor([[0.0, 0.0], [0.6, 0.8], [0.9, 0.0], [0.9, 1.2]])
LABELS = torch.tensor([0, 0, 1, 1])
# (anchor, positive, negative): d_ap, d_an (squared: d_ap^2, d_an^2)
#   (0, 1, 2): 1.0, 0.9  (1.0, 0.81)
#   (0, 1, 3): 1.0, 1.5  (1.0, 2.25)
#   (2, 3, 0): 1.2, 0.9  (1.44, 0.81)
#   (1, 0, 3): 1.0, 0.5  (1.0, 0.25)
TRIPLETS = Triplets(torch.tensor([0, 0, 2, 1]), torch.tensor([1, 1, 3, 0]), torch.tensor([2, 3, 0, 3]))


def _points() -> torch.Tensor:
    return POINTS.clone().requires_grad_(True)


def _empty() -> Triplets:
    e = torch.empty(0, dtype=torch.long)
    return Triplets(e, e, e)


# --------------------------------------------------------------------------- triplet loss


def test_triplet_loss_hand_computed_2d():
    """Reference: by hand, relu(d_ap^2 - d_an^2 + 0.2) = 0.39, 0, 0.83, 0.95 -> mean 0.5425."""
    loss = TripletLoss(TripletKnobs(margin=0.2))(_points(), LABELS, TRIPLETS)
    assert loss.item() == pytest.approx(0.5425, abs=1e-6)


def test_triplet_loss_hand_computed_margin_zero():
    """Reference: by hand with m = 0: relu(0.19), relu(-1.25), relu(0.63), relu(0.75) -> 1.57 / 4."""
    loss = TripletLoss(TripletKnobs(margin=0.0))(_points(), LABELS, TRIPLETS)
    assert loss.item() == pytest.approx(0.3925, abs=1e-6)


def test_triplet_loss_gradient_hand_computed():
    """Reference: d/dx of mean relu(|a-p|^2 - |a-n|^2 + m) is 2(n - p)/T on the anchor, -2(a - p)/T
    on the positive, +2(a - n)/T on the negative, summed over active triplets only; written out
    for the 2-D case."""
    x = _points()
    TripletLoss(TripletKnobs(margin=0.2))(x, LABELS, TRIPLETS).backward()
    p = POINTS.double()
    expected = torch.zeros_like(p)
    for a, pos, neg in zip(*(t.tolist() for t in (TRIPLETS.anchors, TRIPLETS.positives, TRIPLETS.negatives))):
        if (p[a] - p[pos]).pow(2).sum() - (p[a] - p[neg]).pow(2).sum() + 0.2 <= 0:
            continue
        expected[a] += 2 * (p[neg] - p[pos]) / 4
        expected[pos] -= 2 * (p[a] - p[pos]) / 4
        expected[neg] += 2 * (p[a] - p[neg]) / 4
    torch.testing.assert_close(x.grad.double(), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("margin", [0.05, 0.2, 0.5])
def test_triplet_loss_matches_pytorch_metric_learning(margin):
    """Reference: PML TripletMarginLoss with squared Euclidean distances on the raw inputs
    (LpDistance(power=2, normalize_embeddings=False)), MeanReducer and the same triplets as
    indices_tuple (the method zoo's matching arguments); values and gradients must agree."""
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.losses import TripletMarginLoss
    from pytorch_metric_learning.reducers import MeanReducer

    pml = TripletMarginLoss(margin=margin, distance=LpDistance(power=2, normalize_embeddings=False), reducer=MeanReducer())
    assert not pml.smooth_loss and not pml.swap

    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 8, generator=g, dtype=torch.float64)
    labels = torch.arange(6).repeat_interleave(4)
    triplets = RandomMiner(seed=3)(x, labels)
    assert len(triplets) == 24 and bool((triplets.anchors != triplets.positives).all())

    x_ours = x.clone().requires_grad_(True)
    ours = TripletLoss(TripletKnobs(margin=margin))(x_ours, labels, triplets)
    ours.backward()
    x_pml = x.clone().requires_grad_(True)
    ref = pml(x_pml, labels, indices_tuple=(triplets.anchors, triplets.positives, triplets.negatives))
    ref.backward()
    assert 0 < ref.item()
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6)
    torch.testing.assert_close(x_ours.grad, x_pml.grad, atol=1e-6, rtol=1e-5)


def test_triplet_loss_empty_triplets_is_zero_and_backpropagates():
    """Reference: no triplets -> loss 0, and backward() works and yields an all-zero gradient."""
    x = _points()
    loss = TripletLoss()(x, LABELS, _empty())
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


# --------------------------------------------------------------------------- margin loss


def _margin_loss(beta, per_class=True, num_classes=3, margin=0.2) -> MarginLoss:
    loss = MarginLoss(MarginKnobs(alpha=margin, beta=1.2, beta_per_class=per_class), num_classes=num_classes)
    with torch.no_grad():
        loss.beta.copy_(torch.as_tensor(beta, dtype=torch.float32))
    return loss


def test_margin_loss_init_beta_shapes():
    """Reference: the constructor arguments: one beta per class (or one), initialised to beta."""
    assert torch.equal(MarginLoss(MarginKnobs(beta=0.6), num_classes=5).beta.data, torch.full((5,), 0.6))
    assert torch.equal(MarginLoss(MarginKnobs(beta=0.6, beta_per_class=False), num_classes=5).beta.data, torch.full((1,), 0.6))


def test_margin_loss_per_class_beta_hand_computed():
    """Reference: by hand with alpha 0.2, beta = (1.0, 0.8, 5.0) indexed by the anchor's class:
    pos = relu(d_ap - beta + a) = 0.2, 0.2, 0.6, 0.2 (4 active),
    neg = relu(beta - d_an + a) = 0.3, 0, 0.1, 0.7 (3 active) -> 2.3 / 7."""
    loss = _margin_loss([1.0, 0.8, 5.0])(_points(), LABELS, TRIPLETS)
    assert loss.item() == pytest.approx(2.3 / 7, abs=1e-6)


def test_margin_loss_uses_anchor_class_not_positive_or_negative():
    """Reference: by hand; swapping the betas of the two classes changes exactly the terms of the
    class-1 anchor (2, 3, 0): beta 1.0 -> pos 0.4, neg 0.3 and the class-0 anchors with beta 0.8:
    pos 0.4, 0.4, 0.4; neg 0.1, 0, 0.5 -> (0.4+0.3 + 1.2 + 0.6) / 7."""
    loss = _margin_loss([0.8, 1.0, 5.0])(_points(), LABELS, TRIPLETS)
    assert loss.item() == pytest.approx(2.5 / 7, abs=1e-6)


def test_margin_loss_shared_beta_hand_computed():
    """Reference: by hand, per_class=False with beta 1.1 for all anchors:
    pos = 0.1, 0.1, 0.3, 0.1 (4 active), neg = 0.4, 0, 0.4, 0.8 (3 active) -> 2.2 / 7."""
    loss = _margin_loss([1.1], per_class=False)(_points(), LABELS, TRIPLETS)
    assert loss.item() == pytest.approx(2.2 / 7, abs=1e-6)


def test_margin_loss_all_inactive_is_zero():
    """Reference: by hand, beta 1.0 and alpha 0 with d_ap <= 1 < d_an has no active term -> 0
    (division guarded, not 0/0)."""
    trip = Triplets(torch.tensor([0]), torch.tensor([1]), torch.tensor([3]))  # d_ap 1.0, d_an 1.5
    loss = _margin_loss([1.05, 1.05, 1.05], margin=0.0)(_points(), LABELS, trip)
    assert loss.item() == 0.0 and not torch.isnan(loss)


def test_margin_loss_beta_gradient_per_class():
    """Reference: by hand, d loss / d beta_c = sum over triplets whose anchor has
    class c of (-[pos>0] + [neg>0]) / active. Class 0: (0,1,2): -1+1, (0,1,3): -1+0, (1,0,3): -1+1
    -> -1/7; class 1: (2,3,0): -1+1 -> 0; class 2 (no anchor) -> 0."""
    loss_fn = _margin_loss([1.0, 0.8, 5.0])
    loss_fn(_points(), LABELS, TRIPLETS).backward()
    torch.testing.assert_close(loss_fn.beta.grad, torch.tensor([-1 / 7, 0.0, 0.0]), atol=1e-6, rtol=0)


def test_margin_loss_beta_gradient_shared():
    """Reference: with one beta 1.1, d loss / d beta = (-4 active pos + 3 active neg) / 7."""
    loss_fn = _margin_loss([1.1], per_class=False)
    loss_fn(_points(), LABELS, TRIPLETS).backward()
    torch.testing.assert_close(loss_fn.beta.grad, torch.tensor([-1 / 7]), atol=1e-6, rtol=0)


def test_margin_loss_gradient_matches_formula_on_random_data():
    """Reference: a direct float64 re-implementation of the formula (autograd of the written-out
    expression) on random unit vectors and random valid triplets, gradients w.r.t. both the
    embeddings and beta."""
    g = torch.Generator().manual_seed(1)
    x = F.normalize(torch.randn(20, 6, generator=g, dtype=torch.float64), dim=1)
    labels = torch.arange(5).repeat_interleave(4)
    triplets = RandomMiner(seed=2)(x, labels)
    betas = torch.tensor([0.9, 1.0, 1.1, 1.2, 1.3], dtype=torch.float64)

    loss_fn = MarginLoss(MarginKnobs(alpha=0.2), num_classes=5).double()
    with torch.no_grad():
        loss_fn.beta.copy_(betas)
    x1 = x.clone().requires_grad_(True)
    loss = loss_fn(x1, labels, triplets)
    loss.backward()

    x2 = x.clone().requires_grad_(True)
    b2 = betas.clone().requires_grad_(True)
    a, p, n = triplets.anchors, triplets.positives, triplets.negatives
    d_ap = torch.linalg.norm(x2[a] - x2[p], dim=1)
    d_an = torch.linalg.norm(x2[a] - x2[n], dim=1)
    beta = b2[labels[a]]
    pos = torch.clamp(d_ap - beta + 0.2, min=0)
    neg = torch.clamp(beta - d_an + 0.2, min=0)
    ref = (pos + neg).sum() / (int((pos > 0).sum()) + int((neg > 0).sum()))
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), abs=1e-7)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(loss_fn.beta.grad, b2.grad, atol=1e-7, rtol=1e-6)


def test_margin_loss_empty_triplets_is_zero_and_backpropagates():
    """Reference: no triplets -> loss 0 and a graph reaching both the embeddings and beta, whose
    gradients are exactly zero."""
    x = _points()
    loss_fn = MarginLoss(num_classes=3)
    loss = loss_fn(x, LABELS, _empty())
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert torch.equal(loss_fn.beta.grad, torch.zeros(3))


def test_margin_loss_nu_regulariser_hand_computed():
    """Reference: Wu et al.'s beta regulariser: (sum of hinge terms + nu * sum over triplets of
    beta[class(anchor)]) / active terms; by hand with beta (1.0, 0.8) and nu 0.1:
    (2.3 + 0.1 * (1.0 + 1.0 + 0.8 + 1.0)) / 7 (the paper's code raises NameError for nu > 0)."""
    loss_fn = MarginLoss(MarginKnobs(alpha=0.2, nu=0.1), num_classes=3)
    with torch.no_grad():
        loss_fn.beta.copy_(torch.tensor([1.0, 0.8, 5.0]))
    assert loss_fn(_points(), LABELS, TRIPLETS).item() == pytest.approx((2.3 + 0.1 * 3.8) / 7, abs=1e-6)


# --------------------------------------------------------------------------- registry


def test_build_loss_passes_knobs_and_declared_needs():
    """Reference: LossSection.<name> knobs reach the loss; a loss gets num_classes / embed_dim
    exactly when its knobs declare them; the beta group follows loss.margin.optim."""
    section = LossSection(name="margin", margin={"alpha": 0.1, "beta": 0.6, "optim": {"lr": 5e-4}})
    loss = build_loss(section, num_classes=7, embed_dim=16)
    assert isinstance(loss, MarginLoss) and loss.margin == 0.1
    assert torch.equal(loss.beta.data, torch.full((7,), 0.6))
    groups = loss.param_groups(model_lr=1e-3)
    assert len(groups) == 1 and groups[0]["lr"] == 5e-4 and groups[0]["weight_decay"] == 0.0
    assert groups[0]["params"][0] is loss.beta

    relative = build_loss(LossSection(margin={"optim": {"lr": 2.0, "lr_relative": True, "weight_decay": 1e-4}}), 7, 16)
    assert relative.param_groups(model_lr=1e-3)[0]["lr"] == pytest.approx(2e-3)
    assert relative.param_groups(model_lr=1e-3)[0]["weight_decay"] == 1e-4

    shared = build_loss(LossSection(margin={"beta_per_class": False}), 7, 16)
    assert shared.beta.shape == (1,) and shared.beta.item() == pytest.approx(1.2)

    trip = build_loss(LossSection(name="triplet", triplet={"margin": 0.3}), 7, 16)
    assert isinstance(trip, TripletLoss) and trip.margin == 0.3
    assert trip.param_groups(model_lr=1e-3) == []


def test_every_registered_loss_matches_its_knobs_and_builds():
    """Reference: the registry contract: LOSSES[name].Knobs is the type of LossSection.<name>, and
    every loss builds from the default knobs with the needs it declares."""
    section = LossSection()
    for name, cls in LOSSES.items():
        assert cls.Knobs is type(getattr(section, name)), name
        loss = build_loss(section.model_copy(update={"name": name}), num_classes=5, embed_dim=8)
        assert isinstance(loss, cls)
        if any(p.requires_grad for p in loss.parameters()):
            assert loss.param_groups(1e-3), f"{name}: own parameters without an optimiser group"

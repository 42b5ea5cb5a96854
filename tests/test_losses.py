"""Ranking losses (dml/losses): hand-computed 2-D cases, closed-form gradients, and a cross-check
of the triplet loss against pytorch-metric-learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dml.config import LossConfig
from dml.losses import LOSSES, MarginLoss, TripletLoss, build_loss, loss_param_groups
from dml.miners import RandomMiner, Triplets

# A 2-D configuration with exact distances (3-4-5 triangles):
#   e0 = (0, 0)     class 0
#   e1 = (0.6, 0.8) class 0   d(0,1) = 1.0
#   e2 = (0.9, 0)   class 1   d(0,2) = 0.9, d(1,2) = 0.8544
#   e3 = (0.9, 1.2) class 1   d(0,3) = 1.5, d(1,3) = 0.5, d(2,3) = 1.2
POINTS = torch.tensor([[0.0, 0.0], [0.6, 0.8], [0.9, 0.0], [0.9, 1.2]])
LABELS = torch.tensor([0, 0, 1, 1])
# (anchor, positive, negative): d_ap, d_an
#   (0, 1, 2): 1.0, 0.9
#   (0, 1, 3): 1.0, 1.5
#   (2, 3, 0): 1.2, 0.9
#   (1, 0, 3): 1.0, 0.5
TRIPLETS = Triplets(torch.tensor([0, 0, 2, 1]), torch.tensor([1, 1, 3, 0]), torch.tensor([2, 3, 0, 3]))


def _points() -> torch.Tensor:
    return POINTS.clone().requires_grad_(True)


def _empty() -> Triplets:
    e = torch.empty(0, dtype=torch.long)
    return Triplets(e, e, e)


# --------------------------------------------------------------------------- triplet loss


def test_triplet_loss_hand_computed_2d():
    """Reference: by hand, relu(d_ap - d_an + 0.2) = 0.3, 0, 0.5, 0.7 -> mean 0.375."""
    loss = TripletLoss(margin=0.2)(_points(), LABELS, TRIPLETS)
    assert loss.item() == pytest.approx(0.375, abs=1e-6)


def test_triplet_loss_hand_computed_margin_zero():
    """Reference: by hand with m = 0: relu(0.1), relu(-0.5), relu(0.3), relu(0.5) -> 0.9 / 4."""
    loss = TripletLoss(margin=0.0)(_points(), LABELS, TRIPLETS)
    assert loss.item() == pytest.approx(0.225, abs=1e-6)


def test_triplet_loss_gradient_hand_computed():
    """Reference: d/dx of mean relu(|a-p| - |a-n| + m) is (u_ap - u_an)/T on the anchor, -u_ap/T on
    the positive, +u_an/T on the negative (u = unit vector from the other point to the anchor),
    summed over active triplets only; written out for the 2-D case."""
    x = _points()
    TripletLoss(margin=0.2)(x, LABELS, TRIPLETS).backward()
    p = POINTS.double()
    expected = torch.zeros_like(p)
    for a, pos, neg in zip(*(t.tolist() for t in (TRIPLETS.anchors, TRIPLETS.positives, TRIPLETS.negatives))):
        d_ap = (p[a] - p[pos]).norm()
        d_an = (p[a] - p[neg]).norm()
        if d_ap - d_an + 0.2 <= 0:
            continue
        u_ap = (p[a] - p[pos]) / d_ap
        u_an = (p[a] - p[neg]) / d_an
        expected[a] += (u_ap - u_an) / 4
        expected[pos] -= u_ap / 4
        expected[neg] += u_an / 4
    torch.testing.assert_close(x.grad.double(), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("margin", [0.05, 0.2, 0.5])
def test_triplet_loss_matches_pytorch_metric_learning(margin):
    """Reference: PML TripletMarginLoss (MeanReducer, same triplets as indices_tuple). PML's default
    distance is non-squared Euclidean on L2-normalised inputs (asserted), so ours is applied to
    F.normalize(x); values and gradients w.r.t. the raw x must agree."""
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.losses import TripletMarginLoss
    from pytorch_metric_learning.reducers import MeanReducer

    pml = TripletMarginLoss(margin=margin, reducer=MeanReducer())
    assert isinstance(pml.distance, LpDistance)
    assert pml.distance.normalize_embeddings and pml.distance.p == 2 and pml.distance.power == 1
    assert not pml.smooth_loss and not pml.swap

    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 8, generator=g, dtype=torch.float64)
    labels = torch.arange(6).repeat_interleave(4)
    triplets = RandomMiner(seed=3)(x, labels)
    assert len(triplets) == 24 and bool((triplets.anchors != triplets.positives).all())

    x_ours = x.clone().requires_grad_(True)
    ours = TripletLoss(margin)(F.normalize(x_ours, dim=1), labels, triplets)
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
    loss = TripletLoss(0.2)(x, LABELS, _empty())
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


# --------------------------------------------------------------------------- margin loss


def _margin_loss(beta, per_class=True, num_classes=3, margin=0.2) -> MarginLoss:
    loss = MarginLoss(num_classes, margin=margin, beta=1.2, per_class=per_class)
    with torch.no_grad():
        loss.beta.copy_(torch.as_tensor(beta, dtype=torch.float32))
    return loss


def test_margin_loss_init_beta_shapes():
    """Reference: the constructor arguments: one beta per class (or one), initialised to beta."""
    assert torch.equal(MarginLoss(5, beta=0.6).beta.data, torch.full((5,), 0.6))
    assert torch.equal(MarginLoss(5, beta=0.6, per_class=False).beta.data, torch.full((1,), 0.6))


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

    loss_fn = MarginLoss(5, margin=0.2).double()
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
    loss_fn = MarginLoss(3)
    loss = loss_fn(x, LABELS, _empty())
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert torch.equal(loss_fn.beta.grad, torch.zeros(3))


# --------------------------------------------------------------------------- registry


def test_build_loss_passes_config_values():
    """Reference: the LossConfig fields: margin -> alpha / m, beta init, beta_per_class, beta_lr."""
    assert set(LOSSES) == {"margin", "triplet"}
    cfg = LossConfig(name="margin", margin=0.1, beta=0.6, beta_per_class=True, beta_lr=5e-4)
    loss = build_loss(cfg, 7)
    assert isinstance(loss, MarginLoss) and loss.margin == 0.1
    assert torch.equal(loss.beta.data, torch.full((7,), 0.6))
    groups = loss_param_groups(loss, cfg)
    assert len(groups) == 1 and groups[0]["lr"] == 5e-4 and groups[0]["params"][0] is loss.beta

    shared = build_loss(LossConfig(name="margin", beta_per_class=False), 7)
    assert shared.beta.shape == (1,) and shared.beta.item() == pytest.approx(1.2)

    trip = build_loss(LossConfig(name="triplet", margin=0.3), 7)
    assert isinstance(trip, TripletLoss) and trip.margin == 0.3
    assert loss_param_groups(trip, LossConfig(name="triplet")) == []

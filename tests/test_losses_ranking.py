"""Contrastive, quadruplet, SNR (mined triplets) and multi-similarity, histogram (whole batch):
values and gradients against PML with matching arguments, hand-computed 2-D cases and float64
written-out formulas; empty and degenerate batches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chisquare

from dml.losses.batch import HistogramLoss, MultiSimilarityLoss
from dml.losses.config import (
    ContrastiveKnobs,
    HistogramKnobs,
    LossSection,
    MultiSimilarityKnobs,
    QuadrupletKnobs,
    SNRKnobs,
)
from dml.losses.ranking import ContrastiveLoss, QuadrupletLoss, SNRLoss
from dml.losses.registry import LOSSES, build_loss
from dml.tuples import Triplets

# 2-D points with exact distances (3-4-5 triangles):
#   e0 = (0, 0)     class 0
#   e1 = (0.6, 0.8) class 0   d(0,1) = 1.0
#   e2 = (0.9, 0)   class 1   d(0,2) = 0.9, d(1,2)^2 = 0.73
#   e3 = (0.9, 1.2) class 1   d(0,3) = 1.5, d(1,3) = 0.5, d(2,3) = 1.2
POINTS = torch.tensor([[0.0, 0.0], [0.6, 0.8], [0.9, 0.0], [0.9, 1.2]])
LABELS = torch.tensor([0, 0, 1, 1])
# (anchor, positive, negative): d_ap, d_an = (1.0, 0.9), (1.0, 1.5), (1.2, 0.9), (1.0, 0.5)
TRIPLETS = Triplets(torch.tensor([0, 0, 2, 1]), torch.tensor([1, 1, 3, 0]), torch.tensor([2, 3, 0, 3]))


def _points() -> torch.Tensor:
    return POINTS.clone().requires_grad_(True)


def _triplets(*rows: tuple[int, int, int]) -> Triplets:
    a, p, n = (torch.tensor(list(col), dtype=torch.long) for col in zip(*rows))
    return Triplets(a, p, n)


def _empty() -> Triplets:
    e = torch.empty(0, dtype=torch.long)
    return Triplets(e, e, e)


def _batch(n_classes: int = 6, per_class: int = 4, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_classes * per_class, dim, generator=g, dtype=torch.float64)
    return x, torch.arange(n_classes).repeat_interleave(per_class)


def _random_triplets(labels: torch.Tensor, count: int, rho: int = 0, seed: int = 1) -> Triplets:
    """``count`` uniformly random (anchor, positive, negative) triplets, then ``rho`` rho-regularising
    triplets (anchor, anchor, same-class sample) as the rho_distance miner emits them."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(count + rho):
        a = int(torch.randint(len(labels), (1,), generator=g))
        same = ((labels == labels[a]) & (torch.arange(len(labels)) != a)).nonzero().squeeze(1)
        other = (labels != labels[a]).nonzero().squeeze(1)
        p = int(same[torch.randint(len(same), (1,), generator=g)])
        n = int(other[torch.randint(len(other), (1,), generator=g)])
        rows.append((a, p, n) if i < count else (a, a, p))
    return _triplets(*rows)


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


def assert_same_value_and_gradient(ours, reference, x: torch.Tensor, reference_positive: bool = True) -> None:
    """``ours(x)`` and ``reference(x)`` (each on its own leaf copy of ``x``) agree in value to 1e-5
    and in gradient w.r.t. ``x``; with ``reference_positive`` the reference must not be a trivial 0."""
    x_ours, x_ref = _leaf(x), _leaf(x)
    value, expected = ours(x_ours), reference(x_ref)
    value.backward()
    expected.backward()
    if reference_positive:
        assert expected.item() > 0
    assert value.item() == pytest.approx(expected.item(), abs=1e-5)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-6, rtol=1e-5)


def _assert_zero_and_backprop(loss: torch.Tensor, x: torch.Tensor) -> None:
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", ["contrastive", "quadruplet", "snr", "multisimilarity", "histogram"])
def test_registered_and_built_from_default_knobs(name):
    """Reference: the knob models in dml/losses/config.py: build_loss gives the registered class
    with the section's default knobs."""
    loss = build_loss(LossSection(name=name), num_classes=3, embed_dim=8)
    assert type(loss) is LOSSES[name]
    assert loss.knobs == getattr(LossSection(), name)
    assert loss.param_groups(1e-5) == []


# --------------------------------------------------------------------------- contrastive


def test_contrastive_hand_computed_2d():
    """Reference: by hand, pos_margin 0: mean d_ap = (1 + 1 + 1.2 + 1)/4 = 1.05; neg_margin 1:
    mean relu(1 - d_an) = (0.1 + 0 + 0.1 + 0.5)/4 = 0.175; total 1.225."""
    loss = ContrastiveLoss(ContrastiveKnobs(pos_margin=0.0, neg_margin=1.0))(_points(), LABELS, TRIPLETS)
    assert loss.item() == pytest.approx(1.225, abs=1e-5)


@pytest.mark.parametrize(("pos_margin", "neg_margin"), [(0.0, 1.0), (0.8, 1.2)])
def test_contrastive_matches_pml(pos_margin, neg_margin):
    """Reference: PML ContrastiveLoss(pos_margin, neg_margin, distance=LpDistance(normalize_embeddings=
    False), reducer=MeanReducer()) with the same triplets as indices_tuple; value and gradient."""
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.losses import ContrastiveLoss as PMLContrastive
    from pytorch_metric_learning.reducers import MeanReducer

    x, labels = _batch()
    x = x / 2  # distances around 1, so that both hinges have active and inactive pairs
    triplets = _random_triplets(labels, 30)
    pml = PMLContrastive(pos_margin, neg_margin, distance=LpDistance(normalize_embeddings=False), reducer=MeanReducer())
    assert_same_value_and_gradient(
        lambda x_ours: ContrastiveLoss(ContrastiveKnobs(pos_margin=pos_margin, neg_margin=neg_margin))(x_ours, labels, triplets),
        lambda x_ref: pml(x_ref, labels, indices_tuple=(triplets.anchors, triplets.positives, triplets.negatives)),
        x,
        reference_positive=True,
    )


def test_contrastive_rho_triplet_gradient_hand_computed():
    """Reference: by hand, rho triplet (1, 1, 0) with neg_margin 1.5: the negative term is
    relu(1.5 - d(1, 0)) = 0.5 with gradient -(e1 - e0)/d = -(0.6, 0.8) on e1 and +(0.6, 0.8) on e0;
    the positive term is d(1, 1) = sqrt(1e-8) = 1e-4 with zero (finite) gradient."""
    x = _points()
    loss = ContrastiveLoss(ContrastiveKnobs(pos_margin=0.0, neg_margin=1.5))(x, LABELS, _triplets((1, 1, 0)))
    loss.backward()
    assert loss.item() == pytest.approx(0.5 + 1e-4, abs=1e-6)
    expected = torch.tensor([[0.6, 0.8], [-0.6, -0.8], [0.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(x.grad, expected, atol=1e-6, rtol=0)


def test_contrastive_empty_triplets_is_zero_and_backpropagates():
    """Reference: no triplets -> loss 0, backward() gives an all-zero gradient."""
    x = _points()
    _assert_zero_and_backprop(ContrastiveLoss()(x, LABELS, _empty()), x)


# --------------------------------------------------------------------------- quadruplet


def _quadruplet_reference(
    x: torch.Tensor, triplets: Triplets, fourth: torch.Tensor, has_fourth: torch.Tensor, alpha1: float, alpha2: float
) -> torch.Tensor:
    """Chen et al. Eq. 4 written out triplet by triplet, squared Euclidean distances."""
    first, second = [], []
    rows = zip(triplets.anchors.tolist(), triplets.positives.tolist(), triplets.negatives.tolist())
    for t, (a, p, n) in enumerate(rows):
        d2_ap = ((x[a] - x[p]) ** 2).sum()
        first.append(torch.clamp(d2_ap - ((x[a] - x[n]) ** 2).sum() + alpha1, min=0))
        if has_fourth[t]:
            second.append(torch.clamp(d2_ap - ((x[n] - x[int(fourth[t])]) ** 2).sum() + alpha2, min=0))
    total = torch.stack(first).mean()
    return total + torch.stack(second).mean() if second else total


@pytest.mark.parametrize(("alpha1", "alpha2"), [(0.2, 0.2), (1.0, 0.5)])
def test_quadruplet_matches_written_out_formula_with_same_draws(alpha1, alpha2):
    """Reference: float64 written-out Eq. 4 of Chen et al. (loop over triplets) with the n' the
    loss drew (re-drawn from the same seed via draw_fourth); value and autograd gradient of the
    reference. Includes rho triplets (a, a, p): d_ap = 0 must give finite gradients."""
    x, labels = _batch(dim=4)
    x = x / 2
    triplets = _random_triplets(labels, 30, rho=6)
    loss = QuadrupletLoss(QuadrupletKnobs(alpha1=alpha1, alpha2=alpha2))
    x_ours, x_ref = _leaf(x), _leaf(x)
    loss.manual_seed(7)
    ours = loss(x_ours, labels, triplets)
    ours.backward()
    loss.manual_seed(7)
    fourth, has_fourth = loss.draw_fourth(labels, triplets)
    assert bool(has_fourth.all())
    assert bool((labels[fourth] != labels[triplets.anchors]).all())
    assert bool((labels[fourth] != labels[triplets.negatives]).all())
    ref = _quadruplet_reference(x_ref, triplets, fourth, has_fourth, alpha1, alpha2)
    ref.backward()
    assert ref.item() > 0
    assert ours.item() == pytest.approx(ref.item(), abs=1e-5)
    assert torch.isfinite(x_ours.grad).all()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-6, rtol=1e-5)


def test_quadruplet_fourth_sample_uniform_over_valid_classes():
    """Reference: uniform distribution over the samples whose class is neither the anchor's nor
    the negative's (chi-square, fixed seed; 6000 draws per triplet), never an invalid one. The
    paper's code (bug 7) would also draw samples of the anchor's class."""
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3])
    draws = 6000
    # (0, 1, 2): classes 0 and 1 excluded -> n' in {4, 5, 6, 7};
    # rho (0, 0, 1): the "negative" is of class 0 -> n' in {2, ..., 7}.
    triplets = _triplets(*([(0, 1, 2)] * draws + [(0, 0, 1)] * draws))
    loss = QuadrupletLoss()
    loss.manual_seed(3)
    fourth, has_fourth = loss.draw_fourth(labels, triplets)
    assert bool(has_fourth.all())
    for block, valid in ((fourth[:draws], [4, 5, 6, 7]), (fourth[draws:], [2, 3, 4, 5, 6, 7])):
        counts = torch.bincount(block, minlength=len(labels))
        assert counts[[i for i in range(len(labels)) if i not in valid]].sum() == 0
        assert chisquare(counts[valid].numpy()).pvalue > 1e-3


def test_quadruplet_drops_second_term_without_third_class():
    """Reference: by hand on the 2-D points (two classes). Triplet (0, 1, 2) has no third class:
    it only enters the first term, relu(1 - 0.81 + 0.2) = 0.39; the rho triplet (0, 0, 1) has
    first term relu(0 - 1 + 0.2) = 0, so the first mean is 0.195. The second term comes from the
    rho triplet alone (n' in class 1): relu(0 - d^2(1, n') + 1), d^2(1, 2) = 0.73, d^2(1, 3) = 0.25."""
    loss = QuadrupletLoss(QuadrupletKnobs(alpha1=0.2, alpha2=1.0))
    loss.manual_seed(0)
    value = loss(_points(), LABELS, _triplets((0, 1, 2), (0, 0, 1)))
    loss.manual_seed(0)
    fourth, has_fourth = loss.draw_fourth(LABELS, _triplets((0, 1, 2), (0, 0, 1)))
    assert has_fourth.tolist() == [False, True] and int(fourth[1]) in (2, 3)
    second = {2: 1 - 0.73, 3: 1 - 0.25}[int(fourth[1])]
    assert value.item() == pytest.approx(0.195 + second, abs=1e-6)
    # no triplet with a third class at all: the loss is the triplet term (0.39 + relu(1.44 - 0.81 + 0.2)) / 2
    only_first = loss(_points(), LABELS, _triplets((0, 1, 2), (2, 3, 0)))
    assert only_first.item() == pytest.approx((0.39 + 0.83) / 2, abs=1e-6)


def test_quadruplet_gradient_direction_2d():
    """Reference: by hand, a single active triplet (0, 1, 2) without a third class: the gradient of
    d^2(0,1) - d^2(0,2) + 0.2 is 2(e2 - e1) on e0, 2(e1 - e0) on e1 and 2(e0 - e2) on e2."""
    x = _points()
    QuadrupletLoss()(x, LABELS, _triplets((0, 1, 2))).backward()
    p = POINTS
    expected = torch.stack([2 * (p[2] - p[1]), 2 * (p[1] - p[0]), 2 * (p[0] - p[2]), torch.zeros(2)])
    torch.testing.assert_close(x.grad, expected, atol=1e-6, rtol=0)


def test_quadruplet_empty_triplets_is_zero_and_backpropagates():
    """Reference: no triplets -> loss 0, backward() gives an all-zero gradient."""
    x = _points()
    _assert_zero_and_backprop(QuadrupletLoss()(x, LABELS, _empty()), x)


# --------------------------------------------------------------------------- SNR


@pytest.mark.parametrize("margin", [0.2, 0.6])
def test_snr_hinge_matches_pml(margin):
    """Reference: PML TripletMarginLoss(margin, distance=SNRDistance(normalize_embeddings=False),
    reducer=AvgNonZeroReducer()) with the same triplets (rho triplets included) and reg_weight 0;
    value and gradient. (PML's distances normalise by default; SNR is not invariant to scaling a
    and b separately, and the loss takes the embeddings as given.)"""
    from pytorch_metric_learning.distances import SNRDistance
    from pytorch_metric_learning.losses import TripletMarginLoss
    from pytorch_metric_learning.reducers import AvgNonZeroReducer

    x, labels = _batch(dim=16)
    triplets = _random_triplets(labels, 30, rho=6)
    pml = TripletMarginLoss(margin, distance=SNRDistance(normalize_embeddings=False), reducer=AvgNonZeroReducer())
    assert_same_value_and_gradient(
        lambda x_ours: SNRLoss(SNRKnobs(margin=margin, reg_weight=0.0))(x_ours, labels, triplets),
        lambda x_ref: pml(x_ref, labels, indices_tuple=(triplets.anchors, triplets.positives, triplets.negatives)),
        x,
        reference_positive=True,
    )


def test_snr_hinge_counts_only_active_triplets():
    """Reference: float64 written-out formula, S(a,b) = Var(a-b)/Var(a) with 1/D variances (the
    normalisation cancels), sum relu(S_ap - S_an + m) / #(> 0), checked to have inactive triplets."""
    x, labels = _batch(dim=16)
    triplets = _random_triplets(labels, 30, rho=6)
    a, p, n = x[triplets.anchors], x[triplets.positives], x[triplets.negatives]

    def s(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        def var(w: torch.Tensor) -> torch.Tensor:
            return ((w - w.mean(1, keepdim=True)) ** 2).mean(1)

        return var(u - v) / var(u)

    hinge = torch.clamp(s(a, p) - s(a, n) + 0.2, min=0)
    assert 0 < int((hinge > 0).sum()) < len(triplets)
    ours = SNRLoss(SNRKnobs(margin=0.2, reg_weight=0.0))(x, labels, triplets)
    assert ours.item() == pytest.approx((hinge.sum() / (hinge > 0).sum()).item(), abs=1e-5)


def test_snr_regulariser_formula():
    """Reference: PML hinge (as above) + written-out reg_weight * mean over the triplets' anchor
    rows of |sum_k a_k| (repeated anchors counted per triplet), float64; value and gradient."""
    from pytorch_metric_learning.distances import SNRDistance
    from pytorch_metric_learning.losses import TripletMarginLoss
    from pytorch_metric_learning.reducers import AvgNonZeroReducer

    x, labels = _batch(dim=16)
    triplets = _random_triplets(labels, 30, rho=6)
    pml = TripletMarginLoss(0.2, distance=SNRDistance(normalize_embeddings=False), reducer=AvgNonZeroReducer())
    x_ours, x_ref = _leaf(x), _leaf(x)
    ours = SNRLoss(SNRKnobs(margin=0.2, reg_weight=0.5))(x_ours, labels, triplets)
    idx = (triplets.anchors, triplets.positives, triplets.negatives)
    regulariser = torch.stack([x_ref[a].sum().abs() for a in triplets.anchors.tolist()]).mean()
    ref = pml(x_ref, labels, indices_tuple=idx) + 0.5 * regulariser
    ours.backward()
    ref.backward()
    assert regulariser.item() > 0.1
    assert ours.item() == pytest.approx(ref.item(), abs=1e-5)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-6, rtol=1e-5)


def test_snr_nothing_active_is_finite():
    """Reference: by hand, positives = anchor + small noise (S_ap ~ 0.01) and negatives = -anchor
    (S_an = 4): every hinge is 0, so the loss is the regulariser alone (the paper's code gives
    0/0 = NaN here, its bug 11); gradients finite."""
    g = torch.Generator().manual_seed(0)
    anchors = torch.randn(3, 8, generator=g, dtype=torch.float64)
    x = torch.cat([anchors, anchors + 0.05 * torch.randn(3, 8, generator=g, dtype=torch.float64), -anchors])
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 3, 4, 5])
    triplets = _triplets((0, 3, 6), (1, 4, 7), (2, 5, 8))
    x = x.requires_grad_(True)
    loss = SNRLoss(SNRKnobs(margin=0.2, reg_weight=0.1))(x, labels, triplets)
    loss.backward()
    expected = 0.1 * anchors.sum(1).abs().mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-9)
    assert torch.isfinite(x.grad).all()
    # rows 3..8 enter only through hinges, all inactive: zero gradient there
    assert torch.equal(x.grad[3:], torch.zeros_like(x.grad[3:]))
    # margin 0, no regulariser: exactly zero, still connected
    x2 = _leaf(x)
    _assert_zero_and_backprop(SNRLoss(SNRKnobs(margin=0.0, reg_weight=0.0))(x2, labels, triplets), x2)


def test_snr_empty_triplets_is_zero_and_backpropagates():
    """Reference: no triplets -> loss 0, backward() gives an all-zero gradient."""
    x = _points()
    _assert_zero_and_backprop(SNRLoss()(x, LABELS, _empty()), x)


# --------------------------------------------------------------------------- multi-similarity


def _multisimilarity_reference(
    x: torch.Tensor, labels: torch.Tensor, alpha: float, beta: float, epsilon: float, base: float
) -> tuple[torch.Tensor, int]:
    """Wang et al. written out anchor by anchor on cosine similarities: mining, skipping, and the
    mean over the kept anchors. Returns (loss, number of kept anchors)."""
    u = x / x.norm(dim=1, keepdim=True)
    sim = u @ u.T
    terms = []
    for i in range(len(x)):
        pos = [j for j in range(len(x)) if j != i and labels[j] == labels[i]]
        neg = [j for j in range(len(x)) if labels[j] != labels[i]]
        if not pos or not neg:
            continue
        s_pos, s_neg = sim[i, pos], sim[i, neg]
        hard_neg = s_neg[s_neg + epsilon > s_pos.min()]
        hard_pos = s_pos[s_pos - epsilon < s_neg.max()]
        if len(hard_neg) == 0 or len(hard_pos) == 0:
            continue
        terms.append(
            torch.log(1 + torch.exp(-alpha * (hard_pos - base)).sum()) / alpha
            + torch.log(1 + torch.exp(beta * (hard_neg - base)).sum()) / beta
        )
    return torch.stack(terms).mean(), len(terms)


def _pml_multisimilarity(x: torch.Tensor, labels: torch.Tensor, knobs: MultiSimilarityKnobs) -> torch.Tensor:
    from pytorch_metric_learning.losses import MultiSimilarityLoss as PMLMultiSimilarity
    from pytorch_metric_learning.miners import MultiSimilarityMiner

    pairs = MultiSimilarityMiner(knobs.epsilon)(x, labels)
    return PMLMultiSimilarity(knobs.alpha, knobs.beta, knobs.base)(x, labels, pairs)


@pytest.mark.parametrize(
    "knobs", [MultiSimilarityKnobs(), MultiSimilarityKnobs(alpha=3.0, beta=10.0, epsilon=0.2, base=0.3)]
)
def test_multisimilarity_matches_pml_when_no_anchor_is_skipped(knobs):
    """Reference: PML MultiSimilarityLoss(alpha, beta, base) on MultiSimilarityMiner(epsilon)'s pairs,
    on a batch where every anchor keeps pairs (checked with the written-out reference), so PML's
    mean over all rows is our mean over kept anchors; value and gradient (raw inputs: both
    normalise)."""
    x, labels = _batch(dim=4)
    _, kept = _multisimilarity_reference(x, labels, knobs.alpha, knobs.beta, knobs.epsilon, knobs.base)
    assert kept == len(x)
    assert_same_value_and_gradient(
        lambda x_ours: MultiSimilarityLoss(knobs)(x_ours, labels, None),
        lambda x_ref: _pml_multisimilarity(x_ref, labels, knobs),
        x,
        reference_positive=False,
    )


def _partly_separated_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Classes 0 and 1 are tight clusters on their own axes (their anchors have no hard pair and
    are skipped); classes 2 and 3 are mixed in the remaining dimensions (kept); class 4 is a
    singleton (no positive: skipped)."""
    g = torch.Generator().manual_seed(4)
    noise = 0.01 * torch.randn(11, 6, generator=g, dtype=torch.float64)
    tight = torch.zeros(4, 6, dtype=torch.float64)
    tight[0:2, 0] = 1.0
    tight[2:4, 1] = 1.0
    mixed = torch.zeros(6, 6, dtype=torch.float64)
    mixed[:, 2:5] = torch.randn(6, 3, generator=g, dtype=torch.float64)
    single = torch.zeros(1, 6, dtype=torch.float64)
    single[0, 5] = 1.0
    x = torch.cat([tight, mixed, single]) + noise
    return x, torch.tensor([0, 0, 1, 1, 2, 3, 2, 3, 2, 3, 4])


def test_multisimilarity_skipped_anchors_written_out():
    """Reference: float64 written-out loss, anchor by anchor, mean over the kept anchors only; value
    and autograd gradient. Also: PML's value times B / #kept (PML divides by the batch size and
    gives a skipped anchor 0)."""
    x, labels = _partly_separated_batch()
    knobs = MultiSimilarityKnobs()
    x_ours, x_ref = _leaf(x), _leaf(x)
    ref, kept = _multisimilarity_reference(x_ref, labels, knobs.alpha, knobs.beta, knobs.epsilon, knobs.base)
    assert 0 < kept < len(x)
    ours = MultiSimilarityLoss(knobs)(x_ours, labels, None)
    ours.backward()
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), abs=1e-5)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-6, rtol=1e-5)
    pml = _pml_multisimilarity(x, labels, knobs)
    assert ours.item() == pytest.approx(pml.item() * len(x) / kept, abs=1e-5)


def test_multisimilarity_gradient_direction_2d():
    """Reference: by hand, two classes on the unit circle with each anchor's negative within
    epsilon-reach: the loss must pull same-class angles together and push the classes apart,
    so a small step against the gradient lowers it and shrinks the within-class angle."""
    angles = torch.tensor([0.0, 0.3, 0.35, 0.65], dtype=torch.float64)
    x = torch.stack([angles.cos(), angles.sin()], dim=1).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1])
    loss = MultiSimilarityLoss()(x, labels, None)
    loss.backward()
    with torch.no_grad():
        stepped = x - 1e-3 * x.grad
        after = MultiSimilarityLoss()(stepped, labels, None)
        moved = torch.atan2(stepped[:, 1], stepped[:, 0])
    assert after.item() < loss.item()
    assert moved[1] - moved[0] < 0.3 and moved[2] - moved[1] > 0.05


@pytest.mark.parametrize(
    ("x", "labels"),
    [
        (torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]]), torch.tensor([0, 0, 1, 1])),  # all skipped
        (torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 0, 0, 0])),  # no negative
        (torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3])),  # no positive
    ],
)
def test_multisimilarity_nothing_kept_is_zero_and_backpropagates(x, labels):
    """Reference: every anchor skipped (separated classes, one class, singletons) -> loss 0, not the
    paper code's crash (bug 8); backward() gives an all-zero gradient."""
    x = _leaf(x)
    _assert_zero_and_backprop(MultiSimilarityLoss()(x, labels, None), x)


# --------------------------------------------------------------------------- histogram


@pytest.mark.parametrize("nodes", [65, 11])
def test_histogram_matches_pml(nodes):
    """Reference: PML HistogramLoss(n_bins=nodes - 1) (cosine similarity, all pairs) on a batch
    where every class has several samples; value and gradient (raw inputs: both normalise)."""
    from pytorch_metric_learning.losses import HistogramLoss as PMLHistogram

    x, labels = _batch(dim=4)
    assert_same_value_and_gradient(
        lambda x_ours: HistogramLoss(HistogramKnobs(nodes=nodes))(x_ours, labels, None),
        lambda x_ref: PMLHistogram(n_bins=nodes - 1)(x_ref, labels),
        x,
        reference_positive=True,
    )


def test_histogram_hand_computed_three_nodes():
    """Reference: by hand, nodes (-1, 0, 1). Points at 0, 60, 90, 180 degrees, classes 0, 0, 1, 1.
    Positive cosines 0.5, 0 -> h+ = (0, 1.5, 0.5)/2, CDF+ = (0, 0.75, 1). Negative cosines 0, -1,
    cos 30 = c, -0.5 -> h- = (1.5, 1 + (1 - c) + 0.5, c)/4. Loss = h-_1 * 0.75 + h-_2 * 1."""
    deg = torch.tensor([0.0, 60.0, 90.0, 180.0]).deg2rad()
    x = torch.stack([deg.cos(), deg.sin()], dim=1)
    c = math.sqrt(3) / 2
    expected = (2.5 - c) / 4 * 0.75 + c / 4
    loss = HistogramLoss(HistogramKnobs(nodes=3))(x, torch.tensor([0, 0, 1, 1]), None)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_histogram_gradient_direction_hand_computed():
    """Reference: by hand, one positive pair at cosine s+ and one negative pair at s- in the same
    bin [t_r, t_r+1]: loss = (s- - t_r)/delta * (t_r+1 - s+)/delta, so dL/ds- > 0 and dL/ds+ < 0:
    gradient descent separates the negative pair and pulls the positive pair together."""
    # classes 0: points 0, 1; class 1: point 2. Pairs: (0,1) pos, (0,2) neg, (1,2) neg.
    x = torch.tensor([[1.0, 0.0, 0.0], [0.3, 0.95, 0.0], [0.5, 0.0, 0.85]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    loss = HistogramLoss(HistogramKnobs(nodes=3))(x, labels, None)
    u = F.normalize(x.detach(), dim=1)
    s_pos, s_neg = float(u[0] @ u[1]), [float(u[0] @ u[2]), float(u[1] @ u[2])]
    assert all(0 < s < 1 for s in [s_pos, *s_neg])
    # every similarity in [0, 1]: h+ = (0, 1 - s+, s+), CDF+ = (0, 1 - s+, 1); h- from the two negatives
    expected = sum((1 - s) * (1 - s_pos) + s for s in s_neg) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-9)
    loss.backward()
    with torch.no_grad():
        stepped = x - 1e-2 * x.grad
        v = F.normalize(stepped, dim=1)
    assert float(v[0] @ v[1]) > s_pos
    assert float(v[0] @ v[2]) < s_neg[0] and float(v[1] @ v[2]) < s_neg[1]


def test_histogram_duplicates_at_similarity_one():
    """Reference: by hand, duplicates (cosine exactly 1, where PML indexes past its histogram) go to
    the last node. Nodes (-1, 0, 1); e0 = e1 = e2 = (1, 0), e3 = (-1, 0), classes 0, 0, 1, 1:
    positives 1, -1 -> CDF+ = (0.5, 0.5, 1); negatives 1, -1, 1, -1 -> h- = (0.5, 0, 0.5);
    loss = 0.25 + 0.5."""
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    loss = HistogramLoss(HistogramKnobs(nodes=3))(x, torch.tensor([0, 0, 1, 1]), None)
    loss.backward()
    assert loss.item() == pytest.approx(0.75, abs=1e-6)
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("labels", [torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 0, 0]), torch.tensor([5])])
def test_histogram_without_positive_or_negative_pair_is_zero(labels):
    """Reference: no positive pair (all singletons), no negative pair (one class) or no pair at all
    -> loss 0 and an all-zero gradient."""
    x = _leaf(torch.randn(len(labels), 3, generator=torch.Generator().manual_seed(0)))
    _assert_zero_and_backprop(HistogramLoss()(x, labels, None), x)

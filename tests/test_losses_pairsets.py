"""Pair-set losses (dml/losses/pairsets.py): lifted against pytorch-metric-learning's
GeneralizedLiftedStructureLoss (exact) and a hand-computed 1-D case; N-pair against a float64
written-out loop over anchors and negatives and against PML's NPairsLoss on PML's own pairs;
angular's angular term against PML's AngularLoss and the whole loss against a float64 written-out
loop; values and gradients, ragged negative sets, large unnormalised embeddings, empty batches,
and the registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dml.losses.config import AngularKnobs, LiftedKnobs, LossSection, NPairKnobs
from dml.losses.pairsets import AngularLoss, LiftedLoss, NPairLoss
from dml.losses.registry import LOSSES, build_loss
from dml.miners.sets import LiftedMiner, NPairMiner
from dml.tuples import PairSets

# Uneven classes (sizes 1, 2, 3, 4, 6) in shuffled order: the negative sets are ragged, and the
# singleton class 7 has no positive (no anchor).
RAGGED = torch.tensor([3, 0, 1, 7, 2, 1, 3, 0, 3, 2, 1, 3, 3, 2, 3, 2])


def _x(n: int, dim: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _value_and_grad(fn, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    out = fn(x)
    out.backward()
    return out.item(), x.grad


def _sets_as_lists(sets: PairSets) -> list[tuple[int, list[int], list[int]]]:
    return [
        (int(a), row_p.nonzero().squeeze(1).tolist(), row_n.nonzero().squeeze(1).tolist())
        for a, row_p, row_n in zip(sets.anchors, sets.positives, sets.negatives)
    ]


def _mean_norm_loop(x: torch.Tensor) -> torch.Tensor:
    return sum(torch.sqrt(sum(x[i, k] ** 2 for k in range(x.shape[1]))) for i in range(len(x))) / len(x)


def _assert_ragged(sets: PairSets) -> None:
    sizes = set(sets.negatives.sum(1).tolist())
    assert len(sizes) > 1, "the test needs negative sets of different sizes"


# --------------------------------------------------------------------------- lifted


def test_lifted_hand_computed_1d():
    """Reference: by hand on a line, margin 1: x = 0, 1 (class 0), 2, -1 (class 1). Anchors 0 and
    1: d_ap = 1, negatives at d 2 and 1 -> 1 + log(e^-1 + e^0); anchors 2 and 3: d_ap = 3,
    negatives at d 2 and 1 -> 3 + log(e^-1 + e^0). Mean 2 + log(1 + e^-1), plus
    0.005 * mean |x| = 0.005 * 1."""
    x = torch.tensor([[0.0], [1.0], [2.0], [-1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    loss = LiftedLoss()(x, labels, LiftedMiner()(x, labels))
    assert loss.item() == pytest.approx(2 + math.log(1 + math.exp(-1)) + 0.005, abs=1e-12)


@pytest.mark.parametrize(
    ("margin", "l2_weight", "scale"), [(1.0, 0.005, 1.0), (0.5, 0.0, 1.0), (1.0, 0.005, 0.5), (2.0, 0.1, 0.5)]
)
def test_lifted_matches_pytorch_metric_learning(margin, l2_weight, scale):
    """Reference: PML GeneralizedLiftedStructureLoss(neg_margin=margin, pos_margin=0,
    distance=LpDistance(normalize_embeddings=False), MeanReducer) + LpRegularizer at weight
    l2_weight, in float64 on a batch where every sample has a positive and a negative (PML then
    takes the same anchors). Clustered data (class centres + noise) so that some anchors have a
    zero hinge and others not; values and gradients agree."""
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.losses import GeneralizedLiftedStructureLoss
    from pytorch_metric_learning.reducers import MeanReducer
    from pytorch_metric_learning.regularizers import LpRegularizer

    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 0, 4, 2, 4, 3, 0])  # sizes 5, 3, 3, 3, 3
    x = 3 * _x(5, 6, 1)[labels] + scale * _x(len(labels), 6, 2)
    sets = LiftedMiner()(x, labels)
    assert len(sets) == len(labels)
    _assert_ragged(sets)
    d = torch.cdist(x[sets.anchors], x)
    pos = torch.logsumexp(d.masked_fill(~sets.positives, -math.inf), 1)
    neg = torch.logsumexp((margin - d).masked_fill(~sets.negatives, -math.inf), 1)
    if scale == 0.5:
        assert ((pos + neg) <= 0).any() and ((pos + neg) > 0).any(), "want active and inactive anchors"

    pml = GeneralizedLiftedStructureLoss(
        neg_margin=margin, pos_margin=0, distance=LpDistance(normalize_embeddings=False), reducer=MeanReducer(),
        embedding_regularizer=LpRegularizer(), embedding_reg_weight=l2_weight,
    )  # fmt: skip
    ours = LiftedLoss(LiftedKnobs(margin=margin, l2_weight=l2_weight))
    v_ours, g_ours = _value_and_grad(lambda e: ours(e, labels, sets), x)
    v_ref, g_ref = _value_and_grad(lambda e: pml(e, labels), x)
    assert v_ours > 0
    assert v_ours == pytest.approx(v_ref, rel=1e-12, abs=1e-12)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)


def _lifted_loop(x: torch.Tensor, sets: PairSets, margin: float, l2_weight: float) -> torch.Tensor:
    """The paper's per-anchor form written out in float64: relu(log sum_P e^{d_ap} +
    log sum_N e^{margin - d_an}), d by explicit sums of squared differences; mean + l2 term."""
    terms = []
    for a, pos, neg in _sets_as_lists(sets):
        d = [torch.sqrt(sum((x[a, k] - x[j, k]) ** 2 for k in range(x.shape[1]))) for j in range(len(x))]
        lse_p = torch.log(sum(torch.exp(d[p]) for p in pos))
        lse_n = torch.log(sum(torch.exp(margin - d[n]) for n in neg))
        terms.append(torch.clamp(lse_p + lse_n, min=0))
    return sum(terms) / len(terms) + l2_weight * _mean_norm_loop(x)


def test_lifted_matches_written_out_loop_on_ragged_sets():
    """Reference: _lifted_loop (float64) on the lifted miner's sets of a batch with uneven classes
    and a singleton (skipped: PML would keep its row, so the loop is the reference here)."""
    x = _x(len(RAGGED), 5, 3)
    sets = LiftedMiner()(x, RAGGED)
    assert 3 not in sets.anchors.tolist() and len(sets) == len(RAGGED) - 1
    _assert_ragged(sets)
    knobs = LiftedKnobs(margin=1.5, l2_weight=0.01)
    v, g = _value_and_grad(lambda e: LiftedLoss(knobs)(e, RAGGED, sets), x)
    v_ref, g_ref = _value_and_grad(lambda e: _lifted_loop(e, sets, 1.5, 0.01), x)
    assert v == pytest.approx(v_ref, rel=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


def test_lifted_duplicate_samples_give_finite_gradients():
    """Reference: a finite gradient is required; the class-random sampler draws with replacement,
    so a positive can coincide with its anchor (d_ap = 0), where sqrt has no derivative."""
    x = _x(8, 4, 4).float()
    x[1] = x[0]
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    v, g = _value_and_grad(lambda e: LiftedLoss()(e, labels, LiftedMiner()(e, labels)), x)
    assert math.isfinite(v) and torch.isfinite(g).all()


# --------------------------------------------------------------------------- N-pair


def _npair_loop(x: torch.Tensor, sets: PairSets, l2_weight: float) -> torch.Tensor:
    """Sohn's loss as the paper's code forms it, written out in float64: per anchor
    log(1 + sum_n exp(x_a.x_n - x_a.x_p)) by explicit sums, mean over anchors, plus
    l2_weight * mean ||x|| over the whole batch."""
    terms = []
    for a, (p,), neg in _sets_as_lists(sets):
        dot = lambda i, j: sum(x[i, k] * x[j, k] for k in range(x.shape[1]))  # noqa: E731
        terms.append(torch.log(1 + sum(torch.exp(dot(a, n) - dot(a, p)) for n in neg)))
    return sum(terms) / len(terms) + l2_weight * _mean_norm_loop(x)


@pytest.mark.parametrize("l2_weight", [0.005, 0.0, 0.5])
def test_npair_matches_written_out_loop(l2_weight):
    """Reference: _npair_loop (float64) on the N-pair miner's tuples of a batch with uneven classes
    (ragged negative sets) and a singleton class (no anchor); values and gradients."""
    x = _x(len(RAGGED), 6, 5)
    sets = NPairMiner(seed=1)(x, RAGGED)
    assert len(sets) == len(RAGGED) - 1
    _assert_ragged(sets)
    loss = NPairLoss(NPairKnobs(l2_weight=l2_weight))
    v, g = _value_and_grad(lambda e: loss(e, RAGGED, sets), x)
    v_ref, g_ref = _value_and_grad(lambda e: _npair_loop(e, sets, l2_weight), x)
    assert v == pytest.approx(v_ref, rel=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


def test_npair_matches_pytorch_metric_learning_on_its_pairs():
    """Reference: PML NPairsLoss(distance=DotProductSimilarity(normalize_embeddings=False),
    LpRegularizer at .005), which takes one (anchor, positive) pair per class and the other
    pairs' positives as negatives. Given exactly those tuples as PairSets, ours must agree in
    value and gradient (float64)."""
    from pytorch_metric_learning.distances import DotProductSimilarity
    from pytorch_metric_learning.losses import NPairsLoss
    from pytorch_metric_learning.regularizers import LpRegularizer
    from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

    labels = torch.tensor([2, 0, 1, 0, 2, 3, 1, 3, 0, 4, 4, 2])
    x = _x(len(labels), 8, 6, scale=0.7)
    a, p = lmu.convert_to_pos_pairs_with_unique_labels(None, labels)
    assert len(a) == 5 and bool((labels[a] == labels[p]).all())
    positives = torch.zeros(len(a), len(labels), dtype=torch.bool)
    positives[torch.arange(len(a)), p] = True
    negatives = torch.zeros_like(positives)
    negatives[:, p] = True
    negatives &= ~positives
    sets = PairSets(a, positives, negatives)

    pml = NPairsLoss(
        distance=DotProductSimilarity(normalize_embeddings=False), embedding_regularizer=LpRegularizer(), embedding_reg_weight=0.005
    )
    v, g = _value_and_grad(lambda e: NPairLoss()(e, labels, sets), x)
    v_ref, g_ref = _value_and_grad(lambda e: pml(e, labels), x)
    assert v == pytest.approx(v_ref, rel=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


def test_npair_large_unnormalised_embeddings_stay_finite():
    """Reference: the float64 loop. With dot-product differences beyond 88 exp() overflows in
    float32 (the paper's N-pair code then gives inf); the masked logsumexp in float32 must stay
    finite and agree with the float64 reference, gradients included."""
    labels = torch.arange(5).repeat_interleave(3)
    x = _x(len(labels), 4, 7, scale=6.0)
    sets = NPairMiner(seed=2)(x, labels)
    x_a, x_p = x[sets.anchors], x[sets.positives.nonzero()[:, 1]]
    logits = (x_a @ x.T - (x_a * x_p).sum(1, keepdim=True))[sets.negatives]
    assert 88 < logits.max() < 700, logits.max()
    v, g = _value_and_grad(lambda e: NPairLoss()(e, labels, sets), x.float())
    v_ref, g_ref = _value_and_grad(lambda e: _npair_loop(e, sets, 0.005), x)
    assert math.isfinite(v) and torch.isfinite(g).all()
    assert v == pytest.approx(v_ref, rel=1e-5)
    torch.testing.assert_close(g.double(), g_ref, rtol=1e-4, atol=1e-4)


def test_npair_and_angular_reject_several_positives():
    """Reference: the tuple contract: N-pair tuples have exactly one positive per anchor, so
    lifted sets (several positives) are an error, not a silent sum."""
    labels = torch.tensor([0, 0, 0, 1, 1])
    x = _x(5, 3, 8)
    sets = LiftedMiner()(x, labels)
    for loss in (NPairLoss(), AngularLoss()):
        with pytest.raises(ValueError, match="exactly one positive"):
            loss(x, labels, sets)


# --------------------------------------------------------------------------- angular


@pytest.mark.parametrize("alpha", [45.0, 36.0, 50.0])
def test_angular_term_matches_pytorch_metric_learning(alpha):
    """Reference: PML AngularLoss(alpha, MeanReducer) on the unit vectors F.normalize(x) (PML
    normalises its anchors and positives but not its negatives), on a batch of exactly two
    samples per class: PML's pairs (every ordered same-class pair) are then the N-pair miner's
    tuples. Ours with npair_weight 0, angular_weight 1, l2_weight 0 on the raw x; values and
    gradients w.r.t. x agree."""
    from pytorch_metric_learning.losses import AngularLoss as PMLAngularLoss
    from pytorch_metric_learning.reducers import MeanReducer

    labels = torch.tensor([4, 1, 0, 3, 2, 5, 1, 0, 2, 4, 3, 5])
    x = _x(len(labels), 8, 9, scale=2.0)
    sets = NPairMiner(seed=0)(x, labels)
    assert sets.anchors.tolist() == list(range(len(labels)))
    partner = [int(((labels == labels[i]) & (torch.arange(len(labels)) != i)).nonzero()) for i in range(len(labels))]
    assert sets.positives.nonzero()[:, 1].tolist() == partner

    ours = AngularLoss(AngularKnobs(alpha_degrees=alpha, npair_weight=0.0, angular_weight=1.0, l2_weight=0.0))
    pml = PMLAngularLoss(alpha=alpha, reducer=MeanReducer())
    v, g = _value_and_grad(lambda e: ours(e, labels, sets), x)
    v_ref, g_ref = _value_and_grad(lambda e: pml(F.normalize(e, dim=1), labels), x)
    assert v > 0
    assert v == pytest.approx(v_ref, rel=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


def _angular_loop(x: torch.Tensor, sets: PairSets, alpha: float, w_npair: float, w_ang: float, l2_weight: float) -> torch.Tensor:
    """The paper's angular loss written out in float64: u = x / ||x||, t = tan(alpha);
    per anchor log(1 + sum_n exp(4 t^2 (u_a + u_p).u_n - 2 (1 + t^2) u_a.u_p)), mean over
    anchors, times w_ang; plus w_npair times the N-pair loop on the raw x (without its l2 term);
    plus l2_weight * mean ||x||."""
    t2 = math.tan(math.radians(alpha)) ** 2
    u = torch.stack([x[i] / torch.sqrt(sum(x[i, k] ** 2 for k in range(x.shape[1]))) for i in range(len(x))])
    dot = lambda v, w: sum(v[k] * w[k] for k in range(len(v)))  # noqa: E731
    terms = []
    for a, (p,), neg in _sets_as_lists(sets):
        f = [4 * t2 * dot(u[a] + u[p], u[n]) - 2 * (1 + t2) * dot(u[a], u[p]) for n in neg]
        terms.append(torch.log(1 + sum(torch.exp(v) for v in f)))
    angular = sum(terms) / len(terms)
    return w_npair * _npair_loop(x, sets, 0.0) + w_ang * angular + l2_weight * _mean_norm_loop(x)


@pytest.mark.parametrize(
    ("alpha", "w_npair", "w_ang", "l2_weight"), [(45.0, 1.0, 2.0, 0.005), (30.0, 0.5, 1.0, 0.1), (45.0, 0.0, 2.0, 0.0)]
)
def test_angular_matches_written_out_loop(alpha, w_npair, w_ang, l2_weight):
    """Reference: _angular_loop (float64) on the N-pair miner's tuples of a batch with uneven
    classes (ragged negative sets, which the paper's code cannot stack); values and gradients."""
    x = _x(len(RAGGED), 5, 10, scale=1.5)
    sets = NPairMiner(seed=3)(x, RAGGED)
    _assert_ragged(sets)
    knobs = AngularKnobs(alpha_degrees=alpha, npair_weight=w_npair, angular_weight=w_ang, l2_weight=l2_weight)
    v, g = _value_and_grad(lambda e: AngularLoss(knobs)(e, RAGGED, sets), x)
    v_ref, g_ref = _value_and_grad(lambda e: _angular_loop(e, sets, alpha, w_npair, w_ang, l2_weight), x)
    assert v == pytest.approx(v_ref, rel=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


def test_angular_hand_computed_2d():
    """Reference: by hand, alpha 45 (tan^2 = 1): anchor u_a = (1, 0), positive u_p = (0, 1)
    (given at norms 2 and 3: the angular term sees unit vectors), negative u_n = (-1, 0):
    f = 4 (u_a + u_p).u_n - 4 u_a.u_p = -4, so the term is log(1 + e^-4); with one tuple, weights
    (0, 1, 0)."""
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]], dtype=torch.float64)
    sets = PairSets(torch.tensor([0]), torch.tensor([[False, True, False]]), torch.tensor([[False, False, True]]))
    loss = AngularLoss(AngularKnobs(npair_weight=0.0, angular_weight=1.0, l2_weight=0.0))(x, torch.tensor([0, 0, 1]), sets)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-4)), abs=1e-12)


def test_angular_with_only_npair_weight_is_the_npair_loss():
    """Reference: NPairLoss on the same tuples: angular_weight 0 leaves npair_weight * N-pair + l2."""
    x = _x(len(RAGGED), 6, 11)
    sets = NPairMiner(seed=4)(x, RAGGED)
    angular = AngularLoss(AngularKnobs(npair_weight=1.0, angular_weight=0.0, l2_weight=0.005))(x, RAGGED, sets)
    assert angular.item() == pytest.approx(NPairLoss()(x, RAGGED, sets).item(), rel=1e-14)


# --------------------------------------------------------------------------- all three


def _empty_sets(batch: int) -> PairSets:
    none = torch.zeros(0, batch, dtype=torch.bool)
    return PairSets(torch.empty(0, dtype=torch.long), none, none)


@pytest.mark.parametrize("cls", [LiftedLoss, NPairLoss, AngularLoss])
def test_no_anchor_gives_connected_zero(cls):
    """Reference: the paper's N-pair code returns 0 for a batch without anchors; here a zero that
    backpropagates an all-zero gradient (the miners give empty sets for one class or singletons)."""
    for labels, miner in ((torch.zeros(6, dtype=torch.long), LiftedMiner()), (torch.arange(6), NPairMiner())):
        x = _x(6, 4, 12).requires_grad_(True)
        sets = miner(x, labels)
        assert len(sets) == 0
        loss = cls()(x, labels, sets)
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        assert torch.equal(x.grad, torch.zeros_like(x))
    assert cls()(_x(3, 2, 0), torch.arange(3), _empty_sets(3)).item() == 0.0


@pytest.mark.parametrize("cls", [LiftedLoss, NPairLoss, AngularLoss])
def test_float32_training_batch_finite(cls):
    """Reference: finite values and gradients on a float32 batch of the default shape
    (B 112, D 128, SPC 2, unnormalised), mined by the loss's default miner."""
    x = torch.randn(112, 128, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(56).repeat_interleave(2)
    miner = {"lifted": LiftedMiner, "npair": NPairMiner}[cls.Knobs.default_miner](seed=0)
    v, g = _value_and_grad(lambda e: cls()(e, labels, miner(e, labels)), x)
    assert math.isfinite(v) and v > 0 and torch.isfinite(g).all() and g.abs().sum() > 0


def test_registry_builds_pairset_losses_with_their_knobs():
    """Reference: LossSection.<name> knobs reach the losses unchanged; the sets they consume are
    the ones their default miners produce; they run on unnormalised embeddings by default."""
    assert {"lifted", "npair", "angular"} <= set(LOSSES)
    lifted = build_loss(LossSection(name="lifted", lifted={"margin": 0.7, "l2_weight": 0.01}), 5, 8)
    assert isinstance(lifted, LiftedLoss) and (lifted.margin, lifted.l2_weight) == (0.7, 0.01)
    npair = build_loss(LossSection(name="npair", npair={"l2_weight": 0.02}), 5, 8)
    assert isinstance(npair, NPairLoss) and npair.l2_weight == 0.02
    knobs = {"alpha_degrees": 30, "npair_weight": 0.5, "angular_weight": 3, "l2_weight": 0.0}
    angular = build_loss(LossSection(name="angular", angular=knobs), 5, 8)
    assert isinstance(angular, AngularLoss) and angular.sq_tan_alpha == pytest.approx(1 / 3)
    assert (angular.npair_weight, angular.angular_weight, angular.l2_weight) == (0.5, 3, 0)
    for name, cls in (("lifted", LiftedLoss), ("npair", NPairLoss), ("angular", AngularLoss)):
        knobs = getattr(LossSection(), name)
        assert cls.Knobs is type(knobs) and not knobs.normalized_embeddings
        assert knobs.consumes == {"lifted": "lifted", "npair": "npair", "angular": "npair"}[name] == knobs.default_miner
        assert build_loss(LossSection(name=name), 5, 8).param_groups(1e-3) == []

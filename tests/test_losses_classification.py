"""Classification and proxy losses (dml/losses/classification.py, dml/losses/proxy.py): values
and gradients (w.r.t. the embeddings and the loss's own weights) against PML with the same
weights where PML computes the same method, else against float64 written-out formulas and
hand-computed 2-D cases; parameters, their optimiser groups and state_dict round trips."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from dml.losses import classification
from dml.losses.classification import ArcFaceLoss, NormalizedSoftmaxLoss, SoftTripleLoss
from dml.losses.config import (
    ArcFaceKnobs,
    LossSection,
    ProxyAnchorKnobs,
    ProxyNCAKnobs,
    SoftmaxKnobs,
    SoftTripleKnobs,
)
from dml.losses.proxy import ProxyAnchorLoss, ProxyNCALoss
from dml.losses.registry import LOSSES, build_loss

ATOL = 1e-5


def _batch(n: int, dim: int, labels: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    return x, torch.tensor(labels)


def _run(loss: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, *args) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss value and its gradient w.r.t. the embeddings (the module's own grads accumulate)."""
    x = x.clone().requires_grad_(True)
    value = loss(x, labels, *args)
    value.backward()
    return value.detach(), x.grad


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=ATOL, rtol=1e-5)


# --------------------------------------------------------------------------- normalised softmax


def _softmax_pair(temperature: float, classes: int = 5, dim: int = 8):
    from pytorch_metric_learning.losses import NormalizedSoftmaxLoss as PMLSoftmax
    from pytorch_metric_learning.reducers import MeanReducer

    torch.manual_seed(1)
    ours = NormalizedSoftmaxLoss(SoftmaxKnobs(temperature=temperature), num_classes=classes, embed_dim=dim).double()
    pml = PMLSoftmax(classes, dim, temperature=temperature, reducer=MeanReducer()).double()
    with torch.no_grad():
        pml.W.copy_(ours.weight.t())  # PML's layout is (D, C)
    x, labels = _batch(12, dim, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 0, 2])
    return ours, pml, x, labels


@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_softmax_value_matches_pml(temperature):
    """Reference: PML NormalizedSoftmaxLoss(C, D, temperature, MeanReducer) with the same weights
    (transposed into PML's (D, C) layout); PML normalises embeddings and weight columns too."""
    ours, pml, x, labels = _softmax_pair(temperature)
    value, _ = _run(ours, x, labels)
    ref, _ = _run(pml, x, labels)
    assert value.item() > 0
    assert value.item() == pytest.approx(ref.item(), abs=ATOL)


def test_softmax_gradient_matches_pml():
    """Reference: PML NormalizedSoftmaxLoss gradients w.r.t. the embeddings and the class weights."""
    ours, pml, x, labels = _softmax_pair(0.05)
    _, grad = _run(ours, x, labels)
    _, ref = _run(pml, x, labels)
    _close(grad, ref)
    _close(ours.weight.grad, pml.W.grad.t())
    assert ours.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- ArcFace


def _arcface_reference(x: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, m: float, s: float) -> torch.Tensor:
    """Float64 written-out ArcFace (Algorithm 1 of Deng et al.): per sample and class the cosine,
    the target's replaced by cos(acos(cos) + m), times s, then -log softmax at the target."""
    total = x.new_zeros(())
    for i in range(len(x)):
        u = x[i] / x[i].norm()
        logits = []
        for c in range(len(w)):
            cos = (u * (w[c] / w[c].norm())).sum()
            if c == labels[i]:
                cos = torch.cos(torch.acos(cos) + m)
            logits.append(s * cos)
        logits = torch.stack(logits)
        total = total - (logits[labels[i]] - torch.log(torch.exp(logits).sum()))
    return total / len(x)


def _arcface(margin: float, scale: float, classes: int = 4, dim: int = 6, seed: int = 2) -> ArcFaceLoss:
    torch.manual_seed(seed)
    return ArcFaceLoss(ArcFaceKnobs(margin=margin, scale=scale), num_classes=classes, embed_dim=dim).double()


def test_arcface_hand_computed_2d():
    """Reference: by hand. x = (3, 0) of class 0, w_0 = (1, sqrt 3) (theta = 60 deg), w_1 = (0, 2)
    (cos 0); with m = .5, s = 16 the logits are 16 cos(pi/3 + .5) = 0.377545 and 0, so the loss is
    log(1 + e^-0.377545) = 0.522087. Weight norms and the embedding's norm do not matter."""
    loss = ArcFaceLoss(ArcFaceKnobs(margin=0.5, scale=16.0), num_classes=2, embed_dim=2)
    with torch.no_grad():
        loss.weight.copy_(torch.tensor([[1.0, math.sqrt(3.0)], [0.0, 2.0]]))
    value = loss(torch.tensor([[3.0, 0.0]]), torch.tensor([0]))
    target = 16 * math.cos(math.pi / 3 + 0.5)
    assert target == pytest.approx(0.377545, abs=1e-6)
    assert value.item() == pytest.approx(math.log1p(math.exp(-target)), abs=ATOL)
    assert value.item() == pytest.approx(0.522087, abs=ATOL)


@pytest.mark.parametrize("margin,scale", [(0.5, 16.0), (0.2, 4.0)])
def test_arcface_value_and_gradient_match_float64_formula(margin, scale):
    """Reference: the float64 written-out formula (_arcface_reference) and its autograd gradients
    w.r.t. the embeddings and the class weights. The batch includes a sample pointing away from its
    class weight (theta_y + m > pi), where no fallback applies."""
    loss = _arcface(margin, scale)
    x, labels = _batch(8, 6, [0, 1, 2, 3, 0, 1, 2, 3], seed=3)
    x[0] = -loss.weight.detach()[0] + 0.01  # theta_0 close to pi
    w = loss.weight.detach().clone().requires_grad_(True)
    x_ref = x.clone().requires_grad_(True)
    ref = _arcface_reference(x_ref, w, labels, margin, scale)
    ref.backward()
    value, grad = _run(loss, x, labels)
    cos0 = F.cosine_similarity(x[0], w[0].detach(), dim=0)
    assert math.acos(cos0.item()) + margin > math.pi
    assert value.item() == pytest.approx(ref.item(), abs=ATOL)
    _close(grad, x_ref.grad)
    _close(loss.weight.grad, w.grad)


def _arcface_pml_pair(margin: float = 0.5, scale: float = 16.0):
    from pytorch_metric_learning.losses import ArcFaceLoss as PMLArcFace
    from pytorch_metric_learning.reducers import MeanReducer

    ours = _arcface(margin, scale)
    pml = PMLArcFace(4, 6, margin=math.degrees(margin), scale=scale, reducer=MeanReducer()).double()
    with torch.no_grad():
        pml.W.copy_(ours.weight.t())
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 1, 2])
    g = torch.Generator().manual_seed(4)
    # near their class weight, so theta_y + m < pi (asserted) and PML's fallback stays inactive
    x = ours.weight.detach()[labels] + 0.3 * torch.randn(10, 6, generator=g, dtype=torch.float64)
    theta = torch.acos(F.cosine_similarity(x, ours.weight.detach()[labels], dim=1))
    assert bool((theta + margin < math.pi).all())
    return ours, pml, x, labels


def test_arcface_value_matches_pml_where_theta_plus_margin_below_pi():
    """Reference: PML ArcFaceLoss(C, D, margin=degrees(m), scale=s, MeanReducer) with the same
    weights, on inputs with theta_y + m < pi, where PML's clamping and fallback do not act."""
    ours, pml, x, labels = _arcface_pml_pair()
    value, _ = _run(ours, x, labels)
    ref, _ = _run(pml, x, labels)
    assert value.item() == pytest.approx(ref.item(), abs=ATOL)


def test_arcface_gradient_matches_pml_where_theta_plus_margin_below_pi():
    """Reference: PML ArcFaceLoss gradients w.r.t. the embeddings and the weights (same inputs)."""
    ours, pml, x, labels = _arcface_pml_pair()
    _, grad = _run(ours, x, labels)
    _, ref = _run(pml, x, labels)
    _close(grad, ref)
    _close(ours.weight.grad, pml.W.grad.t())


def test_arcface_without_margin_is_normalised_softmax_at_temperature_one_over_scale():
    """Reference: our NormalizedSoftmaxLoss with T = 1/s and the same weights (checked against PML
    above): with m = 0 ArcFace is exactly that; with m > 0 the target alone is penalised, so the
    loss is strictly larger (the paper-era bug added m to every logit, where it cancelled)."""
    arc = _arcface(0.0, 16.0)
    soft = NormalizedSoftmaxLoss(SoftmaxKnobs(temperature=1 / 16), num_classes=4, embed_dim=6).double()
    with torch.no_grad():
        soft.weight.copy_(arc.weight)
    x, labels = _batch(8, 6, [0, 1, 2, 3, 3, 2, 1, 0], seed=5)
    value, grad = _run(arc, x, labels)
    ref, ref_grad = _run(soft, x, labels)
    assert value.item() == pytest.approx(ref.item(), abs=ATOL)
    _close(grad, ref_grad)
    with_margin = _arcface(0.5, 16.0)
    assert with_margin(x, labels).item() > value.item() + 0.1


def test_arcface_float32_finite_gradient_at_exact_alignment():
    """Reference: by hand; an embedding equal to its class weight has cos = 1 exactly, where acos'
    is infinite; the clamp keeps value and gradients finite (cos(0 + m) for the target)."""
    loss = ArcFaceLoss(ArcFaceKnobs(), num_classes=3, embed_dim=4)
    x = loss.weight.detach()[[1]].clone().requires_grad_(True)
    value = loss(x, torch.tensor([1]))
    value.backward()
    assert torch.isfinite(value) and bool(torch.isfinite(x.grad).all())
    assert bool(torch.isfinite(loss.weight.grad).all())


# --------------------------------------------------------------------------- SoftTriple


def _softtriple_pair(k: int, reg_weight: float = 0.2, classes: int = 4, dim: int = 6):
    from pytorch_metric_learning.losses import SoftTripleLoss as PMLSoftTriple
    from pytorch_metric_learning.reducers import MeanReducer
    from pytorch_metric_learning.regularizers import SparseCentersRegularizer

    torch.manual_seed(6)
    knobs = SoftTripleKnobs(centers_per_class=k, reg_weight=reg_weight)
    ours = SoftTripleLoss(knobs, num_classes=classes, embed_dim=dim).double()
    regulariser = {}
    if k > 1:  # PML's regulariser asserts K > 1
        regulariser = {"weight_regularizer": SparseCentersRegularizer(classes, k), "weight_reg_weight": reg_weight}
    pml = PMLSoftTriple(
        classes, dim, centers_per_class=k, la=knobs.la, gamma=knobs.gamma, margin=knobs.margin,
        reducer=MeanReducer(), **regulariser,
    ).double()  # fmt: skip
    with torch.no_grad():  # ours is (K, C, D); PML's is (D, C*K) with column c*K + k
        pml.fc.copy_(ours.centers.permute(1, 0, 2).reshape(classes * k, dim).t())
    x, labels = _batch(10, dim, [0, 1, 2, 3, 0, 1, 2, 3, 0, 0], seed=7)
    return ours, pml, x, labels


def _pml_center_grad(pml, k: int, classes: int = 4, dim: int = 6) -> torch.Tensor:
    return pml.fc.grad.t().reshape(classes, k, dim).permute(1, 0, 2)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_softtriple_value_matches_pml(k, monkeypatch):
    """Reference: PML SoftTripleLoss(C, D, K, la 8, gamma .1, margin .01, MeanReducer) plus
    SparseCentersRegularizer(C, K) at weight .2 (none for K = 1), with the same centres. PML's
    sqrt epsilon is float64's smallest normal number; ours (the authors' 1e-5) is set to 0 here."""
    monkeypatch.setattr(classification, "CENTER_REG_EPS", 0.0)
    ours, pml, x, labels = _softtriple_pair(k)
    value, _ = _run(ours, x, labels)
    ref, _ = _run(pml, x, labels)
    assert value.item() == pytest.approx(ref.item(), abs=ATOL)


@pytest.mark.parametrize("k", [1, 3])
def test_softtriple_gradient_matches_pml(k, monkeypatch):
    """Reference: PML SoftTripleLoss (+ SparseCentersRegularizer) gradients w.r.t. the embeddings
    and the centres (same set-up as the value test)."""
    monkeypatch.setattr(classification, "CENTER_REG_EPS", 0.0)
    ours, pml, x, labels = _softtriple_pair(k)
    _, grad = _run(ours, x, labels)
    _, ref = _run(pml, x, labels)
    _close(grad, ref)
    _close(ours.centers.grad, _pml_center_grad(pml, k))


def test_softtriple_with_the_authors_epsilon_stays_within_1e5_of_pml():
    """Reference: PML as above, with our regulariser's real epsilon 1e-5 (centres far apart, so
    sqrt(2 - 2 cos + 1e-5) moves by < 1e-5 relative)."""
    ours, pml, x, labels = _softtriple_pair(2)
    value, grad = _run(ours, x, labels)
    ref, ref_grad = _run(pml, x, labels)
    assert value.item() == pytest.approx(ref.item(), abs=ATOL)
    _close(grad, ref_grad)
    _close(ours.centers.grad, _pml_center_grad(pml, 2))


def _center_reg_reference(centers: torch.Tensor) -> torch.Tensor:
    """Float64 written-out regulariser of Qian et al. (with the authors' 1e-5 inside the sqrt):
    sum over classes c and centre pairs k < k' of sqrt(2 + 1e-5 - 2 w_ck . w_ck') / (C K (K-1))."""
    k, c, _ = centers.shape
    total = centers.new_zeros(())
    for cls in range(c):
        for a in range(k):
            for b in range(a + 1, k):
                wa = centers[a, cls] / centers[a, cls].norm()
                wb = centers[b, cls] / centers[b, cls].norm()
                total = total + torch.sqrt(2 + 1e-5 - 2 * (wa * wb).sum())
    return total / (c * k * (k - 1))


def test_softtriple_regulariser_matches_written_out_formula():
    """Reference: _center_reg_reference (float64 loops) for K = 3 and its autograd gradient w.r.t.
    the centres; one class's centres are made nearly equal (the term the regulariser drives)."""
    torch.manual_seed(8)
    loss = SoftTripleLoss(SoftTripleKnobs(centers_per_class=3), num_classes=4, embed_dim=5).double()
    with torch.no_grad():
        loss.centers[1, 2] = loss.centers[0, 2] * 1.5 + 1e-3
    centers = loss.centers.detach().clone().requires_grad_(True)
    ref = _center_reg_reference(centers)
    ref.backward()
    value = loss.center_regularizer()
    value.backward()
    assert value.item() == pytest.approx(ref.item(), abs=ATOL)
    _close(loss.centers.grad, centers.grad)


def test_softtriple_soft_assignment_is_over_each_class_s_centres():
    """Reference: by hand. One class, K = 2 centres at 0 and 90 degrees from x, la = 1, margin 0,
    no regulariser, gamma = .1: class similarity = (e^10 * 1 + e^0 * 0) / (e^10 + 1); with a
    second class whose both centres are orthogonal to x (similarity 0), the loss is
    log(1 + e^-s1). (The paper code's softmax over classes with gamma instead of 1/gamma and
    per-dimension normalisation would give a different number.)"""
    knobs = SoftTripleKnobs(centers_per_class=2, la=1.0, gamma=0.1, margin=0.0, reg_weight=0.0)
    loss = SoftTripleLoss(knobs, num_classes=2, embed_dim=3)
    with torch.no_grad():  # centers[k, c]
        loss.centers.copy_(torch.tensor([[[2.0, 0, 0], [0, 0, 1]], [[0, 3.0, 0], [0, 1, 0]]]))
    value = loss(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([0]))
    s1 = math.exp(10) / (math.exp(10) + 1)
    assert value.item() == pytest.approx(math.log1p(math.exp(-s1)), abs=ATOL)


# --------------------------------------------------------------------------- ProxyNCA


def _proxynca_reference(x: torch.Tensor, proxies: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """Float64 written-out ProxyNCA (positive proxy left out of the denominator):
    mean_i [ ||x_i' - p_y'||^2 + log sum_{c != y} exp(-||x_i' - p_c'||^2) ], v' = scale * v/||v||."""
    total = x.new_zeros(())
    for i in range(len(x)):
        xi = scale * x[i] / x[i].norm()
        d2 = [((xi - scale * p / p.norm()) ** 2).sum() for p in proxies]
        others = [torch.exp(-d2[c]) for c in range(len(proxies)) if c != labels[i]]
        total = total + d2[labels[i]] + torch.log(torch.stack(others).sum())
    return total / len(x)


# x_0 = (2, 0) of class 0, x_1 = 5 (.6, .8) of class 1, p_0 = (0, .5), p_1 = (-3, 0)
NCA_X = torch.tensor([[2.0, 0.0], [3.0, 4.0]])
NCA_LABELS = torch.tensor([0, 1])
NCA_PROXIES = torch.tensor([[0.0, 0.5], [-3.0, 0.0]])


def _proxynca_2d() -> ProxyNCALoss:
    loss = ProxyNCALoss(ProxyNCAKnobs(scale=3.0), num_classes=2, embed_dim=2)
    with torch.no_grad():
        loss.proxies.copy_(NCA_PROXIES)
    return loss


def test_proxynca_hand_computed_2class_2d():
    """Reference: by hand with scale 3. x_0' = (3, 0): d^2 to p_0' = (0, 3) is 18, to p_1' = (-3, 0)
    is 36 -> 18 - 36 = -18 (the only other proxy is p_1). x_1' = (1.8, 2.4): d^2 to p_1' is 28.8, to
    p_0' is 3.6 -> 28.8 - 3.6 = 25.2. Mean 3.6. (PML, keeping the positive in the denominator,
    would give log(1 + e^-18) + log(1 + e^25.2) over 2 instead.)"""
    value = _proxynca_2d()(NCA_X, NCA_LABELS)
    assert value.item() == pytest.approx(3.6, abs=ATOL)


def test_proxynca_gradient_hand_computed_2class_2d():
    """Reference: by hand. With two classes each term is 2 s^2 u_i . (q_other - q_y) (norms cancel;
    u, q unit), so d/dx_i = 2 s^2 (I - u u^T)(q_other - q_y) / (B ||x_i||) and
    d/dp_c = 2 s^2 (I - q_c q_c^T) sum_i (+-u_i) / (B ||p_c||), + where c is the other class."""
    loss = _proxynca_2d()
    x = NCA_X.clone().double().requires_grad_(True)
    loss.double()(x, NCA_LABELS).backward()
    u = F.normalize(NCA_X.double(), dim=1)
    p = NCA_PROXIES.double()
    q = F.normalize(p, dim=1)
    s2, b = 9.0, 2
    eye = torch.eye(2, dtype=torch.float64)
    grad_x = torch.zeros(2, 2, dtype=torch.float64)
    grad_p = torch.zeros(2, 2, dtype=torch.float64)
    for i, y in enumerate(NCA_LABELS.tolist()):
        grad_x[i] = 2 * s2 * (eye - torch.outer(u[i], u[i])) @ (q[1 - y] - q[y]) / (b * NCA_X[i].norm())
        for c in range(2):
            sign = -1.0 if c == y else 1.0
            grad_p[c] += sign * 2 * s2 * (eye - torch.outer(q[c], q[c])) @ u[i] / (b * p[c].norm())
    _close(x.grad, grad_x)
    _close(loss.proxies.grad, grad_p)


@pytest.mark.parametrize("scale", [3.0, 1.5])
def test_proxynca_value_matches_float64_formula(scale):
    """Reference: the float64 written-out formula (_proxynca_reference) on a random batch."""
    torch.manual_seed(9)
    loss = ProxyNCALoss(ProxyNCAKnobs(scale=scale), num_classes=5, embed_dim=6).double()
    x, labels = _batch(10, 6, [0, 1, 2, 3, 4, 0, 1, 2, 2, 2], seed=10)
    ref = _proxynca_reference(x, loss.proxies.detach(), labels, scale)
    assert loss(x, labels).item() == pytest.approx(ref.item(), abs=ATOL)


def test_proxynca_gradient_matches_float64_formula():
    """Reference: autograd gradients of the float64 written-out formula w.r.t. the embeddings and
    the proxies."""
    torch.manual_seed(9)
    loss = ProxyNCALoss(ProxyNCAKnobs(), num_classes=5, embed_dim=6).double()
    x, labels = _batch(10, 6, [0, 1, 2, 3, 4, 0, 1, 2, 2, 2], seed=10)
    proxies = loss.proxies.detach().clone().requires_grad_(True)
    x_ref = x.clone().requires_grad_(True)
    _proxynca_reference(x_ref, proxies, labels, 3.0).backward()
    _, grad = _run(loss, x, labels)
    _close(grad, x_ref.grad)
    _close(loss.proxies.grad, proxies.grad)


def test_proxynca_needs_two_classes():
    """Reference: the definition; with one class the denominator (other proxies) is empty."""
    with pytest.raises(ValueError, match="at least 2 classes"):
        ProxyNCALoss(ProxyNCAKnobs(), num_classes=1, embed_dim=4)


# --------------------------------------------------------------------------- ProxyAnchor


def _proxyanchor_pair(margin: float = 0.1, alpha: float = 32.0, classes: int = 6, dim: int = 8):
    from pytorch_metric_learning.losses import ProxyAnchorLoss as PMLProxyAnchor

    torch.manual_seed(11)
    ours = ProxyAnchorLoss(ProxyAnchorKnobs(margin=margin, alpha=alpha), num_classes=classes, embed_dim=dim).double()
    pml = PMLProxyAnchor(classes, dim, margin=margin, alpha=alpha).double()  # its DivisorReducer
    with torch.no_grad():
        pml.proxies.copy_(ours.proxies)
    # classes 4 and 5 are absent: |P+| = 4, the negative term still averages over all 6 proxies
    x, labels = _batch(10, dim, [0, 0, 1, 1, 2, 2, 3, 3, 0, 1], seed=12)
    return ours, pml, x, labels


@pytest.mark.parametrize("margin,alpha", [(0.1, 32.0), (0.3, 4.0)])
def test_proxyanchor_value_matches_pml(margin, alpha):
    """Reference: PML ProxyAnchorLoss(C, D, margin, alpha) with the same proxies, on a batch that
    lacks two classes (so the |P+| and C divisors differ)."""
    ours, pml, x, labels = _proxyanchor_pair(margin, alpha)
    value, _ = _run(ours, x, labels)
    ref, _ = _run(pml, x, labels)
    assert value.item() == pytest.approx(ref.item(), abs=ATOL)


def test_proxyanchor_gradient_matches_pml():
    """Reference: PML ProxyAnchorLoss gradients w.r.t. the embeddings and the proxies (the absent
    classes' proxies get gradient from the negative term only)."""
    ours, pml, x, labels = _proxyanchor_pair()
    _, grad = _run(ours, x, labels)
    _, ref = _run(pml, x, labels)
    _close(grad, ref)
    _close(ours.proxies.grad, pml.proxies.grad)
    assert ours.proxies.grad[4:].abs().sum() > 0


def test_proxyanchor_hand_computed_single_proxy_pair():
    """Reference: by hand. One sample of class 0 at cos 1 with p_0 and cos 0 with p_1, alpha 2,
    delta .1: pos = log(1 + e^{-2 (1 - .1)}) over |P+| = 1; neg = (0 + log(1 + e^{2 (0 + .1)})) / 2."""
    loss = ProxyAnchorLoss(ProxyAnchorKnobs(margin=0.1, alpha=2.0), num_classes=2, embed_dim=2)
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    value = loss(torch.tensor([[0.5, 0.0]]), torch.tensor([0]))
    expected = math.log1p(math.exp(-1.8)) + math.log1p(math.exp(0.2)) / 2
    assert value.item() == pytest.approx(expected, abs=ATOL)


# --------------------------------------------------------------------------- parameters, groups, checkpoints

C, D = 281, 128
# name -> (class, parameter name, shape, lr for network lr 3e-5, init check)
PARAMS = {
    "softmax": (NormalizedSoftmaxLoss, "weight", (C, D), 1e-5, ("uniform", 1 / math.sqrt(D))),
    "arcface": (ArcFaceLoss, "weight", (C, D), 5e-4, ("uniform", 1 / math.sqrt(D))),
    "softtriple": (SoftTripleLoss, "centers", (2, C, D), 3e-5, ("uniform", 1 / math.sqrt(2 * C))),
    "proxynca": (ProxyNCALoss, "proxies", (C, D), 50 * 3e-5, ("normal", 1 / 8)),
    "proxyanchor": (ProxyAnchorLoss, "proxies", (C, D), 100 * 3e-5, ("normal", math.sqrt(2 / C))),
}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_registry_builds_the_loss_with_its_parameter(name):
    """Reference: the brief: loss.name -> class, built from its default knobs, C and D, with
    exactly one own parameter of the documented shape."""
    cls, param, shape, _, _ = PARAMS[name]
    assert LOSSES[name] is cls
    loss = build_loss(LossSection(name=name), num_classes=C, embed_dim=D)
    assert isinstance(loss, cls)
    assert [(n, tuple(p.shape)) for n, p in loss.named_parameters()] == [(param, shape)]


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_groups_carry_the_lr_rule(name):
    """Reference: method-zoo section 1 / knobs: softmax 1e-5 and arcface 5e-4 absolute; softtriple
    1x, proxynca 50x, proxyanchor 100x the network lr (3e-5 here); no weight decay."""
    _, param, _, lr, _ = PARAMS[name]
    loss = build_loss(LossSection(name=name), num_classes=C, embed_dim=D)
    (group,) = loss.param_groups(3e-5)
    assert group["params"] == [getattr(loss, param)]
    assert group["lr"] == pytest.approx(lr, rel=1e-12)
    assert group["weight_decay"] == 0.0


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_init_distribution_and_global_seed(name):
    """Reference: the paper code's / authors' inits: U(+-bound) (max |w| <= bound, std bound/sqrt 3)
    or N(0, std^2) (std within 3 % on 36k draws); drawn from torch's global generator, so the same
    seed gives the same parameter and another seed a different one."""
    _, param, _, _, (kind, size) = PARAMS[name]
    torch.manual_seed(0)
    w = getattr(build_loss(LossSection(name=name), num_classes=C, embed_dim=D), param).detach()
    torch.manual_seed(0)
    again = getattr(build_loss(LossSection(name=name), num_classes=C, embed_dim=D), param).detach()
    torch.manual_seed(1)
    other = getattr(build_loss(LossSection(name=name), num_classes=C, embed_dim=D), param).detach()
    assert torch.equal(w, again) and not torch.equal(w, other)
    assert abs(w.mean().item()) < 0.05 * size
    if kind == "uniform":
        assert w.abs().max().item() <= size and w.abs().max().item() > 0.99 * size
        assert w.std().item() == pytest.approx(size / math.sqrt(3), rel=0.03)
    else:
        assert w.std().item() == pytest.approx(size, rel=0.03)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_state_dict_round_trip(name):
    """Reference: torch.save/torch.load of state_dict into a loss built from another seed restores
    the parameter exactly, and then both give the same loss on the same batch."""
    torch.manual_seed(0)
    saved = build_loss(LossSection(name=name), num_classes=7, embed_dim=5)
    buffer = io.BytesIO()
    torch.save(saved.state_dict(), buffer)
    torch.manual_seed(1)
    restored = build_loss(LossSection(name=name), num_classes=7, embed_dim=5)
    x = torch.randn(9, 5)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0, 1])
    assert saved(x, labels).item() != restored(x, labels).item()
    buffer.seek(0)
    restored.load_state_dict(torch.load(buffer))
    assert list(restored.state_dict()) == [PARAMS[name][1]]
    assert torch.equal(getattr(restored, PARAMS[name][1]), getattr(saved, PARAMS[name][1]))
    assert saved(x, labels).item() == restored(x, labels).item()

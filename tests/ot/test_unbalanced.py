"""Unbalanced and semi-relaxed OT / FGW against POT, on padding, numerics and gradients."""

import math
import warnings

import ot
import pytest
import torch
from ot.gromov._utils import gwggrad, gwloss, init_matrix, init_matrix_semirelaxed

from espnet_gmot.ot import ConvergenceWarning, fused_gromov_wasserstein, sinkhorn
from espnet_gmot.ot.length_classes import CLASS_COST
from tests.ot.problems import make_problem, pad_batch, pot_sinkhorn_plan

INF = math.inf
SHAPES = [(23, 9), (6, 15)]
KINDS = ["random", "monotone"]
# (source = frames, target = tokens): unbalanced, semi-relaxed (frames relaxed
# or free), the other side relaxed, and strongly asymmetric weights.
RELAXATIONS = [(1.0, 1.0), (0.5, INF), (0.0, INF), (INF, 0.3), (10.0, 0.1)]
TIGHT = dict(tol=1e-13)


def uniform(k):
    return torch.full((k,), 1.0 / k, dtype=torch.float64)


def pot_unbalanced(cost, epsilon, relaxation, method="sinkhorn"):
    n, m = cost.shape
    with warnings.catch_warnings():
        # "If reg_type = entropy, then the matrix c is overwritten by the one matrix."
        warnings.simplefilter("ignore", UserWarning)
        return ot.unbalanced.sinkhorn_unbalanced(
            uniform(n), uniform(m), cost, epsilon, relaxation, method=method,
            reg_type="entropy", stopThr=1e-15, numItermax=200000,
        )


@pytest.mark.parametrize("epsilon", [0.5, 0.05])
@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", KINDS)
def test_unbalanced_sinkhorn_matches_pot(epsilon, relaxation, shape, kind):
    cost, _, _ = make_problem(*shape, kind)
    ours = sinkhorn(
        cost[None], epsilon=epsilon, max_iter=100000, marginal_relaxation=relaxation, **TIGHT
    )
    # POT's exp-domain scaling algorithm: exp(-C / 0.05) is far from underflow
    # for these costs in float64, and it runs to a 1e-15 update.
    pot_plan = pot_unbalanced(cost, epsilon, relaxation)
    assert (ours.plan[0] - pot_plan).abs().max() <= 1e-10
    assert ours.value[0].item() == pytest.approx(float((cost * pot_plan).sum()), abs=1e-10)
    assert ours.marginal_error[0] <= 1e-12 and ours.unconverged == 0
    rho_a, rho_b = relaxation
    if rho_b == INF:  # a hard token side holds exactly
        assert (ours.plan[0].sum(0) - uniform(shape[1])).abs().max() <= 1e-12


@pytest.mark.parametrize("relaxation", [0.7, (0.5, INF), (INF, 0.3)])
def test_unbalanced_sinkhorn_matches_pot_stabilized(relaxation):
    cost, _, _ = make_problem(23, 9, "monotone", seed=4)
    ours = sinkhorn(cost[None], epsilon=0.1, max_iter=100000, marginal_relaxation=relaxation,
                    **TIGHT)
    pot_plan = pot_unbalanced(cost, 0.1, relaxation, method="sinkhorn_stabilized")
    assert (ours.plan[0] - pot_plan).abs().max() <= 1e-10
    # A relaxed side's marginal is not the uniform mass.
    rho_a, rho_b = (relaxation, relaxation) if isinstance(relaxation, float) else relaxation
    assert ((ours.plan[0].sum(1) - uniform(23)).abs().max() > 1e-4) == (rho_a != INF)
    assert ((ours.plan[0].sum(0) - uniform(9)).abs().max() > 1e-4) == (rho_b != INF)


def test_fixed_point_marginal_is_the_kl_optimality_condition():
    """At the optimum a relaxed side's marginal is ``a exp(-f / rho)``
    (Chizat et al., 2018): checked through POT's log-domain duals."""
    cost, _, _ = make_problem(12, 5, "random", seed=2)
    rho = 0.4
    ours = sinkhorn(cost[None], epsilon=0.2, max_iter=100000, marginal_relaxation=rho, **TIGHT)
    plan = ours.plan[0]
    # rows give f; the plan exp((f + g - C) / eps) then gives g, and the
    # columns must agree with it
    f = -rho * torch.log(plan.sum(1) / uniform(12))
    shifted = 0.2 * torch.log(plan) + cost  # f_i + g_j
    g = shifted[0] - f[0]
    assert torch.allclose(f[:, None] + g[None, :], shifted, atol=1e-12)
    assert torch.allclose(plan.sum(0), uniform(5) * torch.exp(-g / rho), atol=1e-12)


def test_hard_relaxation_is_exactly_the_balanced_solver():
    cost, c1, c2 = make_problem(23, 9, "monotone", dtype=torch.float32)
    plain = sinkhorn(cost[None], epsilon=0.05, max_iter=50, tol=1e-7)  # hits the Newton polish
    for relaxation in (INF, (INF, INF)):
        hard = sinkhorn(cost[None], epsilon=0.05, max_iter=50, tol=1e-7,
                        marginal_relaxation=relaxation)
        assert torch.equal(hard.plan, plain.plan) and hard.n_newton == plain.n_newton
    options = dict(gw_weight=0.3, outer_iter=3, inner_iter=100)
    fgw = fused_gromov_wasserstein(cost[None], c1[None], c2[None], **options)
    hard = fused_gromov_wasserstein(cost[None], c1[None], c2[None], **options,
                                    marginal_relaxation=(INF, INF))
    assert torch.equal(hard.plan, fgw.plan) and torch.equal(hard.value, fgw.value)


@pytest.mark.parametrize("relaxation", [(1.0, 1.0), (1.0, INF), (INF, 1.0)])
def test_growing_relaxation_tends_to_the_balanced_plan(relaxation):
    """The plan approaches the balanced one as c / rho; the translation of the duals keeps the iteration
    count flat however large rho / eps grows."""
    cost, _, _ = make_problem(12, 5, "monotone", seed=3)
    balanced = pot_sinkhorn_plan(cost, 0.5)
    gaps = []
    for scale in (10.0, 100.0, 1e4, 1e6):
        rho = tuple(r * scale for r in relaxation)
        result = sinkhorn(cost[None], epsilon=0.5, max_iter=1000, marginal_relaxation=rho,
                          tol=1e-13)
        assert result.n_iter < 200 and result.marginal_error[0] < 1e-13
        gaps.append((result.plan[0] - balanced).abs().max().item())
    scaled = [gap * scale for gap, scale in zip(gaps, (10.0, 100.0, 1e4, 1e6))]
    assert max(scaled) < 1.2 * min(scaled)  # gap = c / rho
    assert gaps[-1] <= 1e-7


def test_free_frames_leave_costly_frames_unmatched():
    """Semi-relaxed with free frames: frames that fit no token (silence) get
    almost no mass, where the balanced plan must give each of them 1/n."""
    cost, _, _ = make_problem(20, 5, "random", seed=5)
    cost[:4] += 2.0  # four leading frames far from every token
    free = sinkhorn(cost[None], epsilon=0.05, marginal_relaxation=(0.0, INF), **TIGHT).plan[0]
    balanced = sinkhorn(cost[None], epsilon=0.05, **TIGHT).plan[0]
    assert torch.allclose(balanced.sum(1)[:4], torch.full((4,), 1 / 20, dtype=torch.float64))
    assert free.sum(1)[:4].max() < 1e-15
    assert torch.allclose(free.sum(0), uniform(5), atol=1e-14)  # tokens stay hard


def _pot_srfgw_gradient(plan_tokens_by_frames, cost, c1, c2, alpha):
    """POT's srFGW gradient, hard side first (tokens): ``grad(T)`` of
    ``entropic_semirelaxed_fused_gromov_wasserstein`` (symmetric structures)."""
    t = plan_tokens_by_frames
    p = t.sum(1)
    const, h1, h2, f2t = init_matrix_semirelaxed(c2, c1, p, "square_loss")
    marginal_product = torch.outer(torch.ones_like(p), t.sum(0) @ f2t)
    grad = alpha * gwggrad(const + marginal_product, h1, h2, t) + (1 - alpha) * cost.T
    loss = (1 - alpha) * (cost.T * t).sum() + alpha * gwloss(const + marginal_product, h1, h2, t)
    return grad, loss


@pytest.mark.parametrize("epsilon", [0.5, 0.1])
@pytest.mark.parametrize("gw_weight", [0.02, 0.5])
@pytest.mark.parametrize("kind", KINDS)
def test_semirelaxed_fgw_is_the_fixed_point_of_pots_srfgw_gradient(epsilon, gw_weight, kind):
    """Entropic srFGW with the tokens hard and the frames free: the plan is
    ``T = diag(p / (exp(-grad(T) / eps) 1)) exp(-grad(T) / eps)`` for POT's own
    gradient, and the value is POT's srFGW objective of that plan."""
    cost, c1, c2 = make_problem(23, 9, kind, seed=1)
    ours = fused_gromov_wasserstein(
        cost[None], c1[None], c2[None], epsilon=epsilon, gw_weight=gw_weight,
        marginal_relaxation=(0.0, INF), outer_iter=2000, outer_tol=1e-14,
        inner_iter=100000, **TIGHT,
    )
    t = ours.plan[0].T
    grad, loss = _pot_srfgw_gradient(t, cost, c1, c2, gw_weight)
    kernel = torch.exp(-(grad - grad.amin(1, keepdim=True)) / epsilon)
    step = (uniform(9) / kernel.sum(1))[:, None] * kernel
    assert (step - t).abs().max() <= 1e-12
    assert ours.value[0].item() == pytest.approx(loss.item(), abs=1e-12)
    assert ours.n_outer < 2000 and ours.marginal_error[0] <= 1e-12


@pytest.mark.parametrize("relaxation", [(1.0, 1.0), (0.5, INF)])
def test_unbalanced_fgw_plan_is_pots_unbalanced_sinkhorn_of_its_own_gradient(relaxation):
    """The fixed point of the relaxed mirror descent: the plan is POT's
    unbalanced Sinkhorn plan for the FGW gradient at that plan (POT's square
    loss decomposition with the plan's own marginals)."""
    cost, c1, c2 = make_problem(23, 9, "monotone", seed=1)
    alpha, epsilon = 0.5, 0.2
    ours = fused_gromov_wasserstein(
        cost[None], c1[None], c2[None], epsilon=epsilon, gw_weight=alpha,
        marginal_relaxation=relaxation, outer_iter=2000, outer_tol=1e-14,
        inner_iter=100000, **TIGHT,
    )
    plan = ours.plan[0]
    const, h1, h2 = init_matrix(c1, c2, plan.sum(1), plan.sum(0), "square_loss")
    grad = (1 - alpha) * cost + alpha * gwggrad(const, h1, h2, plan)
    assert (pot_unbalanced(grad, epsilon, relaxation) - plan).abs().max() <= 1e-10
    value = (1 - alpha) * (cost * plan).sum() + alpha * gwloss(const, h1, h2, plan)
    assert ours.value[0].item() == pytest.approx(value.item(), abs=1e-12)


@pytest.mark.parametrize("per_length_class", [False, True])
@pytest.mark.parametrize("gw_weight", [0.0, 0.3])
def test_relaxed_padded_batch_equals_items_and_padding_never_leaks(
    gw_weight, per_length_class, monkeypatch
):
    if per_length_class:  # FGW's structure product per length class (free classes)
        monkeypatch.setitem(CLASS_COST, "cpu", 0.0)
    shapes = [(31, 12), (7, 3), (18, 20), (1, 4), (25, 1)]
    problems = [make_problem(n, m, "monotone", seed=s) for s, (n, m) in enumerate(shapes)]
    cost, c1, c2, n_len, m_len = pad_batch(problems, pad_value=float("nan"))
    options = dict(epsilon=0.1, gw_weight=gw_weight, outer_iter=5,
                   marginal_relaxation=(0.5, 2.0))
    batched = fused_gromov_wasserstein(cost, c1, c2, n_len, m_len, **options)
    assert torch.isfinite(batched.plan).all() and torch.isfinite(batched.value).all()
    for b, (c, s, t) in enumerate(problems):
        n, m = c.shape
        alone = fused_gromov_wasserstein(c[None], s[None], t[None], **options)
        assert torch.allclose(batched.plan[b, :n, :m], alone.plan[0], atol=1e-12, rtol=0)
        assert batched.value[b].item() == pytest.approx(alone.value[0].item(), abs=1e-12)
        assert batched.plan[b, n:].abs().sum() == 0 and batched.plan[b, :, m:].abs().sum() == 0


@pytest.mark.parametrize("relaxation", [(0.05, 0.05), (0.0, INF), (0.1, INF)])
def test_small_epsilon_float32_stays_finite(relaxation):
    cost, c1, c2 = make_problem(40, 10, "monotone", dtype=torch.float32)
    ours = sinkhorn(cost[None], epsilon=1e-3, max_iter=5000, tol=1e-6,
                    marginal_relaxation=relaxation)
    assert torch.isfinite(ours.plan).all() and torch.isfinite(ours.value).all()
    assert ours.plan.dtype == torch.float32 and ours.plan.sum() > 0.1
    reference = sinkhorn(cost[None].double(), epsilon=1e-3, max_iter=5000, tol=1e-9,
                         marginal_relaxation=relaxation)
    assert (ours.plan.double() - reference.plan).abs().max() <= 1e-3
    fgw = fused_gromov_wasserstein(cost[None], c1[None], c2[None], epsilon=1e-3, gw_weight=0.5,
                                   outer_iter=5, inner_iter=5000, tol=1e-6,
                                   marginal_relaxation=relaxation)
    assert torch.isfinite(fgw.plan).all() and torch.isfinite(fgw.value).all()


def test_small_epsilon_unrolled_gradient_is_finite():
    cost, _, _ = make_problem(30, 8, "monotone", dtype=torch.float32)
    cost.requires_grad_(True)
    with pytest.warns(ConvergenceWarning, match="short of their fixed point"):
        result = sinkhorn(cost[None], epsilon=1e-3, max_iter=300, tol=1e-6,
                          gradient="unrolled", marginal_relaxation=(0.2, INF))
    (grad,) = torch.autograd.grad(result.value.sum(), cost)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("relaxation", [(0.7, 0.7), (0.0, INF)])
def test_unrolled_relaxed_gradient_passes_gradcheck_sinkhorn(relaxation):
    cost, _, _ = make_problem(6, 4, "monotone")
    cost.requires_grad_(True)

    def ot_value(c):
        return sinkhorn(c[None], epsilon=0.2, max_iter=60, tol=0.0, gradient="unrolled",
                        marginal_relaxation=relaxation).value

    assert torch.autograd.gradcheck(ot_value, (cost,), eps=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("relaxation", [(0.7, 0.7), (0.0, INF)])
def test_unrolled_relaxed_gradient_passes_gradcheck_fgw(relaxation):
    cost, c1, c2 = make_problem(6, 4, "monotone")
    inputs = tuple(t.clone().requires_grad_(True) for t in (cost, c1, c2))

    def fgw_value(c, s, t):
        sym = lambda x: 0.5 * (x + x.transpose(-1, -2))
        return fused_gromov_wasserstein(
            c[None], sym(s)[None], sym(t)[None], epsilon=0.2, gw_weight=0.3,
            outer_iter=4, inner_iter=40, tol=0.0, gradient="unrolled",
            marginal_relaxation=relaxation,
        ).value

    assert torch.autograd.gradcheck(fgw_value, inputs, eps=1e-6, atol=1e-6)


def test_envelope_gradient_is_exact_for_the_unbalanced_objective():
    """d/dC min_P (<C,P> + eps KL(P|1) + rho KL(P1|a) + rho KL(P^T1|b)) = P*."""
    cost, _, _ = make_problem(7, 5, "random")
    cost.requires_grad_(True)
    epsilon, (rho_a, rho_b) = 0.3, (0.5, 2.0)

    def kl(x, y):
        return (x * torch.log(x / y) - x + y).sum(-1)

    def objective(c):
        result = sinkhorn(c[None], epsilon=epsilon, max_iter=10000, tol=1e-15,
                          marginal_relaxation=(rho_a, rho_b))
        plan = result.plan.detach()
        return (result.value + epsilon * kl(plan.flatten(1), torch.ones(1, 35, dtype=plan.dtype))
                + rho_a * kl(plan.sum(2), uniform(7)) + rho_b * kl(plan.sum(1), uniform(5)))

    assert torch.autograd.gradcheck(objective, (cost,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), (1.0,), (1.0, -2.0), "inf", True])
def test_bad_relaxation_is_named(bad):
    cost, c1, c2 = make_problem(5, 4, "random")
    with pytest.raises(ValueError, match="marginal_relaxation must be"):
        sinkhorn(cost[None], marginal_relaxation=bad)
    with pytest.raises(ValueError, match="marginal_relaxation must be"):
        fused_gromov_wasserstein(cost[None], c1[None], c2[None], marginal_relaxation=bad)

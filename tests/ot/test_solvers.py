"""The batched solvers against POT, on padding, numerics, dtypes and gradients."""

import numpy as np
import ot
import pytest
import torch

from espnet_gmot.ot import fused_gromov_wasserstein, sinkhorn
from espnet_gmot.ot.length_classes import CLASS_COST
from tests.ot.problems import make_problem, pad_batch

TIGHT = dict(tol=1e-12)
SHAPES = [(23, 9), (6, 15)]  # n > m (speech-like) and n < m
KINDS = ["random", "monotone"]


def uniform(k, dtype=torch.float64):
    return torch.full((k,), 1.0 / k, dtype=dtype)


def pot_fgw(cost, c1, c2, epsilon, alpha, outer_iter):
    n, m = cost.shape
    return ot.gromov.entropic_fused_gromov_wasserstein(
        cost, c1, c2, uniform(n), uniform(m), loss_fun="square_loss",
        epsilon=epsilon, alpha=alpha, symmetric=True, max_iter=outer_iter,
        tol=0.0, solver="PGD", log=True, stopThr=1e-13, numItermax=100000,
    )


@pytest.mark.parametrize("epsilon", [0.5, 0.1, 0.05])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", KINDS)
def test_sinkhorn_matches_pot_sinkhorn_log(epsilon, shape, kind):
    cost, _, _ = make_problem(*shape, kind)
    ours = sinkhorn(cost[None], epsilon=epsilon, max_iter=100000, **TIGHT)
    n, m = shape
    pot_plan = ot.sinkhorn(
        uniform(n), uniform(m), cost, epsilon, method="sinkhorn_log",
        stopThr=1e-13, numItermax=100000,
    )
    assert (ours.plan[0] - pot_plan).abs().max() <= 1e-6
    assert ours.value[0].item() == pytest.approx(float((cost * pot_plan).sum()), abs=1e-9)
    # Marginals hold at convergence.
    assert (ours.plan[0].sum(1) - uniform(n)).abs().max() <= 1e-6
    assert (ours.plan[0].sum(0) - uniform(m)).abs().max() <= 1e-6
    assert ours.marginal_error[0] <= 1e-10


@pytest.mark.parametrize("epsilon", [0.5, 0.1, 0.05])
@pytest.mark.parametrize("gw_weight", [0.0, 0.02, 0.5])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", KINDS)
def test_fgw_matches_pot_entropic_fgw_pgd(epsilon, gw_weight, shape, kind):
    cost, c1, c2 = make_problem(*shape, kind, seed=1)
    ours = fused_gromov_wasserstein(
        cost[None], c1[None], c2[None], epsilon=epsilon, gw_weight=gw_weight,
        outer_iter=10, inner_iter=100000, **TIGHT,
    )
    pot_plan, log = pot_fgw(cost, c1, c2, epsilon, gw_weight, outer_iter=10)
    assert (ours.plan[0] - pot_plan).abs().max() <= 1e-6
    assert ours.value[0].item() == pytest.approx(log["fgw_dist"].item(), abs=1e-8)


def test_gw_weight_zero_is_exactly_sinkhorn():
    cost, c1, c2 = make_problem(30, 8, "monotone")
    fgw = fused_gromov_wasserstein(cost[None], c1[None], c2[None], gw_weight=0.0, epsilon=0.1)
    plain = sinkhorn(cost[None], epsilon=0.1)
    assert torch.equal(fgw.plan, plain.plan) and torch.equal(fgw.value, plain.value)


@pytest.mark.parametrize("per_length_class", [False, True])
@pytest.mark.parametrize("gw_weight", [0.0, 0.02, 0.5])
def test_padded_batch_equals_unpadded_items_and_padding_never_leaks(
    gw_weight, per_length_class, monkeypatch
):
    if per_length_class:  # FGW's structure product per length class (free classes)
        monkeypatch.setitem(CLASS_COST, "cpu", 0.0)
    shapes = [(31, 12), (7, 3), (18, 20), (1, 4), (25, 1)]
    problems = [make_problem(n, m, "monotone", seed=s) for s, (n, m) in enumerate(shapes)]
    cost, c1, c2, n_len, m_len = pad_batch(problems, pad_value=float("nan"))
    cost[0, 31:, :] = float("inf")  # inf too, where item 0 has padding
    batched = fused_gromov_wasserstein(
        cost, c1, c2, n_len, m_len, epsilon=0.1, gw_weight=gw_weight, outer_iter=5
    )
    assert torch.isfinite(batched.plan).all() and torch.isfinite(batched.value).all()
    for b, (c, s, t) in enumerate(problems):
        n, m = c.shape
        alone = fused_gromov_wasserstein(
            c[None], s[None], t[None], epsilon=0.1, gw_weight=gw_weight, outer_iter=5
        )
        assert torch.allclose(batched.plan[b, :n, :m], alone.plan[0], atol=1e-12, rtol=0)
        assert batched.value[b].item() == pytest.approx(alone.value[0].item(), abs=1e-12)
        assert batched.plan[b, n:].abs().sum() == 0 and batched.plan[b, :, m:].abs().sum() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_small_epsilon_stays_finite_where_exp_domain_underflows(dtype):
    gen = torch.Generator().manual_seed(3)
    # Costs in [1, 2]: exp(-C / 1e-3) is exactly 0 in every cell, even in float64.
    cost = 1.0 + torch.rand(1, 40, 12, generator=gen, dtype=torch.float64)
    a, b = uniform(40), uniform(12)
    # the problem is in the regime meant: the exp-domain kernel is all zeros
    assert not torch.exp(-cost / 1e-3).any()
    ours = sinkhorn(cost.to(dtype), epsilon=1e-3, max_iter=10000, tol=1e-7)
    assert torch.isfinite(ours.plan).all() and torch.isfinite(ours.value).all()
    assert ours.plan.dtype == dtype
    plan = ours.plan[0].double()
    assert (plan.sum(1) - a).abs().max() <= 1e-6  # rows are exact by construction
    if dtype == torch.float64:
        assert (plan.sum(0) - b).abs().max() <= 1e-6
        reference = ot.sinkhorn(
            a, b, cost[0], 1e-3, method="sinkhorn_log", stopThr=1e-9, numItermax=20000
        )
        assert (plan - reference).abs().max() <= 1e-5
    else:
        # float32 rounds (f + g - C) / 1e-3 to ~2e-4 relative: that, not the
        # solver, bounds the column error at this epsilon.
        assert (plan.sum(0) - b).abs().max() <= 1e-4


def test_fgw_small_epsilon_finite():
    cost, c1, c2 = make_problem(40, 10, "monotone", dtype=torch.float32)
    result = fused_gromov_wasserstein(
        cost[None], c1[None], c2[None], epsilon=1e-3, gw_weight=0.5, outer_iter=5,
        inner_iter=5000, tol=1e-6,
    )
    assert torch.isfinite(result.plan).all() and torch.isfinite(result.value).all()
    assert result.marginal_error.max() <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_inputs_solve_in_float32_and_return_input_dtype(dtype):
    cost, c1, c2 = make_problem(30, 8, "monotone", dtype=torch.float32)
    reference = fused_gromov_wasserstein(cost[None], c1[None], c2[None], gw_weight=0.02)
    low = fused_gromov_wasserstein(
        cost[None].to(dtype), c1[None].to(dtype), c2[None].to(dtype), gw_weight=0.02
    )
    assert low.plan.dtype == dtype and low.value.dtype == dtype
    rounding = {torch.float16: 1e-3, torch.bfloat16: 1e-2, torch.float32: 0}[dtype]
    # The only difference is the rounding of the inputs to the low precision.
    assert (low.plan.float() - reference.plan).abs().max() <= rounding * reference.plan.max() * 20 + 1e-7


def test_autocast_does_not_lower_the_solver_precision():
    cost, c1, c2 = make_problem(30, 8, "monotone", dtype=torch.float32)
    reference = fused_gromov_wasserstein(cost[None], c1[None], c2[None], gw_weight=0.02)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_amp = fused_gromov_wasserstein(cost[None], c1[None], c2[None], gw_weight=0.02)
    assert under_amp.plan.dtype == torch.float32
    assert torch.allclose(under_amp.plan, reference.plan, atol=1e-7)


def test_unrolled_gradient_passes_gradcheck_sinkhorn():
    cost, _, _ = make_problem(6, 4, "random")
    cost.requires_grad_(True)

    def value(c):
        return sinkhorn(c[None], epsilon=0.2, max_iter=60, tol=0.0, gradient="unrolled").value

    assert torch.autograd.gradcheck(value, (cost,), eps=1e-6, atol=1e-6)


def test_unrolled_gradient_passes_gradcheck_fgw():
    cost, c1, c2 = make_problem(6, 4, "monotone")
    inputs = tuple(t.clone().requires_grad_(True) for t in (cost, c1, c2))

    def value(c, s, t):
        sym = lambda x: 0.5 * (x + x.transpose(-1, -2))  # keep the structures symmetric
        return fused_gromov_wasserstein(
            c[None], sym(s)[None], sym(t)[None], epsilon=0.2, gw_weight=0.3,
            outer_iter=4, inner_iter=40, tol=0.0, gradient="unrolled",
        ).value

    assert torch.autograd.gradcheck(value, inputs, eps=1e-6, atol=1e-6)


def test_envelope_gradient_is_the_plan():
    cost, c1, c2 = make_problem(12, 5, "monotone")
    cost.requires_grad_(True)
    result = sinkhorn(cost[None], epsilon=0.1)
    (grad,) = torch.autograd.grad(result.value.sum(), cost)
    assert torch.equal(grad, result.plan[0])
    assert not result.plan.requires_grad
    fgw = fused_gromov_wasserstein(cost[None], c1[None], c2[None], gw_weight=0.3)
    (grad,) = torch.autograd.grad(fgw.value.sum(), cost)
    assert torch.allclose(grad, 0.7 * fgw.plan[0], atol=1e-15)


def _entropic_objective(result_value, plan, epsilon):
    # <C, P> - eps H(P) with H(P) = -sum P (log P - 1), POT's convention.
    entropy = -(plan * (torch.log(plan) - 1)).sum((1, 2))
    return result_value - epsilon * entropy


def test_envelope_gradient_is_exact_for_the_entropic_objective():
    """Envelope theorem: d/dC min_P (<C,P> - eps H(P)) = P*. gradcheck compares
    the envelope gradient (the plan) with finite differences of that minimum."""
    cost, _, _ = make_problem(7, 5, "random")
    cost.requires_grad_(True)

    def objective(c):
        result = sinkhorn(c[None], epsilon=0.3, max_iter=10000, tol=1e-14)
        return _entropic_objective(result.value, result.plan.detach(), 0.3)

    assert torch.autograd.gradcheck(objective, (cost,), eps=1e-6, atol=1e-6)


def test_envelope_gradient_is_exact_for_converged_entropic_fgw():
    cost, c1, c2 = make_problem(7, 5, "monotone")
    cost.requires_grad_(True)

    def objective(c):
        result = fused_gromov_wasserstein(
            c[None], c1[None], c2[None], epsilon=0.5, gw_weight=0.3, outer_iter=300,
            outer_tol=1e-14, inner_iter=10000, tol=1e-14,
        )
        return _entropic_objective(result.value, result.plan.detach(), 0.5)

    assert torch.autograd.gradcheck(objective, (cost,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(source_lengths=torch.tensor([0])), "source_lengths must lie in"),
        (dict(target_lengths=torch.tensor([9])), "target_lengths must lie in"),
        (dict(source_lengths=torch.tensor([2, 3])), "one length per batch item"),
        (dict(epsilon=0.0), "epsilon must be > 0"),
        (dict(gradient="implicit"), "gradient must be one of"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    cost, _, _ = make_problem(5, 4, "random")
    with pytest.raises(ValueError, match=message):
        sinkhorn(cost[None], **kwargs)


def test_fgw_shape_mismatch_is_named():
    cost, c1, c2 = make_problem(5, 4, "random")
    with pytest.raises(ValueError, match="target_structure must be"):
        fused_gromov_wasserstein(cost[None], c1[None], c1[None], gw_weight=0.1)
    with pytest.raises(ValueError, match="gw_weight must lie in"):
        fused_gromov_wasserstein(cost[None], c1[None], c2[None], gw_weight=1.5)


def test_result_reports_iterations_and_error():
    cost, _, _ = make_problem(20, 6, "monotone")
    loose = sinkhorn(cost[None], epsilon=0.05, tol=1e-3)
    tight = sinkhorn(cost[None], epsilon=0.05, tol=1e-12, max_iter=100000)
    assert 1 <= loose.n_iter < tight.n_iter
    assert loose.marginal_error[0] < 1e-3 and tight.marginal_error[0] < 1e-12
    capped = sinkhorn(cost[None], epsilon=0.05, tol=0.0, max_iter=3)
    assert capped.n_iter == 3
    np.testing.assert_allclose(capped.plan[0].sum(1).numpy(), np.full(20, 1 / 20), atol=1e-15)


@pytest.mark.parametrize("omega", [1.5, 1.8])
def test_overrelaxation_reaches_the_same_plan_as_pot(omega):
    cost, c1, c2 = make_problem(23, 9, "monotone", seed=2)
    n, m = cost.shape
    ours = sinkhorn(cost[None], epsilon=0.1, max_iter=100000, tol=1e-12, overrelaxation=omega)
    pot_plan = ot.sinkhorn(uniform(n), uniform(m), cost, 0.1, method="sinkhorn_log",
                           stopThr=1e-13, numItermax=100000)
    assert (ours.plan[0] - pot_plan).abs().max() <= 1e-9
    fgw = fused_gromov_wasserstein(cost[None], c1[None], c2[None], epsilon=0.1, gw_weight=0.3,
                                   inner_iter=100000, tol=1e-12, overrelaxation=omega)
    pot_fgw_plan, _ = pot_fgw(cost, c1, c2, 0.1, 0.3, outer_iter=10)
    assert (fgw.plan[0] - pot_fgw_plan).abs().max() <= 1e-8


def test_overrelaxation_needs_fewer_iterations_under_the_temporal_prior():
    from espnet_gmot.ot import temporal_cost

    gen = torch.Generator().manual_seed(0)
    n_len = torch.randint(30, 61, (8,), generator=gen)
    m_len = torch.randint(5, 13, (8,), generator=gen)
    cost = 2 * torch.rand(8, 60, 12, generator=gen) + 0.5 * temporal_cost(n_len, m_len, 60, 12)
    plain = sinkhorn(cost, n_len, m_len, epsilon=0.1, tol=1e-6, max_iter=20000)
    relaxed = sinkhorn(cost, n_len, m_len, epsilon=0.1, tol=1e-6, max_iter=20000, overrelaxation=1.7)
    # float32 column sums round to ~1e-7 of the 1e-6 tolerance
    assert relaxed.marginal_error.max() < 1.1e-6 and plain.marginal_error.max() < 1.1e-6
    assert relaxed.n_iter * 3 < plain.n_iter  # measured: 297 against 1563
    # Same fixed point: at a tight tolerance both reach the same plan.
    tight = dict(epsilon=0.1, tol=1e-10, max_iter=50000)
    plain = sinkhorn(cost.double(), n_len, m_len, **tight)
    relaxed = sinkhorn(cost.double(), n_len, m_len, overrelaxation=1.7, **tight)
    assert (relaxed.plan - plain.plan).abs().max() < 1e-8


def test_overrelaxation_range_is_checked():
    cost, _, _ = make_problem(5, 4, "random")
    with pytest.raises(ValueError, match="overrelaxation must lie in"):
        sinkhorn(cost[None], overrelaxation=2.0)

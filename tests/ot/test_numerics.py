"""Numerics and bad inputs of the OT API (issue 10, items 1, 2, 9 and 10)."""

import math
import warnings

import ot
import pytest
import torch

from espnet_gmot.ot import (
    ConvergenceWarning,
    cosine_cost,
    fused_gromov_wasserstein,
    sinkhorn,
    structure_cost,
    temporal_cost,
)
from espnet_gmot.ot.log_domain import annealing_stages
from tests.ot.problems import (
    make_problem,
    pad_batch,
    pot_sinkhorn_plan,
    speech_like_batch,
    tot_paper_setting,
)


def padded_features(dtype, scale=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(2, 30, 8, generator=gen, dtype=torch.float64)
    y = scale * torch.randn(2, 7, 8, generator=gen, dtype=torch.float64)
    x[1, 22:] = float("nan")  # padding poisoned
    y[1, 5:] = float("nan")
    return x.to(dtype), y.to(dtype), torch.tensor([30, 22]), torch.tensor([7, 5])


# --- item 1: unrolled gradients at small epsilon ---------------------------------


@pytest.mark.parametrize(
    "dtype, epsilon, temporal_weight",
    [
        (torch.float64, 1e-3, 0.5),
        (torch.float32, 1e-3, 0.5),
        (torch.float32, 1e-2, 0.5),
        (torch.float32, 1e-3, 0.0),
    ],
)
@pytest.mark.parametrize("omega", [1.0, 1.7])
def test_unrolled_gradients_are_finite_at_small_epsilon(dtype, epsilon, temporal_weight, omega):
    x, y, n_len, m_len = padded_features(dtype)
    x.requires_grad_(True)
    cost = cosine_cost(x, y, n_len, m_len) + temporal_weight * temporal_cost(
        n_len, m_len, 30, 7, dtype=dtype
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = sinkhorn(cost, n_len, m_len, epsilon=epsilon, max_iter=200, tol=1e-6,
                          gradient="unrolled", overrelaxation=omega)
    (grad,) = torch.autograd.grad(result.value.sum(), x)
    assert torch.isfinite(result.value).all()
    assert torch.isfinite(grad).all()
    assert grad[1, 22:].abs().sum() == 0  # padded frames get no gradient
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("epsilon, temporal_weight", [(1e-2, 0.5), (3e-3, 0.0)])
def test_unrolled_gradient_passes_gradcheck_at_small_epsilon(epsilon, temporal_weight):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 3, 3, generator=gen, dtype=torch.float64)
    n_len, m_len = torch.tensor([6]), torch.tensor([3])
    prior = temporal_weight * temporal_cost(n_len, m_len, 6, 3, dtype=torch.float64)

    def value(features):
        cost = cosine_cost(features, y, n_len, m_len) + prior
        return sinkhorn(cost, n_len, m_len, epsilon=epsilon, max_iter=40, tol=0.0,
                        gradient="unrolled", epsilon_scaling=False).value

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert torch.autograd.gradcheck(value, (x,), eps=1e-7, atol=1e-5, rtol=1e-3)


def test_unrolled_gradient_with_epsilon_scaling_passes_gradcheck():
    cost, _, _ = make_problem(6, 4, "monotone")
    cost.requires_grad_(True)
    # a cost range of more than ANNEAL_ABOVE epsilons: the solve anneals
    assert annealing_stages(float(cost.max() - cost.min()), 0.03, 60) > 0

    def value(c):
        return sinkhorn(c[None], epsilon=0.03, max_iter=60, tol=0.0, gradient="unrolled",
                        overrelaxation=1.5).value

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert torch.autograd.gradcheck(value, (cost,), eps=1e-6, atol=1e-6)


# --- item 2: low-precision inputs to the cost builders ---------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_temporal_cost_is_exact_whatever_dtype_is_asked(dtype):
    n_len, m_len = torch.tensor([300, 256]), torch.tensor([300, 40])
    low = temporal_cost(n_len, m_len, 300, 300, dtype=dtype)
    exact = temporal_cost(n_len, m_len, 300, 300, dtype=torch.float64)
    assert low.dtype == torch.float32
    assert torch.isfinite(low).all()
    assert exact.max() > 40000  # beyond fp16's 65504 once squared in fp16 arithmetic
    assert (low.double() - exact).abs().max() <= 1e-6 * exact.max()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cosine_cost_of_low_precision_features_is_finite_and_accurate(dtype):
    gen = torch.Generator().manual_seed(0)
    # entries ~ 30: the squared norm of a 768-dim row (~7e5) overflows fp16
    x = 30 * torch.randn(2, 260, 768, generator=gen)
    y = 30 * torch.randn(2, 258, 768, generator=gen)
    x[1, 200:] = float("nan")
    n_len, m_len = torch.tensor([260, 200]), torch.tensor([258, 100])
    x_low = x.to(dtype).requires_grad_(True)
    cost = cosine_cost(x_low, y.to(dtype), n_len, m_len)
    exact = cosine_cost(x_low.detach().double(), y.to(dtype).double(), n_len, m_len)
    assert cost.dtype == torch.float32 and torch.isfinite(cost).all()
    assert (cost.double() - exact).abs().max() < 1e-5
    cost.sum().backward()
    assert torch.isfinite(x_low.grad.float()).all()
    assert x_low.grad[1, 200:].float().abs().sum() == 0
    structure = structure_cost(x_low.detach(), n_len)
    assert torch.isfinite(structure).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_ot_on_low_precision_costs_with_256_frames_and_tokens_is_finite(dtype):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 300, 32, generator=gen).to(dtype)
    y = torch.randn(2, 260, 32, generator=gen).to(dtype)
    n_len, m_len = torch.tensor([300, 280]), torch.tensor([260, 256])
    cost = cosine_cost(x, y, n_len, m_len) + 0.5 * temporal_cost(n_len, m_len, 300, 260, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = fused_gromov_wasserstein(
            cost.to(dtype), structure_cost(x, n_len).to(dtype), structure_cost(y, m_len).to(dtype),
            n_len, m_len, epsilon=0.1, gw_weight=0.02, outer_iter=2, inner_iter=50, tol=1e-6,
        )
    assert torch.isfinite(result.plan.float()).all() and torch.isfinite(result.value.float()).all()


# --- item 9: inputs that are not what they should be ------------------------------


LENGTH_CASES = [
    (torch.tensor([0, 3]), "must lie in \\[1, "),
    (torch.tensor([3, 9]), "must lie in \\[1, "),
    (torch.tensor([2.5, 3.0]), "must hold integer sizes"),
    (torch.tensor([True, True]), "must hold integer sizes"),
    (torch.tensor([[2, 3]]), "must have shape \\(2,\\), one length per batch item"),
]


@pytest.mark.parametrize("lengths, message", LENGTH_CASES)
def test_cost_builders_name_bad_lengths(lengths, message):
    x, y = torch.randn(2, 5, 3), torch.randn(2, 4, 3)
    good = torch.tensor([5, 4])
    with pytest.raises(ValueError, match="source_lengths " + message):
        cosine_cost(x, y, lengths, torch.tensor([4, 4]))
    with pytest.raises(ValueError, match="target_lengths " + message):
        cosine_cost(x, y, good, lengths)
    with pytest.raises(ValueError, match="lengths " + message):
        structure_cost(x, lengths)
    with pytest.raises(ValueError, match="target_lengths " + message):
        temporal_cost(good, lengths, 5, 4)


@pytest.mark.parametrize("lengths, message", LENGTH_CASES)
@pytest.mark.parametrize("gw_weight", [0.0, 0.3])
def test_solvers_name_bad_lengths(lengths, message, gw_weight):
    cost, c1, c2, _, m_len = pad_batch([make_problem(5, 4, "random"), make_problem(3, 2, "random")])
    with pytest.raises(ValueError, match="source_lengths " + message):
        fused_gromov_wasserstein(cost, c1, c2, lengths, m_len, gw_weight=gw_weight)


def test_lengths_as_python_lists_are_accepted():
    x, y = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(2, 4, 3, dtype=torch.float64)
    as_tensor = cosine_cost(x, y, torch.tensor([5, 3]), torch.tensor([4, 2]))
    assert torch.equal(cosine_cost(x, y, [5, 3], [4, 2]), as_tensor)
    assert torch.equal(structure_cost(x, [5, 3]), structure_cost(x, torch.tensor([5, 3])))
    assert torch.equal(temporal_cost([5, 3], [4, 2]), temporal_cost(torch.tensor([5, 3]), torch.tensor([4, 2])))
    plan = sinkhorn(as_tensor, [5, 3], [4, 2]).plan
    assert torch.equal(plan, sinkhorn(as_tensor, torch.tensor([5, 3]), torch.tensor([4, 2])).plan)


def test_lengths_of_another_kind_are_a_type_error():
    x, y = torch.randn(1, 5, 3), torch.randn(1, 4, 3)
    with pytest.raises(TypeError, match="source_lengths must be a 1-D integer tensor"):
        cosine_cost(x, y, "5", [4])


@pytest.mark.parametrize("epsilon", [math.inf, math.nan, -1.0])
def test_epsilon_must_be_finite_and_positive(epsilon):
    cost, c1, c2 = make_problem(5, 4, "random")
    with pytest.raises(ValueError, match="epsilon must be > 0 and finite"):
        sinkhorn(cost[None], epsilon=epsilon)
    with pytest.raises(ValueError, match="epsilon must be > 0 and finite"):
        fused_gromov_wasserstein(cost[None], c1[None], c2[None], epsilon=epsilon)


@pytest.mark.parametrize("bad, what", [(math.inf, "an infinite value"), (math.nan, "NaN")])
def test_non_finite_valid_cells_are_named_with_their_item(bad, what):
    problems = [make_problem(5, 4, "random", seed=s) for s in range(3)]
    cost, c1, c2, n_len, m_len = pad_batch(problems)
    poisoned = cost.clone()
    poisoned[2, 1, 1] = bad
    with pytest.raises(ValueError, match=f"cost holds {what} in a valid cell of batch item 2"):
        sinkhorn(poisoned, n_len, m_len)
    with pytest.raises(ValueError, match=f"cost holds {what} in a valid cell of batch item 2"):
        fused_gromov_wasserstein(poisoned, c1, c2, n_len, m_len, gw_weight=0.2)
    poisoned = c2.clone()
    poisoned[1, 0, 3] = bad
    with pytest.raises(ValueError, match=f"target_structure holds {what} in a valid cell of batch item 1"):
        fused_gromov_wasserstein(cost, c1, poisoned, n_len, m_len, gw_weight=0.2)


def test_non_finite_cells_pass_through_when_checks_are_off():
    """check_finite=False: a non-finite cost gives a non-finite value, which an AMP
    grad scaler reads as an overflow and skips; no exception, no silent number."""
    cost, _, _ = make_problem(5, 4, "random")
    cost[1, 1] = math.inf
    result = sinkhorn(cost[None], check_finite=False)
    assert not torch.isfinite(result.value).all()


# --- item 10: convergence, and saying so when it fails ----------------------------


def test_epsilon_scaling_keeps_the_fixed_point_of_pot():
    cost, _, _ = make_problem(23, 9, "monotone", seed=4)
    reference = pot_sinkhorn_plan(cost, 0.05)
    for scaling in (True, False):
        ours = sinkhorn(cost[None], epsilon=0.05, max_iter=100000, tol=1e-12,
                        epsilon_scaling=scaling)
        assert (ours.plan[0] - reference).abs().max() <= 1e-9


def test_unconverged_solve_warns_once_per_setting_and_names_it():
    cost, _, _ = make_problem(20, 6, "random", seed=7)
    huge = 1e6 * cost[None]
    with pytest.warns(ConvergenceWarning) as record:
        result = sinkhorn(huge, epsilon=1e-4, max_iter=50, tol=1e-9)
    message = str(record[0].message)
    for named in ("epsilon=0.0001", "gw_weight=0.0", "max_iter=50", "20 frames x 6 tokens",
                  "L2 error", "Raise the iteration budget"):
        assert named in message
    assert result.unconverged == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        again = sinkhorn(huge, epsilon=1e-4, max_iter=50, tol=1e-9)  # same setting: silent
    assert again.unconverged == 1
    with pytest.warns(ConvergenceWarning, match="gw_weight=0.5"):
        fused_gromov_wasserstein(huge, torch.zeros(1, 20, 20, dtype=cost.dtype),
                                 torch.zeros(1, 6, 6, dtype=cost.dtype), epsilon=1e-4,
                                 gw_weight=0.5, inner_iter=50, outer_iter=2, tol=1e-9)


def test_converged_solve_does_not_warn():
    cost, _, _ = make_problem(20, 6, "random", seed=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        result = sinkhorn(cost[None], epsilon=0.1, tol=1e-9)
    assert result.unconverged == 0 and result.marginal_error[0] < 1e-9


@pytest.mark.parametrize("epsilon", [0.5, 0.1, 0.05])
@pytest.mark.parametrize("gw_weight", [0.0, 0.02, 0.5])
def test_papers_settings_converge_within_the_transfer_modules_budget(epsilon, gw_weight):
    """temporal_weight 0.5 (the model's), inner_iter 200, outer 10, tol 1e-6,
    omega 1.7, float32: without the Newton polish these end with relative marginal
    errors of 1e-3 to 1e-2 (measured)."""
    frames, tokens, n_len, m_len = speech_like_batch()
    n_max, m_max = frames.size(1), tokens.size(1)
    cost = cosine_cost(frames, tokens, n_len, m_len) + 0.5 / (1 - gw_weight) * temporal_cost(
        n_len, m_len, n_max, m_max
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        result = fused_gromov_wasserstein(
            cost, structure_cost(frames, n_len), structure_cost(tokens, m_len), n_len, m_len,
            epsilon=epsilon, gw_weight=gw_weight, outer_iter=10, inner_iter=200, tol=1e-6,
            overrelaxation=1.7,
        )
    relative = result.marginal_error * m_len.float().sqrt()
    assert result.unconverged == 0 and relative.max() < 1e-3


def test_newton_polish_reaches_pots_plan_where_sinkhorn_stops_short():
    cost, _, _ = make_problem(23, 9, "monotone", seed=0)
    reference = pot_sinkhorn_plan(cost, 0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        short = sinkhorn(cost[None], epsilon=0.05, max_iter=20, tol=1e-12, newton_steps=0)
    polished = sinkhorn(cost[None], epsilon=0.05, max_iter=20, tol=1e-12)
    assert short.marginal_error[0] > 1e-6  # Sinkhorn alone is far from done
    assert polished.n_newton > 0 and polished.marginal_error[0] <= 1e-12
    assert (polished.plan[0] - reference).abs().max() <= 1e-9


def test_tot_papers_epsilon_converges_with_newton_along_the_epsilon_path():
    """Sinkhorn and the Newton polish alone stop at column errors ~4e-3 here;
    the continuation (Newton steps at each epsilon of the annealing path, in
    float64) converges within the transfer module's budget, in float32."""
    cost, n_len, m_len = tot_paper_setting()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        result = sinkhorn(cost, n_len, m_len, epsilon=0.01, max_iter=200, tol=1e-6,
                          overrelaxation=1.7)
    assert result.plan.dtype == torch.float32
    assert result.unconverged == 0 and result.marginal_error.max() < 1e-6
    rows = result.plan.double().sum(2)
    assert torch.allclose(rows, torch.where(rows > 0, 1.0 / n_len[:, None].double(), 0.0),
                          atol=1e-6)


@pytest.mark.slow
def test_tot_papers_epsilon_reaches_pots_plan():
    """POT's log-domain Sinkhorn needs 137,000-177,000 iterations on items 0 and 2."""
    cost, n_len, m_len = tot_paper_setting()
    result = sinkhorn(cost, n_len, m_len, epsilon=0.01, max_iter=200, tol=1e-6,
                      overrelaxation=1.7)
    for b in (0, 2):
        n, m = int(n_len[b]), int(m_len[b])
        reference = ot.sinkhorn(
            torch.full((n,), 1 / n, dtype=torch.float64), torch.full((m,), 1 / m, dtype=torch.float64),
            cost[b, :n, :m].double(), 0.01, method="sinkhorn_log", stopThr=1e-9,
            numItermax=300000,
        )
        assert (result.plan[b, :n, :m].double() - reference).abs().max() <= 1e-6


def test_what_does_not_converge_is_reported():
    """The same setting without the Newton steps: Sinkhorn alone stops at its
    cap far from the marginals, and says so with the setting."""
    cost, n_len, m_len = tot_paper_setting()
    with pytest.warns(ConvergenceWarning, match="epsilon=0.01, gw_weight=0.0, .*temporal_weight=0.5"):
        result = sinkhorn(cost, n_len, m_len, epsilon=0.01, max_iter=200, tol=1e-6,
                          overrelaxation=1.7, newton_steps=0,
                          setting=dict(temporal_weight=0.5))
    assert result.unconverged >= 1

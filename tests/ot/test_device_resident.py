"""The solvers' loops stay on the device: host reads only at check points.

On CPU a synchronisation is invisible, so the solvers route every host read
through ``espnet_gmot.ot.host.to_host``, which counts them; on CUDA the same is
enforced with ``torch.cuda.set_sync_debug_mode("error")``.
"""

import math

import pytest
import torch

from espnet_gmot.ot import fused_gromov_wasserstein, sinkhorn, temporal_cost
from espnet_gmot.ot.host import HOST_READS
from espnet_gmot.ot.log_domain import log_domain_update
from espnet_gmot.ot.polish import DEFAULT_NEWTON_STEPS, DEVICE_NEWTON_CHECK_EVERY, newton_polish
from espnet_gmot.ot.problem import Marginals
from espnet_gmot.ot.scaling import DEVICE_CHECK_EVERY, CheckCadence
from tests.ot.problems import make_problem, stiff_batch, tot_paper_setting

# one read for the input checks, one at the end of the solve
FIXED_READS = 2


def reads_during(fn):
    before = HOST_READS.count
    result = fn()
    return result, HOST_READS.count - before


@pytest.mark.parametrize("relaxation", [math.inf, (0.5, math.inf), (0.5, 2.0)])
@pytest.mark.parametrize("check_every", [1, 5, 25])
def test_sinkhorn_reads_the_host_once_per_check(check_every, relaxation):
    cost, _, _, n_len, m_len = stiff_batch(kind="random")
    result, reads = reads_during(
        lambda: sinkhorn(cost, n_len, m_len, epsilon=0.02, tol=1e-10, max_iter=5000,
                         check_every=check_every, marginal_relaxation=relaxation)
    )
    assert result.marginal_error.max() < 1e-10
    assert result.n_iter > 50  # enough iterations for the bound to mean something
    assert reads <= math.ceil(result.n_iter / check_every) + FIXED_READS
    if check_every == 25:
        assert reads < result.n_iter / 10


@pytest.mark.parametrize("check_every", [1, 10])
def test_fgw_reads_the_host_once_per_check_of_each_inner_solve(check_every):
    cost, c1, c2, n_len, m_len = stiff_batch(kind="random")
    result, reads = reads_during(
        lambda: fused_gromov_wasserstein(
            cost, c1, c2, n_len, m_len, epsilon=0.05, gw_weight=0.3, outer_iter=6,
            inner_iter=5000, tol=1e-9, check_every=check_every,
        )
    )
    assert result.n_outer == 6
    # each inner solve may end between check points: one partial window per step
    assert reads <= math.ceil(result.n_iter / check_every) + result.n_outer + FIXED_READS


def test_outer_tolerance_costs_one_read_per_outer_step():
    cost, c1, c2, n_len, m_len = stiff_batch(kind="random")
    kwargs = dict(epsilon=0.1, gw_weight=0.3, outer_iter=8, inner_iter=5000, tol=1e-9,
                  check_every=10)
    fixed, fixed_reads = reads_during(
        lambda: fused_gromov_wasserstein(cost, c1, c2, n_len, m_len, **kwargs)
    )
    early, early_reads = reads_during(
        lambda: fused_gromov_wasserstein(cost, c1, c2, n_len, m_len, outer_tol=1e-30, **kwargs)
    )
    assert early.n_outer == fixed.n_outer == 8
    assert early_reads <= fixed_reads + 8 + 8  # the outer checks, and the inner windows may shift


def test_check_every_does_not_change_the_solution():
    cost, c1, c2, n_len, m_len = stiff_batch(kind="random")
    plans = [
        sinkhorn(cost, n_len, m_len, epsilon=0.05, tol=1e-12, max_iter=20000,
                 check_every=k, overrelaxation=1.5).plan
        for k in (1, 7, 50)
    ]
    for plan in plans[1:]:
        assert (plan - plans[0]).abs().max() < 1e-11
    fgw = [
        fused_gromov_wasserstein(cost, c1, c2, n_len, m_len, epsilon=0.1, gw_weight=0.3,
                                 inner_iter=20000, tol=1e-12, check_every=k).plan
        for k in (1, 13)
    ]
    assert (fgw[1] - fgw[0]).abs().max() < 1e-11


def test_frozen_items_do_not_depend_on_their_batch_between_checks():
    """An item that converges early stays frozen while the others iterate up to the
    next check point: its plan equals its plan solved alone."""
    cost, _, _, n_len, m_len = stiff_batch(kind="random")
    together = sinkhorn(cost, n_len, m_len, epsilon=0.05, tol=1e-8, check_every=40)
    for b in range(cost.size(0)):
        n, m = int(n_len[b]), int(m_len[b])
        alone = sinkhorn(cost[b : b + 1, :n, :m], epsilon=0.05, tol=1e-8, check_every=40)
        # rebuilds triggered by other items change the rounding, not the iteration
        assert torch.allclose(together.plan[b, :n, :m], alone.plan[0], atol=1e-13, rtol=1e-9)


def test_check_every_is_validated():
    cost, _, _ = make_problem(5, 4, "random")
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="check_every must be None or an integer >= 1"):
            sinkhorn(cost[None], check_every=bad)


def test_check_cadence_by_device():
    """None: adaptive on the CPU (a read costs no synchronisation), 10 where it syncs."""
    cuda = CheckCadence(None, torch.device("cuda"), tol=1e-6)
    assert cuda.interval == cuda.next_interval(1e-3) == DEVICE_CHECK_EVERY == 10
    fixed = CheckCadence(4, torch.device("cpu"), tol=1e-6)
    assert fixed.interval == fixed.next_interval(1e-3) == 4
    cpu = CheckCadence(None, torch.device("cpu"), tol=2e-6)
    assert cpu.interval == 1
    # the Newton polish: every step where reads are free, at most 5 apart elsewhere
    assert (cpu.newton_every, fixed.newton_every, cuda.newton_every) == (1, 4, 5)
    assert CheckCadence(1, torch.device("cuda"), tol=1e-6).newton_every == 1
    assert cpu.next_interval(1e-2) == 1  # no rate known yet
    assert cpu.next_interval(1e-3) == 3  # 10x per iteration: 2e-6 in 2.7 more
    assert cpu.next_interval(1e-4) == 6  # 10x per 3 iterations: 2e-6 in 5.1 more
    assert cpu.next_interval(2e-4) == DEVICE_CHECK_EVERY  # no progress: back off
    assert cpu.next_interval(1.999e-4) == DEVICE_CHECK_EVERY  # slow: at most 10


@pytest.mark.parametrize("relaxation", [math.inf, (0.5, math.inf), (0.5, 2.0)])
def test_cpu_default_stops_at_the_first_converged_iteration(relaxation):
    """Balanced and relaxed: the CPU default runs no iteration past convergence
    (a cadence of 10 runs up to 9 more) and reaches the same plan."""
    cost, _, _, n_len, m_len = stiff_batch(kind="random")

    def solve(check_every):
        return sinkhorn(cost, n_len, m_len, epsilon=0.02, tol=1e-10, max_iter=5000,
                        check_every=check_every, marginal_relaxation=relaxation)

    (default, reads), every_10 = reads_during(lambda: solve(None)), solve(10)
    assert default.marginal_error.max() < 1e-10 and every_10.marginal_error.max() < 1e-10
    assert reads <= default.n_iter + FIXED_READS
    assert reads < every_10.n_iter / 2  # adaptive: few reads, not one per iteration
    assert default.n_iter <= every_10.n_iter
    assert (default.plan - every_10.plan).abs().max() < 1e-8


def _stiff_fgw_with_prior(device, gw_weight, relaxation, newton_steps, check_every=None):
    """The transfer module's TOT-CAKT / GM-OT solve on a stiff batch: the balanced
    inner solves hit their cap of 300 iterations, so the Newton polish runs."""
    cost, c1, c2, n_len, m_len = (t.to(device) for t in stiff_batch(torch.float32))
    prior = temporal_cost(n_len, m_len, cost.size(1), cost.size(2))
    return reads_during(
        lambda: fused_gromov_wasserstein(
            cost + 0.5 * prior, c1, c2, n_len, m_len, epsilon=0.05,
            gw_weight=gw_weight, outer_iter=4, inner_iter=300, tol=1e-5,
            marginal_relaxation=relaxation, newton_steps=newton_steps,
            check_every=check_every,
        )
    )


# The budget of host reads (synchronisations on a GPU) per Sinkhorn iteration,
# beyond the few each solve makes whatever its length (FIXED_READS, and one per
# FGW outer step).
READS_PER_ITERATION = 0.2


def loop_reads(result, reads):
    return reads - FIXED_READS - result.n_outer

STIFF_SETTINGS = [
    pytest.param(gw_weight, relaxation, newton_steps, id=f"gw{gw_weight}-{relaxation}-newton{newton_steps}")
    for gw_weight in (0.0, 0.3)
    for relaxation in (math.inf, (0.0, math.inf), (0.5, 2.0))
    for newton_steps in (0, DEFAULT_NEWTON_STEPS)
]


@pytest.mark.parametrize("gw_weight, relaxation, newton_steps", STIFF_SETTINGS)
def test_the_device_cadence_reads_within_budget_newton_included(gw_weight, relaxation, newton_steps):
    """The GPU's cadence, counted on CPU: Sinkhorn reads every DEVICE_CHECK_EVERY
    iterations and the Newton polish every DEVICE_NEWTON_CHECK_EVERY steps."""
    result, reads = _stiff_fgw_with_prior(
        torch.device("cpu"), gw_weight, relaxation, newton_steps, check_every=DEVICE_CHECK_EVERY
    )
    if newton_steps and relaxation == math.inf:
        assert result.n_newton > 0  # the polish ran and its reads are in the count
    assert loop_reads(result, reads) <= READS_PER_ITERATION * result.n_iter


def test_newton_reads_once_per_window_and_converged_items_stay_put():
    cost, n_len, m_len = tot_paper_setting()
    epsilon, tol = 0.01, 1e-6
    cost = cost.double()
    marginals = Marginals.uniform(n_len, m_len, cost.size(1), cost.size(2), cost.dtype)
    mask = marginals.pair_mask
    f, g = log_domain_update(cost, marginals, mask, torch.zeros_like(cost[:, :, 0]),
                             torch.zeros_like(cost[:, 0, :]), epsilon)
    active = torch.ones(cost.size(0), dtype=torch.bool)
    outcomes = {}
    for check_every in (1, DEVICE_NEWTON_CHECK_EVERY):
        outcomes[check_every] = reads_during(
            lambda: newton_polish(cost, marginals, mask, f, g, active, epsilon,
                                  DEFAULT_NEWTON_STEPS, tol, check_every)
        )
    (f1, g1, taken1), reads1 = outcomes[1]
    (f5, g5, taken5), reads5 = outcomes[DEVICE_NEWTON_CHECK_EVERY]
    assert torch.equal(taken1, taken5) and torch.equal(f1, f5) and torch.equal(g1, g5)
    assert taken1.max() > DEVICE_NEWTON_CHECK_EVERY  # several windows
    assert reads1 == min(int(taken1.max()) + 1, DEFAULT_NEWTON_STEPS)
    assert reads5 <= math.ceil(reads1 / DEVICE_NEWTON_CHECK_EVERY)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("gw_weight, relaxation, newton_steps", STIFF_SETTINGS)
def test_no_synchronisation_outside_the_host_reads_on_cuda(gw_weight, relaxation, newton_steps):
    """In sync-debug "error" mode any synchronisation but ``to_host`` raises;
    the reads stay within the budget per Sinkhorn iteration."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        result, reads = _stiff_fgw_with_prior(
            torch.device("cuda"), gw_weight, relaxation, newton_steps
        )
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(result.plan).all()
    if newton_steps == 0:
        assert reads <= math.ceil(result.n_iter / DEVICE_CHECK_EVERY) + result.n_outer + FIXED_READS
    elif relaxation == math.inf:
        assert result.n_newton > 0  # the Newton polish ran under the debug mode
    assert loop_reads(result, reads) <= READS_PER_ITERATION * result.n_iter


@pytest.mark.parametrize("check_every", [None, 10])
def test_a_scaling_pinned_at_the_bound_is_not_taken_for_convergence(check_every, monkeypatch):
    """A solve whose first rebuild leaves the rows to the loop (as a balanced
    warm start does) on a cold, annealed, relaxed problem: the row scalings run
    into the bound, and the clamp holds the column update at a fixed point, so
    the column error reads exactly 0 between two check points. The items must
    not freeze there: the solve goes on to the plan of a solve that checks every
    iteration, converged."""
    from espnet_gmot.ot import scaling

    update = scaling.log_domain_update
    monkeypatch.setattr(  # the first rebuild's column-only update, on a cold start
        scaling, "log_domain_update",
        lambda cost, marginals, mask, f, g, *rest: (f, update(cost, marginals, mask, f, g, *rest)[1]),
    )
    cost, _, _ = make_problem(23, 9, "monotone")

    def solve(every):
        return sinkhorn(cost[None], epsilon=0.05, max_iter=100000, tol=1e-13,
                        marginal_relaxation=(math.inf, 0.3), check_every=every)

    pinned, every_iteration = solve(check_every), solve(1)
    assert pinned.unconverged == 0 and pinned.marginal_error.max() < 1e-12
    assert (pinned.plan - every_iteration.plan).abs().max() < 1e-10

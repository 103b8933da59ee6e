"""Newton polish and continuation for the items Sinkhorn leaves unconverged.

Sinkhorn still converges slowly on the temporal prior (TOT eq. 19): the plan is
a thin band along the diagonal and information moves one token per iteration
(measured: relative marginal errors of 1e-3 to 1e-2 after 2000 iterations at
epsilon 0.05-0.1). Items still unconverged at ``max_iter`` therefore get a few
Newton steps on the semi-dual (:func:`newton_polish`), which reach the same
optimum in 1-30 steps at the papers' settings (epsilon 0.05-0.5, temporal_weight
0.5, up to 1500 frames and 40 tokens). At epsilon 0.01 (the TOT paper's) rows
are nearly one-hot and that polish stalls; the items it leaves unconverged are
solved again by Newton steps along the epsilon-scaling path, in float64
(:func:`newton_continuation`). An item that still misses its marginals is
reported once per setting with a
:class:`~espnet_gmot.ot.problem.ConvergenceWarning`.

Kept apart from the scaling loop (:mod:`espnet_gmot.ot.scaling`), which calls
it: it runs only after the loop hit its cap, on balanced problems only, and
works on the semi-dual rather than on scalings.
"""

import torch

from espnet_gmot.ot.host import to_host
from espnet_gmot.ot.log_domain import log_domain_update, masked_logsumexp
from espnet_gmot.ot.problem import Marginals, item_cost_range

# Newton steps after an unconverged Sinkhorn phase (each, an m x m solve and a
# line search, costs more than a Sinkhorn iteration; they run only when Sinkhorn
# hit its cap).
DEFAULT_NEWTON_STEPS = 30

# Newton polish: no dual moves by more than this many epsilon in one step, and
# these fractions of the step are tried.
_NEWTON_TRUST = 10.0
_NEWTON_STEP_LENGTHS = (0.01, 0.1, 0.25, 0.5, 1.0)

# Newton steps between host reads where a read synchronises (the scaling loop's
# fixed cadence): a step is a dozen kernels, so reading each would add one
# synchronisation per step, while an item that converges between reads only
# idles (frozen by ``active``) for at most this many - 1 steps.
DEVICE_NEWTON_CHECK_EVERY = 5


def newton_polish(
    cost, marginals, mask, source_dual, target_dual, active, epsilon, steps, tol, check_every=1,
):
    """Newton's method on the semi-dual (Brauer et al., 2017) for the items that
    Sinkhorn left unconverged; the same optimum, reached in a few steps.

    With rows solved exactly, ``f(g)_i = eps (log a_i - LSE_j((g_j - C_ij) / eps))``,
    the concave semi-dual ``D(g) = <a, f(g)> + <b, g>`` has gradient ``b - P^T 1``
    and negative Hessian ``H = (diag(P^T 1) - P^T diag(1/a) P) / eps`` (``m x m``).
    Sinkhorn converges slowly exactly where ``H`` is ill-conditioned: the temporal
    prior makes the plan a thin band whose column duals are coupled only through
    neighbouring tokens, and Sinkhorn moves information one token per iteration;
    Newton solves that chain in one linear solve per step. The step is clipped to
    ``_NEWTON_TRUST * epsilon`` per dual, then the longest of a few fractions of
    it that does not lower ``D`` (beyond rounding) is taken. At epsilon well below
    the prior's cost of one token's shift (0.01 with temporal_weight 0.5) rows
    become one-hot, D is nearly piecewise linear and this stalls when started
    from Sinkhorn's iterate: :func:`newton_continuation` then starts it again
    along the epsilon path.

    The host is read (to stop once every item converged) before every
    ``check_every``-th step; converged items are frozen on the device in between.

    Returns the duals (rows exact) and the steps taken by each item.
    """
    a, b = marginals.source_mass, marginals.target_mass
    source_mask, target_mask = marginals.source_mask, marginals.target_mask
    log_a = torch.log(torch.where(source_mask, a, 1.0))
    columns = target_mask.sum(1).clamp_min(1).to(cost.dtype)
    pairs = target_mask[:, :, None] & target_mask[:, None, :]
    # H 1 = 0 (adding a constant to g changes nothing); a multiple of 1 1^T on the
    # valid block and 1 on padded diagonal entries make the system regular
    # without changing the step, which is orthogonal to 1.
    regular = torch.where(pairs, 1.0 / (epsilon * columns**2)[:, None, None], 0.0)
    regular = regular + torch.diag_embed((~target_mask).to(cost.dtype))
    slack = 16 * torch.finfo(cost.dtype).eps

    def solve_rows(g):
        lse = masked_logsumexp((g[:, None, :] - cost) / epsilon, mask, dim=2)
        return torch.where(source_mask, epsilon * (log_a - lse), 0.0)

    def semi_dual(f, g):
        return (a * f).sum(1) + (b * g).sum(1)

    taken = torch.zeros_like(active, dtype=torch.long)
    f = solve_rows(target_dual)
    g = target_dual
    for step_index in range(steps):
        exponent = (f[:, :, None] + g[:, None, :] - cost) / epsilon
        plan = torch.exp(torch.where(mask, exponent, float("-inf")))
        column_sums = plan.sum(1)
        error = torch.linalg.vector_norm(column_sums - b, dim=1)
        active = active & ~(error.detach() < tol)
        if step_index % check_every == 0 and not to_host(active.any()):
            break
        scaled = plan / torch.where(source_mask, a, 1.0)[:, :, None]
        # H is the Laplacian of the token graph weighted by W = P^T diag(1/a) P:
        # built from W's off-diagonal part only, it is positive semi-definite in
        # floating point too (diag(P^T 1) - W cancels catastrophically once rows
        # are nearly one-hot, which is the regime where Newton is needed).
        weights = torch.bmm(plan.transpose(1, 2), scaled)
        weights = weights * (1.0 - torch.eye(weights.size(1), dtype=weights.dtype, device=weights.device))
        hessian = (torch.diag_embed(weights.sum(2)) - weights) / epsilon
        # float64 for the m x m solve: H's small eigenvalues are what matter.
        system = (hessian + regular).double()
        gradient = torch.where(target_mask, b - column_sums, 0.0).double()
        step, _ = torch.linalg.solve_ex(system, gradient)
        step = torch.where(target_mask, step.to(cost.dtype), 0.0)
        # Where the band has no split frame, tokens are coupled by weights ~1e-20
        # and the Newton step is ~1e20 long: no dual moves by more than a few
        # epsilon per step (a trust region), then the longest step of a few that
        # does not lower D (beyond rounding) is taken.
        size = step.abs().amax(1, keepdim=True)
        step = step * torch.clamp(_NEWTON_TRUST * epsilon / size.clamp_min(1e-30), max=1.0)
        base = semi_dual(f, g)
        tolerance = slack * (base.detach().abs() + 1.0)
        best_g, best_f = g, f
        for length in _NEWTON_STEP_LENGTHS:  # increasing: the longest acceptable wins
            candidate = g + length * step
            candidate_f = solve_rows(candidate)
            acceptable = (semi_dual(candidate_f, candidate) >= base - tolerance)[:, None]
            best_g = torch.where(acceptable, candidate, best_g)
            best_f = torch.where(acceptable, candidate_f, best_f)
        g = torch.where(active[:, None], best_g, g)
        f = torch.where(active[:, None], best_f, f)
        taken = taken + active
    return f, g, taken


# Newton steps at each epsilon of the continuation path (newton_continuation).
_CONTINUATION_STEPS = 5


def newton_continuation(
    cost, marginals, mask, source_dual, target_dual, plan, error, still, epsilon, stages,
    newton_steps, tol, check_every=1,
):
    """A second solve for the items that Sinkhorn and the Newton polish left
    unconverged: Newton steps along the epsilon-scaling path.

    At epsilon far below the prior's cost of shifting one token (0.01 against
    ``0.5 d^2``), rows are nearly one-hot and Newton started from Sinkhorn's
    iterate makes no progress: the semi-dual is nearly piecewise linear there.
    Following the path ``epsilon * 2^k`` with a few Newton steps per stage keeps
    every start inside the quadratic region of the next, smaller, epsilon
    (path following, as interior-point methods do). It runs in float64: in
    float32 ``(f + g - C) / eps`` loses the digits that Newton needs at this
    epsilon. An item keeps the better of its two results.
    """
    out_dtype = cost.dtype
    cost = cost.double()
    marginals = Marginals(
        source_mask=marginals.source_mask,
        target_mask=marginals.target_mask,
        source_mass=marginals.source_mass.double(),
        target_mass=marginals.target_mass.double(),
    )
    cost_range = item_cost_range(cost, mask)
    wanted = torch.ceil(torch.log2(cost_range.clamp_min(epsilon) / epsilon))
    item_stages = torch.nan_to_num(wanted, nan=0.0).clamp(0, stages).long()
    f = torch.zeros_like(source_dual)
    g = torch.zeros_like(target_dual)
    taken = torch.zeros(f.size(0), dtype=torch.long, device=f.device)
    for k in range(stages):
        stage_epsilon = epsilon * 2.0 ** (stages - k)
        taking_part = still & (stages - k <= item_stages)
        f_next, g_next = log_domain_update(cost, marginals, mask, f, g, stage_epsilon)
        f = torch.where(taking_part[:, None], f_next, f)
        g = torch.where(taking_part[:, None], g_next, g)
        f, g, stage_taken = newton_polish(
            cost, marginals, mask, f, g, taking_part, stage_epsilon, _CONTINUATION_STEPS, tol,
            check_every,
        )
        taken = taken + stage_taken
    f, g, final_taken = newton_polish(
        cost, marginals, mask, f, g, still, epsilon, newton_steps, tol, check_every
    )
    taken = taken + final_taken
    exponent = (f[:, :, None] + g[:, None, :] - cost) / epsilon
    rescued = torch.exp(torch.where(mask, exponent, float("-inf"))).to(out_dtype)
    better = still & (marginals.column_error(rescued.double()) < error.double())
    source_dual = torch.where(better[:, None], f.to(out_dtype), source_dual)
    target_dual = torch.where(better[:, None], g.to(out_dtype), target_dual)
    plan = torch.where(better[:, None, None], rescued, plan)
    return source_dual, target_dual, plan, torch.where(still, taken, 0)

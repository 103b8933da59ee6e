"""Batched entropic optimal transport for padded cost matrices: :func:`sinkhorn`.

The public entry point. The solver behind it is split by concern, in the
spirit of OTT-JAX's problems and solvers:

* :mod:`espnet_gmot.ot.problem`: input checks, uniform marginals, relaxed
  marginals' weights, the result and the non-convergence warning (shared with
  the FGW solver);
* :mod:`espnet_gmot.ot.scaling`: the stabilised scaling loop (Schmitzer, 2019),
  device-resident, with relaxed marginals;
* :mod:`espnet_gmot.ot.log_domain`: exact log-domain updates and epsilon
  annealing;
* :mod:`espnet_gmot.ot.polish`: Newton steps on the semi-dual for the items
  Sinkhorn leaves unconverged.

:func:`sinkhorn` checks its options, prepares the problem, chooses the
annealing stages and what the backward pass sees, runs the loop and reports.
"""

import math
from typing import Dict, Optional

import torch

from espnet_gmot.ot.costs import Lengths
from espnet_gmot.ot.log_domain import annealing_stages
from espnet_gmot.ot.polish import DEFAULT_NEWTON_STEPS
from espnet_gmot.ot.problem import (
    HARD,
    Relaxation,
    TransportResult,
    check_solver_options,
    finish_result,
    prepare_problem,
)
from espnet_gmot.ot.scaling import ScalingOptions, solve_scaling


def sinkhorn(
    cost: torch.Tensor,
    source_lengths: Optional[Lengths] = None,
    target_lengths: Optional[Lengths] = None,
    *,
    epsilon: float = 0.1,
    max_iter: int = 1000,
    tol: float = 1e-9,
    gradient: str = "envelope",
    overrelaxation: float = 1.0,
    check_every: Optional[int] = None,
    epsilon_scaling: bool = True,
    newton_steps: int = DEFAULT_NEWTON_STEPS,
    marginal_relaxation: Relaxation = math.inf,
    check_finite: bool = True,
    setting: Optional[Dict[str, object]] = None,
) -> TransportResult:
    """Entropic OT with uniform masses over a batch of padded cost matrices.

    Solves, per item ``b``, ``min_{P in Pi(a_b, b_b)} <C_b, P> - epsilon H(P)``
    (POT's ``ot.sinkhorn(a, b, C, epsilon, method="sinkhorn_log")``), with
    ``a_b``, ``b_b`` uniform over the first ``source_lengths[b]`` rows and
    ``target_lengths[b]`` columns. Padded cells may hold anything, ``nan`` and
    ``inf`` included: they are never read.

    With ``marginal_relaxation`` finite on a side, that side's constraint
    becomes the penalty ``rho KL(marginal | uniform mass)`` (unbalanced OT,
    POT's ``ot.unbalanced.sinkhorn_unbalanced(a, b, C, epsilon, reg_m,
    reg_type="entropy")``); ``(rho, inf)`` is the semi-relaxed problem with
    hard token (column) masses, ``(0, inf)`` leaves the frames free.

    Args:
        cost: ``(B, n, m)`` costs; any floating dtype (solved in float32, or in
            float64 for float64 input, with autocast disabled).
        source_lengths, target_lengths: ``(B,)`` valid sizes (integer tensors or
            sequences of ints) in ``[1, n]`` and ``[1, m]``; ``None`` = unpadded.
        epsilon: entropic regularisation (TOT's alpha~), finite and > 0.
        max_iter: maximum Sinkhorn iterations.
        tol: tolerance on the L2 norm of the column-marginal violation.
        gradient: ``"envelope"`` (default): the plan is a constant in the
            backward pass, so ``d value / d cost = plan`` (the envelope theorem);
            ``"unrolled"``: autodiff through the iterations.
        overrelaxation: ``omega`` in ``[1, 2)`` of over-relaxed Sinkhorn; 1 (the
            default) is POT's iteration. The solution does not change.
        check_every: iterations between the host reads that stop the loop (the
            only synchronisations of the loop); the result does not depend on it.
            ``None`` (the default): adaptive on the CPU, where a read costs no
            synchronisation, every ``DEVICE_CHECK_EVERY`` (10) on a GPU.
        epsilon_scaling: anneal epsilon on a cold start (see
            :mod:`espnet_gmot.ot.log_domain`); the solution does not change,
            only the iterations needed.
        newton_steps: at most this many Newton steps on the semi-dual for the
            items Sinkhorn leaves unconverged after ``max_iter`` iterations (0:
            none); same solution, see :func:`espnet_gmot.ot.polish.newton_polish`.
            Not used with ``tol=0`` (a fixed iteration count) nor with
            ``gradient="unrolled"``, which differentiates the Sinkhorn
            iterations only.
        marginal_relaxation: KL weight ``rho`` of the marginal constraints
            (POT's ``reg_m``): one number for both sides or a ``(source,
            target)`` pair, each in ``[0, inf]``; ``inf`` (the default) is the
            hard constraint and runs the balanced solver unchanged.
        check_finite: refuse nan/inf in valid cells with a ``ValueError`` naming
            the item. ``False`` lets them through to a nan result (what an AMP
            grad scaler needs to skip a step).
        setting: extra entries named in the non-convergence warning.

    Returns:
        :class:`TransportResult` with ``value = <C, P>`` (the marginal
        penalties are not included). Warns
        (:class:`ConvergenceWarning`, once per setting) when an item ends far
        from its marginals.
    """
    if cost.dim() != 3:
        raise ValueError(f"cost must be (batch, n, m), got shape {tuple(cost.shape)}")
    relaxation = check_solver_options(
        epsilon, max_iter, tol, gradient, overrelaxation, check_every, newton_steps,
        marginal_relaxation,
    )
    with torch.autocast(device_type=cost.device.type, enabled=False):
        problem = prepare_problem(cost, source_lengths, target_lengths, check_finite)
        work_cost = problem.cost
        stages = annealing_stages(problem.cost_range, epsilon, max_iter) if epsilon_scaling else 0
        with torch.set_grad_enabled(gradient == "unrolled" and torch.is_grad_enabled()):
            solved = solve_scaling(
                work_cost if gradient == "unrolled" else work_cost.detach(),
                problem.marginals,
                ScalingOptions(
                    epsilon, max_iter, tol, overrelaxation, check_every, stages,
                    newton_steps if gradient == "envelope" else 0, relaxation,
                ),
            )
        value = (work_cost * solved.plan).sum((1, 2))
        described = dict(epsilon=epsilon, gw_weight=0.0, **(setting or {}))
        described.update(max_iter=max_iter, tol=tol, overrelaxation=overrelaxation)
        if relaxation != HARD:
            described.update(marginal_relaxation=relaxation)
        return finish_result(
            problem, solved.plan, value, solved.item_iters, cost.dtype, tol, described,
            item_newton=solved.item_newton, column_target=solved.column_target,
        )
